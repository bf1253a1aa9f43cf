package hypervisor

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/rackboot/rackboot/agent/gpuconf"
	"github.com/rackboot/rackboot/agent/gpuconf/gpufake"
	"github.com/rackboot/rackboot/agent/protocol"
)

const l40s = "0000:65:00.0"

var l40sVFs = []string{"0000:65:00.4", "0000:65:00.5", "0000:65:00.6"}

// vfioHost is an NVIDIA L40S whose vGPU manager offers vGPU through the
// vendor-specific VFIO framework: sriov-manage enables its virtual
// functions, each of which becomes one vGPU when given a type.
func vfioHost(t *testing.T) *rig {
	table := map[string]map[string]gpufake.Reply{
		"host": {
			smiQuery:        {File: "l40/query.txt"},
			"nvidia-smi -L": {File: "l40/list.txt"},
		},
	}
	r := newRig(t, table, "host")
	r.tr.Mkdir("proc")
	r.tr.PCI(l40s, "10de", "26b9", "030200")
	enable := func() {
		for i, vf := range l40sVFs {
			r.tr.PCI(vf, "10de", "26b9", "030200")
			r.tr.VF(l40s, vf, i)
			r.tr.IOMMUGroup(vf, 80+i)
			r.tr.VendorVF(vf, "1153", "NVIDIA L40S-4Q", "1155", "NVIDIA L40S-12Q")
		}
	}
	table["host"]["/usr/lib/nvidia/sriov-manage -e "+l40s] = gpufake.Reply{Do: enable}
	return r
}

// reportVFs is the virtual functions a report gives, with their types.
func reportVFs(t *testing.T, rep protocol.HypervisorReport) map[string]int {
	t.Helper()
	var st gpuconf.State
	if err := json.Unmarshal(rep.GPUs, &st); err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, g := range st.GPUs {
		if g.VGPU != gpuconf.VGPUVFIO {
			t.Errorf("card %s offers vGPU as %q, want %q", g.PCIAddress, g.VGPU, gpuconf.VGPUVFIO)
		}
		for _, v := range g.VFs {
			out[v.Address] = v.Type
		}
	}
	return out
}

// TestVendorVFIODevices: a VM's virtual function gets its type, the
// report right after shows it, and once no VM holds it it is freed; one
// the agent did not configure is left alone, and one a VM still holds is
// freed on a later round.
func TestVendorVFIODevices(t *testing.T) {
	r := vfioHost(t)
	a := r.agent()
	w := protocol.HypervisorWork{GPUMode: "vgpu", GPUProfile: "nvidia-1155", Devices: []protocol.HypervisorDevice{}}
	reps, calls := r.round(a, w)
	golden(t, "vfio-first.calls", calls)
	if len(reps) != 2 || reps[1].Applied != "vgpu nvidia-1155" {
		t.Fatalf("first round: %+v", reps)
	}
	if d := cmp.Diff(map[string]int{l40sVFs[0]: 0, l40sVFs[1]: 0, l40sVFs[2]: 0}, reportVFs(t, reps[1])); d != "" {
		t.Errorf("VFs reported (-want +got):\n%s", d)
	}
	// An operator's own vGPU on the third function: not rackboot's.
	r.tr.Write(gpufake.DevDir(l40sVFs[2])+"/nvidia/current_vgpu_type", "1153\n")

	w.Devices = []protocol.HypervisorDevice{
		{VM: "vm-a", Kind: "vgpu", GPU: l40s, Profile: "nvidia-1155", VF: l40sVFs[0]},
		{VM: "vm-b", Kind: "vgpu", GPU: l40s, Profile: "nvidia-1155", VF: l40sVFs[1]},
	}
	reps, calls = r.round(a, w)
	golden(t, "vfio-set.calls", calls)
	if len(reps) != 2 || len(reps[1].Errors) > 0 {
		t.Fatalf("set: %d reports, want 2; %+v", len(reps), reps)
	}
	if d := cmp.Diff(map[string]int{l40sVFs[0]: 1155, l40sVFs[1]: 1155, l40sVFs[2]: 1153}, reportVFs(t, reps[1])); d != "" {
		t.Errorf("VFs reported (-want +got):\n%s", d)
	}
	if got := r.saved().VFs; !cmp.Equal(got, l40sVFs[:2]) {
		t.Errorf("state file VFs %v", got)
	}

	// vm-a and vm-b go; vm-b's QEMU has not let go of its function yet.
	w.Devices = []protocol.HypervisorDevice{}
	r.tr.OpenFD(4242, "qemu-system-x86", 31, "/dev/vfio/81")
	reps, calls = r.round(a, w)
	golden(t, "vfio-free.calls", calls)
	if len(reps) != 2 {
		t.Fatalf("free: %d reports, want 2", len(reps))
	}
	if d := cmp.Diff(map[string]int{l40sVFs[0]: 0, l40sVFs[1]: 1155, l40sVFs[2]: 1153}, reportVFs(t, reps[1])); d != "" {
		t.Errorf("VFs reported (-want +got):\n%s", d)
	}
	if len(reps[1].Errors) != 1 || !strings.Contains(reps[1].Errors[0], "virtual function "+l40sVFs[1]+" is in no VM's devices, but: free vGPU on "+l40sVFs[1]+": it is in use") {
		t.Errorf("errors reported: %q", reps[1].Errors)
	}

	// QEMU ends: freed on the next round, the errors clear, and the
	// operator's function keeps its type.
	r.tr.Exit(4242)
	reps, _ = r.round(a, w)
	if len(reps) != 2 || len(reps[1].Errors) > 0 {
		t.Fatalf("reports %+v", reps)
	}
	if d := cmp.Diff(map[string]int{l40sVFs[0]: 0, l40sVFs[1]: 0, l40sVFs[2]: 1153}, reportVFs(t, reps[1])); d != "" {
		t.Errorf("VFs reported (-want +got):\n%s", d)
	}
	if got := r.saved().VFs; len(got) != 0 {
		t.Errorf("state file VFs %v, want none", got)
	}
}

