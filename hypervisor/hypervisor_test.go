package hypervisor_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/hypervisor"
	"github.com/rackboot/rackboot/hypervisor/placement"
	"github.com/rackboot/rackboot/hypervisor/virttest"
	"github.com/rackboot/rackboot/store"
	"github.com/rackboot/rackboot/store/sqlite"
)

var (
	x86 = []boot.Arch{boot.ArchX86_64}
	arm = []boot.Arch{boot.ArchAArch64}
)

type rig struct {
	st  store.Store
	svc *hypervisor.Service
	d   *virttest.Daemon
}

func newRig(t *testing.T, d *virttest.Daemon) *rig {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "rackboot.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return &rig{st: st, svc: &hypervisor.Service{Store: st, Dial: d.Dial, Logger: quiet}, d: d}
}

// node enrolls a node named name with the recorded inventory tree (""
// for none).
func (r *rig) node(t *testing.T, i int, name, tree string) store.Node {
	t.Helper()
	ctx := context.Background()
	n, _, err := r.st.EnrollClient(ctx, boot.Client{MAC: net.HardwareAddr{0x52, 0x54, 0, 0xcc, 0, byte(i)}, Arch: boot.ClientX64UEFI}, testTime)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.st.UpdateNode(ctx, n.ID, store.NodePatch{Name: &name}); err != nil {
		t.Fatal(err)
	}
	if tree != "" {
		inv, err := os.ReadFile(filepath.Join("..", "agent", "inventory", "testdata", tree+".json"))
		if err != nil {
			t.Fatal(err)
		}
		if err := r.st.SetInventory(ctx, n.ID, inv, nil); err != nil {
			t.Fatal(err)
		}
	}
	n, err = r.st.Node(ctx, n.ID)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func (r *rig) flavor(t *testing.T, f store.Flavor) {
	t.Helper()
	if _, err := r.svc.CreateFlavor(context.Background(), f); err != nil {
		t.Fatal(err)
	}
}

func TestSetHypervisor(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, virttest.New(x86, arm))
	r.node(t, 1, "bare", "")
	r.node(t, 2, "a100-01", "a100x4")
	r.node(t, 3, "t4-01", "t4")
	for _, tc := range []struct {
		name, ref string
		set       hypervisor.Settings
		want      error
		msg       string
	}{
		{"no inventory", "bare", hypervisor.Settings{URI: "qemu+tcp://h/system", Bridge: "br0"}, hypervisor.ErrInvalid, "inspect it first"},
		{"no node", "nope", hypervisor.Settings{URI: "qemu+tcp://h/system"}, store.ErrNotFound, ""},
		{"layout over the slices", "a100-01", hypervisor.Settings{URI: "u", GPUMode: "mig", GPUProfile: "3g.20gb,3g.20gb,2g.10gb", Bridge: "br0"}, hypervisor.ErrInvalid, "MIG layout"},
		{"profile the card lacks", "a100-01", hypervisor.Settings{URI: "u", GPUMode: "mig", GPUProfile: "3g.40gb", Bridge: "br0"}, hypervisor.ErrInvalid, "3g.40gb"},
		{"mig on a T4", "t4-01", hypervisor.Settings{URI: "u", GPUMode: "mig", GPUProfile: "1g.5gb", Bridge: "br0"}, hypervisor.ErrInvalid, "MIG"},
		{"vgpu without a type", "t4-01", hypervisor.Settings{URI: "u", GPUMode: "vgpu", Bridge: "br0"}, hypervisor.ErrInvalid, "vgpu needs a type"},
		{"unknown mode", "t4-01", hypervisor.Settings{URI: "u", GPUMode: "sriov", Bridge: "br0"}, hypervisor.ErrInvalid, "unknown GPU mode"},
		{"bad bridge", "t4-01", hypervisor.Settings{URI: "u", Bridge: "br0; reboot"}, hypervisor.ErrInvalid, "bridge"},
		{"bad pool", "t4-01", hypervisor.Settings{URI: "u", Bridge: "br0", Pool: "../etc"}, hypervisor.ErrInvalid, "pool"},
		{"bad arch", "t4-01", hypervisor.Settings{URI: "u", Bridge: "br0", Emulated: []boot.Arch{"riscv64"}}, hypervisor.ErrInvalid, "riscv64"},
		{"bad vlan", "t4-01", hypervisor.Settings{URI: "u", Bridge: "br0", VLAN: 4095}, hypervisor.ErrInvalid, "VLAN 4095"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := r.svc.SetHypervisor(ctx, tc.ref, tc.set, "user:test")
			if !errors.Is(err, tc.want) || !strings.Contains(fmt.Sprint(err), tc.msg) {
				t.Fatalf("got %v, want %v with %q", err, tc.want, tc.msg)
			}
		})
	}
	if hs, _ := r.st.Hypervisors(ctx); len(hs) != 0 {
		t.Fatalf("refused settings stored: %+v", hs)
	}

	h, err := r.svc.SetHypervisor(ctx, "a100-01", hypervisor.Settings{URI: "qemu+tls://a100-01/system", GPUMode: "mig", GPUProfile: "3g.20gb, 2g.10gb,1g.5gb,1g.5gb", Bridge: "br0", Emulated: arm}, "user:test")
	if err != nil {
		t.Fatal(err)
	}
	if h.GPUProfile != "3g.20gb,2g.10gb,1g.5gb,1g.5gb" || !slices.Equal(h.Native, x86) || !slices.Equal(h.Emulated, arm) || h.Pool != "default" {
		t.Errorf("stored %+v", h)
	}

	// A daemon without KVM runs the host's own architecture only where
	// the operator allows TCG.
	noKVM := newRig(t, virttest.New(nil, []boot.Arch{boot.ArchX86_64, boot.ArchAArch64}))
	noKVM.node(t, 1, "lab-01", "t4")
	if _, err := noKVM.svc.SetHypervisor(ctx, "lab-01", hypervisor.Settings{URI: "u", Bridge: "br0"}, "user:test"); !errors.Is(err, hypervisor.ErrInvalid) || !strings.Contains(err.Error(), "no KVM") {
		t.Errorf("no KVM, nothing emulated: %v", err)
	}
	if _, err := noKVM.svc.SetHypervisor(ctx, "lab-01", hypervisor.Settings{URI: "u", Bridge: "br0", Emulated: x86}, "user:test"); err != nil {
		t.Errorf("no KVM, x86_64 emulated: %v", err)
	}
	// An architecture the daemon cannot run at all is refused.
	r2 := newRig(t, virttest.New(x86, nil))
	r2.node(t, 1, "t4-01", "t4")
	if _, err := r2.svc.SetHypervisor(ctx, "t4-01", hypervisor.Settings{URI: "u", Bridge: "br0", Emulated: arm}, "user:test"); !errors.Is(err, hypervisor.ErrInvalid) || !strings.Contains(err.Error(), "runs no aarch64") {
		t.Errorf("aarch64 on a daemon without it: %v", err)
	}
	r2.d.Unreachable = true
	if _, err := r2.svc.SetHypervisor(ctx, "t4-01", hypervisor.Settings{URI: "u", Bridge: "br0"}, "user:test"); !errors.Is(err, hypervisor.ErrHypervisor) {
		t.Errorf("unreachable daemon: %v", err)
	}
}

