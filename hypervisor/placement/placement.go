// Package placement decides which hypervisor a VM goes to. It holds the
// hypervisors of a fleet and the VMs allocated on them, in memory, and
// applies the rules of a private GPU cloud: the CPU architecture (native or
// emulated), CPU and memory overcommit as Nova counts them, GPUs offered by
// PCI passthrough (whole IOMMU groups), vGPU (one mediated device type per
// host) or MIG (one partition layout per host), NUMA locality, drained hosts,
// and Nova's habit of spreading plain VMs while packing GPU VMs.
//
// It stores nothing and talks to no hypervisor: the caller keeps the
// allocations in its store, and re-checks a decision with Fleet.Commit
// inside the store's transaction, so two decisions taken at once cannot
// both win the same GPU.
package placement

import (
	"errors"
	"fmt"
	"strings"

	"github.com/rackboot/rackboot/boot"
)

// Kind is the way a host offers its GPUs to VMs.
type Kind string

// GPU kinds. The zero Kind offers no GPUs.
const (
	// Passthrough hands whole cards to VMs with VFIO, together with every
	// other device of the card's IOMMU group, because the IOMMU cannot
	// isolate devices of one group from each other.
	Passthrough Kind = "passthrough"
	// VGPU time-shares each card between mediated devices of one type.
	VGPU Kind = "vgpu"
	// MIG splits each card into hardware partitions (A100, H100, H200).
	MIG Kind = "mig"
)

// Defaults for a Host's zero fields, those of OpenStack Nova, so that a
// fleet moved from Nova keeps its capacity.
const (
	DefaultCPURatio    = 16.0 // Nova's cpu_allocation_ratio
	DefaultRAMRatio    = 1.5  // Nova's ram_allocation_ratio
	DefaultReservedMiB = 512  // Nova's reserved_host_memory_mb
)

// Mode says how one host offers its GPUs. Every card of a host is offered
// the same way, as the agent configures the whole host at boot.
type Mode struct {
	Kind Kind
	// VGPUType is the one mediated device type of a VGPU host, as the
	// driver names it ("nvidia-222"); a card holds instances of one type
	// only, and a host keeps one type so that any of its cards can serve.
	VGPUType string
	// VGPUMax is how many instances of VGPUType one card holds.
	VGPUMax int
	// MIGLayout is the partition profile of each slot of every card of a
	// MIG host, e.g. ["3g.40gb", "2g.20gb", "1g.10gb", "1g.10gb"].
	MIGLayout []string
}

// GPU is one physical card of a host.
type GPU struct {
	Address string // PCI address, "0000:41:00.0"
	Model   string // "NVIDIA A100-SXM4-40GB"
	NUMA    int    // NUMA node of the card's PCI root; one not in Host.NUMA is local to none
	// Group is every PCI address in the card's IOMMU group, the card
	// included; empty means the card is alone in its group. Cards of one
	// group must list the same group.
	Group []string
	// VFs are the card's SR-IOV virtual functions, in their order, where
	// its driver offers vGPU through NVIDIA's vendor-specific VFIO
	// framework: there each vGPU or MIG-backed vGPU is one function, and
	// slot n is function n. A vGPU host's card then holds at most as
	// many instances as it has functions. Empty for cards whose vGPUs
	// are mediated devices.
	VFs []string
	// Taken are functions of VFs that something other than this
	// engine's VMs uses: an operator gave them a vGPU type or a process
	// holds them. Their slots take no VM.
	Taken []string
	// Closed: the card takes no new vGPU or MIG VM (its hypervisor's
	// agent has not said how its driver offers vGPU, and a guess would
	// give a VM a device the driver cannot make). The VMs on it stay.
	Closed bool
}

// NUMANode is one NUMA node of a host.
type NUMANode struct {
	ID        int
	VCPUs     int   // logical CPUs on the node
	MemoryMiB int64 // memory on the node
}

// Host is one hypervisor.
type Host struct {
	Name string
	Arch boot.Arch
	// Emulated are the architectures the operator lets this host run
	// under TCG. Such VMs are slow, so a native host is always preferred.
	Emulated  []boot.Arch
	VCPUs     int   // logical CPUs
	MemoryMiB int64 // physical memory
	// ReservedMiB is kept for the host itself and never given to VMs.
	// Zero means DefaultReservedMiB, as in Nova; negative reserves none.
	ReservedMiB int64
	// CPURatio and RAMRatio are the overcommit ratios; zero means
	// DefaultCPURatio and DefaultRAMRatio.
	CPURatio, RAMRatio float64
	// NUMA is the host's NUMA layout; empty means one node, ID 0, holding
	// every CPU, all memory and every GPU. A node's share is its own
	// VCPUs and MemoryMiB times the ratios; a VM pinned to a node counts
	// against it and the host, a spread VM against the host alone.
	NUMA    []NUMANode
	GPUs    []GPU
	Mode    Mode
	Drained bool // takes no new VMs; those on it stay
}

// Request asks for a VM.
type Request struct {
	VM        string
	Arch      boot.Arch
	VCPUs     int
	MemoryMiB int64
	GPU       *GPURequest // nil asks for no GPU
}

// GPURequest asks for GPUs of one kind.
type GPURequest struct {
	Kind Kind
	// Model matches GPU.Model as a case-insensitive substring ("a100");
	// empty matches every card.
	Model string
	// Profile is the MIG profile or the vGPU type; passthrough takes none.
	Profile string
	// Count is how many cards a passthrough VM gets; a vGPU or MIG VM
	// gets exactly one device.
	Count int
}

