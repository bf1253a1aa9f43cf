package inventory

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite the golden inventories in testdata")

func readTree(t *testing.T, machine string) *Inventory {
	t.Helper()
	inv, err := Reader{Root: filepath.Join("testdata", machine), PCIIDs: filepath.Join("testdata", "pci.ids")}.Read()
	if err != nil {
		t.Fatal(err)
	}
	return inv
}

func gpuCount(inv *Inventory, model string) int {
	n := 0
	for _, g := range inv.GPUs {
		if g.Model == model {
			n++
		}
	}
	return n
}

// TestMachines reads each recorded machine, compares the whole inventory
// with its golden JSON, and checks the facts that matter by hand, so a
// golden file regenerated from a broken reader still fails.
func TestMachines(t *testing.T) {
	tests := []struct {
		machine string
		check   func(t *testing.T, inv *Inventory)
	}{
		{"a100x4", func(t *testing.T, inv *Inventory) {
			c := inv.CPU
			if c.Sockets != 2 || c.Cores != 128 || c.Count != 256 || c.ModelName != "AMD EPYC 7742 64-Core Processor" || len(c.NUMANodes) != 2 {
				t.Errorf("cpu: %+v", c)
			}
			if n := gpuCount(inv, "NVIDIA A100-SXM4-40GB"); n != 4 {
				t.Errorf("%d A100, want 4", n)
			}
			numa := map[int]int{}
			groups := map[int]bool{}
			for _, g := range inv.GPUs {
				numa[g.NUMANode]++
				groups[*g.IOMMUGroup] = true
				if g.Memory != 40<<30 || g.MemoryEstimated || !g.MIG.Capable || len(g.MIG.Profiles) != 6 || g.MIG.Profiles[1] != (MIGProfile{Name: "1g.10gb", Max: 4}) || g.ACS.State != ACSIsolated {
					t.Errorf("%s: %+v", g.PCIAddress, g)
				}
				if !g.Verdict.Passthrough.Ready || !g.Verdict.MIG.Ready || !g.Verdict.VGPU.Ready {
					t.Errorf("%s verdict: %+v", g.PCIAddress, g.Verdict)
				}
			}
			if numa[0] != 2 || numa[1] != 2 || len(groups) != 4 {
				t.Errorf("GPUs per NUMA node %v, IOMMU groups %v", numa, groups)
			}
			if !inv.GPUVerdict.Passthrough.Ready || !inv.GPUVerdict.MIG.Ready {
				t.Errorf("node verdict: %+v", inv.GPUVerdict)
			}
			if w := inv.GPUs[2].Verdict.Warnings; len(w) != 1 || !strings.Contains(w[0], "2.5 GT/s") {
				t.Errorf("idle link warning: %q", w)
			}
			if len(inv.Memory.DIMMs) != 16 || inv.Memory.PhysicalMB != 1<<20 || inv.Memory.DIMMs[0].Type != "DDR4" {
				t.Errorf("memory: %+v", inv.Memory)
			}
			if len(inv.Interfaces) != 2 || inv.Interfaces[0].Driver != "mlx5_core" || inv.Interfaces[0].SpeedMbps != 100000 || !inv.Interfaces[0].HasCarrier {
				t.Errorf("interfaces: %+v", inv.Interfaces)
			}
			if len(inv.Disks) != 1 || inv.Disks[0].ByPath != "/dev/disk/by-path/pci-0000:c1:00.0-nvme-1" {
				t.Errorf("disks: %+v", inv.Disks)
			}
		}},
		{"t4", func(t *testing.T, inv *Inventory) {
			if n := gpuCount(inv, "Tesla T4"); n != 1 || inv.GPUs[0].Memory != 16<<30 || inv.GPUs[0].MIG.Capable {
				t.Errorf("gpus: %+v", inv.GPUs)
			}
			if inv.Boot.CurrentBootMode != "uefi" || inv.Boot.SecureBoot == nil || !*inv.Boot.SecureBoot {
				t.Errorf("boot: %+v", inv.Boot)
			}
			d := inv.Disks[0]
			if d.Name != "/dev/sda" || d.WWN != "0x55cd2e4150000001" || d.ByPath != "/dev/disk/by-path/pci-0000:00:17.0-ata-1" || d.Rotational {
				t.Errorf("disk: %+v", d)
			}
			if inv.SystemVendor.ProductName != "PowerEdge R740" || inv.CPU.Architecture != "x86_64" {
				t.Errorf("system: %+v", inv.SystemVendor)
			}
		}},
		{"v100s", func(t *testing.T, inv *Inventory) {
			if n := gpuCount(inv, "Tesla V100S-PCIE-32GB"); n != 1 || inv.GPUs[0].Memory != 32<<30 {
				t.Errorf("gpus: %+v", inv.GPUs)
			}
			if inv.Boot.CurrentBootMode != "bios" || inv.Boot.SecureBoot != nil || !inv.Disks[0].Rotational {
				t.Errorf("boot %+v, disks %+v", inv.Boot, inv.Disks)
			}
		}},
		{"altra", func(t *testing.T, inv *Inventory) {
			c := inv.CPU
			if c.Architecture != "aarch64" || c.ModelName != "Neoverse-N1" || c.Vendor != "ARM" || c.Count != 80 || c.Cores != 80 || c.Sockets != 1 || c.Frequency != "3000" {
				t.Errorf("cpu: %+v", c)
			}
			if len(inv.GPUs) != 1 || inv.GPUs[0].PCIAddress != "000d:01:00.0" {
				t.Errorf("gpus: %+v", inv.GPUs)
			}
		}},
		{"h100", func(t *testing.T, inv *Inventory) {
			if n := gpuCount(inv, "NVIDIA H100 80GB HBM3"); n != 2 {
				t.Errorf("%d H100, want 2", n)
			}
			g := inv.GPUs[1]
			if g.NUMANode != 1 || g.Memory != 80<<30 || len(g.MIG.Profiles) != 6 || g.MIG.Profiles[1] != (MIGProfile{Name: "1g.20gb", Max: 4}) || g.MaxLinkSpeed != "32.0 GT/s PCIe" {
				t.Errorf("gpu: %+v", g)
			}
			if inv.Memory.DIMMs[0].Type != "DDR5" || inv.Memory.DIMMs[0].Size != 128<<30 {
				t.Errorf("dimm: %+v", inv.Memory.DIMMs[0])
			}
		}},
		{"hgx-h200", func(t *testing.T, inv *Inventory) {
			if n := gpuCount(inv, "NVIDIA H200"); n != 8 {
				t.Errorf("%d H200, want 8", n)
			}
			for _, g := range inv.GPUs {
				last := g.MIG.Profiles[len(g.MIG.Profiles)-1]
				if g.Memory != 141<<30 || len(g.MIG.Profiles) != 6 || last != (MIGProfile{Name: "7g.141gb", Max: 1}) || !g.Verdict.Passthrough.Ready {
					t.Errorf("%s: %+v", g.PCIAddress, g)
				}
			}
			if len(inv.NVSwitches) != 4 || inv.NVSwitches[0].DeviceID != "22a3" {
				t.Errorf("nvswitches: %+v", inv.NVSwitches)
			}
			if w := strings.Join(inv.GPUVerdict.Warnings, "; "); !strings.Contains(w, "4 NVSwitches") || !strings.Contains(w, "fabric manager") {
				t.Errorf("node warnings %q: want the fabric manager named", w)
			}
		}},
		{"gpu-families", func(t *testing.T, inv *Inventory) {
			want := []struct {
				model string
				gib   int64
				mig   int
			}{{"Tesla V100-SXM2-16GB", 16, 0}, {"NVIDIA A100-PCIE-40GB", 40, 6}, {"NVIDIA A30", 24, 3}, {"NVIDIA A10", 24, 0},
				{"NVIDIA L4", 24, 0}, {"NVIDIA L40S", 48, 0}, {"NVIDIA H100 NVL", 94, 6}, {"NVIDIA H200 NVL", 141, 6}}
			if len(inv.GPUs) != len(want) {
				t.Fatalf("%d GPUs, want %d", len(inv.GPUs), len(want))
			}
			for i, w := range want {
				g := inv.GPUs[i]
				if g.Model != w.model || g.Memory != w.gib<<30 || g.MemoryEstimated || len(g.MIG.Profiles) != w.mig || g.MIG.Capable != (w.mig > 0) {
					t.Errorf("%s: model %q %d GiB, %d MIG profiles; want %q %d GiB %d", g.PCIAddress, g.Model, g.Memory>>30, len(g.MIG.Profiles), w.model, w.gib, w.mig)
				}
				if !g.Verdict.VGPU.Ready {
					t.Errorf("%s (%s) vGPU: %+v", g.PCIAddress, g.Model, g.Verdict.VGPU)
				}
			}
			if inv.GPUVerdict.MIG.Ready || len(inv.NVSwitches) != 0 {
				t.Errorf("mixed models: MIG %+v, nvswitches %+v", inv.GPUVerdict.MIG, inv.NVSwitches)
			}
		}},
		{"shared-iommu", func(t *testing.T, inv *Inventory) {
			if len(inv.GPUs) != 3 {
				t.Fatalf("gpus: %+v", inv.GPUs)
			}
			for _, g := range inv.GPUs[:2] {
				if g.Verdict.Passthrough.Ready || len(g.Verdict.Passthrough.Reasons) != 1 || !strings.Contains(g.Verdict.Passthrough.Reasons[0], "IOMMU group 21 also holds") || g.ACS.State != ACSNotIsolated {
					t.Errorf("%s: verdict %+v acs %+v", g.PCIAddress, g.Verdict, g.ACS)
				}
			}
			q := inv.GPUs[2]
			if !q.Verdict.Passthrough.Ready || len(q.IOMMUMembers) != 2 || !q.MemoryEstimated || q.Memory != 256<<20 {
				t.Errorf("quadro with its audio function: %+v", q)
			}
			if len(q.Verdict.Warnings) != 1 || !strings.Contains(q.Verdict.Warnings[0], "x8 of x16") {
				t.Errorf("narrow link warning: %q", q.Verdict.Warnings)
			}
			if inv.GPUVerdict.Passthrough.Ready || inv.GPUVerdict.MIG.Ready {
				t.Errorf("node verdict: %+v", inv.GPUVerdict)
			}
		}},
		{"h100-real", func(t *testing.T, inv *Inventory) {
			if len(inv.GPUs) != 1 {
				t.Fatalf("gpus: %+v", inv.GPUs)
			}
			g := inv.GPUs[0]
			if g.Model != "NVIDIA H100 80GB HBM3" || g.PCIAddress != "0000:00:06.0" || g.CurrentLinkWidth != 16 || g.CurrentLinkSpeed != "32.0 GT/s PCIe" {
				t.Errorf("gpu: %+v", g)
			}
			// A VM without a virtual IOMMU: nothing can be passed on.
			if g.Verdict.Passthrough.Ready || g.IOMMUGroup != nil || !strings.Contains(g.Verdict.Passthrough.Reasons[0], "no IOMMU") {
				t.Errorf("verdict: %+v", g.Verdict)
			}
			if len(inv.Disks) != 2 || len(inv.Interfaces) != 1 || inv.Interfaces[0].Driver != "virtio_net" {
				t.Errorf("disks %+v interfaces %+v", inv.Disks, inv.Interfaces)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.machine, func(t *testing.T) {
			inv := readTree(t, tt.machine)
			if inv.Version != Version || len(inv.Warnings) > 0 {
				t.Errorf("version %d, warnings %q", inv.Version, inv.Warnings)
			}
			got, err := json.MarshalIndent(inv, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, '\n')
			golden := filepath.Join("testdata", tt.machine+".json")
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(string(want), string(got)); diff != "" {
				t.Errorf("inventory differs from %s (-want +got):\n%s", golden, diff)
			}
			tt.check(t, inv)
			// The shape must survive a round trip, as the server stores it.
			var back Inventory
			if err := json.Unmarshal(got, &back); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(inv, &back); diff != "" {
				t.Errorf("round trip (-read +decoded):\n%s", diff)
			}
		})
	}
}

func TestPCIIDsOptional(t *testing.T) {
	empty := filepath.Join(t.TempDir(), "pci.ids")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	inv, err := Reader{Root: "testdata/t4", PCIIDs: empty}.Read()
	if err != nil {
		t.Fatal(err)
	}
	// Without names the known-model table still names the GPU.
	if g := inv.GPUs[0]; g.Model != "Tesla T4" || g.DeviceName != "" || inv.PCIDevices[0].VendorName != "" {
		t.Errorf("without names: %+v", g)
	}
	if _, err := (Reader{Root: "testdata/t4", PCIIDs: "testdata/nonexistent.ids"}).Read(); err == nil {
		t.Error("a pci.ids that was asked for and is missing must be an error")
	}
	if _, err := Read("testdata/nonexistent"); err == nil {
		t.Error("a root with no machine must be an error")
	}
}

func TestParsePCIIDs(t *testing.T) {
	in := "# comment\n10de  NVIDIA Corporation\n\t20b0  GA100 [A100 SXM4 40GB]\n\t\t10de 134f  A100 SXM4 40GB\n\tzzzz  bad line\n" +
		"8086  Intel Corporation\n\t1572  Ethernet Controller X710\nC 03  Display controller\n\t02  3D controller\nC 12  Processing accelerators\n"
	ids, err := ParsePCIIDs(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ got, want string }{
		{ids.Vendor(0x10de), "NVIDIA Corporation"},
		{ids.Device(0x10de, 0x20b0), "GA100 [A100 SXM4 40GB]"},
		{ids.Subsystem(0x10de, 0x20b0, 0x10de, 0x134f), "A100 SXM4 40GB"},
		{ids.Device(0x8086, 0x1572), "Ethernet Controller X710"},
		{ids.Device(0x10de, 0x1572), ""},
		{ids.Class(0x03, 0x02), "3D controller"},
		{ids.Class(0x03, 0x80), "Display controller"},
		{ids.Class(0x12, 0x00), "Processing accelerators"},
		{ids.Vendor(0x1234), ""},
	}
	for i, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%d: got %q, want %q", i, tt.got, tt.want)
		}
	}
}

