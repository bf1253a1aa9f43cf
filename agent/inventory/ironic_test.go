package inventory

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var hexID = regexp.MustCompile(`^[0-9a-f]{4}$`)

// TestIronicExport: every recorded machine exports IPA's schema with its
// names and units; two of them with golden output.
func TestIronicExport(t *testing.T) {
	trees, _ := filepath.Glob(filepath.Join("testdata", "*", "sys"))
	if len(trees) < 8 {
		t.Fatalf("%d recorded trees, want the 8 and more under testdata", len(trees))
	}
	for _, tree := range trees {
		machine := filepath.Base(filepath.Dir(tree))
		t.Run(machine, func(t *testing.T) {
			inv := readTree(t, machine)
			d := inv.Ironic()
			b, err := json.MarshalIndent(d, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			b = append(b, '\n')
			if machine == "h100" || machine == "altra" {
				golden := filepath.Join("testdata", machine+".ironic.json")
				if *update {
					os.WriteFile(golden, b, 0o644)
				}
				want, err := os.ReadFile(golden)
				if err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(string(want), string(b)); diff != "" {
					t.Errorf("%s (-want +got):\n%s", golden, diff)
				}
			}
			in := d.Inventory
			if in.CPU.Count != inv.CPU.Count || in.CPU.Architecture == "" || in.Memory.PhysicalMB != inv.Memory.PhysicalMB || len(in.Interfaces) != len(inv.Interfaces) {
				t.Errorf("inventory %+v", in)
			}
			for _, n := range in.Interfaces {
				if n.Name == "" || n.MACAddress != strings.ToLower(n.MACAddress) || len(n.MACAddress) != 17 {
					t.Errorf("interface %+v", n)
				}
			}
			if len(inv.Disks) > 0 && d.RootDisk == nil {
				t.Errorf("no root disk among %+v", inv.Disks)
			}
			for _, k := range in.Disks {
				if d.RootDisk != nil && k.Size >= minRootDisk && k.Size < d.RootDisk.Size {
					t.Errorf("root disk %s, but %s is smaller and big enough", d.RootDisk.Name, k.Name)
				}
			}
			if len(d.PCIDevices) != len(inv.PCIDevices) {
				t.Errorf("%d PCI devices, want %d", len(d.PCIDevices), len(inv.PCIDevices))
			}
			for _, p := range d.PCIDevices {
				if !hexID.MatchString(p.VendorID) || !hexID.MatchString(p.ProductID) || len(p.Class) != 6 || strings.HasPrefix(p.Class, "0x") || p.Bus == "" {
					t.Errorf("pci device %+v: want IPA's hex without 0x", p)
				}
			}
			if inv.Boot.PXEInterface != "" && d.BootInterface != "01-"+strings.ReplaceAll(strings.ToLower(inv.Boot.PXEInterface), ":", "-") {
				t.Errorf("boot_interface %q for %q", d.BootInterface, inv.Boot.PXEInterface)
			}
			if len(d.Rackboot.GPUs) != len(inv.GPUs) {
				t.Errorf("rackboot.gpus: %d, want %d", len(d.Rackboot.GPUs), len(inv.GPUs))
			}
		})
	}
}
