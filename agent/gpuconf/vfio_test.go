package gpuconf

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const l40s = "0000:65:00.0"

// l40sHost is an NVIDIA L40S whose vGPU manager uses the vendor-specific
// VFIO framework: sriov-manage enables its virtual functions, and each
// takes a vGPU type through nvidia/current_vgpu_type.
func l40sHost(t *testing.T) (*Host, *tree, *script, []string) {
	tr := newTree(t)
	tr.PCI(l40s, "10de", "26b9", "030200")
	tr.Mkdir("proc")
	vfs := []string{"0000:65:00.4", "0000:65:00.5", "0000:65:00.6"}
	enable := func() {
		for i, vf := range vfs {
			tr.PCI(vf, "10de", "26b9", "030200")
			tr.VF(l40s, vf, i)
			tr.IOMMUGroup(vf, 80+i)
			tr.VendorVF(vf, "1153", "NVIDIA L40S-4Q", "1155", "NVIDIA L40S-12Q", "1156", "NVIDIA L40S-24Q")
		}
	}
	s := &script{T: t, State: "vfs off", Table: map[string]map[string]reply{
		"vfs off": {"/usr/lib/nvidia/sriov-manage -e " + l40s: {Do: enable, Next: "vfs on"}},
		"vfs on": {
			smiQuery:        {File: "l40/query.txt"},
			"nvidia-smi -L": {File: "l40/list.txt"},
		},
	}}
	return &Host{Root: tr.Root, Runner: s}, tr, s, vfs
}