// TestVendorVFIOReboot: a reboot takes the functions and their types; the
// agent enables them again and gives the VM's function its type back,
// and a function it configured before the reboot that no VM holds now
// needs nothing.
func TestVendorVFIOReboot(t *testing.T) {
	r := vfioHost(t)
	a := r.agent()
	w := protocol.HypervisorWork{GPUMode: "vgpu", GPUProfile: "nvidia-1155", Devices: []protocol.HypervisorDevice{
		{VM: "vm-a", Kind: "vgpu", GPU: l40s, Profile: "nvidia-1155", VF: l40sVFs[0]},
		{VM: "vm-b", Kind: "vgpu", GPU: l40s, Profile: "nvidia-1155", VF: l40sVFs[1]},
	}}
	r.round(a, w)
	r.reboot()
	r.tr.RemoveVFs(l40s)
	a = r.agent() // the service starts again with the host
	w.Devices = w.Devices[:1]
	reps, calls := r.round(a, w)
	golden(t, "vfio-reboot.calls", calls)
	if len(reps) != 2 || len(reps[1].Errors) > 0 {
		t.Fatalf("reports %+v", reps)
	}
	// The functions are enabled before the first report of the boot: a
	// report without them would show a card with no vendor VFIO vGPU.
	if d := cmp.Diff(map[string]int{l40sVFs[0]: 0, l40sVFs[1]: 0, l40sVFs[2]: 0}, reportVFs(t, reps[0])); d != "" {
		t.Errorf("first report's VFs (-want +got):\n%s", d)
	}
	if d := cmp.Diff(map[string]int{l40sVFs[0]: 1155, l40sVFs[1]: 0, l40sVFs[2]: 0}, reportVFs(t, reps[1])); d != "" {
		t.Errorf("VFs reported (-want +got):\n%s", d)
	}
	if got := r.saved().VFs; !cmp.Equal(got, l40sVFs[:1]) {
		t.Errorf("state file VFs %v", got)
	}
}