func TestMIGVMs(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, virttest.New(x86, arm))
	r.node(t, 1, "a100-01", "a100x4")
	if _, err := r.svc.SetHypervisor(ctx, "a100-01", hypervisor.Settings{URI: "u", GPUMode: "mig", GPUProfile: "3g.20gb,3g.20gb", Bridge: "br0"}, "user:test"); err != nil {
		t.Fatal(err)
	}
	r.flavor(t, store.Flavor{Name: "g1.mig3", VCPUs: 8, MemoryMiB: 32768, DiskGiB: 20, Arch: boot.ArchX86_64, GPUModel: "A100", GPUMode: "mig", GPUProfile: "3g.20gb"})

	// A dry run says where and writes nothing.
	p, err := r.svc.Plan(ctx, hypervisor.VMRequest{Name: "vm-0", Flavor: "g1.mig3"})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.d.Calls()) != 1 { // the capabilities of SetHypervisor
		t.Errorf("a dry run called the daemon: %v", r.d.Calls())
	}
	if !strings.Contains(p.XML, "type='mdev'") && !strings.Contains(p.XML, `type="mdev"`) {
		t.Errorf("dry run XML has no mdev:\n%s", p.XML)
	}
	if vs, _ := r.st.VMs(ctx, ""); len(vs) != 0 {
		t.Fatal("a dry run stored a VM")
	}

	// Four cards of two partitions each: eight VMs fit, the ninth is refused.
	seen := map[string]bool{}
	for i := 0; i < 8; i++ {
		p, err := r.svc.CreateVM(ctx, hypervisor.VMRequest{Name: fmt.Sprintf("vm-%d", i), Flavor: "g1.mig3"}, "user:test")
		if err != nil {
			t.Fatalf("vm %d: %v", i, err)
		}
		if len(p.VM.Devices) != 1 || p.VM.Devices[0].Kind != "mig" || p.VM.Devices[0].Mdev == "" {
			t.Fatalf("vm %d devices %+v", i, p.VM.Devices)
		}
		k := fmt.Sprint(p.VM.Devices[0].GPU, "/", p.VM.Devices[0].Slot)
		if seen[k] {
			t.Fatalf("partition %s given twice", k)
		}
		seen[k] = true
		dom, ok := r.d.Domain(p.Name)
		if !ok || dom.State != "running" || !strings.Contains(dom.XML, p.VM.Devices[0].Mdev) || !strings.Contains(dom.XML, p.VM.MAC) {
			t.Fatalf("vm %d domain %+v", i, dom)
		}
		n, err := r.st.Node(ctx, p.Name)
		if err != nil || n.Kind != "vm" || n.MACs[0] != p.VM.MAC {
			t.Fatalf("vm %d node %+v %v", i, n, err)
		}
	}
	_, err = r.svc.CreateVM(ctx, hypervisor.VMRequest{Name: "vm-8", Flavor: "g1.mig3"}, "user:test")
	var refusal *placement.Refusal
	if !errors.As(err, &refusal) {
		t.Fatalf("ninth MIG VM: %v", err)
	}
	t.Logf("refusal: %v", err)
	if _, err := r.st.Node(ctx, "vm-8"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the refused VM's node: %v", err)
	}
	u, err := r.svc.Usage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if u.Total.Partitions != 8 || u.Total.PartitionsFree != 0 || u.Total.VMs != 8 {
		t.Errorf("usage %+v", u.Total)
	}

	// Deleting one frees its partition for the next.
	if err := r.svc.DeleteVM(ctx, "vm-3", "user:test"); err != nil {
		t.Fatal(err)
	}
	if _, ok := r.d.Domain("vm-3"); ok || slices.ContainsFunc(r.d.Volumes(), func(v string) bool { return strings.HasPrefix(v, "default/vm-3-") }) {
		t.Errorf("vm-3 still on the hypervisor: %v", r.d.Volumes())
	}
	if _, err := r.svc.CreateVM(ctx, hypervisor.VMRequest{Name: "vm-8", Flavor: "g1.mig3"}, "user:test"); err != nil {
		t.Fatalf("vm-8 after a delete: %v", err)
	}
	// A mode change while VMs hold partitions is refused.
	if _, err := r.svc.SetHypervisor(ctx, "a100-01", hypervisor.Settings{URI: "u", GPUMode: "passthrough", Bridge: "br0"}, "user:test"); !errors.Is(err, store.ErrConflict) {
		t.Errorf("mode change under VMs: %v", err)
	}
}

