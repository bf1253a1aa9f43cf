package core

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/firmware"
	secretpkg "github.com/rackboot/rackboot/internal/secret"
	"github.com/rackboot/rackboot/lifecycle"
	"github.com/rackboot/rackboot/store"
	"github.com/rackboot/rackboot/store/sqlite"
	"github.com/rackboot/rackboot/trace"
)

// db is the whole store behind a test's core, for the setup and checks
// the core itself never needs.
func db(c *Core) store.Store { return c.Store.(store.Store) }

func newCore(t *testing.T) *Core {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	art := t.TempDir()
	for _, f := range []string{"x86_64/vmlinuz", "x86_64/initrd", "x86_64/initrd-b"} {
		os.MkdirAll(filepath.Join(art, filepath.Dir(f)), 0o755)
		if err := os.WriteFile(filepath.Join(art, f), []byte(f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return &Core{Store: st, Config: Config{
		BaseURL:           "http://10.0.0.1:8080",
		Artifacts:         art,
		SecureBootSubnets: []netip.Prefix{netip.MustParsePrefix("10.9.0.0/24")},
		Cmdline:           "quiet",
	}, Neighbors: func(netip.Addr) net.HardwareAddr { return nil }}
}

func mac(s string) net.HardwareAddr {
	m, _ := net.ParseMAC(s)
	return m
}

func TestBootOffer(t *testing.T) {
	ctx := context.Background()
	secureNet := netip.MustParsePrefix("10.9.0.0/24")
	tests := []struct {
		name   string
		client boot.Client
		file   string
		http   bool
	}{
		{"bios", boot.Client{Arch: boot.ClientX86BIOS}, "ipxe/undionly.kpxe", false},
		{"x86-64 uefi", boot.Client{Arch: boot.ClientX64UEFI}, "ipxe/snponly.efi", false},
		{"x86-64 uefi alt", boot.Client{Arch: boot.ClientX64UEFIAlt}, "ipxe/snponly.efi", false},
		{"x86-64 uefi secure boot subnet", boot.Client{Arch: boot.ClientX64UEFI, Network: secureNet}, "efi/x64/shimx64.efi", false},
		{"aarch64 uefi", boot.Client{Arch: boot.ClientARM64UEFI}, "efi/aa64/grubnetaa64.efi", false},
		{"x86-64 http boot", boot.Client{Arch: boot.ClientX64UEFIHTTP}, "http://10.0.0.1:8080/firmware/", true},
		{"aarch64 http boot", boot.Client{Arch: boot.ClientARM64UEFIHTTP}, "http://10.0.0.1:8080/firmware/efi/aa64/grubhttpaa64.efi", true},
		{"ipxe never gets a loader", boot.Client{Arch: boot.ClientX86BIOS, IPXE: true}, "http://10.0.0.1:8080/boot.ipxe", false},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCore(t)
			tt.client.MAC = net.HardwareAddr{0x52, 0x54, 0, 0, 0, byte(i)}
			o, err := c.BootOffer(ctx, tt.client)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(o.File, tt.file) || o.HTTPClient != tt.http || o.Node == "" {
				t.Errorf("offer = %+v, want file %q http %v", o, tt.file, tt.http)
			}
			n, err := c.Store.NodeByMAC(ctx, tt.client.MAC)
			if err != nil || n.ID != o.Node {
				t.Errorf("node not enrolled: %+v %v", n, err)
			}
		})
	}
	// No signed loader boots over HTTP: the firmware falls back to PXE.
	for _, arch := range []boot.ClientArch{boot.ClientX64UEFIHTTP, boot.ClientARM64UEFIHTTP} {
		c := newCore(t)
		if o, err := c.BootOffer(ctx, boot.Client{MAC: mac("52:54:00:00:01:02"), Arch: arch, Network: secureNet}); !errors.Is(err, firmware.ErrSecureBootHTTP) {
			t.Errorf("%s on the Secure Boot path: offer %+v, %v; want ErrSecureBootHTTP", arch, o, err)
		}
	}
	t.Run("ia32 refused", func(t *testing.T) {
		c := newCore(t)
		if _, err := c.BootOffer(ctx, boot.Client{MAC: mac("52:54:00:00:01:01"), Arch: boot.ClientIA32UEFI}); err == nil {
			t.Error("ia32 UEFI got an offer")
		}
	})
}

func TestSecureBootOverride(t *testing.T) {
	ctx := context.Background()
	c := newCore(t)
	m := mac("52:54:00:00:02:01")
	o, _ := c.BootOffer(ctx, boot.Client{MAC: m, Arch: boot.ClientX64UEFI})
	on, off := true, false
	if err := db(c).SetSecureBoot(ctx, o.Node, &on); err != nil {
		t.Fatal(err)
	}
	if o, _ := c.BootOffer(ctx, boot.Client{MAC: m, Arch: boot.ClientX64UEFI}); o.File != "efi/x64/shimx64.efi" {
		t.Errorf("node set on: offer %q", o.File)
	}
	db(c).SetSecureBoot(ctx, o.Node, &off)
	if o, _ := c.BootOffer(ctx, boot.Client{MAC: m, Arch: boot.ClientX64UEFI, Network: netip.MustParsePrefix("10.9.0.0/24")}); o.File != "ipxe/snponly.efi" {
		t.Errorf("node set off on a secure boot subnet: offer %q", o.File)
	}
	c.Config.SecureBoot = true
	db(c).SetSecureBoot(ctx, o.Node, nil)
	if o, _ := c.BootOffer(ctx, boot.Client{MAC: m, Arch: boot.ClientX64UEFI}); o.File != "efi/x64/shimx64.efi" {
		t.Errorf("appliance-wide secure boot: offer %q", o.File)
	}
}

// enrolled is a node its firmware's DHCP enrolled, holding a lease on ip.
func enrolled(t *testing.T, c *Core, m net.HardwareAddr, ip string) store.Node {
	t.Helper()
	ctx := context.Background()
	o, err := c.BootOffer(ctx, boot.Client{MAC: m, Arch: boot.ClientX64UEFI})
	if err != nil {
		t.Fatal(err)
	}
	if ip != "" {
		if _, err := db(c).Bind(ctx, netip.MustParsePrefix("10.0.0.0/24"), m, netip.MustParseAddr(ip), "", time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	n, err := db(c).Node(ctx, o.Node)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestPlan(t *testing.T) {
	ctx := context.Background()
	c := newCore(t)
	m := mac("52:54:00:00:03:01")
	n := enrolled(t, c, m, "10.0.0.31")
	p, err := c.Plan(ctx, m, boot.ArchX86_64, netip.MustParseAddr("10.0.0.31"))
	if err != nil {
		t.Fatal(err)
	}
	if p.Node != n.ID || p.Action != boot.ActionNetboot || p.Kernel != "http://10.0.0.1:8080/artifacts/x86_64/vmlinuz" ||
		strings.Join(p.Initrds, " ") != "http://10.0.0.1:8080/artifacts/x86_64/initrd http://10.0.0.1:8080/artifacts/x86_64/initrd-b" {
		t.Errorf("plan = %+v", p)
	}
	for _, want := range []string{"console=ttyS0", "rackboot.node=" + p.Node, "rackboot.api=http://10.0.0.1:8080", "rackboot.boot=", "quiet"} {
		if !strings.Contains(p.Cmdline, want) {
			t.Errorf("cmdline %q lacks %q", p.Cmdline, want)
		}
	}
	if strings.Contains(p.Cmdline, "rackboot.files=") || strings.Contains(p.Cmdline, "rackboot.ca=") {
		t.Errorf("API on the boot port, yet cmdline %q has files or pins", p.Cmdline)
	}
	// An API over TLS on a port of its own: the agent is told where it
	// is, which certificates to trust, and where boot files stay.
	tlsCore := newCore(t)
	tlsCore.Config.APIURL = "https://10.0.0.1:8443"
	tlsCore.Config.APIPins = []string{"sha256:" + strings.Repeat("ab", 32), "sha256:" + strings.Repeat("cd", 32)}
	tm := mac("52:54:00:00:03:09")
	enrolled(t, tlsCore, tm, "10.0.0.39")
	tp, err := tlsCore.Plan(ctx, tm, boot.ArchX86_64, netip.MustParseAddr("10.0.0.39"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"rackboot.api=https://10.0.0.1:8443", "rackboot.files=http://10.0.0.1:8080", "rackboot.ca=" + strings.Join(tlsCore.Config.APIPins, ",")} {
		if !strings.Contains(tp.Cmdline, want) {
			t.Errorf("TLS API: cmdline %q lacks %q", tp.Cmdline, want)
		}
	}
	m2 := mac("52:54:00:00:03:02")
	enrolled(t, c, m2, "")
	if _, err := c.Plan(ctx, m2, boot.ArchAArch64, netip.Addr{}); err == nil || !strings.Contains(err.Error(), "no kernel for aarch64") {
		t.Errorf("plan without an aarch64 kernel: %v", err)
	}
	if err := db(c).SetState(ctx, p.Node, store.StateActive); err != nil {
		t.Fatal(err)
	}
	if p, err := c.Plan(ctx, m, boot.ArchX86_64, netip.MustParseAddr("10.0.0.31")); err != nil || p.Action != boot.ActionLocal || strings.Contains(p.Cmdline, "rackboot.boot") {
		t.Errorf("active node: plan %+v, %v", p, err)
	}
	tr, _ := db(c).Trace(ctx, p.Node, 0)
	if len(tr) != 2 || tr[0].Proto != trace.ProtoCore || tr[0].Options[trace.OptKernel] == "" || tr[1].Options[trace.OptAction] != "local" {
		t.Errorf("plan events = %+v", tr)
	}
}

// secretOf is the boot secret on a plan's kernel command line, "" if none.
func secretOf(p boot.Plan) string {
	for _, f := range strings.Fields(p.Cmdline) {
		if v, ok := strings.CutPrefix(f, "rackboot.boot="); ok {
			return v
		}
	}
	return ""
}

// The boot secret goes only to a request from the node's own address,
// and a request from anyone else neither gets nor replaces it.
func TestPlanBootSecret(t *testing.T) {
	ctx := context.Background()
	c := newCore(t)
	c.Config.Subnets = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24")}
	m := mac("52:54:00:00:05:01")
	n := enrolled(t, c, m, "10.0.0.51")
	other := mac("52:54:00:00:05:02")
	enrolled(t, c, other, "10.0.0.52")
	neighbors := map[netip.Addr]net.HardwareAddr{netip.MustParseAddr("10.0.0.60"): mac("52:54:00:00:05:60")}
	c.Neighbors = func(a netip.Addr) net.HardwareAddr { return neighbors[a] }
	plan := func(from string) boot.Plan {
		t.Helper()
		a := netip.Addr{}
		if from != "" {
			a = netip.MustParseAddr(from)
		}
		p, err := c.Plan(ctx, m, boot.ArchX86_64, a)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	valid := func(secret string) bool {
		tk, err := db(c).TokenByHash(ctx, secretpkg.Hash(secret))
		return err == nil && tk.Kind == store.TokenBoot && tk.NodeID == n.ID && tk.ID == store.BootTokenID(n.ID)
	}
	first := secretOf(plan("10.0.0.51"))
	if first == "" || !valid(first) {
		t.Fatalf("the node's own request got secret %q (valid %v)", first, valid(first))
	}
	for _, from := range []string{
		"10.0.0.52", // another node's lease
		"10.0.0.60", // the neighbour table says another MAC
		"10.0.0.99", // nobody's, while the node's own address is known
		"",          // no address at all
		"::ffff:10.0.0.52",
	} {
		if p := plan(from); secretOf(p) != "" {
			t.Errorf("a request from %q got the boot secret", from)
		}
	}
	if !valid(first) {
		t.Error("requests from other addresses replaced the node's boot secret")
	}
	tr, _ := db(c).Trace(ctx, n.ID, 0)
	withheld := 0
	for _, e := range tr {
		if strings.Contains(e.Error, "served without the boot secret") {
			withheld++
		}
	}
	if withheld != 5 {
		t.Errorf("%d plan events say the secret was withheld, want 5", withheld)
	}
	second := secretOf(plan("10.0.0.51"))
	if second == "" || second == first || valid(first) || !valid(second) {
		t.Errorf("a new boot: secrets %q then %q; the old one valid %v", first, second, valid(first))
	}
	// A node behind a router (proxy mode): rackboot knows neither its
	// lease nor its neighbour entry. Only from a network listed as routed
	// does such a request get the secret; from an IPv6 address, or any
	// other that nothing attributes, never.
	routed := mac("52:54:00:00:05:03")
	enrolled(t, c, routed, "")
	for _, from := range []string{"10.7.0.9", "fe80::5054:ff:fe00:503", "2001:db8::9"} {
		if p, _ := c.Plan(ctx, routed, boot.ArchX86_64, netip.MustParseAddr(from)); secretOf(p) != "" {
			t.Errorf("an unattributable request from %s got the secret", from)
		}
	}
	c.Config.RoutedNetworks = []netip.Prefix{netip.MustParsePrefix("10.7.0.0/16")}
	p, err := c.Plan(ctx, routed, boot.ArchX86_64, netip.MustParseAddr("10.7.0.9"))
	if err != nil || secretOf(p) == "" {
		t.Errorf("routed node from a routed network: %q, %v", p.Cmdline, err)
	}
	c.NeighborAddrs = func(hw net.HardwareAddr) []netip.Addr {
		if hw.String() == routed.String() {
			return []netip.Addr{netip.MustParseAddr("10.0.0.70")}
		}
		return nil
	}
	if p, _ := c.Plan(ctx, routed, boot.ArchX86_64, netip.MustParseAddr("10.7.0.9")); secretOf(p) != "" {
		t.Error("a node whose neighbour entry says 10.0.0.70 gave its secret to 10.7.0.9")
	}
}

// A boot request, forged or not, changes nothing of a node's work: its
// agent keeps its token and its task keeps running.
func TestPlanChangesNothing(t *testing.T) {
	ctx := context.Background()
	c := newCore(t)
	st := db(c)
	m := mac("52:54:00:00:00:42")
	n := enrolled(t, c, m, "10.0.0.42")
	if _, _, err := (&lifecycle.Machine{Store: st}).Do(ctx, n.ID, lifecycle.Inspect, lifecycle.Params{}, "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.ClaimTask(ctx, n.ID, time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateToken(ctx, store.Token{Hash: "h", Kind: "agent", NodeID: n.ID}); err != nil {
		t.Fatal(err)
	}
	for _, from := range []string{"10.0.0.42", "10.0.0.66"} {
		if _, err := c.Plan(ctx, m, boot.ArchX86_64, netip.MustParseAddr(from)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.TokenByHash(ctx, "h"); err != nil {
		t.Errorf("a boot request revoked the agent's token: %v", err)
	}
	running, _ := st.Tasks(ctx, store.TaskFilter{NodeID: n.ID, State: store.TaskRunning})
	if len(running) != 1 {
		t.Errorf("running tasks after boot requests: %+v", running)
	}
	if n, _ := st.Node(ctx, n.ID); n.State != store.StateInspecting {
		t.Errorf("node %s after boot requests", n.State)
	}
}

// A boot request does not enroll: a firmware DHCP exchange does, or with
// DHCP off a request from the address the neighbour table gives the MAC.
func TestPlanUnknownMAC(t *testing.T) {
	ctx := context.Background()
	c := newCore(t)
	m := mac("52:54:00:00:06:01")
	from := netip.MustParseAddr("10.0.0.61")
	if _, err := c.Plan(ctx, m, boot.ArchX86_64, from); !errors.Is(err, boot.ErrUnknownNode) {
		t.Fatalf("plan for an unknown MAC: %v", err)
	}
	c.Config.EnrollOnBoot = true
	c.Neighbors = func(a netip.Addr) net.HardwareAddr {
		if a == from {
			return m
		}
		return mac("52:54:00:00:06:99")
	}
	if _, err := c.Plan(ctx, m, boot.ArchX86_64, netip.MustParseAddr("10.0.0.62")); !errors.Is(err, boot.ErrUnknownNode) {
		t.Fatalf("DHCP off, asked for from another machine's address: %v", err)
	}
	if nodes, _ := db(c).Nodes(ctx); len(nodes) != 0 {
		t.Fatalf("boot requests enrolled %d nodes", len(nodes))
	}
	p, err := c.Plan(ctx, m, boot.ArchX86_64, from)
	if err != nil || p.Node == "" || secretOf(p) == "" {
		t.Fatalf("DHCP off, the MAC's own address: %+v %v", p, err)
	}
}

func TestRecord(t *testing.T) {
	ctx := context.Background()
	c := newCore(t)
	m := mac("52:54:00:00:04:01")
	o, _ := c.BootOffer(ctx, boot.Client{MAC: m, Arch: boot.ClientX64UEFI})
	ip := netip.MustParseAddr("10.0.0.50")
	sub := netip.MustParsePrefix("10.0.0.0/24")
	if _, err := db(c).Bind(ctx, sub, m, ip, "", time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	c.Record(ctx, boot.Event{Proto: "tftp", Kind: "file", IP: ip, File: "ipxe/snponly.efi", Complete: true})
	c.Record(ctx, boot.Event{Proto: "tftp", Kind: "file", IP: netip.MustParseAddr("10.0.0.99"), File: "stranger"})
	neighbor := netip.MustParseAddr("10.0.0.77")
	c.Neighbors = func(a netip.Addr) net.HardwareAddr {
		if a == neighbor {
			return m
		}
		return nil
	}
	c.Record(ctx, boot.Event{Proto: "http", Kind: "file", IP: neighbor, File: "/boot.ipxe"})
	tr, err := db(c).Trace(ctx, o.Node, 0)
	if err != nil || len(tr) != 2 || tr[0].File != "ipxe/snponly.efi" || tr[0].MAC.String() != m.String() || tr[1].File != "/boot.ipxe" {
		t.Errorf("trace = %+v, %v", tr, err)
	}
}

// TestRecordBatch checks that a batch of events is kept whole, each
// client address looked up once, and that an event of a node deleted
// meanwhile costs only itself.
func TestRecordBatch(t *testing.T) {
	ctx := context.Background()
	c := newCore(t)
	m, gone := mac("52:54:00:00:04:02"), mac("52:54:00:00:04:03")
	o, _ := c.BootOffer(ctx, boot.Client{MAC: m, Arch: boot.ClientX64UEFI})
	og, _ := c.BootOffer(ctx, boot.Client{MAC: gone, Arch: boot.ClientX64UEFI})
	ip := netip.MustParseAddr("10.0.0.60")
	asked := map[netip.Addr]int{}
	c.Neighbors = func(a netip.Addr) net.HardwareAddr {
		asked[a]++
		if a == ip {
			return m
		}
		return nil
	}
	var es []boot.Event
	for i := range 50 {
		es = append(es, boot.Event{Proto: "http", Kind: "file", IP: ip, File: fmt.Sprint("/f", i)})
		es = append(es, boot.Event{Proto: "http", Kind: "file", IP: netip.MustParseAddr("10.0.0.61"), File: "stranger"})
	}
	es = append(es, boot.Event{Proto: "tftp", Kind: "file", MAC: gone, File: "late"})
	c.RecordBatch(ctx, es)
	tr, err := db(c).Trace(ctx, o.Node, 0)
	if err != nil || len(tr) != 50 || tr[0].File != "/f0" || tr[49].File != "/f49" || tr[0].MAC.String() != m.String() {
		t.Fatalf("trace = %d events, %v", len(tr), err)
	}
	if asked[ip] != 1 || asked[netip.MustParseAddr("10.0.0.61")] != 1 {
		t.Errorf("neighbour table asked %v, want once per address", asked)
	}
	if tr, _ := db(c).Trace(ctx, og.Node, 0); len(tr) != 1 {
		t.Fatalf("the second node's trace has %d events, want 1", len(tr))
	}
	// The second node goes between the lookup and the write: the
	// first node's events are kept all the same.
	st := db(c)
	c.Store = deleteFirst{Store: st, id: og.Node}
	c.RecordBatch(ctx, []boot.Event{{Proto: "http", Kind: "file", MAC: m, File: "/again"},
		{Proto: "tftp", Kind: "file", MAC: gone, File: "/gone"}, {Proto: "tftp", Kind: "file", IP: ip, File: "/again2"}})
	if tr, _ := st.Trace(ctx, o.Node, 0); len(tr) != 52 || tr[51].File != "/again2" {
		t.Fatalf("after a delete: %d events, want 52", len(tr))
	}
	if _, err := st.Node(ctx, og.Node); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the deleted node: %v", err)
	}
}

// deleteFirst deletes a node just before the batch is written.
type deleteFirst struct {
	store.Store
	id string
}

func (d deleteFirst) AddTraces(ctx context.Context, es []store.TraceEvent) error {
	if err := d.DeleteNode(ctx, d.id); err != nil {
		return err
	}
	return d.Store.AddTraces(ctx, es)
}

func TestParseARP(t *testing.T) {
	table := `IP address       HW type     Flags       HW address            Mask     Device
10.0.0.5         0x1         0x2         52:54:00:aa:bb:cc     *        br0
10.0.0.6         0x1         0x0         00:00:00:00:00:00     *        br0
`
	if got := parseARP(table, netip.MustParseAddr("10.0.0.5")); got.String() != "52:54:00:aa:bb:cc" {
		t.Errorf("complete entry: %v", got)
	}
	if got := parseARP(table, netip.MustParseAddr("10.0.0.6")); got != nil {
		t.Errorf("incomplete entry gave %v", got)
	}
	if got := parseARP(table, netip.MustParseAddr("10.0.0.7")); got != nil {
		t.Errorf("absent entry gave %v", got)
	}
}

// enroll: known boots only the MACs that are nodes already.
func TestEnrollKnownOnly(t *testing.T) {
	ctx := context.Background()
	c := newCore(t)
	c.Config.EnrollKnownOnly = true
	m := mac("52:54:00:00:07:01")
	if _, err := c.BootOffer(ctx, boot.Client{MAC: m, Arch: boot.ClientX64UEFI}); !errors.Is(err, boot.ErrUnknownNode) {
		t.Fatalf("offer to a stranger: %v", err)
	}
	if nodes, _ := db(c).Nodes(ctx); len(nodes) != 0 || c.Known(ctx, m) {
		t.Fatalf("a stranger was enrolled: %d nodes", len(nodes))
	}
	// Admitted beforehand (rackboot node add), it boots.
	if _, _, err := db(c).EnrollClient(ctx, boot.Client{MAC: m, Arch: 0xffff}, time.Now()); err != nil {
		t.Fatal(err)
	}
	if o, err := c.BootOffer(ctx, boot.Client{MAC: m, Arch: boot.ClientX64UEFI}); err != nil || o.File != "ipxe/snponly.efi" || !c.Known(ctx, m) {
		t.Errorf("offer to an added node: %+v %v", o, err)
	}
}

// TestIronicOwned boots a node Ironic owns nothing of rackboot's: no DHCP
// offer, no script or config.
func TestIronicOwned(t *testing.T) {
	ctx := context.Background()
	c := newCore(t)
	m := mac("52:54:00:00:0e:01")
	if _, err := c.BootOffer(ctx, boot.Client{MAC: m, Arch: boot.ClientX64UEFI}); err != nil {
		t.Fatal(err)
	}
	n, _ := c.Store.NodeByMAC(ctx, m)
	owner := store.OwnerIronic
	if _, err := c.Store.(store.Store).UpdateNode(ctx, n.ID, store.NodePatch{Owner: &owner}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.BootOffer(ctx, boot.Client{MAC: m, Arch: boot.ClientX64UEFI}); !errors.Is(err, boot.ErrOtherOwner) {
		t.Errorf("offer to an Ironic node: %v", err)
	}
	if _, err := c.Plan(ctx, m, boot.ArchX86_64, netip.Addr{}); !errors.Is(err, boot.ErrOtherOwner) {
		t.Errorf("plan of an Ironic node: %v", err)
	}
	if !c.OwnedByIronic(ctx, m) || c.OwnedByIronic(ctx, mac("52:54:00:00:0e:02")) {
		t.Error("OwnedByIronic: wrong for the Ironic node or for a MAC of no node")
	}
	// With Ironic's conductor answers configured (dhcp_provider = none),
	// the node gets those, and rackboot's own nodes still get rackboot's.
	c.Ironic = ironicBooter{File: "snponly.efi", NextServer: netip.MustParseAddr("10.0.0.9")}
	o, err := c.BootOffer(ctx, boot.Client{MAC: m, Arch: boot.ClientX64UEFI})
	if err != nil || o.File != "snponly.efi" || o.NextServer != netip.MustParseAddr("10.0.0.9") || o.Node != n.ID {
		t.Errorf("offer to an Ironic node with conductor answers: %+v, %v", o, err)
	}
	if o, err := c.BootOffer(ctx, boot.Client{MAC: mac("52:54:00:00:0e:03"), Arch: boot.ClientX64UEFI}); err != nil || o.NextServer.IsValid() || o.File == "snponly.efi" {
		t.Errorf("rackboot's own node got %+v, %v", o, err)
	}
	if _, err := c.Plan(ctx, m, boot.ArchX86_64, netip.Addr{}); !errors.Is(err, boot.ErrOtherOwner) {
		t.Errorf("plan of an Ironic node with conductor answers: %v", err)
	}
}

type ironicBooter boot.Offer

func (b ironicBooter) Offer(boot.Client) (boot.Offer, bool) { return boot.Offer(b), true }