// TestVendorVFIONotOurs: a VM named on a function an operator gave a
// type, on the card itself, or on an address that is no function of the
// card is refused, and none of them becomes the agent's: when the VMs go
// nothing is freed and the operator's type stays. Entries an older agent
// saved for addresses that are no virtual function of an NVIDIA card are
// dropped, so a change of GPU mode goes through.
func TestVendorVFIONotOurs(t *testing.T) {
	r := vfioHost(t)
	a := r.agent()
	w := protocol.HypervisorWork{GPUMode: "vgpu", GPUProfile: "nvidia-1155", Devices: []protocol.HypervisorDevice{}}
	r.round(a, w)
	r.tr.Write(gpufake.DevDir(l40sVFs[0])+"/nvidia/current_vgpu_type", "1153\n")

	w.Devices = []protocol.HypervisorDevice{
		{VM: "vm-a", Kind: "vgpu", GPU: l40s, Profile: "nvidia-1155", VF: l40sVFs[0]},
		{VM: "vm-b", Kind: "vgpu", GPU: l40s, Profile: "nvidia-1155", VF: l40s},
		{VM: "vm-c", Kind: "vgpu", GPU: l40s, Profile: "nvidia-1155", VF: "0000:66:00.4"},
	}
	r.round(a, w)
	errs := strings.Join(a.LastErrors(), "\n")
	for _, want := range []string{"VM vm-a: ensure vGPU on " + l40sVFs[0] + " (vgpu nvidia-1155 on " + l40s + "): it carries vGPU type 1153",
		"VM vm-b: ensure vGPU on " + l40s, "VM vm-c: ensure vGPU on 0000:66:00.4"} {
		if !strings.Contains(errs, want) {
			t.Errorf("errors %q lack %q", errs, want)
		}
	}
	if got := r.saved().VFs; len(got) != 0 {
		t.Errorf("state file VFs %v, want none: the agent set no type", got)
	}

	w.Devices = []protocol.HypervisorDevice{}
	_, calls := r.round(a, w)
	if strings.Contains(calls, "FreeVF") {
		t.Errorf("freed a function it never set:\n%s", calls)
	}
	if got := strings.TrimSpace(r.tr.Read(gpufake.DevDir(l40sVFs[0]) + "/nvidia/current_vgpu_type")); got != "1153" {
		t.Errorf("operator's function carries %q, want 1153", got)
	}

	// An older agent recorded the card itself and a function of another
	// vendor's card: FreeVF can never free either.
	r.tr.PCI("0000:17:00.0", "8086", "1592", "020000")
	r.tr.PCI("0000:17:01.0", "8086", "1889", "020000")
	r.tr.VF("0000:17:00.0", "0000:17:01.0", 0)
	r.tr.Write("state.json", `{"gpu_mode": "vgpu", "vfs": ["`+l40s+`", "0000:17:01.0"]}`+"\n")
	r.state = r.tr.Root + "/state.json"
	a = r.agent()
	r.round(a, w)
	if got := r.saved().VFs; len(got) != 0 {
		t.Errorf("state file VFs %v, want the non-functions dropped", got)
	}
	r.s.Table["host"]["/usr/lib/nvidia/sriov-manage -d "+l40s] = gpufake.Reply{Do: func() { r.tr.RemoveVFs(l40s) }}
	r.tr.Write(gpufake.DevDir(l40sVFs[0])+"/nvidia/current_vgpu_type", "0\n")
	reps, calls := r.round(a, protocol.HypervisorWork{GPUMode: "passthrough", Devices: []protocol.HypervisorDevice{}})
	if errs := reps[len(reps)-1].Errors; len(errs) > 0 || !strings.Contains(calls, "sriov-manage -d") {
		t.Errorf("mode change: errors %q, calls:\n%s", errs, calls)
	}
}

// savedBeforeWrite reads the state file the moment EnsureVF is about to
// write a type.
type savedBeforeWrite struct {
	GPUs
	r    *rig
	seen [][]string
}

func (s *savedBeforeWrite) EnsureVF(ctx context.Context, req gpuconf.VFRequest) (gpuconf.VF, bool, error) {
	before := req.Before
	req.Before = func(ty gpuconf.VGPUType) error {
		if err := before(ty); err != nil {
			return err
		}
		s.seen = append(s.seen, s.r.saved().VFs)
		return nil
	}
	return s.GPUs.EnsureVF(ctx, req)
}

