package hypervisor

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/rackboot/rackboot/agent/gpuconf"
	"github.com/rackboot/rackboot/agent/inventory"
	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/hypervisor/placement"
	"github.com/rackboot/rackboot/store"
)

// Host is the placement engine's view of a hypervisor: its CPUs, memory,
// NUMA nodes and GPUs from the node's inventory, the rest from what the
// operator set. vfs are, by card, the virtual functions its agent last
// reported for cards whose driver offers vGPU through the vendor VFIO
// framework (VFs); nil where it reported none. A node never inspected
// has no inventory and is an error.
func Host(h store.Hypervisor, n store.Node, vfs map[string][]string) (placement.Host, error) {
	if len(n.Inventory) == 0 {
		return placement.Host{}, fmt.Errorf("hypervisor %s: node has no inventory: inspect it first", nodeName(n))
	}
	var inv inventory.Inventory
	if err := json.Unmarshal(n.Inventory, &inv); err != nil {
		return placement.Host{}, fmt.Errorf("hypervisor %s: inventory: %w", nodeName(n), err)
	}
	arch := boot.Arch(inv.CPU.Architecture)
	if arch == "" {
		arch = n.Arch
	}
	cpus := inv.CPU.Threads
	if cpus == 0 {
		cpus = inv.CPU.Count
	}
	mem := inv.Memory.Total >> 20
	if inv.Memory.PhysicalMB > mem {
		// The kernel's total leaves out what the firmware and the kernel
		// keep; the DIMMs are what an operator counts the host by.
		mem = inv.Memory.PhysicalMB
	}
	out := placement.Host{
		Name: n.ID, Arch: arch, Emulated: slices.Clone(h.Emulated), VCPUs: cpus, MemoryMiB: mem,
		ReservedMiB: h.ReservedMiB, CPURatio: h.CPURatio, RAMRatio: h.RAMRatio, Drained: h.Drained,
	}
	for _, nn := range inv.CPU.NUMANodes {
		out.NUMA = append(out.NUMA, placement.NUMANode{ID: nn.ID, VCPUs: nn.CPUCount(), MemoryMiB: nn.Memory >> 20})
	}
	if len(out.NUMA) == 1 {
		// One node is the same as none, and a node's share of memory
		// read before the DIMMs were counted must not shrink the host.
		out.NUMA = nil
	}
	mode, err := Mode(h)
	if err != nil {
		return placement.Host{}, fmt.Errorf("hypervisor %s: %w", nodeName(n), err)
	}
	out.Mode = mode
	if mode.Kind != "" {
		bridges := map[string]bool{}
		for _, d := range inv.PCIDevices {
			// VFIO leaves PCI bridges of a group to the host: only the
			// endpoints go to the VM.
			if strings.HasPrefix(d.Class, "0604") {
				bridges[d.Address] = true
			}
		}
		for _, g := range inv.GPUs {
			pg := placement.GPU{Address: g.PCIAddress, Model: modelOf(g), NUMA: g.NUMANode, VFs: slices.Clone(vfs[g.PCIAddress])}
			var group []string
			for _, m := range g.IOMMUMembers {
				if !bridges[m] {
					group = append(group, m)
				}
			}
			if !slices.Contains(group, g.PCIAddress) {
				group = append(group, g.PCIAddress)
			}
			if len(group) > 1 {
				slices.Sort(group)
				pg.Group = group
			}
			out.GPUs = append(out.GPUs, pg)
		}
	}
	return out, nil
}

// VFs reads, from a report of a hypervisor's agent (gpuconf's State),
// the virtual functions of each card whose driver offers vGPU through
// the vendor-specific VFIO framework, in their order. A report that does
// not parse gives none: the cards are then taken as mdev ones.
func VFs(gpus json.RawMessage) map[string][]string {
	var st gpuconf.State
	if len(gpus) == 0 || json.Unmarshal(gpus, &st) != nil {
		return nil
	}
	out := map[string][]string{}
	for _, g := range st.GPUs {
		if g.VGPU != gpuconf.VGPUVFIO || len(g.VFs) == 0 {
			continue
		}
		vs := slices.Clone(g.VFs)
		slices.SortFunc(vs, func(a, b gpuconf.VF) int { return a.Index - b.Index })
		for _, v := range vs {
			out[g.PCIAddress] = append(out[g.PCIAddress], v.Address)
		}
	}
	return out
}

func modelOf(g inventory.GPU) string {
	if g.Model != "" {
		return g.Model
	}
	return g.DeviceName
}

// Mode is a hypervisor's GPU mode as the placement engine takes it.
func Mode(h store.Hypervisor) (placement.Mode, error) {
	switch placement.Kind(h.GPUMode) {
	case "":
		return placement.Mode{}, nil
	case placement.Passthrough:
		return placement.Mode{Kind: placement.Passthrough}, nil
	case placement.VGPU:
		if h.GPUProfile == "" || h.VGPUMax < 1 {
			return placement.Mode{}, fmt.Errorf("GPU mode vgpu needs a type and how many instances a GPU holds")
		}
		return placement.Mode{Kind: placement.VGPU, VGPUType: h.GPUProfile, VGPUMax: h.VGPUMax}, nil
	case placement.MIG:
		layout := Layout(h.GPUProfile)
		if len(layout) == 0 {
			return placement.Mode{}, fmt.Errorf("GPU mode mig needs a layout, e.g. 3g.40gb,2g.20gb,1g.10gb,1g.10gb")
		}
		return placement.Mode{Kind: placement.MIG, MIGLayout: layout}, nil
	}
	return placement.Mode{}, fmt.Errorf("unknown GPU mode %q (passthrough, vgpu or mig)", h.GPUMode)
}

// Layout splits a stored MIG layout into its profiles.
func Layout(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func nodeName(n store.Node) string {
	if n.Name != "" {
		return n.Name
	}
	return n.ID
}
