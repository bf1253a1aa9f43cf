package appliance

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/ironic/baremetal"
	"github.com/rackboot/rackboot/ironic/dnsmasq"
	"github.com/rackboot/rackboot/ironic/roots"
	"github.com/rackboot/rackboot/store"
	"github.com/rackboot/rackboot/store/sqlite"
)

// TestEnrollIronic: Ironic's MACs become nodes owned by Ironic; a node
// rackboot drives is handed over only when the config claims it.
func TestEnrollIronic(t *testing.T) {
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	mine, _ := net.ParseMAC("52:54:00:00:00:01")
	newMAC, _ := net.ParseMAC("52:54:00:00:00:02")
	busy, _, err := st.EnrollClient(ctx, boot.Client{MAC: mine, Arch: boot.ClientX64UEFI}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := st.SetState(ctx, busy.ID, store.StateDeploying); err != nil {
		t.Fatal(err)
	}
	idleMAC, _ := net.ParseMAC("52:54:00:00:00:03")
	if _, _, err := st.EnrollClient(ctx, boot.Client{MAC: idleMAC, Arch: boot.ClientX64UEFI}, time.Now()); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	owner := func(mac net.HardwareAddr) string {
		n, err := st.NodeByMAC(ctx, mac)
		if err != nil {
			return err.Error()
		}
		return n.Owner
	}
	// From Ironic's hosts files: the new MAC and the idle node are
	// Ironic's, the node rackboot is deploying stays rackboot's.
	seen := map[string]bool{}
	enrollIronic(ctx, st, []net.HardwareAddr{mine, newMAC, idleMAC}, seen, log)
	if owner(newMAC) != store.OwnerIronic || owner(mine) != store.OwnerRackboot || owner(idleMAC) != store.OwnerIronic {
		t.Errorf("from hosts files: new %s, busy %s, idle %s", owner(newMAC), owner(mine), owner(idleMAC))
	}
	n, _ := st.NodeByMAC(ctx, newMAC)
	if n.Arch != boot.ArchUnknown {
		t.Errorf("a node enrolled from a MAC alone has arch %q, want unknown", n.Arch)
	}
	if seen[mine.String()] || !seen[newMAC.String()] || !seen[idleMAC.String()] {
		t.Errorf("seen %v: want the busy node asked again", seen)
	}
	// Still busy, listed again (a restart): still rackboot's; once idle,
	// Ironic's.
	enrollIronic(ctx, st, []net.HardwareAddr{mine}, map[string]bool{}, log)
	if owner(mine) != store.OwnerRackboot {
		t.Errorf("busy, listed again: %s", owner(mine))
	}
	st.SetState(ctx, busy.ID, store.StateAvailable)
	enrollIronic(ctx, st, []net.HardwareAddr{mine}, seen, log)
	if owner(mine) != store.OwnerIronic {
		t.Errorf("idle, listed: %s", owner(mine))
	}
	nodes, _ := st.Nodes(ctx)
	if len(nodes) != 3 {
		t.Errorf("%d nodes, want 3", len(nodes))
	}
}

// TestIronicExternOwner: Ironic's files answer for the MACs they list
// unless rackboot owns the node: a node taken back from Ironic boots
// rackboot's way whatever line Ironic left behind.
func TestIronicExternOwner(t *testing.T) {
	dir := t.TempDir()
	hosts, opts := filepath.Join(dir, "hosts"), filepath.Join(dir, "opts")
	os.MkdirAll(hosts, 0o755)
	os.MkdirAll(opts, 0o755)
	os.WriteFile(filepath.Join(hosts, "ironic-52:54:00:00:00:01.conf"), []byte("52:54:00:00:00:01,set:n1,set:ironic\n"), 0o644)
	os.WriteFile(filepath.Join(hosts, "ironic-52:54:00:00:00:02.conf"), []byte("52:54:00:00:00:02,ignore\n"), 0o644)
	os.WriteFile(filepath.Join(opts, "ironic-n1.conf"), []byte("tag:n1,67,snponly.efi\n"), 0o644)
	d := &dnsmasq.Dir{HostsDirs: []string{hosts}, OptsDirs: []string{opts}}
	if err := d.Load(); err != nil {
		t.Fatal(err)
	}
	rackboots := map[string]bool{}
	e := ironicExtern{d: d, rackbootOwns: func(_ context.Context, mac net.HardwareAddr) bool { return rackboots[mac.String()] }}
	m1, _ := net.ParseMAC("52:54:00:00:00:01")
	m2, _ := net.ParseMAC("52:54:00:00:00:02")
	m3, _ := net.ParseMAC("52:54:00:00:00:03")
	ctx := context.Background()
	if r, ok := e.ExternBoot(ctx, m1, false); !ok || len(r.Options) != 1 || string(r.Options[0].Value) != "snponly.efi" {
		t.Errorf("Ironic's node: %+v %v", r, ok)
	}
	if r, ok := e.ExternBoot(ctx, m2, false); !ok || !r.Ignore {
		t.Errorf("an ignored host: %+v %v", r, ok)
	}
	if _, ok := e.ExternBoot(ctx, m3, false); ok {
		t.Error("a MAC Ironic does not list was answered from its files")
	}
	rackboots[m1.String()], rackboots[m2.String()] = true, true
	for _, m := range []net.HardwareAddr{m1, m2} {
		if r, ok := e.ExternBoot(ctx, m, false); ok {
			t.Errorf("a node rackboot owns (%s) got Ironic's answer %+v", m, r)
		}
	}
}

type fakeLister struct {
	nodes []baremetal.Node
	ports []baremetal.Port
	err   error
}

func (f fakeLister) Nodes(context.Context) ([]baremetal.Node, error) { return f.nodes, f.err }
func (f fakeLister) Ports(context.Context) ([]baremetal.Port, error) { return f.ports, f.err }

// TestReadIronic: each port's MAC is assigned the root of its node's
// conductor group, else of its conductor, with the node's boot interface.
func TestReadIronic(t *testing.T) {
	set, err := roots.New([]roots.Root{{Name: "c1", HTTPRoot: "/h1"}, {Name: "g2", HTTPRoot: "/h2"}, {Name: "cond-3", HTTPRoot: "/h3"},
		{Name: "c4", HTTPRoot: "/h4", ConductorGroups: []string{"Rack-4"}}, {Name: "c5", HTTPRoot: "/h5", Conductors: []string{"ironic-5.example"}}})
	if err != nil {
		t.Fatal(err)
	}
	l := fakeLister{
		nodes: []baremetal.Node{
			{UUID: "n1", ConductorGroup: "g2", Conductor: "c1", BootInterface: "ipxe"},
			{UUID: "n2", Conductor: "cond-3", BootInterface: "pxe"},
			{UUID: "n3", ConductorGroup: "elsewhere"},
			{UUID: "n4", ConductorGroup: "rack-4", Conductor: "ironic-5.example"},
			{UUID: "n5", Conductor: "ironic-5.example"},
		},
		ports: []baremetal.Port{
			{Address: "52:54:00:00:00:01", NodeUUID: "n1"},
			{Address: "52:54:00:00:00:02", NodeUUID: "n2"},
			{Address: "52:54:00:00:00:03", NodeUUID: "n3"},
			{Address: "52:54:00:00:00:04", NodeUUID: "made-since"},
			{Address: "52:54:00:00:00:05", NodeUUID: "n4"},
			{Address: "52:54:00:00:00:06", NodeUUID: "n5"},
			{Address: "not a mac", NodeUUID: "n1"},
		},
	}
	macs, assign, err := readIronic(context.Background(), l, set)
	if err != nil {
		t.Fatal(err)
	}
	if len(macs) != 5 {
		t.Errorf("macs %v", macs)
	}
	want := map[string]roots.Assignment{
		"52:54:00:00:00:01": {Root: "g2", BootInterface: "ipxe"},
		"52:54:00:00:00:02": {Root: "cond-3", BootInterface: "pxe"},
		"52:54:00:00:00:03": {},
		"52:54:00:00:00:05": {Root: "c4"},
		"52:54:00:00:00:06": {Root: "c5"},
	}
	for mac, a := range want {
		if assign[mac] != a {
			t.Errorf("%s: %+v, want %+v", mac, assign[mac], a)
		}
	}
	if _, _, err := readIronic(context.Background(), fakeLister{err: errors.New("down")}, set); err == nil {
		t.Error("a failing Ironic read as nothing")
	}
}
