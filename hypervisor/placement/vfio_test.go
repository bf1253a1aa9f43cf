package placement

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/rackboot/rackboot/boot"
)

// vendorVFs gives every card of h n virtual functions, as a driver that
// offers vGPU through the vendor-specific VFIO framework lists them.
func vendorVFs(h Host, n int) Host {
	for i := range h.GPUs {
		g := &h.GPUs[i]
		for k := 0; k < n; k++ {
			g.VFs = append(g.VFs, fmt.Sprintf("%s.%d", g.Address[:len(g.Address)-2], 4+k))
		}
	}
	return h
}

// TestVendorVFIO: each vGPU VM gets a free virtual function of its card;
// a card holds no more vGPUs than it has functions, nor than its type's
// limit; a function given back is given again; an allocation naming
// another function than its slot's is refused.
func TestVendorVFIO(t *testing.T) {
	const l40s = "NVIDIA L40S"
	x := boot.ArchX86_64
	m := Mode{Kind: VGPU, VGPUType: "nvidia-1155", VGPUMax: 4}
	f := mustFleet(t, vendorVFs(gpus(x86("l40s-01", 64, 256), m, l40s, 0, 0), 3))
	var got []string
	for i := 0; i < 6; i++ {
		r := withGPU(vm(fmt.Sprintf("vm-%d", i), x, 2, 8), VGPU, "l40s", "nvidia-1155", 1)
		d, err := f.Place(r)
		if err != nil {
			t.Fatalf("place %s: %v", r.VM, err)
		}
		if err := f.Commit(d.Allocation); err != nil {
			t.Fatalf("commit %s: %v", r.VM, err)
		}
		dev := d.Devices[0]
		got = append(got, fmt.Sprintf("%s slot %d %s", dev.GPU, dev.Slot, dev.VF))
	}
	want := []string{
		"0000:41:00.0 slot 0 0000:41:00.4", "0000:41:00.0 slot 1 0000:41:00.5", "0000:41:00.0 slot 2 0000:41:00.6",
		"0000:42:00.0 slot 0 0000:42:00.4", "0000:42:00.0 slot 1 0000:42:00.5", "0000:42:00.0 slot 2 0000:42:00.6",
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("devices (-want +got):\n%s", d)
	}
	_, err := f.Place(withGPU(vm("vm-6", x, 2, 8), VGPU, "", "nvidia-1155", 1))
	var ref *Refusal
	if !errors.As(err, &ref) {
		t.Fatalf("a seventh vGPU on 6 functions: %v, want a refusal", err)
	}

	// vm-1 goes: its function is the one the next VM gets.
	if _, ok := f.Remove("vm-1"); !ok {
		t.Fatal("vm-1 not allocated")
	}
	d, err := f.Place(withGPU(vm("vm-7", x, 2, 8), VGPU, "", "nvidia-1155", 1))
	if err != nil {
		t.Fatal(err)
	}
	if d.Devices[0].VF != "0000:41:00.5" {
		t.Errorf("vm-7 got %+v, want vm-1's function 0000:41:00.5", d.Devices[0])
	}
	wrong := d.Allocation
	wrong.Devices = []Device{d.Devices[0]}
	wrong.Devices[0].VF = "0000:41:00.6"
	if err := f.Commit(wrong); !errors.Is(err, ErrInvalidAllocation) {
		t.Errorf("commit naming slot 1 with function .6: %v, want ErrInvalidAllocation", err)
	}
	noVF := d.Allocation
	noVF.Devices = []Device{d.Devices[0]}
	noVF.Devices[0].VF = ""
	if err := f.Commit(noVF); !errors.Is(err, ErrInvalidAllocation) {
		t.Errorf("commit without the function: %v, want ErrInvalidAllocation", err)
	}
	if err := f.Commit(d.Allocation); err != nil {
		t.Errorf("commit: %v", err)
	}

	// The type's limit binds below the functions' count.
	few := mustFleet(t, vendorVFs(gpus(x86("l4-01", 16, 64), Mode{Kind: VGPU, VGPUType: "nvidia-1200", VGPUMax: 2}, "NVIDIA L4", 0), 8))
	placeAll(t, few, withGPU(vm("a", x, 1, 1), VGPU, "", "nvidia-1200", 1), withGPU(vm("b", x, 1, 1), VGPU, "", "nvidia-1200", 1))
	if _, err := few.Place(withGPU(vm("c", x, 1, 1), VGPU, "", "nvidia-1200", 1)); !errors.As(err, &ref) {
		t.Errorf("a third vGPU of a type that allows two: %v", err)
	}

	// MIG-backed vGPU: partition n is function n.
	mf := mustFleet(t, vendorVFs(gpus(x86("h100-01", 64, 256), mig, "NVIDIA H100 80GB HBM3", 0), 7))
	d, err = mf.Place(withGPU(vm("m", x, 4, 16), MIG, "h100", "2g.20gb", 1))
	if err != nil {
		t.Fatal(err)
	}
	if dev := d.Devices[0]; dev.Slot != 1 || dev.VF != "0000:41:00.5" {
		t.Errorf("MIG device %+v, want slot 1 on 0000:41:00.5", dev)
	}
	if _, err := NewFleet(vendorVFs(gpus(x86("h100-02", 64, 256), mig, "NVIDIA H100 80GB HBM3", 0), 2)); !errors.Is(err, ErrInvalidHost) {
		t.Errorf("2 functions for 4 partitions: %v, want ErrInvalidHost", err)
	}

	// Passthrough takes no function.
	pf := mustFleet(t, gpus(x86("pt-01", 8, 16), pt, l40s, 0))
	pa := Allocation{VM: "p", Host: "pt-01", Arch: x, VCPUs: 1, MemoryMiB: 1024, NUMA: -1, Devices: []Device{{GPU: "0000:41:00.0", Kind: Passthrough, VF: "0000:41:00.4"}}}
	if err := pf.Commit(pa); !errors.Is(err, ErrInvalidAllocation) {
		t.Errorf("passthrough with a function: %v", err)
	}
}