func TestCreateVMFailsWhole(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, virttest.New(x86, nil))
	r.node(t, 1, "t4-01", "t4")
	if _, err := r.svc.SetHypervisor(ctx, "t4-01", hypervisor.Settings{URI: "u", Bridge: "br0"}, "user:test"); err != nil {
		t.Fatal(err)
	}
	shape := store.Flavor{VCPUs: 2, MemoryMiB: 2048, DiskGiB: 10, Arch: boot.ArchX86_64}
	for _, op := range []string{"create-volume", "define", "start"} {
		r.d.Fail(op, errors.New("libvirt said no"))
		_, err := r.svc.CreateVM(ctx, hypervisor.VMRequest{Name: "vm-1", Shape: shape}, "user:test")
		if !errors.Is(err, hypervisor.ErrHypervisor) {
			t.Errorf("%s failing: %v", op, err)
		}
		r.d.Fail(op, nil)
		if vs, _ := r.st.VMs(ctx, ""); len(vs) != 0 {
			t.Errorf("%s failing: VM kept: %+v", op, vs)
		}
		if _, err := r.st.Node(ctx, "vm-1"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s failing: node kept: %v", op, err)
		}
		if v := r.d.Volumes(); len(v) != 0 {
			t.Errorf("%s failing: volumes left: %v", op, v)
		}
		if _, ok := r.d.Domain("vm-1"); ok {
			t.Errorf("%s failing: domain left", op)
		}
	}
	// libvirtd that fails to load its own schema is asked again, twice;
	// any other refusal of the define is its answer.
	defines := func() int {
		n := 0
		for _, c := range r.d.Calls() {
			if c == "define vm-1" {
				n++
			}
		}
		return n
	}
	for _, tc := range []struct {
		err  string
		want int
	}{
		{"internal error: Unable to parse RNG /usr/share/libvirt/schemas/domain.rng: Error type 'unsignedInt' is not exported by type library", 3},
		{"XML error: invalid memory", 1},
	} {
		before := defines()
		r.d.Fail("define", errors.New(tc.err))
		if _, err := r.svc.CreateVM(ctx, hypervisor.VMRequest{Name: "vm-1", Shape: shape}, "user:test"); !errors.Is(err, hypervisor.ErrHypervisor) {
			t.Errorf("define failing with %q: %v", tc.err, err)
		}
		r.d.Fail("define", nil)
		if got := defines() - before; got != tc.want {
			t.Errorf("define failing with %q: tried %d times, want %d", tc.err, got, tc.want)
		}
	}
	// A domain of the same name that is not rackboot's: the define fails,
	// and that domain keeps running.
	conn, _ := r.d.Dial(ctx, "u")
	if err := conn.Define(ctx, "<domain><name>theirs</name></domain>"); err != nil {
		t.Fatal(err)
	}
	conn.Start(ctx, "theirs")
	r.d.Fail("define", errors.New("domain 'theirs' already exists with uuid 1234"))
	if _, err := r.svc.CreateVM(ctx, hypervisor.VMRequest{Name: "theirs", Shape: shape}, "user:test"); !errors.Is(err, hypervisor.ErrHypervisor) {
		t.Errorf("create over a foreign domain: %v", err)
	}
	r.d.Fail("define", nil)
	if dom, ok := r.d.Domain("theirs"); !ok || dom.State != "running" {
		t.Errorf("the foreign domain after a failed create: %+v %v", dom, ok)
	}
	if v := r.d.Volumes(); len(v) != 0 {
		t.Errorf("volumes left: %v", v)
	}
	// Bad requests are refused before anything is done.
	for _, tc := range []struct {
		req  hypervisor.VMRequest
		want string
	}{
		{hypervisor.VMRequest{Name: "VM_1", Shape: shape}, "DNS label"},
		{hypervisor.VMRequest{Name: "../x", Shape: shape}, "DNS label"},
		{hypervisor.VMRequest{Name: "t4-01", Shape: shape}, "already named"},
		{hypervisor.VMRequest{Name: "vm-1", Shape: store.Flavor{VCPUs: 0, MemoryMiB: 2048, DiskGiB: 1, Arch: boot.ArchX86_64}}, "vCPUs"},
		{hypervisor.VMRequest{Name: "vm-1", Shape: store.Flavor{VCPUs: 1, MemoryMiB: 2048, DiskGiB: 1, Arch: "ppc64"}}, "architecture"},
		{hypervisor.VMRequest{Name: "vm-1", Flavor: "nope"}, "not found"},
		{hypervisor.VMRequest{Name: "vm-1", Shape: store.Flavor{VCPUs: 1, MemoryMiB: 2048, DiskGiB: 1, Arch: boot.ArchX86_64, GPUMode: "mig", GPUProfile: "1g.5gb", GPUCount: 2}}, "one mig device"},
		{hypervisor.VMRequest{Name: "vm-1", Shape: store.Flavor{VCPUs: 1, MemoryMiB: 2048, DiskGiB: 1, Arch: boot.ArchAArch64}}, "no host runs aarch64"},
	} {
		if _, err := r.svc.CreateVM(ctx, tc.req, "user:test"); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.req, err, tc.want)
		}
	}

	// A hypervisor that cannot be reached keeps its VM on delete.
	if _, err := r.svc.CreateVM(ctx, hypervisor.VMRequest{Name: "vm-2", Shape: shape}, "user:test"); err != nil {
		t.Fatal(err)
	}
	r.d.Unreachable = true
	if err := r.svc.DeleteVM(ctx, "vm-2", "user:test"); !errors.Is(err, hypervisor.ErrHypervisor) {
		t.Errorf("delete on an unreachable hypervisor: %v", err)
	}
	if _, err := r.st.Node(ctx, "vm-2"); err != nil {
		t.Errorf("vm-2 forgotten while its hypervisor is away: %v", err)
	}
	r.d.Unreachable = false
	// A guest that powers itself off while it is deleted: the destroy
	// fails, the domain is off, and the delete goes on.
	r.d.Fail("destroy", errors.New("Requested operation is not valid: domain is not running"))
	if _, err := r.svc.CreateVM(ctx, hypervisor.VMRequest{Name: "vm-3", Shape: shape}, "user:test"); err != nil {
		t.Fatal(err)
	}
	r.d.Before("destroy", func() { r.d.PowerOff("vm-3") })
	if err := r.svc.DeleteVM(ctx, "vm-3", "user:test"); err != nil {
		t.Errorf("delete of a VM that powered off meanwhile: %v", err)
	}
	r.d.Fail("destroy", nil)
	r.d.Before("destroy", nil)
	// A domain already gone from the hypervisor is deleted all the same.
	if _, err := r.svc.Do(ctx, "vm-2", hypervisor.ActionPowerOff, "user:test"); err != nil {
		t.Fatal(err)
	}
	if err := r.svc.DeleteVM(ctx, "vm-2", "user:test"); err != nil {
		t.Fatal(err)
	}
	if err := r.svc.DeleteVM(ctx, "vm-2", "user:test"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("second delete: %v", err)
	}
}

