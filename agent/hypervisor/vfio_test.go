package hypervisor

import (
	"encoding/json"
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
	if d := cmp.Diff(map[string]int{l40sVFs[0]: 1155, l40sVFs[1]: 0, l40sVFs[2]: 0}, reportVFs(t, reps[1])); d != "" {
		t.Errorf("VFs reported (-want +got):\n%s", d)
	}
	if got := r.saved().VFs; !cmp.Equal(got, l40sVFs[:1]) {
		t.Errorf("state file VFs %v", got)
	}
}
