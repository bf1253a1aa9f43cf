//go:build integration

package inventory

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// debianPython is the interpreter Debian's python3-ironic-inspector is
// installed for (a python3 earlier on PATH, such as a pyenv one, lacks it).
const debianPython = "/usr/bin/python3"

// TestIronicInspectorReadsTheExport feeds every recorded machine's
// export through ironic-inspector's own processing hooks (Debian's
// python3-ironic-inspector, testdata/ironic_check.py): it must accept the
// data, and make of it the node properties, ports and PCI capabilities
// the inventory says.
func TestIronicInspectorReadsTheExport(t *testing.T) {
	if out, err := exec.Command(debianPython, "-c", "import ironic_inspector.plugins.standard").CombinedOutput(); err != nil {
		t.Fatalf("ironic-inspector is missing: apt-get install -y python3-ironic-inspector, or run scripts/install-test-deps.sh: %v\n%s", err, out)
	}
	trees, _ := filepath.Glob(filepath.Join("testdata", "*", "sys"))
	for _, tree := range trees {
		machine := filepath.Base(filepath.Dir(tree))
		t.Run(machine, func(t *testing.T) {
			inv := readTree(t, machine)
			d := inv.Ironic()
			// A recorded tree has no addresses; in the ramdisk the agent's
			// interface has the one DHCP gave it, which the inspector's
			// default (add_ports = pxe) needs.
			pxe := strings.ToLower(inv.Boot.PXEInterface)
			addr := "192.0.2.10"
			for i, n := range d.Inventory.Interfaces {
				if n.MACAddress == pxe || pxe == "" && i == 0 {
					d.Inventory.Interfaces[i].IPv4Address = &addr
					pxe = n.MACAddress
				}
			}
			in, _ := json.Marshal(d)
			cmd := exec.Command(debianPython, filepath.Join("testdata", "ironic_check.py"))
			cmd.Stdin = bytes.NewReader(in)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("ironic-inspector refused the export: %v\n%s", err, stderr.String())
			}
			var got struct {
				Properties   map[string]string `json:"properties"`
				Capabilities map[string]int    `json:"capabilities"`
				MACs         []string          `json:"macs"`
				Ports        []string          `json:"ports"`
				IPMIAddress  *string           `json:"ipmi_address"`
			}
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			localGB := 0
			if d.RootDisk != nil {
				// The inspector keeps a GiB for partitioning.
				localGB = int(d.RootDisk.Size>>30) - 1
			}
			want := map[string]string{"cpus": strconv.Itoa(inv.CPU.Count), "cpu_arch": inv.CPU.Architecture,
				"memory_mb": strconv.FormatInt(inv.Memory.PhysicalMB, 10), "local_gb": strconv.Itoa(localGB)}
			for k, v := range want {
				if got.Properties[k] != v {
					t.Errorf("property %s = %q, want %q (all: %v)", k, got.Properties[k], v, got.Properties)
				}
			}
			if len(got.MACs) != 1 || got.MACs[0] != pxe || len(got.Ports) != 1 || got.Ports[0] != pxe {
				t.Errorf("macs %v ports %v, want the PXE interface %s", got.MACs, got.Ports, pxe)
			}
			for model, alias := range map[string]string{"NVIDIA H100 80GB HBM3": "h100", "NVIDIA H200": "h200"} {
				if n := gpuCount(inv, model); got.Capabilities[alias] != n {
					t.Errorf("capability %s = %d, want %d (%s)", alias, got.Capabilities[alias], n, model)
				}
			}
			if (got.IPMIAddress != nil) != (inv.BMCAddress != "") {
				t.Errorf("ipmi_address %v, inventory bmc_address %q", got.IPMIAddress, inv.BMCAddress)
			}
		})
	}
}
