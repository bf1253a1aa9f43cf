package gpuconf

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const t4 = "0000:3b:00.0"

// t4Host is a Tesla T4 under NVIDIA's vGPU manager: time-sliced vGPUs
// made on the card itself.
func t4Host(t *testing.T) (*Host, *tree, *script) {
	tr := newTree(t)
	tr.PCI(t4, "10de", "1eb8", "030200")
	for _, ty := range []struct {
		id, name string
		avail    int
	}{
		{"nvidia-222", "GRID T4-1B", 16},
		{"nvidia-223", "GRID T4-2B", 8},
		{"nvidia-230", "GRID T4-1Q", 16},
		{"nvidia-233", "GRID T4-8Q", 2},
		{"nvidia-234", "GRID T4-16Q", 1},
	} {
		tr.MdevType(t4, ty.id, ty.name, ty.avail)
	}
	s := &script{T: t}
	return &Host{Root: tr.Root, Runner: s}, tr, s
}

func typeDir(parent, typ string) string {
	return devDir(parent) + "/mdev_supported_types/" + typ
}

func TestMdevLifecycle(t *testing.T) {
	ctx := context.Background()
	h, tr, _ := t4Host(t)
	const id = "6f4ac1d2-3b7e-4c59-9a1f-2d8e0b5c7a34"
	if err := h.CreateMdev(ctx, t4, "nvidia-222", id); err != nil {
		t.Fatal(err)
	}
	if got := tr.Read(typeDir(t4, "nvidia-222") + "/create"); got != id {
		t.Errorf("create holds %q, want %q", got, id)
	}
	tr.KernelCreate(t4, "nvidia-222")
	ms, err := h.Mdevs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []Mdev{{UUID: id, Type: "nvidia-222", TypeName: "GRID T4-1B", Parent: t4, GPU: t4}}
	if d := cmp.Diff(want, ms); d != "" {
		t.Errorf("Mdevs (-want +got):\n%s", d)
	}
	if err := h.RemoveMdev(ctx, id); err != nil {
		t.Fatal(err)
	}
	if got := tr.Read(devDir(t4) + "/" + id + "/remove"); got != "1" {
		t.Errorf("remove holds %q, want 1", got)
	}
	if err := h.RemoveMdev(ctx, "0b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d"); !errors.Is(err, ErrNoMdev) {
		t.Errorf("RemoveMdev of an unknown mdev = %v, want ErrNoMdev", err)
	}
}

func TestCreateMdevRefused(t *testing.T) {
	const id = "6f4ac1d2-3b7e-4c59-9a1f-2d8e0b5c7a34"
	for _, tc := range []struct {
		name, parent, typ, id, want string
	}{
		{"unknown type", t4, "nvidia-999", id, `does not offer vGPU type "nvidia-999"; it offers nvidia-222 (GRID T4-1B), nvidia-223 (GRID T4-2B), nvidia-230 (GRID T4-1Q), nvidia-233 (GRID T4-8Q), nvidia-234 (GRID T4-16Q)`},
		{"type as a path", t4, "../nvidia-222", id, "does not offer"},
		{"no vGPU manager", "0000:3c:00.0", "nvidia-222", id, "offers no vGPU types"},
		{"parent as a path", "../../..", "nvidia-222", id, "want 0000:3b:00.0"},
		{"uuid as a path", t4, "nvidia-222", "../../../../etc/passwd", "canonical"},
		{"uuid in braces", t4, "nvidia-222", "{" + id + "}", "canonical"},
		{"full", t4, "nvidia-234", id, "no room"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, tr, _ := t4Host(t)
			tr.Write(typeDir(t4, "nvidia-234")+"/available_instances", "0\n")
			err := h.CreateMdev(context.Background(), tc.parent, tc.typ, tc.id)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("CreateMdev = %v, want an error saying %q", err, tc.want)
			}
			for _, typ := range []string{"nvidia-222", "nvidia-223", "nvidia-230", "nvidia-233", "nvidia-234"} {
				if got := tr.Read(typeDir(t4, typ) + "/create"); got != "" {
					t.Errorf("refused, yet %s/create holds %q", typ, got)
				}
			}
		})
	}
}