func FuzzParsePCIIDs(f *testing.F) {
	seed, _ := os.ReadFile("testdata/pci.ids")
	f.Add(seed)
	f.Add([]byte("C 0\n\t\t\n10de\n\t\t10de 1\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ids, err := ParsePCIIDs(bytes.NewReader(b))
		if err != nil {
			return
		}
		ids.Vendor(0x10de)
		ids.Class(3, 2)
	})
}

func TestParseSMBIOS(t *testing.T) {
	b, err := os.ReadFile("testdata/h100/sys/firmware/dmi/tables/DMI")
	if err != nil {
		t.Fatal(err)
	}
	got, err := parseSMBIOS(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.dimms) != 16 || got.populatedSockets != 2 || got.maxSpeedMHz != 4100 {
		t.Fatalf("got %d dimms, %d sockets, %d MHz", len(got.dimms), got.populatedSockets, got.maxSpeedMHz)
	}
	want := DIMM{Locator: "P1_DIMM_A1", BankLocator: "P0_Node0_Channel0", Size: 128 << 30, Type: "DDR5", FormFactor: "DIMM", Speed: 4800, ConfiguredMT: 4800,
		Manufacturer: "Micron Technology", SerialNumber: "FAKEP1DIMMA1", PartNumber: "MTC40F204WS1RC48BB1"}
	if diff := cmp.Diff(want, got.dimms[0]); diff != "" {
		t.Errorf("first DIMM (-want +got):\n%s", diff)
	}
	// A table cut anywhere keeps what came before the cut.
	for _, n := range []int{0, 3, 50, len(b) / 2} {
		if _, err := parseSMBIOS(b[:n]); n > 4 && err == nil {
			t.Errorf("cut at %d: no error", n)
		}
	}
}

