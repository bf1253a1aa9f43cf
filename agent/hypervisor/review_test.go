package hypervisor

import (
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/rackboot/rackboot/agent/gpuconf/gpufake"
	"github.com/rackboot/rackboot/agent/protocol"
)

func hostMdevs(t *testing.T, r *rig) []string {
	t.Helper()
	ms, err := r.k.Mdevs(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, m := range ms {
		ids = append(ids, m.UUID)
	}
	slices.Sort(ids)
	return ids
}

// TestMdevsNotMine: an mdev the agent did not make and no answer listed
// stays; the agent's own go, also after it restarted.
func TestMdevsNotMine(t *testing.T) {
	r := vgpuHost(t)
	const (
		hand = "0a0a0a0a-1b1b-4c2c-8d3d-4e4e4e4e4e4e" // an operator's
		idA  = "11111111-2222-4333-8444-555555555555"
		idB  = "66666666-7777-4888-9999-aaaaaaaaaaaa"
	)
	r.tr.Write(gpufake.TypeDir(t4, "nvidia-222")+"/create", hand)
	r.tr.KernelCreate(t4, "nvidia-222")
	a := r.agent()
	w := protocol.HypervisorWork{GPUMode: "vgpu", Devices: []protocol.HypervisorDevice{
		{VM: "vm-a", Kind: "vgpu", GPU: a100, Profile: "nvidia-472", Mdev: idA},
		{VM: "vm-b", Kind: "vgpu", GPU: t4, Profile: "nvidia-233", Mdev: idB},
	}}
	r.round(a, w)
	if d := cmp.Diff([]string{hand, idA, idB}, hostMdevs(t, r)); d != "" {
		t.Fatalf("mdevs (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]string{idA, idB}, r.saved().Mdevs); d != "" {
		t.Errorf("state file's mdevs (-want +got):\n%s", d)
	}

	w.Devices = w.Devices[1:]
	_, calls := r.round(a, w)
	if strings.Contains(calls, "RemoveMdev "+hand) {
		t.Errorf("removed the operator's mdev:\n%s", calls)
	}
	if d := cmp.Diff([]string{hand, idB}, hostMdevs(t, r)); d != "" {
		t.Errorf("mdevs (-want +got):\n%s", d)
	}

	// Restarted, the agent still knows vm-b's mdev for its own.
	a = r.agent()
	w.Devices = nil
	r.round(a, w)
	if d := cmp.Diff([]string{hand}, hostMdevs(t, r)); d != "" {
		t.Errorf("after a restart, mdevs (-want +got):\n%s", d)
	}
	if got := r.saved().Mdevs; len(got) != 0 {
		t.Errorf("state file's mdevs %v, want none", got)
	}
	if errs := a.LastErrors(); len(errs) > 0 {
		t.Errorf("errors %v", errs)
	}
}

// l40Host is two L40S for passthrough with NVIDIA's driver installed:
// l40a bound to nvidia, l40b to vfio-pci in IOMMU group 42.
func l40Host(t *testing.T) *rig {
	table := map[string]map[string]gpufake.Reply{"host": {
		smiQuery:                   {File: "l40/query.txt"},
		"nvidia-smi -L":            {File: "l40/list.txt"},
		"nvidia-smi -r -i " + l40a: {File: "l40/reset.txt"},
	}}
	r := newRig(t, table, "host")
	for _, g := range []string{l40a, l40b} {
		r.tr.PCI(g, "10de", "26b9", "030200")
		r.tr.Write(gpufake.DevDir(g)+"/reset", "")
	}
	r.tr.Bind(l40a, "nvidia")
	r.tr.Bind(l40b, "vfio-pci")
	r.tr.IOMMUGroup(l40b, 42)
	return r
}

func pt(vm, gpu string) protocol.HypervisorDevice {
	return protocol.HypervisorDevice{VM: vm, Kind: "passthrough", GPU: gpu}
}

// TestPassthroughResetByDriver: a GPU given back to nvidia is reset by
// nvidia-smi -r, one on vfio-pci by the kernel once no process holds its
// group; until then the reset is owed, also across a restart.
func TestPassthroughResetByDriver(t *testing.T) {
	r := l40Host(t)
	a := r.agent()
	w := protocol.HypervisorWork{GPUMode: "passthrough", Devices: []protocol.HypervisorDevice{pt("vm-a", l40a), pt("vm-b", l40b)}}
	r.round(a, w)
	if d := cmp.Diff(map[string]string{l40a: "vm-a", l40b: "vm-b"}, r.saved().Passthrough); d != "" {
		t.Errorf("state file's passthrough (-want +got):\n%s", d)
	}

	// Both VMs end; vm-b's QEMU has not closed the group yet.
	r.tr.OpenFD(4242, "qemu-system-x86", 31, "/dev/vfio/42")
	w.Devices = nil
	reps, calls := r.round(a, w)
	if !strings.Contains(calls, "nvidia-smi -r -i "+l40a) {
		t.Errorf("%s on nvidia not reset by nvidia-smi -r:\n%s", l40a, calls)
	}
	if got := r.tr.Read(gpufake.DevDir(l40a) + "/reset"); got != "" {
		t.Errorf("%s on nvidia got a sysfs reset (%q)", l40a, got)
	}
	if got := r.tr.Read(gpufake.DevDir(l40b) + "/reset"); got != "" {
		t.Errorf("%s reset while pid 4242 holds it", l40b)
	}
	wantErr := "GPU " + l40b + " was given back, but (retried next round): reset " + l40b + ": /dev/vfio/42 is in use by pid 4242 (qemu-system-x86)"
	if errs := reps[len(reps)-1].Errors; !slices.Contains(errs, wantErr) {
		t.Errorf("errors %q, want %q", errs, wantErr)
	}
	if got := r.saved().Owed; !slices.Equal(got, []string{l40b}) {
		t.Errorf("resets owed %v", got)
	}

	// Still held on the next round, by an agent restarted meanwhile.
	a = r.agent()
	r.round(a, w)
	if got := r.tr.Read(gpufake.DevDir(l40b) + "/reset"); got != "" {
		t.Errorf("%s reset while pid 4242 holds it", l40b)
	}
	r.tr.Exit(4242)
	r.round(a, w)
	if got := r.tr.Read(gpufake.DevDir(l40b) + "/reset"); got != "1" {
		t.Errorf("%s reset holds %q once free", l40b, got)
	}
	if d := cmp.Diff(map[string]int{l40a: 1, l40b: 1}, r.k.Resets); d != "" {
		t.Errorf("resets (-want +got):\n%s", d)
	}
	if st := r.saved(); len(st.Owed) > 0 || len(st.Passthrough) > 0 {
		t.Errorf("state file %+v", st)
	}
	if errs := a.LastErrors(); len(errs) > 0 {
		t.Errorf("errors %v", errs)
	}
}

// TestPassthroughHandedOn: a GPU that goes from one VM to another
// between two answers is not reset (libvirt's managed attach did), nor
// is one owed a reset that a new VM took meanwhile.
func TestPassthroughHandedOn(t *testing.T) {
	r := l40Host(t)
	a := r.agent()
	w := protocol.HypervisorWork{GPUMode: "passthrough", Devices: []protocol.HypervisorDevice{pt("vm-a", l40a), pt("vm-b", l40b)}}
	r.round(a, w)
	w.Devices = []protocol.HypervisorDevice{pt("vm-c", l40a), pt("vm-b", l40b)}
	_, calls := r.round(a, w)
	if strings.Contains(calls, "ResetGPU") {
		t.Errorf("reset a GPU handed to another VM:\n%s", calls)
	}

	// vm-b ends, its group still open: owed. Then vm-d takes it.
	r.tr.OpenFD(4242, "qemu-system-x86", 31, "/dev/vfio/42")
	w.Devices = w.Devices[:1]
	r.round(a, w)
	if got := r.saved().Owed; !slices.Equal(got, []string{l40b}) {
		t.Fatalf("resets owed %v", got)
	}
	r.tr.Exit(4242)
	w.Devices = append(w.Devices, pt("vm-d", l40b))
	_, calls = r.round(a, w)
	if strings.Contains(calls, "ResetGPU") {
		t.Errorf("reset a GPU a new VM holds:\n%s", calls)
	}
	if st := r.saved(); len(st.Owed) > 0 || st.Passthrough[l40b] != "vm-d" {
		t.Errorf("state file %+v", st)
	}
	if len(r.k.Resets) > 0 {
		t.Errorf("resets %v", r.k.Resets)
	}
}

// TestOldStateFile: the list an older agent kept still gets its GPUs
// reset once free.
func TestOldStateFile(t *testing.T) {
	r := l40Host(t)
	r.tr.Write("state.json", `{"held": ["`+l40a+`", "`+l40b+`"]}`+"\n")
	r.state = r.tr.Root + "/state.json"
	a := r.agent()
	r.round(a, protocol.HypervisorWork{GPUMode: "passthrough", Devices: []protocol.HypervisorDevice{pt("vm-b", l40b)}})
	if d := cmp.Diff(map[string]int{l40a: 1}, r.k.Resets); d != "" {
		t.Errorf("resets (-want +got):\n%s", d)
	}
	if st := r.saved(); st.Held != nil || !cmp.Equal(st.Passthrough, map[string]string{l40b: "vm-b"}) {
		t.Errorf("state file %+v", st)
	}
}

// TestCorruptStateFile: a state file that does not parse is moved aside
// and reported once; the agent goes on, and resets again.
func TestCorruptStateFile(t *testing.T) {
	r := l40Host(t)
	r.tr.Write("state.json", `{"held": [`)
	r.state = r.tr.Root + "/state.json"
	a := r.agent()
	w := protocol.HypervisorWork{GPUMode: "passthrough", Devices: []protocol.HypervisorDevice{pt("vm-a", l40a)}}
	// The state is read before the first report, which carries the
	// error; the round called in again (the state made a change), and
	// that report does not.
	reps, _ := r.round(a, w)
	if len(reps) != 2 {
		t.Fatalf("%d reports, want 2", len(reps))
	}
	if len(reps[1].Errors) != 0 {
		t.Errorf("second report's errors %q", reps[1].Errors)
	}
	errs := reps[0].Errors
	if len(errs) != 1 || !strings.Contains(errs[0], "state file "+r.state+" is corrupt") || !strings.Contains(errs[0], "moved to "+r.state+".corrupt") {
		t.Fatalf("errors %q", errs)
	}
	if got := r.tr.Read("state.json.corrupt"); got != `{"held": [` {
		t.Errorf("moved aside: %q", got)
	}
	if st := r.saved(); st.Passthrough[l40a] != "vm-a" {
		t.Errorf("state file %+v", st)
	}
	if e := a.LastErrors(); len(e) > 0 {
		t.Errorf("reported again: %q", e)
	}
	reps, _ = r.round(a, w)
	if len(reps) != 1 || len(reps[0].Errors) > 0 {
		t.Errorf("the next report: %+v", reps)
	}
	w.Devices = nil
	r.round(a, w)
	if d := cmp.Diff(map[string]int{l40a: 1}, r.k.Resets); d != "" {
		t.Errorf("resets (-want +got):\n%s", d)
	}
}

// TestBootID: the boot time moving (NTP stepped the clock) is no reboot;
// a new boot id is.
func TestBootID(t *testing.T) {
	r := h100Host(t)
	a := r.agent()
	reps, _ := r.round(a, mig3g2)
	if want := strings.TrimSpace(r.tr.Read("proc/sys/kernel/random/boot_id")); reps[0].BootID != want {
		t.Errorf("boot id %q, want %q", reps[0].BootID, want)
	}
	r.boot = r.boot.Add(37 * time.Second)
	reps, calls := r.round(a, mig3g2)
	if len(reps) != 1 || reps[0].Applied != "mig 3g.40gb,3g.40gb" || !reps[0].Booted.Equal(r.boot) || strings.Contains(calls, "ApplyMIG") {
		t.Errorf("boot time moved, applied again: %+v\n%s", reps, calls)
	}
	r.s.State = "on"
	r.reboot()
	reps, calls = r.round(a, mig3g2)
	if len(reps) != 2 || reps[0].Applied != "" || !strings.Contains(calls, "ApplyMIG") {
		t.Errorf("new boot id, not applied again: %+v\n%s", reps, calls)
	}
}

// TestModeChangeMIG: from mig to passthrough, MIG goes off the cards,
// also for an agent restarted in between; not while the answer still
// lists MIG devices.
func TestModeChangeMIG(t *testing.T) {
	r := h100Host(t)
	r.s.Table["layout"]["nvidia-smi mig -i 0 -dci"] = gpufake.Reply{File: "h100/dci.txt", Next: "layout-gis"}
	r.s.Table["layout-gis"] = map[string]gpufake.Reply{"nvidia-smi mig -i 0 -dgi": {File: "h100/dgi.txt", Next: "on"}}
	r.s.Table["on"]["nvidia-smi -i 0 -mig 0"] = gpufake.Reply{File: "h100/mig0.txt", Next: "off"}
	r.round(r.agent(), mig3g2)
	if got := r.saved().GPUMode; got != "mig" {
		t.Errorf("state file's mode %q", got)
	}

	a := r.agent()
	w := protocol.HypervisorWork{GPUMode: "passthrough", Devices: []protocol.HypervisorDevice{
		{VM: "vm-a", Kind: "mig", GPU: h100, Profile: "3g.40gb", Mdev: "3f9c2a1e-7b4d-4e8f-9a6c-1d2e3f4a5b6c"},
	}}
	// EnsureMdev still runs for vm-a (its virtual functions come up);
	// only the undo is held back.
	r.s.Table["layout"]["/usr/lib/nvidia/sriov-manage -d "+h100] = gpufake.Reply{Do: func() { r.tr.RemoveVFs(h100) }}
	_, calls := r.round(a, w)
	if strings.Contains(calls, "DisableMIG") || strings.Contains(calls, "-dci") {
		t.Errorf("undid MIG while vm-a holds a MIG device:\n%s", calls)
	}
	wantErr := `GPU mode mig to "passthrough": VM vm-a still holds a mig device on ` + h100 + `; the cards stay as mig left them`
	if errs := a.LastErrors(); !slices.Contains(errs, wantErr) {
		t.Errorf("errors %q, want %q", errs, wantErr)
	}

	w.Devices = nil
	reps, calls := r.round(a, w)
	golden(t, "mig-passthrough.calls", calls)
	if r.s.State != "off" {
		t.Errorf("host left in state %s", r.s.State)
	}
	if last := reps[len(reps)-1]; last.Applied != "passthrough" || len(last.Errors) > 0 {
		t.Errorf("last report %+v", last)
	}
	if got := r.saved().GPUMode; got != "passthrough" {
		t.Errorf("state file's mode %q", got)
	}
}

// TestModeChangeVGPU: from vgpu to no mode, the agent's mdevs go and the
// virtual functions with them.
func TestModeChangeVGPU(t *testing.T) {
	r := vgpuHost(t)
	r.s.Table["host"]["/usr/lib/nvidia/sriov-manage -d "+a100] = gpufake.Reply{Do: func() { r.tr.RemoveVFs(a100) }}
	a := r.agent()
	const (
		idA = "11111111-2222-4333-8444-555555555555"
		idB = "66666666-7777-4888-9999-aaaaaaaaaaaa"
	)
	r.round(a, protocol.HypervisorWork{GPUMode: "vgpu", Devices: []protocol.HypervisorDevice{
		{VM: "vm-a", Kind: "vgpu", GPU: a100, Profile: "nvidia-472", Mdev: idA},
		{VM: "vm-b", Kind: "vgpu", GPU: t4, Profile: "nvidia-233", Mdev: idB},
	}})
	reps, calls := r.round(a, protocol.HypervisorWork{GPUMode: ""})
	golden(t, "vgpu-off.calls", calls)
	if ids := hostMdevs(t, r); len(ids) > 0 {
		t.Errorf("mdevs left %v", ids)
	}
	ps, err := r.k.Host.Parents(t.Context(), t4)
	if err != nil || !slices.Equal(ps, []string{t4}) {
		t.Errorf("t4 parents %v %v", ps, err)
	}
	if _, err := os.Lstat(r.tr.Root + "/" + gpufake.DevDir(a100) + "/virtfn0"); err == nil {
		t.Errorf("%s keeps its virtual functions", a100)
	}
	if last := reps[len(reps)-1]; len(last.Errors) > 0 {
		t.Errorf("last report %+v", last)
	}
	if got := r.saved().GPUMode; got != "" {
		t.Errorf("state file's mode %q", got)
	}
}