func TestApplyVGPU(t *testing.T) {
	ctx := context.Background()
	h, tr, s := t4Host(t)
	ms, err := h.ApplyVGPU(ctx, "nvidia-233")
	if err != nil {
		t.Fatal(err)
	}
	// Two fit; the create file keeps the last write.
	want := []Mdev{
		{UUID: StableUUID(t4, "nvidia-233", 0), Type: "nvidia-233", TypeName: "GRID T4-8Q", Parent: t4, GPU: t4},
		{UUID: StableUUID(t4, "nvidia-233", 1), Type: "nvidia-233", TypeName: "GRID T4-8Q", Parent: t4, GPU: t4},
	}
	sortMdevs(want)
	if d := cmp.Diff(want, ms); d != "" {
		t.Errorf("ApplyVGPU (-want +got):\n%s", d)
	}
	if got := tr.Read(typeDir(t4, "nvidia-233") + "/create"); got != StableUUID(t4, "nvidia-233", 1) {
		t.Errorf("last create wrote %q", got)
	}
	if len(s.Calls) > 0 {
		t.Errorf("a card without SR-IOV ran %q", s.Calls)
	}

	// The kernel made both; applying again makes nothing.
	for i := 0; i < 2; i++ {
		tr.Write(typeDir(t4, "nvidia-233")+"/create", StableUUID(t4, "nvidia-233", i))
		tr.KernelCreate(t4, "nvidia-233")
	}
	tr.Write(typeDir(t4, "nvidia-233")+"/create", "")
	again, err := h.ApplyVGPU(ctx, "nvidia-233")
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(want, again); d != "" {
		t.Errorf("ApplyVGPU again (-want +got):\n%s", d)
	}
	if got := tr.Read(typeDir(t4, "nvidia-233") + "/create"); got != "" {
		t.Errorf("applied again on a full card, and wrote %q", got)
	}

	// One type per card: a card with vGPUs of another type is refused.
	if _, err := h.ApplyVGPU(ctx, "nvidia-222"); err == nil || !strings.Contains(err.Error(), "of type nvidia-233") {
		t.Errorf("ApplyVGPU of a second type = %v, want a refusal naming nvidia-233", err)
	}
	if got := tr.Read(typeDir(t4, "nvidia-222") + "/create"); got != "" {
		t.Errorf("refused, yet nvidia-222/create holds %q", got)
	}
	if _, err := h.ApplyVGPU(ctx, "nvidia-999"); err == nil || !strings.Contains(err.Error(), "it offers nvidia-222 (GRID T4-1B)") {
		t.Errorf("ApplyVGPU of an unknown type = %v, want the offered list", err)
	}
}

func sortMdevs(ms []Mdev) {
	for i := range ms {
		for j := i + 1; j < len(ms); j++ {
			if ms[j].Parent < ms[i].Parent || ms[j].Parent == ms[i].Parent && ms[j].UUID < ms[i].UUID {
				ms[i], ms[j] = ms[j], ms[i]
			}
		}
	}
}

const a100PCIe = "0000:41:00.0"

// sriovHost is an A100-PCIE-40GB: its vGPUs live on SR-IOV virtual
// functions, which sriov-manage enables (here: four of them).
func sriovHost(t *testing.T) (*Host, *tree, *script, []string) {
	tr := newTree(t)
	tr.PCI(a100PCIe, "10de", "20f1", "030200")
	tr.Write(devDir(a100PCIe)+"/sriov_totalvfs", "16\n")
	tr.Write(devDir(a100PCIe)+"/sriov_numvfs", "0\n")
	vfs := []string{"0000:41:00.4", "0000:41:00.5", "0000:41:00.6", "0000:41:00.7"}
	enable := func() {
		for i, vf := range vfs {
			tr.PCI(vf, "10de", "20f1", "030200")
			tr.Link(devDir(a100PCIe), devDir(vf)+"/physfn")
			tr.Link(devDir(vf), devDir(a100PCIe)+"/virtfn"+strconv.Itoa(i))
			tr.MdevType(vf, "nvidia-472", "NVIDIA A100-10C", 1)
			tr.MdevType(vf, "nvidia-473", "NVIDIA A100-20C", 1)
		}
		tr.Write(devDir(a100PCIe)+"/sriov_numvfs", "4\n")
	}
	s := &script{T: t, State: "vfs off", Table: map[string]map[string]reply{
		"vfs off": {"/usr/lib/nvidia/sriov-manage -e " + a100PCIe: {Do: enable, Next: "vfs on"}},
	}}
	return &Host{Root: tr.Root, Runner: s}, tr, s, vfs
}