// TestVendorVFIOTaken: a function used outside the engine (an operator's
// vGPU type, a process holding it) takes no VM, and is not counted free.
func TestVendorVFIOTaken(t *testing.T) {
	x := boot.ArchX86_64
	m := Mode{Kind: VGPU, VGPUType: "nvidia-1155", VGPUMax: 4}
	h := vendorVFs(gpus(x86("l40s-01", 64, 256), m, "NVIDIA L40S", 0), 3)
	h.GPUs[0].Taken = []string{"0000:41:00.4"}
	f := mustFleet(t, h)
	if u := f.Usage(); u.Total.VGPUsFree != 2 {
		t.Errorf("%d vGPUs free, want 2 beside the operator's function", u.Total.VGPUsFree)
	}
	d, err := f.Place(withGPU(vm("a", x, 1, 1), VGPU, "", "nvidia-1155", 1))
	if err != nil {
		t.Fatal(err)
	}
	if dev := d.Devices[0]; dev.VF != "0000:41:00.5" {
		t.Errorf("placed on %+v, want the first free function 0000:41:00.5", dev)
	}
	on := d.Allocation
	on.Devices = []Device{{GPU: "0000:41:00.0", Kind: VGPU, Slot: 0, Profile: "nvidia-1155", VF: "0000:41:00.4"}}
	if err := f.Commit(on); !errors.Is(err, ErrConflict) {
		t.Errorf("commit on the operator's function: %v, want ErrConflict", err)
	}
}

// TestVendorVFIOBadFunctions: a host whose functions would let two VMs
// share one, or name a GPU, is refused.
func TestVendorVFIOBadFunctions(t *testing.T) {
	m := Mode{Kind: VGPU, VGPUType: "nvidia-1155", VGPUMax: 4}
	for _, tc := range []struct {
		name string
		vfs  [][]string
	}{
		{"twice on one card", [][]string{{"0000:41:00.4", "0000:41:00.4"}}},
		{"on two cards", [][]string{{"0000:41:00.4"}, {"0000:41:00.4"}}},
		{"the other GPU", [][]string{{"0000:42:00.0"}}},
		{"empty", [][]string{{""}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := gpus(x86("l40s-01", 64, 256), m, "NVIDIA L40S", 0, 0)
			for i, v := range tc.vfs {
				h.GPUs[i].VFs = v
			}
			if _, err := NewFleet(h); !errors.Is(err, ErrInvalidHost) {
				t.Errorf("NewFleet = %v, want ErrInvalidHost", err)
			}
		})
	}
}

// TestClosedCard: a closed card takes no new vGPU, keeps the VMs it
// holds, and counts nothing free.
func TestClosedCard(t *testing.T) {
	x := boot.ArchX86_64
	m := Mode{Kind: VGPU, VGPUType: "nvidia-1155", VGPUMax: 4}
	h := gpus(x86("l40s-01", 64, 256), m, "NVIDIA L40S", 0)
	h.GPUs[0].Closed = true
	f := mustFleet(t, h)
	held := Allocation{VM: "old", Host: "l40s-01", Arch: x, VCPUs: 1, MemoryMiB: 1024, NUMA: -1,
		Devices: []Device{{GPU: "0000:41:00.0", Kind: VGPU, Slot: 0, Profile: "nvidia-1155"}}}
	if err := f.Commit(held); err != nil {
		t.Fatalf("a VM already on the closed card: %v", err)
	}
	if u := f.Usage(); u.Total.VGPUsFree != 0 || u.Total.VGPUs != 1 {
		t.Errorf("usage %+v, want 1 used and none free", u.Total)
	}
	var ref *Refusal
	if _, err := f.Place(withGPU(vm("a", x, 1, 1), VGPU, "", "nvidia-1155", 1)); !errors.As(err, &ref) || !strings.Contains(err.Error(), "1 of its GPUs take none until their hypervisor's agent reports") {
		t.Errorf("a vGPU on the closed card: %v, want a refusal saying why", err)
	}
}