func TestPassthroughTakesTheGroup(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, virttest.New(x86, nil))
	r.node(t, 1, "v100-01", "shared-iommu")
	if _, err := r.svc.SetHypervisor(ctx, "v100-01", hypervisor.Settings{URI: "u", GPUMode: "passthrough", Bridge: "br0"}, "user:test"); err != nil {
		t.Fatal(err)
	}
	r.flavor(t, store.Flavor{Name: "g1.v100", VCPUs: 4, MemoryMiB: 8192, DiskGiB: 20, Arch: boot.ArchX86_64, GPUModel: "V100", GPUMode: "passthrough", GPUCount: 1})
	p, err := r.svc.CreateVM(ctx, hypervisor.VMRequest{Name: "vm-1", Flavor: "g1.v100"}, "user:test")
	if err != nil {
		t.Fatal(err)
	}
	// The two V100s share an IOMMU group (behind one switch without
	// ACS): the VM gets both, and the switch's bridges stay on the host.
	dom, _ := r.d.Domain("vm-1")
	for _, addr := range []string{"0x1a", "0x1b"} {
		if !strings.Contains(dom.XML, "bus='"+addr+"'") && !strings.Contains(dom.XML, `bus="`+addr+`"`) {
			t.Errorf("domain lacks hostdev on bus %s:\n%s", addr, dom.XML)
		}
	}
	for _, bridge := range []string{"0x18", "0x19"} {
		if strings.Contains(dom.XML, "bus='"+bridge+"'") || strings.Contains(dom.XML, `bus="`+bridge+`"`) {
			t.Errorf("domain passes the bridge on bus %s through", bridge)
		}
	}
	if len(p.VM.Devices) != 2 {
		t.Errorf("devices %+v", p.VM.Devices)
	}
	// The group is taken, so a second V100 VM finds none.
	var refusal *placement.Refusal
	if _, err := r.svc.CreateVM(ctx, hypervisor.VMRequest{Name: "vm-2", Flavor: "g1.v100"}, "user:test"); !errors.As(err, &refusal) {
		t.Errorf("second V100 VM: %v", err)
	}
}