func FuzzParseSMBIOS(f *testing.F) {
	for _, m := range []string{"a100x4", "altra"} {
		b, _ := os.ReadFile(filepath.Join("testdata", m, "sys/firmware/dmi/tables/DMI"))
		f.Add(b)
	}
	f.Add([]byte{17, 4, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		tables, _ := parseSMBIOS(b)
		for _, d := range tables.dimms {
			if d.Size <= 0 {
				t.Fatalf("DIMM of size %d", d.Size)
			}
		}
	})
}

func TestACSControl(t *testing.T) {
	c := make([]byte, 4096)
	// AER at 0x100, version 1, next capability at 0x140 (bits 20-31).
	c[0x100], c[0x102] = 0x01, 0x01
	c[0x103] = 0x14
	c[0x140] = 0x0d
	c[0x144], c[0x146] = 0x1f, 0x1d
	capability, control, found, readable := acsControl(c)
	if !found || !readable || capability != 0x1f || control != 0x1d {
		t.Errorf("got %#x %#x %v %v", capability, control, found, readable)
	}
	if _, _, _, readable := acsControl(c[:256]); readable {
		t.Error("256 bytes of config space cannot hold ACS")
	}
}

func TestUnclaimedOf(t *testing.T) {
	devs := []PCIDevice{
		{Address: "0000:01:00.0", VendorID: "14e4", DeviceID: "165f", Class: "020000", VendorName: "Broadcom Inc. and subsidiaries", DeviceName: "NetXtreme BCM5720"},
		{Address: "0000:02:00.0", VendorID: "8086", DeviceID: "1572", Class: "020000", Driver: "i40e"},
		{Address: "0000:03:00.0", VendorID: "1000", DeviceID: "0097", Class: "010700"},
		{Address: "0000:04:00.0", VendorID: "15b3", DeviceID: "101b", Class: "0c0600"},
		{Address: "0000:05:00.0", VendorID: "10de", DeviceID: "20b0", Class: "030200"}, // a GPU: no driver wanted
		{Address: "0000:06:00.0", VendorID: "1077", DeviceID: "2261", Class: "0c0400"},
	}
	want := []Unclaimed{
		{Address: "0000:01:00.0", ID: "14e4:165f", Kind: "network", Name: "Broadcom Inc. and subsidiaries NetXtreme BCM5720"},
		{Address: "0000:03:00.0", ID: "1000:0097", Kind: "storage"},
		{Address: "0000:04:00.0", ID: "15b3:101b", Kind: "network"},
		{Address: "0000:06:00.0", ID: "1077:2261", Kind: "storage"},
	}
	if diff := cmp.Diff(want, UnclaimedOf(devs)); diff != "" {
		t.Errorf("UnclaimedOf (-want +got):\n%s", diff)
	}
}