func TestApplyVGPUSRIOV(t *testing.T) {
	ctx := context.Background()
	h, tr, s, vfs := sriovHost(t)
	ms, err := h.ApplyVGPU(ctx, "nvidia-472")
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]string{"/usr/lib/nvidia/sriov-manage -e " + a100PCIe}, s.Calls); d != "" {
		t.Errorf("calls (-want +got):\n%s", d)
	}
	var want []Mdev
	for _, vf := range vfs {
		want = append(want, Mdev{UUID: StableUUID(vf, "nvidia-472", 0), Type: "nvidia-472", TypeName: "NVIDIA A100-10C", Parent: vf, GPU: a100PCIe})
		if got := tr.Read(typeDir(vf, "nvidia-472") + "/create"); got != StableUUID(vf, "nvidia-472", 0) {
			t.Errorf("%s: create holds %q", vf, got)
		}
	}
	if d := cmp.Diff(want, ms); d != "" {
		t.Errorf("ApplyVGPU (-want +got):\n%s", d)
	}

	for _, vf := range vfs {
		tr.KernelCreate(vf, "nvidia-472")
		tr.Write(typeDir(vf, "nvidia-472")+"/create", "")
	}
	listed, err := h.Mdevs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(want, listed); d != "" {
		t.Errorf("Mdevs (-want +got):\n%s", d)
	}
	// Virtual functions on and full: nothing to run, nothing to make.
	s.Calls = nil
	if _, err := h.ApplyVGPU(ctx, "nvidia-472"); err != nil {
		t.Fatal(err)
	}
	if len(s.Calls) > 0 {
		t.Errorf("applied again, and ran %q", s.Calls)
	}
	for _, vf := range vfs {
		if got := tr.Read(typeDir(vf, "nvidia-472") + "/create"); got != "" {
			t.Errorf("applied again, and %s/create holds %q", vf, got)
		}
	}
}

func TestApplyVGPUNoVFs(t *testing.T) {
	h, _, s, _ := sriovHost(t)
	s.Table["vfs off"]["/usr/lib/nvidia/sriov-manage -e "+a100PCIe] = reply{} // enables nothing
	if _, err := h.ApplyVGPU(context.Background(), "nvidia-472"); err == nil || !strings.Contains(err.Error(), "left the card with none") {
		t.Errorf("ApplyVGPU = %v, want an error saying no virtual function came up", err)
	}
}

func TestResetFunction(t *testing.T) {
	tr := newTree(t)
	tr.PCI("0000:65:00.0", "10de", "26b9", "030200") // L40S
	tr.Write(devDir("0000:65:00.0")+"/reset", "")
	tr.PCI("0000:65:00.1", "10de", "22ba", "040300") // its audio function
	tr.Write(devDir("0000:65:00.1")+"/reset", "")
	tr.PCI("0000:01:00.0", "8086", "1592", "020000") // a NIC
	tr.Write(devDir("0000:01:00.0")+"/reset", "")
	tr.PCI("0000:66:00.0", "10de", "26b9", "030200") // no reset
	h := &Host{Root: tr.Root, Runner: &script{T: t}}
	for _, tc := range []struct {
		addr, want string
	}{
		{"0000:65:00.0", ""},
		{"0000:65:00.1", "not an NVIDIA GPU"},
		{"0000:01:00.0", "not an NVIDIA GPU"},
		{"0000:66:00.0", "no reset"},
		{"0000:67:00.0", "no such file"},
		{"../../../etc", "want 0000:3b:00.0"},
	} {
		t.Run(tc.addr, func(t *testing.T) {
			err := h.ResetFunction(context.Background(), tc.addr)
			switch {
			case tc.want == "" && err != nil:
				t.Fatal(err)
			case tc.want == "":
				if got := tr.Read(devDir(tc.addr) + "/reset"); got != "1" {
					t.Errorf("reset holds %q, want 1", got)
				}
			case err == nil || !strings.Contains(err.Error(), tc.want):
				t.Errorf("ResetFunction = %v, want an error saying %q", err, tc.want)
			default:
				if p := devDir(tc.addr) + "/reset"; tc.addr != "../../../etc" && tc.addr != "0000:67:00.0" && tc.addr != "0000:66:00.0" && tr.Read(p) != "" {
					t.Errorf("refused, yet %s holds %q", p, tr.Read(p))
				}
			}
		})
	}
}

// TestStateVGPU: the report gives each card the vGPUs on its virtual
// functions.
func TestStateVGPU(t *testing.T) {
	ctx := context.Background()
	h, tr, s, vfs := sriovHost(t)
	if _, err := h.ApplyVGPU(ctx, "nvidia-473"); err != nil {
		t.Fatal(err)
	}
	for _, vf := range vfs[:2] {
		tr.KernelCreate(vf, "nvidia-473")
	}
	s.Table["vfs on"] = map[string]reply{
		smiQuery:        {File: "a100-pcie/query.txt"},
		"nvidia-smi -L": {File: "a100-pcie/list.txt"},
	}
	st, err := h.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "a100-pcie-vgpu-state.json", string(b)+"\n")
}
