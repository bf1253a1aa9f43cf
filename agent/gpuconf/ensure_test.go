package gpuconf

import (
	"context"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestEnsureMdevVGPU(t *testing.T) {
	ctx := context.Background()
	h, tr, s := t4Host(t)
	const id = "6f4ac1d2-3b7e-4c59-9a1f-2d8e0b5c7a34"
	m, err := h.EnsureMdev(ctx, t4, "vgpu", "nvidia-233", id)
	if err != nil {
		t.Fatal(err)
	}
	want := Mdev{UUID: id, Type: "nvidia-233", TypeName: "GRID T4-8Q", Parent: t4, GPU: t4}
	if d := cmp.Diff(want, m); d != "" {
		t.Errorf("EnsureMdev (-want +got):\n%s", d)
	}
	if got := tr.Read(typeDir(t4, "nvidia-233") + "/create"); got != id {
		t.Errorf("create holds %q, want %q", got, id)
	}
	tr.KernelCreate(t4, "nvidia-233")
	tr.Write(typeDir(t4, "nvidia-233")+"/create", "")
	// There already: nothing written.
	if m, err = h.EnsureMdev(ctx, t4, "vgpu", "nvidia-233", id); err != nil || m != want {
		t.Errorf("EnsureMdev again = %+v, %v", m, err)
	}
	if got := tr.Read(typeDir(t4, "nvidia-233") + "/create"); got != "" {
		t.Errorf("an existing mdev was created again: %q", got)
	}
	if len(s.Calls) > 0 {
		t.Errorf("a card without SR-IOV ran %q", s.Calls)
	}
}

func TestEnsureMdevMIG(t *testing.T) {
	ctx := context.Background()
	h, tr, s, vfs := sriovHost(t)
	enable := sriovEnable(tr, vfs)
	s.Table["vfs off"]["/usr/lib/nvidia/sriov-manage -e "+a100PCIe] = reply{Do: enable, Next: "vfs on"}
	const id = "0b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d"
	m, err := h.EnsureMdev(ctx, a100PCIe, "mig", "3g.20gb", id)
	if err != nil {
		t.Fatal(err)
	}
	// The first function has no room left; the CME type is not the one.
	want := Mdev{UUID: id, Type: "nvidia-700", TypeName: "NVIDIA A100-3-20C", Parent: vfs[1], GPU: a100PCIe}
	if d := cmp.Diff(want, m); d != "" {
		t.Errorf("EnsureMdev (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]string{"/usr/lib/nvidia/sriov-manage -e " + a100PCIe}, s.Calls); d != "" {
		t.Errorf("calls (-want +got):\n%s", d)
	}
	if got := tr.Read(typeDir(vfs[1], "nvidia-700") + "/create"); got != id {
		t.Errorf("create holds %q", got)
	}
}

// sriovEnable enables the A100's virtual functions with MIG-backed types
// besides the time-sliced ones; the first function has no room for a
// 3g.20gb.
func sriovEnable(tr *tree, vfs []string) func() {
	return func() {
		for i, vf := range vfs {
			tr.PCI(vf, "10de", "20f1", "030200")
			tr.VF(a100PCIe, vf, i)
			tr.MdevType(vf, "nvidia-472", "NVIDIA A100-10C", 1)
			tr.MdevType(vf, "nvidia-699", "NVIDIA A100-3-20CME", 1)
			tr.MdevType(vf, "nvidia-700", "NVIDIA A100-3-20C", min(i, 1))
			tr.MdevType(vf, "nvidia-701", "NVIDIA A100-7-40C", 1)
		}
	}
}

func TestEnsureMdevRefused(t *testing.T) {
	const id = "0b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d"
	for _, tc := range []struct {
		name, gpu, kind, profile, id, want string
	}{
		{"no matching MIG type", a100PCIe, "mig", "2g.10gb", id, `0000:41:00.4 offers no MIG-backed vGPU type named *-2-10C; it offers nvidia-472 (NVIDIA A100-10C), nvidia-699 (NVIDIA A100-3-20CME), nvidia-700 (NVIDIA A100-3-20C), nvidia-701 (NVIDIA A100-7-40C)`},
		{"not a MIG profile", a100PCIe, "mig", "3g", id, `MIG profile "3g"`},
		{"unknown type", a100PCIe, "vgpu", "nvidia-999", id, `offers no vGPU type "nvidia-999"; it offers nvidia-472`},
		{"full", a100PCIe, "vgpu", "nvidia-472", id, "no room for another"},
		{"kind", a100PCIe, "passthrough", "", id, `device kind "passthrough"`},
		{"a virtual function", "0000:41:00.4", "vgpu", "nvidia-472", id, "no NVIDIA GPU at 0000:41:00.4"},
		{"no card", "0000:99:00.0", "vgpu", "nvidia-472", id, "no NVIDIA GPU at 0000:99:00.0"},
		{"uuid", a100PCIe, "vgpu", "nvidia-472", "../x", "canonical"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, tr, s, vfs := sriovHost(t)
			enable := sriovEnable(tr, vfs)
			enable()
			for _, vf := range vfs {
				tr.Write(typeDir(vf, "nvidia-472")+"/available_instances", "0\n")
			}
			_, err := h.EnsureMdev(context.Background(), tc.gpu, tc.kind, tc.profile, tc.id)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("EnsureMdev = %v, want an error saying %q", err, tc.want)
			}
			if !strings.HasPrefix(err.Error(), "ensure mdev") {
				t.Errorf("error %q does not name the operation", err)
			}
			if len(s.Calls) > 0 {
				t.Errorf("virtual functions on, yet ran %q", s.Calls)
			}
		})
	}
}

func TestCardsParents(t *testing.T) {
	h, tr, s, vfs := sriovHost(t)
	s.Table["vfs off"]["/usr/lib/nvidia/sriov-manage -e "+a100PCIe] = reply{Do: sriovEnable(tr, vfs), Next: "vfs on"}
	cs, err := h.Cards()
	if err != nil || len(cs) != 1 || cs[0].Addr != a100PCIe || !cs[0].Known || !cs[0].Model.SRIOV {
		t.Fatalf("Cards = %+v, %v", cs, err)
	}
	ps, err := h.Parents(context.Background(), a100PCIe)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(vfs, ps); d != "" {
		t.Errorf("Parents (-want +got):\n%s", d)
	}
}
