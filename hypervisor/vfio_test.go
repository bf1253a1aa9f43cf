package hypervisor_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rackboot/rackboot/agent/gpuconf"
	"github.com/rackboot/rackboot/agent/protocol"
	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/hypervisor"
	"github.com/rackboot/rackboot/hypervisor/virttest"
	"github.com/rackboot/rackboot/store"
)

// report is what an H100 host's agent says when its first card offers
// vGPU through the vendor VFIO framework, on two virtual functions whose
// types are given, and its second card offers it as mdevs.
func report(t *testing.T, types ...int) json.RawMessage {
	t.Helper()
	g := gpuconf.GPUState{PCIAddress: "0000:19:00.0", VGPU: gpuconf.VGPUVFIO}
	for i, vf := range []string{"0000:19:00.5", "0000:19:00.4"} { // listed out of order
		g.VFs = append(g.VFs, gpuconf.VF{Address: vf, Index: 1 - i, Type: types[1-i]})
	}
	st := gpuconf.State{GPUs: []gpuconf.GPUState{g, {PCIAddress: "0000:9b:00.0", VGPU: gpuconf.VGPUMdev}}}
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestVendorVFIOVMs: on a card whose agent reported vendor VFIO virtual
// functions, a vGPU VM is given one of them: its domain passes it through
// unmanaged, its start waits until the agent reports the function with
// the VM's type, and the agent is told to set it.
func TestVendorVFIOVMs(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, virttest.New(x86, arm))
	r.svc.DeviceWait = 500 * time.Millisecond
	n := r.node(t, 1, "h100-01", "h100")
	if _, err := r.svc.SetHypervisor(ctx, "h100-01", hypervisor.Settings{URI: "u", GPUMode: "vgpu", GPUProfile: "nvidia-1050", VGPUMax: 4, Bridge: "br0"}, "user:test"); err != nil {
		t.Fatal(err)
	}
	if err := r.st.PutHypervisorAgent(ctx, store.HypervisorAgent{NodeID: n.ID, Booted: testTime, Applied: "vgpu nvidia-1050", GPUs: report(t, 0, 0)}); err != nil {
		t.Fatal(err)
	}
	if got := hypervisor.VFs(report(t, 0, 0)); len(got) != 1 || len(got["0000:19:00.0"]) != 2 || got["0000:19:00.0"][0].Address != "0000:19:00.4" || got["0000:19:00.0"][1].Address != "0000:19:00.5" {
		t.Errorf("VFs = %v", got)
	}
	shape := store.Flavor{VCPUs: 4, MemoryMiB: 8192, DiskGiB: 10, Arch: boot.ArchX86_64, GPUModel: "H100", GPUMode: "vgpu", GPUProfile: "nvidia-1050"}

	p, err := r.svc.Plan(ctx, hypervisor.VMRequest{Name: "vm-0", Shape: shape})
	if err != nil {
		t.Fatal(err)
	}
	dev := p.VM.Devices[0]
	if dev.Device != "0000:19:00.4" || dev.GPU != "0000:19:00.0" || dev.Mdev != "" || hypervisor.VFOf(dev) != "0000:19:00.4" {
		t.Errorf("planned device %+v, want virtual function 0000:19:00.4 and no mdev", dev)
	}
	if !strings.Contains(p.XML, `managed="no"`) || !strings.Contains(p.XML, `bus="0x19" slot="0x00" function="0x4"`) || strings.Contains(p.XML, "mdev") {
		t.Errorf("dry run XML:\n%s", p.XML)
	}

	// The agent has not set the type: the start gives up, nothing is kept.
	if _, err := r.svc.CreateVM(ctx, hypervisor.VMRequest{Name: "vm-0", Shape: shape}, "user:test"); !errors.Is(err, hypervisor.ErrDevices) || !strings.Contains(err.Error(), "0000:19:00.4") {
		t.Fatalf("create before the type is set: %v", err)
	}
	if vs, _ := r.st.VMs(ctx, ""); len(vs) != 0 {
		t.Fatalf("a VM whose start failed is kept: %+v", vs)
	}

	// The agent reports the function with the type: the VM starts.
	done := reportOnceStored(t, r, n.ID, 1, 1050, 0)
	p, err = r.svc.CreateVM(ctx, hypervisor.VMRequest{Name: "vm-0", Shape: shape}, "user:test")
	if err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if dom, ok := r.d.Domain("vm-0"); !ok || dom.State != "running" || !strings.Contains(dom.XML, `managed="no"`) {
		t.Errorf("vm-0's domain %+v", dom)
	}
	w, err := r.svc.AgentRound(ctx, n.ID, protocol.HypervisorReport{Booted: testTime, Applied: "vgpu nvidia-1050", GPUs: report(t, 1050, 0)})
	if err != nil {
		t.Fatal(err)
	}
	want := protocol.HypervisorDevice{VM: p.VM.NodeID, Kind: "vgpu", GPU: "0000:19:00.0", Profile: "nvidia-1050", VF: "0000:19:00.4"}
	if len(w.Devices) != 1 || w.Devices[0] != want || time.Duration(w.Interval) != hypervisor.AgentInterval {
		t.Errorf("work %+v, want %+v at the usual interval", w, want)
	}

	// The second VM takes the other function, and the agent, not having
	// set it yet, is asked to call in soon.
	p1, err := r.svc.Plan(ctx, hypervisor.VMRequest{Name: "vm-1", Shape: shape})
	if err != nil {
		t.Fatal(err)
	}
	if got := hypervisor.VFOf(p1.VM.Devices[0]); got != "0000:19:00.5" {
		t.Errorf("vm-1 planned on %q, want 0000:19:00.5", got)
	}
	done = reportOnceStored(t, r, n.ID, 2, 1050, 1050)
	if _, err := r.svc.CreateVM(ctx, hypervisor.VMRequest{Name: "vm-1", Shape: shape}, "user:test"); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	w, err = r.svc.AgentRound(ctx, n.ID, protocol.HypervisorReport{Booted: testTime, GPUs: report(t, 1050, 0)})
	if err != nil {
		t.Fatal(err)
	}
	if len(w.Devices) != 2 || w.Devices[1].VF != "0000:19:00.5" || time.Duration(w.Interval) != hypervisor.AgentIntervalPending {
		t.Errorf("work %+v, want vm-1's function and the pending interval", w)
	}

	// Both functions of the first card are taken: the next vGPU goes to
	// the card whose vGPUs are mdevs, and gets one.
	shape.GPUModel = ""
	p2, err := r.svc.Plan(ctx, hypervisor.VMRequest{Name: "vm-2", Shape: shape})
	if err != nil {
		t.Fatal(err)
	}
	if d := p2.VM.Devices[0]; d.GPU != "0000:9b:00.0" || d.Mdev == "" || hypervisor.VFOf(d) != "" {
		t.Errorf("vm-2 planned %+v, want an mdev on 0000:9b:00.0", d)
	}
}

