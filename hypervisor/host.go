package hypervisor

import (
	"encoding/json"
	"fmt"
	"regexp"
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
// operator set. ac is what its agent last reported of the cards (zero
// where none ever called in). vms are the stored VMs (of any host): a
// function with a vGPU type or a holder that none of this host's
// accounts for is an operator's, and takes no VM. A node never inspected
// has no inventory, and functions that could put two VMs on one device,
// are errors.
func Host(h store.Hypervisor, n store.Node, ac AgentCards, vms []store.VM) (placement.Host, error) {
	p := parse(n.ID, store.NodeInventory{Inventory: n.Inventory})
	if p.err != nil {
		return placement.Host{}, fmt.Errorf("hypervisor %s: %w", nodeName(n), p.err)
	}
	return host(h, n, p.inv, ac, heldVFs(h.NodeID, vms))
}

// host is Host on a parsed inventory, with the functions held by the
// host's VMs (heldVFs).
func host(h store.Hypervisor, n store.Node, inv inventory.Inventory, ac AgentCards, held map[string]map[string]int) (placement.Host, error) {
	vfs := ac.VFs
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
		if err := checkVFs(inv, mode, vfs); err != nil {
			return placement.Host{}, fmt.Errorf("hypervisor %s: its agent's report: %w", nodeName(n), err)
		}
		for _, g := range inv.GPUs {
			pg := placement.GPU{Address: g.PCIAddress, Model: modelOf(g), NUMA: g.NUMANode}
			reported := vfs[g.PCIAddress]
			if len(reported) == 0 && len(held[g.PCIAddress]) > 0 {
				reported = unreported(mode, g.PCIAddress, held[g.PCIAddress])
			}
			if len(reported) == 0 && ac.Reported && ac.Way[g.PCIAddress] == "" {
				// Neither mdevs nor functions: the agent cannot see the
				// card yet, or its vGPU manager is not loaded.
				pg.Closed = true
			}
			for _, v := range reported {
				pg.VFs = append(pg.VFs, v.Address)
				if _, ours := held[g.PCIAddress][strings.ToLower(v.Address)]; (v.Type != 0 || v.InUse) && !ours {
					pg.Taken = append(pg.Taken, v.Address)
				}
			}
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
func VFs(gpus json.RawMessage) map[string][]gpuconf.VF {
	var st gpuconf.State
	if len(gpus) == 0 || json.Unmarshal(gpus, &st) != nil {
		return nil
	}
	out := map[string][]gpuconf.VF{}
	for _, g := range st.GPUs {
		if g.VGPU != gpuconf.VGPUVFIO || len(g.VFs) == 0 {
			continue
		}
		vs := slices.Clone(g.VFs)
		slices.SortFunc(vs, func(a, b gpuconf.VF) int { return a.Index - b.Index })
		for i := range vs {
			vs[i].Address = strings.ToLower(vs[i].Address)
		}
		out[g.PCIAddress] = vs
	}
	return out
}

// AgentCards is what a hypervisor's agent last reported of its cards.
type AgentCards struct {
	// Reported says the report gave the cards' state. Without it (no
	// agent: a host managed by hand) every card is taken as an mdev one.
	Reported bool
	// Way is, by card, how its driver offers vGPU (gpuconf.VGPUMdev or
	// VGPUVFIO); a card not in it said neither.
	Way map[string]string
	// VFs are the functions of its vendor VFIO cards (VFs).
	VFs map[string][]gpuconf.VF
}

// Cards reads a report of a hypervisor's agent. An agent that called
// in without the cards' state (nvidia-smi failed) reports them, as
// unknown; one that never called in is gpus nil and reported false.
func Cards(gpus json.RawMessage, called bool) AgentCards {
	ac := AgentCards{Reported: called, Way: map[string]string{}, VFs: VFs(gpus)}
	var st gpuconf.State
	if len(gpus) == 0 || json.Unmarshal(gpus, &st) != nil {
		return ac
	}
	for _, g := range st.GPUs {
		if g.VGPU != "" {
			ac.Way[g.PCIAddress] = g.VGPU
		}
	}
	return ac
}

var pciAddr = regexp.MustCompile(`^[0-9a-f]{4,8}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$`)

// checkVFs refuses reported functions that would put two VMs on one
// device or a VM on a GPU: an address that is not one, one listed twice
// on the host, one that is a GPU or in a GPU's IOMMU group, more than the
// card's inventory says it can have, or, in MIG mode, fewer than the
// layout's partitions. The agent reports what sysfs shows, so only a
// broken or forged agent trips this, and then only its host is refused.
func checkVFs(inv inventory.Inventory, mode placement.Mode, vfs map[string][]gpuconf.VF) error {
	if mode.Kind != placement.VGPU && mode.Kind != placement.MIG {
		return nil
	}
	gpu := map[string]bool{}
	total := map[string]int{}
	for _, g := range inv.GPUs {
		gpu[strings.ToLower(g.PCIAddress)] = true
		for _, m := range g.IOMMUMembers {
			gpu[strings.ToLower(m)] = true
		}
		if g.SRIOV != nil {
			total[g.PCIAddress] = g.SRIOV.TotalVFs
		}
	}
	seen := map[string]string{}
	for _, g := range inv.GPUs {
		vs := vfs[g.PCIAddress]
		if len(vs) == 0 {
			continue
		}
		if t, ok := total[g.PCIAddress]; ok && len(vs) > t {
			return fmt.Errorf("GPU %s: %d virtual functions, but it has at most %d", g.PCIAddress, len(vs), t)
		}
		if mode.Kind == placement.MIG && len(vs) < len(mode.MIGLayout) {
			return fmt.Errorf("GPU %s: %d virtual functions for the %d partitions of its MIG layout", g.PCIAddress, len(vs), len(mode.MIGLayout))
		}
		for _, v := range vs {
			a := v.Address
			switch {
			case !pciAddr.MatchString(a):
				return fmt.Errorf("GPU %s: virtual function %q is no PCI address", g.PCIAddress, a)
			case gpu[a]:
				return fmt.Errorf("GPU %s: virtual function %s is a GPU or in a GPU's IOMMU group", g.PCIAddress, a)
			case seen[a] != "":
				return fmt.Errorf("GPU %s: virtual function %s listed twice (also on GPU %s)", g.PCIAddress, a, seen[a])
			}
			seen[a] = g.PCIAddress
		}
	}
	return nil
}

// heldVFs are, by card, the virtual functions stored VMs of hypervisor
// id hold, with the slot each holds.
func heldVFs(id string, vms []store.VM) map[string]map[string]int {
	out := map[string]map[string]int{}
	for _, vm := range vms {
		if vm.Hypervisor != id {
			continue
		}
		for _, d := range vm.Devices {
			if vf := strings.ToLower(VFOf(d)); vf != "" {
				if out[d.GPU] == nil {
					out[d.GPU] = map[string]int{}
				}
				out[d.GPU][vf] = d.Slot
			}
		}
	}
	return out
}

// unreported stands for the functions of a card its agent's latest
// report does not list (the first report after a boot, or one whose GPU
// state failed) while stored VMs hold some: the card is still a vendor
// VFIO one, not an mdev card. The VMs keep their slots; the others are
// unknown and take no VM until a report lists them.
func unreported(mode placement.Mode, gpu string, held map[string]int) []gpuconf.VF {
	n := mode.VGPUMax
	if mode.Kind == placement.MIG {
		n = len(mode.MIGLayout)
	}
	for _, s := range held {
		n = max(n, s+1)
	}
	out := make([]gpuconf.VF, n)
	for i := range out {
		// Not a PCI address: no domain can be given one.
		out[i] = gpuconf.VF{Address: fmt.Sprintf("unreported:%s:%d", gpu, i), Index: i, InUse: true}
	}
	for vf, s := range held {
		if s >= 0 {
			out[s] = gpuconf.VF{Address: vf, Index: s}
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