// Allocation is a VM's share of one host.
type Allocation struct {
	VM        string
	Host      string
	Arch      boot.Arch
	VCPUs     int
	MemoryMiB int64
	// NUMA is the node the VM's vCPUs, memory and devices are pinned to,
	// or -1 when the VM spreads over the host.
	NUMA    int
	Devices []Device
}

// Device is one GPU device given to a VM.
type Device struct {
	GPU  string // the card's PCI address
	Kind Kind
	// Slot is the vGPU instance on the card, or the MIG partition's index
	// in the host's layout; 0 for passthrough.
	Slot    int
	Profile string // MIG profile or vGPU type; empty for passthrough
	// Group is, for passthrough, the other members of the card's IOMMU
	// group, which the VM takes with it.
	Group []string
	// VF is, on a card with VFs, the virtual function of Slot: the VM's
	// vGPU.
	VF string
}

// Decision is where Place would put a VM.
type Decision struct {
	Allocation
	// Note says how NUMA went: the node the VM fits in, or why it spreads.
	Note string
}

// Errors. Each is wrapped with the detail, so callers test with errors.Is.
var (
	// ErrInvalidRequest is returned for a request no host could ever
	// satisfy as asked: sizes below one, an unknown GPU kind, more than one
	// vGPU or MIG device.
	ErrInvalidRequest = errors.New("invalid request")
	// ErrInvalidHost is returned for a host description that contradicts
	// itself.
	ErrInvalidHost = errors.New("invalid host")
	// ErrInvalidAllocation is returned by Commit for an allocation that
	// breaks a rule whatever else the fleet holds.
	ErrInvalidAllocation = errors.New("invalid allocation")
	// ErrConflict is returned by Commit for an allocation that no longer
	// fits what the fleet holds now (place the VM again), and by SetHost
	// for a new shape that a VM on the host no longer fits.
	ErrConflict = errors.New("conflict")
	// ErrUnknownHost is returned for a host name the fleet does not hold.
	ErrUnknownHost = errors.New("unknown host")
	// ErrVMExists is returned for a VM that already has an allocation;
	// Remove it first to move it.
	ErrVMExists = errors.New("vm already allocated")
	// ErrHostInUse is returned by RemoveHost while VMs are on the host.
	ErrHostInUse = errors.New("host has allocations")
)

// Refusal is Place's answer when no host can take a request that is valid.
type Refusal struct {
	VM string
	// Reason says which rule no host met, and how close the closest host
	// came.
	Reason string
	// Closest is the host that came nearest, or empty.
	Closest string
}

func (r *Refusal) Error() string { return "place vm " + r.VM + ": " + r.Reason }

func invalid(vm, format string, args ...any) error {
	return fmt.Errorf("place vm %s: %w: %s", vm, ErrInvalidRequest, fmt.Sprintf(format, args...))
}

func checkRequest(r Request) error {
	switch {
	case r.VM == "":
		return invalid("", "no vm name")
	case r.Arch == "":
		return invalid(r.VM, "no architecture")
	case r.VCPUs < 1:
		return invalid(r.VM, "%d vCPUs, at least 1 is needed", r.VCPUs)
	case r.MemoryMiB < 1:
		return invalid(r.VM, "%d MiB of memory, at least 1 is needed", r.MemoryMiB)
	}
	g := r.GPU
	if g == nil {
		return nil
	}
	switch g.Kind {
	case Passthrough:
		if g.Profile != "" {
			return invalid(r.VM, "passthrough gives whole GPUs and takes no profile (%q)", g.Profile)
		}
	case VGPU, MIG:
		if g.Profile == "" {
			return invalid(r.VM, "%s needs a profile", kindName(g.Kind))
		}
	default:
		return invalid(r.VM, "unknown GPU mode %q", g.Kind)
	}
	switch {
	case g.Count < 1:
		return invalid(r.VM, "GPU count %d, at least 1 is needed", g.Count)
	case g.Kind == VGPU && g.Count > 1:
		return invalid(r.VM, "a VM gets one vGPU, not %d", g.Count)
	case g.Kind == MIG && g.Count > 1:
		return invalid(r.VM, "a VM gets one MIG partition, not %d", g.Count)
	}
	return nil
}

func kindName(k Kind) string {
	switch k {
	case VGPU:
		return "vGPU"
	case MIG:
		return "MIG"
	}
	return string(k)
}

// describe names what a GPU request asks for, as refusals say it.
func describe(g *GPURequest) string {
	var s string
	switch g.Kind {
	case Passthrough:
		name := "GPU"
		if g.Model != "" {
			name = g.Model
		}
		if g.Count == 1 {
			return "a passthrough " + name
		}
		return fmt.Sprintf("%d passthrough %ss", g.Count, name)
	default:
		s = kindName(g.Kind) + " " + g.Profile
	}
	if g.Model != "" {
		s += " on " + article(g.Model) + " " + g.Model
	}
	return s
}

func article(word string) string {
	if word != "" && strings.ContainsRune("AEIOUaeiouH", rune(word[0])) {
		return "an"
	}
	return "a"
}

// mib writes an amount of memory as people read it.
func mib(m int64) string {
	switch {
	case m%1024 == 0 && m != 0:
		return fmt.Sprintf("%d GiB", m/1024)
	case m >= 1024:
		return fmt.Sprintf("%.1f GiB", float64(m)/1024)
	}
	return fmt.Sprintf("%d MiB", m)
}