func TestParseCreatable(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     []VGPUType
		err      bool
	}{
		{"types", "ID    : vGPU Name\n1155  : NVIDIA L40S-12Q\n1156  : NVIDIA L40S-24Q\n", []VGPUType{{1155, "NVIDIA L40S-12Q"}, {1156, "NVIDIA L40S-24Q"}}, false},
		{"header only: the function has a type", "ID    : vGPU Name\n", nil, false},
		{"empty", "", nil, false},
		{"no header", "1155 : NVIDIA L40S-12Q", []VGPUType{{1155, "NVIDIA L40S-12Q"}}, false},
		{"a colon in the name", "ID : vGPU Name\n1080 : NVIDIA H100-3-40C: MIG\n", []VGPUType{{1080, "NVIDIA H100-3-40C: MIG"}}, false},
		{"no id", "ID : vGPU Name\n : NVIDIA L40S-12Q\n", nil, true},
		{"id zero", "0 : none\n", nil, true},
		{"no name", "1155 :\n", nil, true},
		{"no colon", "1155 NVIDIA L40S-12Q\n", nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseCreatable([]byte(tc.in))
			if (err != nil) != tc.err {
				t.Fatalf("err = %v, want an error: %v", err, tc.err)
			}
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
}

func FuzzParseCreatable(f *testing.F) {
	f.Add([]byte("ID    : vGPU Name\n1155  : NVIDIA L40S-12Q\n"))
	f.Add([]byte("ID : vGPU Name\n"))
	f.Add([]byte("1:a\n2:b:c"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ts, err := ParseCreatable(b)
		if err != nil {
			return
		}
		for _, ty := range ts {
			if ty.ID <= 0 || ty.Name == "" || strings.TrimSpace(ty.Name) != ty.Name {
				t.Errorf("parsed %+v from %q", ty, b)
			}
		}
	})
}

func TestTypeID(t *testing.T) {
	for in, want := range map[string]int{"nvidia-1155": 1155, "1155": 1155, "nvidia-": 0, "nvidia-x": 0, "-3": 0, "": 0} {
		got, err := TypeID(in)
		if got != want || (err != nil) != (want == 0) {
			t.Errorf("TypeID(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
}

// TestVendorVFIO: a virtual function takes its type once, keeps it, is
// not freed while a VM holds it, and is freed after; the state reports
// the card's way of vGPU and each function's type.
func TestVendorVFIO(t *testing.T) {
	ctx := context.Background()
	h, tr, s, vfs := l40sHost(t)
	cur := func(vf string) string { return strings.TrimSpace(tr.Read(devDir(vf) + "/nvidia/current_vgpu_type")) }

	v, changed, err := h.EnsureVF(ctx, VFRequest{GPU: l40s, VF: vfs[1], Kind: "vgpu", Profile: "nvidia-1155"})
	if err != nil || !changed {
		t.Fatalf("EnsureVF = %v, changed %v", err, changed)
	}
	if d := cmp.Diff([]string{"/usr/lib/nvidia/sriov-manage -e " + l40s}, s.Calls); d != "" {
		t.Errorf("calls (-want +got):\n%s", d)
	}
	if v.Type != 1155 || v.TypeName != "NVIDIA L40S-12Q" || v.Index != 1 || cur(vfs[1]) != "1155" {
		t.Errorf("EnsureVF gave %+v, current_vgpu_type %q", v, cur(vfs[1]))
	}
	if _, changed, err := h.EnsureVF(ctx, VFRequest{GPU: l40s, VF: vfs[1], Kind: "vgpu", Profile: "1155"}); err != nil || changed {
		t.Errorf("again: %v, changed %v", err, changed)
	}
	for _, tc := range []struct{ vf, kind, profile, want string }{
		{vfs[1], "vgpu", "nvidia-1156", "it carries vGPU type 1155 NVIDIA L40S-12Q"},
		{vfs[0], "vgpu", "nvidia-1200", "cannot take that type now; it offers 1153 (NVIDIA L40S-4Q), 1155 (NVIDIA L40S-12Q), 1156 (NVIDIA L40S-24Q)"},
		{vfs[0], "mig", "3g.40gb", "offers 1153"},
		{l40s, "vgpu", "nvidia-1155", "not a virtual function of the card"},
		{"0000:65:01.0", "vgpu", "nvidia-1155", "not a virtual function of the card"},
		{"../../x", "vgpu", "nvidia-1155", "want 0000:3b:00.0"},
		{vfs[0], "vgpu", "big", `vGPU type "big"`},
	} {
		if _, _, err := h.EnsureVF(ctx, VFRequest{GPU: l40s, VF: tc.vf, Kind: tc.kind, Profile: tc.profile}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("EnsureVF(%s, %s %s) = %v, want an error saying %q", tc.vf, tc.kind, tc.profile, err, tc.want)
		}
	}
	if cur(vfs[0]) != "0" {
		t.Errorf("refusals wrote %q", cur(vfs[0]))
	}

	// The driver no longer lists the type on the function that carries
	// it: the state names it from a sibling's list.
	tr.Write(devDir(vfs[1])+"/nvidia/creatable_vgpu_types", "ID    : vGPU Name\n")

	// QEMU holds the function's VFIO group: the type stays.
	tr.OpenFD(4242, "qemu-system-x86", 31, "/dev/vfio/81")
	st, err := h.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "l40s-vfio-state.json", string(b)+"\n")
	if err := h.FreeVF(ctx, vfs[1]); !errors.Is(err, ErrInUse) || cur(vfs[1]) != "1155" {
		t.Errorf("FreeVF while held = %v, type %q", err, cur(vfs[1]))
	}
	if err := h.DisableVFs(ctx); err == nil || !strings.Contains(err.Error(), "carries vGPU type on "+vfs[1]) {
		t.Errorf("DisableVFs with a type set = %v", err)
	}
	tr.Exit(4242)
	if err := h.FreeVF(ctx, vfs[1]); err != nil || cur(vfs[1]) != "0" {
		t.Errorf("FreeVF = %v, type %q", err, cur(vfs[1]))
	}
	if err := h.FreeVF(ctx, vfs[1]); err != nil {
		t.Errorf("FreeVF of a free function = %v", err)
	}
	if err := h.FreeVF(ctx, l40s); err == nil {
		t.Error("FreeVF of the card itself: no error")
	}
}

// TestVendorVFIOPartial: a function without the driver's attribute (still
// probing, or bound to vfio-pci) is left out of the report, and the rest
// of it stands.
func TestVendorVFIOPartial(t *testing.T) {
	ctx := context.Background()
	h, tr, _, vfs := l40sHost(t)
	if _, err := h.Parents(ctx, l40s); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(tr.Root, devDir(vfs[1]), "nvidia")); err != nil {
		t.Fatal(err)
	}
	st, err := h.State(ctx)
	if err != nil {
		t.Fatalf("State = %v", err)
	}
	var got []string
	for _, v := range st.GPUs[0].VFs {
		got = append(got, fmt.Sprintf("%s#%d", v.Address, v.Index))
	}
	if d := cmp.Diff([]string{vfs[0] + "#0", vfs[2] + "#2"}, got); d != "" || st.GPUs[0].VGPU != VGPUVFIO {
		t.Errorf("VFs (-want +got):\n%s; vgpu %q", d, st.GPUs[0].VGPU)
	}
	tr.Write(devDir(vfs[0])+"/nvidia/current_vgpu_type", "x\n")
	if err := h.DisableVFs(ctx); err == nil || strings.Contains(err.Error(), "carries vGPU type") || !strings.Contains(err.Error(), "cannot tell what its functions carry") {
		t.Errorf("DisableVFs with an unreadable type = %v", err)
	}
}

// TestVendorVFIOUncatalogued: a card the catalog does not know (or does
// not mark SR-IOV) whose functions offer vendor VFIO still gives them
// types.
func TestVendorVFIOUncatalogued(t *testing.T) {
	ctx := context.Background()
	tr := newTree(t)
	tr.Mkdir("proc")
	tr.PCI(l40s, "10de", "26b1", "030000") // RTX 6000 Ada
	vf := "0000:65:00.4"
	tr.PCI(vf, "10de", "26b1", "030000")
	tr.VF(l40s, vf, 0)
	tr.VendorVF(vf, "1155", "NVIDIA RTX6000-Ada-12Q")
	h := &Host{Root: tr.Root, Runner: &script{T: t, State: "s", Table: map[string]map[string]reply{"s": {}}}}
	v, changed, err := h.EnsureVF(ctx, VFRequest{GPU: l40s, VF: vf, Kind: "vgpu", Profile: "nvidia-1155"})
	if err != nil || !changed || v.Type != 1155 {
		t.Fatalf("EnsureVF = %+v, %v, %v", v, changed, err)
	}
}

// TestFreeVFNotVF: FreeVF says ErrNotVF for the card itself and for a
// function of another vendor's card, and only for those.
func TestFreeVFNotVF(t *testing.T) {
	ctx := context.Background()
	h, tr, _, vfs := l40sHost(t)
	if _, err := h.Parents(ctx, l40s); err != nil {
		t.Fatal(err)
	}
	tr.PCI("0000:17:00.0", "8086", "1592", "020000")
	tr.PCI("0000:17:01.0", "8086", "1889", "020000")
	tr.VF("0000:17:00.0", "0000:17:01.0", 0)
	for addr, want := range map[string]bool{l40s: true, "0000:17:01.0": true, vfs[0]: false, "0000:99:00.1": false} {
		if err := h.FreeVF(ctx, addr); errors.Is(err, ErrNotVF) != want {
			t.Errorf("FreeVF(%s) = %v, want ErrNotVF: %v", addr, err, want)
		}
	}
}
