package core

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rackboot/rackboot/boot"
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
		{"aarch64 http boot", boot.Client{Arch: boot.ClientARM64UEFIHTTP}, "http://10.0.0.1:8080/firmware/efi/aa64/", true},
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

func TestPlan(t *testing.T) {
	ctx := context.Background()
	c := newCore(t)
	m := mac("52:54:00:00:03:01")
	p, err := c.Plan(ctx, m, boot.ArchX86_64)
	if err != nil {
		t.Fatal(err)
	}
	if p.Action != boot.ActionNetboot || p.Kernel != "http://10.0.0.1:8080/artifacts/x86_64/vmlinuz" ||
		strings.Join(p.Initrds, " ") != "http://10.0.0.1:8080/artifacts/x86_64/initrd http://10.0.0.1:8080/artifacts/x86_64/initrd-b" {
		t.Errorf("plan = %+v", p)
	}
	for _, want := range []string{"console=ttyS0", "rackboot.node=" + p.Node, "rackboot.api=http://10.0.0.1:8080", "quiet"} {
		if !strings.Contains(p.Cmdline, want) {
			t.Errorf("cmdline %q lacks %q", p.Cmdline, want)
		}
	}
	if _, err := c.Plan(ctx, mac("52:54:00:00:03:02"), boot.ArchAArch64); err == nil || !strings.Contains(err.Error(), "no kernel for aarch64") {
		t.Errorf("plan without an aarch64 kernel: %v", err)
	}
	if err := db(c).SetState(ctx, p.Node, store.StateActive); err != nil {
		t.Fatal(err)
	}
	if p, err := c.Plan(ctx, m, boot.ArchX86_64); err != nil || p.Action != boot.ActionLocal {
		t.Errorf("active node: plan %+v, %v", p, err)
	}
	tr, _ := db(c).Trace(ctx, p.Node, 0)
	if len(tr) != 2 || tr[0].Proto != trace.ProtoCore || tr[0].Options[trace.OptKernel] == "" || tr[1].Options[trace.OptAction] != "local" {
		t.Errorf("plan events = %+v", tr)
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

// TestNewBootEndsTheOldAgent: a node that network-boots again has a new
// agent coming; the old one's token dies and its unfinished work fails.
func TestNewBootEndsTheOldAgent(t *testing.T) {
	c := newCore(t)
	st := db(c)
	ctx := context.Background()
	mac, _ := net.ParseMAC("52:54:00:00:00:42")
	p, err := c.Plan(ctx, mac, boot.ArchX86_64)
	if err != nil {
		t.Fatal(err)
	}
	m := &lifecycle.Machine{Store: st}
	c.Lifecycle = m
	if _, _, err := m.Do(ctx, p.Node, lifecycle.Inspect, lifecycle.Params{}, "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateTask(ctx, store.Task{NodeID: p.Node, Kind: "reboot"}); err != nil {
		t.Fatal(err)
	}
	// Both tasks handed out, so both running.
	for i := 0; i < 2; i++ {
		if _, err := st.ClaimTask(ctx, p.Node, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.CreateToken(ctx, store.Token{Hash: "h", Kind: "agent", NodeID: p.Node}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Plan(ctx, mac, boot.ArchX86_64); err != nil {
		t.Fatal(err)
	}
	if _, err := st.TokenByHash(ctx, "h"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("old agent token: %v, want gone", err)
	}
	tasks, _ := st.Tasks(ctx, store.TaskFilter{NodeID: p.Node})
	states := map[string]store.TaskState{}
	for _, tk := range tasks {
		states[tk.Kind] = tk.State
	}
	if states["inspect"] != store.TaskFailed || states["reboot"] != store.TaskDone {
		t.Errorf("tasks after the new boot: %v", states)
	}
	n, _ := st.Node(ctx, p.Node)
	if n.State != store.StateFailed || !strings.Contains(n.LastError, "inspect interrupted") {
		t.Errorf("node after its agent vanished: %s %q", n.State, n.LastError)
	}
}