// TestTwoServers places the last partitions from two services on one
// database at once: each partition goes to one VM.
func TestTwoServers(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, virttest.New(x86, nil))
	r.node(t, 1, "a100-01", "a100x4")
	if _, err := r.svc.SetHypervisor(ctx, "a100-01", hypervisor.Settings{URI: "u", GPUMode: "mig", GPUProfile: "7g.40gb", Bridge: "br0"}, "user:test"); err != nil {
		t.Fatal(err)
	}
	r.flavor(t, store.Flavor{Name: "g1.full", VCPUs: 4, MemoryMiB: 8192, DiskGiB: 20, Arch: boot.ArchX86_64, GPUMode: "mig", GPUProfile: "7g.40gb"})
	other := &hypervisor.Service{Store: r.st, Dial: r.d.Dial, Logger: quiet}
	var wg sync.WaitGroup
	var mu sync.Mutex
	won, refused := 0, 0
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			svc := r.svc
			if i%2 == 1 {
				svc = other
			}
			_, err := svc.CreateVM(ctx, hypervisor.VMRequest{Name: fmt.Sprintf("vm-%d", i), Flavor: "g1.full"}, "user:test")
			var refusal *placement.Refusal
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				won++
			case errors.As(err, &refusal) || errors.Is(err, placement.ErrConflict):
				refused++
			default:
				t.Errorf("vm-%d: %v", i, err)
			}
		}(i)
	}
	wg.Wait()
	if won != 4 || refused != 6 {
		t.Fatalf("won %d, refused %d: want 4 and 6", won, refused)
	}
	vms, _ := r.st.VMs(ctx, "")
	gpus := map[string]bool{}
	for _, vm := range vms {
		if gpus[vm.Devices[0].GPU] {
			t.Fatalf("GPU %s given twice", vm.Devices[0].GPU)
		}
		gpus[vm.Devices[0].GPU] = true
	}
}