// TestVendorVFIORecordedFirst: the function is in the state file before
// its type is written, so an agent that dies in between still frees it;
// one that cannot be recorded is not written.
func TestVendorVFIORecordedFirst(t *testing.T) {
	r := vfioHost(t)
	a := r.agent()
	g := &savedBeforeWrite{GPUs: r.k, r: r}
	a.GPUs = g
	w := protocol.HypervisorWork{GPUMode: "vgpu", GPUProfile: "nvidia-1155", Devices: []protocol.HypervisorDevice{
		{VM: "vm-a", Kind: "vgpu", GPU: l40s, Profile: "nvidia-1155", VF: l40sVFs[0]},
	}}
	r.round(a, w)
	if d := cmp.Diff([][]string{{l40sVFs[0]}}, g.seen); d != "" {
		t.Errorf("state file at the write (-want +got):\n%s", d)
	}

	// A state file that cannot be written: nothing is written to the
	// function either.
	// (Its folder is a link to nowhere: it reads as no file yet, and
	// cannot be made.)
	if err := os.Symlink(r.tr.Root+"/nowhere/at/all", r.tr.Root+"/lib"); err != nil {
		t.Fatal(err)
	}
	r.state = r.tr.Root + "/lib/state.json"
	a = r.agent()
	w.Devices[0].VF = l40sVFs[1]
	r.round(a, w)
	if errs := strings.Join(a.LastErrors(), "\n"); !strings.Contains(errs, "record it before the write") {
		t.Errorf("errors %q", errs)
	}
	if got := strings.TrimSpace(r.tr.Read(gpufake.DevDir(l40sVFs[1]) + "/nvidia/current_vgpu_type")); got != "0" {
		t.Errorf("unrecorded function carries %q", got)
	}
}

// TestVendorVFIOMIGTypeUnlisted: once a MIG-backed type's last instance
// is taken the driver names it in no list; the agent still knows its
// function carries the VM's type (after a restart too), and the report
// names it, which is how the server sees the VM's device ready.
func TestVendorVFIOMIGTypeUnlisted(t *testing.T) {
	r := vfioHost(t)
	for _, vf := range l40sVFs {
		r.tr.Write(gpufake.DevDir(vf)+"/nvidia/current_vgpu_type", "0\n")
	}
	r.s.Table["host"]["/usr/lib/nvidia/sriov-manage -e "+l40s] = gpufake.Reply{Do: func() {
		for i, vf := range l40sVFs {
			r.tr.PCI(vf, "10de", "26b9", "030200")
			r.tr.VF(l40s, vf, i)
			r.tr.IOMMUGroup(vf, 80+i)
			r.tr.VendorVF(vf, "1081", "NVIDIA L40S-3-40C", "1082", "NVIDIA L40S-7-80C")
		}
	}}
	a := r.agent()
	w := protocol.HypervisorWork{GPUMode: "vgpu", GPUProfile: "nvidia-1081", Devices: []protocol.HypervisorDevice{
		{VM: "vm-a", Kind: "mig", GPU: l40s, Profile: "3g.40gb", VF: l40sVFs[0]},
	}}
	r.round(a, w)
	for _, vf := range l40sVFs {
		r.tr.Write(gpufake.DevDir(vf)+"/nvidia/creatable_vgpu_types", "ID    : vGPU Name\n1082  : NVIDIA L40S-7-80C\n")
	}
	check := func(a *Agent) {
		t.Helper()
		reps, _ := r.round(a, w)
		last := reps[len(reps)-1]
		if len(last.Errors) > 0 {
			t.Errorf("errors %q", last.Errors)
		}
		var st gpuconf.State
		if err := json.Unmarshal(last.GPUs, &st); err != nil {
			t.Fatal(err)
		}
		v := st.GPUs[0].VFs[0]
		if !gpuconf.Carries(v, "mig", "3g.40gb") {
			t.Errorf("reported %+v: does not carry 3g.40gb", v)
		}
	}
	check(a)
	check(r.agent()) // restarted: the names come from the state file
}