// reportOnceStored has the agent report the functions with types once
// the host holds n stored VMs, as the agent sets a type only for a VM it
// is told of: a function typed before any VM holds it is an operator's.
func reportOnceStored(t *testing.T, r *rig, host string, n int, types ...int) <-chan error {
	done := make(chan error, 1)
	go func() {
		ctx := context.Background()
		for {
			vs, err := r.st.VMs(ctx, host)
			if err == nil && len(vs) < n {
				time.Sleep(5 * time.Millisecond)
				continue
			}
			if err == nil {
				err = r.st.PutHypervisorAgent(ctx, store.HypervisorAgent{NodeID: host, Booted: testTime, Applied: "vgpu nvidia-1050", GPUs: report(t, types...)})
			}
			done <- err
			return
		}
	}()
	return done
}

// vfState is a report of the H100 host whose first card lists vfs (nil:
// the card's way of vGPU not said, as in the first report after a boot)
// and whose second offers mdevs.
func vfState(t *testing.T, vfs ...gpuconf.VF) json.RawMessage {
	t.Helper()
	g := gpuconf.GPUState{PCIAddress: "0000:19:00.0", VFs: vfs}
	if vfs != nil {
		g.VGPU = gpuconf.VGPUVFIO
	}
	b, err := json.Marshal(gpuconf.State{GPUs: []gpuconf.GPUState{g, {PCIAddress: "0000:9b:00.0", VGPU: gpuconf.VGPUMdev}}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestVendorVFIOReports: what the engine makes of reports that are not
// plain: a function an operator typed takes no VM; a host reporting
// functions that would put two VMs on one is refused alone, and the
// other hosts still take VMs; a report that, after a boot, does not list
// the functions yet keeps the card a vendor VFIO one.
func TestVendorVFIOReports(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, virttest.New(x86, arm))
	set := hypervisor.Settings{URI: "u", GPUMode: "vgpu", GPUProfile: "nvidia-1050", VGPUMax: 4, Bridge: "br0"}
	n1 := r.node(t, 1, "h100-01", "h100")
	n2 := r.node(t, 2, "h100-02", "h100")
	for _, name := range []string{"h100-01", "h100-02"} {
		if _, err := r.svc.SetHypervisor(ctx, name, set, "user:test"); err != nil {
			t.Fatal(err)
		}
	}
	put := func(n store.Node, gpus json.RawMessage) {
		t.Helper()
		if err := r.st.PutHypervisorAgent(ctx, store.HypervisorAgent{NodeID: n.ID, Booted: testTime, GPUs: gpus}); err != nil {
			t.Fatal(err)
		}
	}
	vf4, vf5 := gpuconf.VF{Address: "0000:19:00.4", Index: 0}, gpuconf.VF{Address: "0000:19:00.5", Index: 1}
	typed := vf4
	typed.Type = 1153
	put(n1, vfState(t, typed, vf5))
	put(n2, vfState(t, vf4, vf4))
	shape := store.Flavor{VCPUs: 4, MemoryMiB: 8192, DiskGiB: 10, Arch: boot.ArchX86_64, GPUModel: "H100", GPUMode: "vgpu", GPUProfile: "nvidia-1050"}

	p, err := r.svc.Plan(ctx, hypervisor.VMRequest{Name: "vm-0", Shape: shape})
	if err != nil {
		t.Fatalf("plan with one host's report broken: %v", err)
	}
	if p.Host.ID != n1.ID || hypervisor.VFOf(p.VM.Devices[0]) != "0000:19:00.5" {
		t.Errorf("planned on %s %+v, want h100-01's free function 0000:19:00.5, not the operator's .4", p.Host.Name, p.VM.Devices[0])
	}
	if _, err := r.svc.Plan(ctx, hypervisor.VMRequest{Name: "vm-0", Shape: shape, Hypervisor: "h100-02"}); err == nil || !strings.Contains(err.Error(), "listed twice") {
		t.Errorf("plan on the host listing a function twice: %v", err)
	}
	put(n2, vfState(t, gpuconf.VF{Address: "", Index: 0}))
	if _, err := r.svc.Plan(ctx, hypervisor.VMRequest{Name: "vm-0", Shape: shape, Hypervisor: "h100-02"}); err == nil || !strings.Contains(err.Error(), "no PCI address") {
		t.Errorf("plan on the host listing an empty function: %v", err)
	}
	put(n2, vfState(t, gpuconf.VF{Address: "0000:9b:00.0", Index: 0}))
	if _, err := r.svc.Plan(ctx, hypervisor.VMRequest{Name: "vm-0", Shape: shape, Hypervisor: "h100-02"}); err == nil || !strings.Contains(err.Error(), "is a GPU") {
		t.Errorf("plan on the host listing a GPU as a function: %v", err)
	}

	// A VM on .5; the host boots again and its first report lists no
	// functions: the VM still fits, and the card takes no mdev VM.
	done := reportOnceStored(t, r, n1.ID, 1, 1153, 1050)
	r.svc.DeviceWait = 2 * time.Second
	if _, err := r.svc.CreateVM(ctx, hypervisor.VMRequest{Name: "vm-0", Shape: shape, Hypervisor: "h100-01"}, "user:test"); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// The page counts the VM's function as rackboot's, the operator's not.
	if v, _, err := r.svc.Agent(ctx, n1.ID); err != nil || !slices.Equal(v.ForeignVFs, []string{"0000:19:00.4"}) {
		t.Errorf("foreign functions %v, %v; want the operator's 0000:19:00.4", v.ForeignVFs, err)
	}
	put(n1, vfState(t))
	p, err = r.svc.Plan(ctx, hypervisor.VMRequest{Name: "vm-1", Shape: shape, Hypervisor: "h100-01"})
	if err != nil {
		t.Fatalf("plan after a report without the functions: %v", err)
	}
	if d := p.VM.Devices[0]; d.GPU == "0000:19:00.0" {
		t.Errorf("planned %+v on the vendor VFIO card whose functions are not reported", d)
	}

	// A card whose agent says neither mdevs nor functions (its first
	// report after a boot, before the functions are enabled) takes no
	// vGPU: an mdev would be one such a driver cannot make.
	put(n2, vfState(t))
	p, err = r.svc.Plan(ctx, hypervisor.VMRequest{Name: "vm-1", Shape: shape, Hypervisor: "h100-02"})
	if err != nil {
		t.Fatal(err)
	}
	if d := p.VM.Devices[0]; d.GPU != "0000:9b:00.0" {
		t.Errorf("planned %+v, want the mdev card 0000:9b:00.0, not the card of unknown way", d)
	}
}

// typesFirst is a store where, the first time a VM is stored, an
// operator has just given a function a vGPU type: after the decision,
// before the transaction.
type typesFirst struct {
	hypervisor.Store
	once   bool
	report json.RawMessage
}

func (s *typesFirst) CreateVM(ctx context.Context, vm store.VM, name string, check store.PlaceCheck) (store.VM, error) {
	if !s.once {
		s.once = true
		if err := s.PutHypervisorAgent(ctx, store.HypervisorAgent{NodeID: vm.Hypervisor, Booted: testTime, GPUs: s.report}); err != nil {
			return store.VM{}, err
		}
	}
	return s.Store.CreateVM(ctx, vm, name, check)
}

// TestVendorVFIOTakenMeanwhile: the transaction checks the VM against the
// functions as the agent reports them then; one an operator took after
// the decision is refused there, and the VM is placed again on another.
func TestVendorVFIOTakenMeanwhile(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, virttest.New(x86, arm))
	n := r.node(t, 1, "h100-01", "h100")
	if _, err := r.svc.SetHypervisor(ctx, "h100-01", hypervisor.Settings{URI: "u", GPUMode: "vgpu", GPUProfile: "nvidia-1050", VGPUMax: 4, Bridge: "br0"}, "user:test"); err != nil {
		t.Fatal(err)
	}
	if err := r.st.PutHypervisorAgent(ctx, store.HypervisorAgent{NodeID: n.ID, Booted: testTime, GPUs: report(t, 0, 0)}); err != nil {
		t.Fatal(err)
	}
	var got string
	r.svc.Store = &typesFirst{Store: recordVF{Store: r.st, got: &got}, report: report(t, 1153, 0)}
	r.svc.DeviceWait = 300 * time.Millisecond
	shape := store.Flavor{VCPUs: 4, MemoryMiB: 8192, DiskGiB: 10, Arch: boot.ArchX86_64, GPUModel: "H100", GPUMode: "vgpu", GPUProfile: "nvidia-1050"}
	// The start waits for a type no agent sets here: what matters is
	// which function the stored VM was given.
	_, _ = r.svc.CreateVM(ctx, hypervisor.VMRequest{Name: "vm-0", Shape: shape}, "user:test")
	if got != "0000:19:00.5" {
		t.Errorf("stored on %q, want 0000:19:00.5: the operator took 0000:19:00.4 after the decision", got)
	}
}

// recordVF notes the function of the VM it stores.
type recordVF struct {
	hypervisor.Store
	got *string
}

func (s recordVF) CreateVM(ctx context.Context, vm store.VM, name string, check store.PlaceCheck) (store.VM, error) {
	out, err := s.Store.CreateVM(ctx, vm, name, check)
	if err == nil {
		*s.got = hypervisor.VFOf(out.Devices[0])
	}
	return out, err
}