func TestDrainAndActions(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, virttest.New(x86, nil))
	r.node(t, 1, "t4-01", "t4")
	set := hypervisor.Settings{URI: "u", Bridge: "br0"}
	if _, err := r.svc.SetHypervisor(ctx, "t4-01", set, "user:test"); err != nil {
		t.Fatal(err)
	}
	shape := store.Flavor{VCPUs: 2, MemoryMiB: 2048, DiskGiB: 10, Arch: boot.ArchX86_64}
	if _, err := r.svc.CreateVM(ctx, hypervisor.VMRequest{Name: "vm-1", Shape: shape}, "user:test"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ action, state string }{
		{hypervisor.ActionStop, hypervisor.StateShutoff},
		{hypervisor.ActionStart, "running"},
		{hypervisor.ActionReboot, "running"},
		{hypervisor.ActionPowerOff, hypervisor.StateShutoff},
	} {
		vm, err := r.svc.Do(ctx, "vm-1", tc.action, "user:test")
		if err != nil || vm.State != tc.state {
			t.Errorf("%s: %q %v", tc.action, vm.State, err)
		}
	}
	if _, err := r.svc.Do(ctx, "vm-1", "explode", "user:test"); !errors.Is(err, hypervisor.ErrInvalid) {
		t.Errorf("unknown action: %v", err)
	}
	set.Drained = true
	if _, err := r.svc.SetHypervisor(ctx, "t4-01", set, "user:test"); err != nil {
		t.Fatal(err)
	}
	_, err := r.svc.CreateVM(ctx, hypervisor.VMRequest{Name: "vm-2", Shape: shape}, "user:test")
	var refusal *placement.Refusal
	if !errors.As(err, &refusal) || !strings.Contains(err.Error(), "drain") {
		t.Errorf("VM on a drained hypervisor: %v", err)
	}
	vms, err := r.svc.VMs(ctx, "t4-01")
	if err != nil || len(vms) != 1 || vms[0].Node.Name != "vm-1" {
		t.Errorf("the drained host's VMs to move: %+v %v", vms, err)
	}
	if err := r.svc.RemoveHypervisor(ctx, "t4-01", "user:test"); !errors.Is(err, store.ErrConflict) {
		t.Errorf("remove a hypervisor with a VM: %v", err)
	}
}

// TestVLAN tags a hypervisor's VM ports: the domain's NIC is an Open
// vSwitch port with the tag.
func TestVLAN(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, virttest.New(x86, nil))
	r.node(t, 1, "t4-01", "t4")
	if _, err := r.svc.SetHypervisor(ctx, "t4-01", hypervisor.Settings{URI: "u", Bridge: "ovsbr0", VLAN: 120}, "user:test"); err != nil {
		t.Fatal(err)
	}
	p, err := r.svc.CreateVM(ctx, hypervisor.VMRequest{Name: "vm-1", Shape: store.Flavor{VCPUs: 1, MemoryMiB: 1024, DiskGiB: 5, Arch: boot.ArchX86_64}}, "user:test")
	if err != nil {
		t.Fatal(err)
	}
	dom, _ := r.d.Domain("vm-1")
	for _, want := range []string{`<virtualport type="openvswitch">`, `<tag id="120">`, `<source bridge="ovsbr0">`} {
		if !strings.Contains(dom.XML, want) {
			t.Errorf("domain lacks %s:\n%s", want, p.XML)
		}
	}
}
