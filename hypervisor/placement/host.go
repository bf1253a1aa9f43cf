package placement

import (
	"fmt"
	"slices"
	"strings"

	"github.com/rackboot/rackboot/boot"
)

// host is a Host with its capacity worked out and what its VMs hold.
type host struct {
	Host
	kind   Kind // Mode.Kind, or none when the host has no GPUs
	cpuCap int
	memCap int64
	cpu    int
	mem    int64
	nodes  []node // by ID; one for a host without NUMA data
	gpus   []card
	models []string       // the distinct lower-case models of gpus, in order
	byAddr map[string]int // GPU address to index in gpus
	groups []group
	vms    map[string]*Allocation
}

type node struct {
	id     int
	cpuCap int
	memCap int64
	cpu    int
	mem    int64
}

type card struct {
	addr   string
	model  int      // index in host.models
	node   int      // index in nodes, or -1
	group  int      // index in groups
	slots  []string // VM in each vGPU instance or MIG partition
	used   int      // slots taken
	vfs    []string // the virtual function of each slot, on a vendor VFIO card
	taken  []bool   // slots whose function is used outside this engine (GPU.Taken)
	nTaken int
	closed bool // GPU.Closed
}

// free says whether slot s of c can take a new VM.
func (c *card) free(s int) bool {
	return c.slots[s] == "" && !c.closed && (c.taken == nil || !c.taken[s])
}

// spare is how many slots of c can take a new VM.
func (c *card) spare() int {
	if c.closed {
		return 0
	}
	return len(c.slots) - c.used - c.nTaken
}

// group is one IOMMU group. Passthrough takes a group whole, so it has one
// owner or none.
type group struct {
	members []string // sorted
	owner   string
}

func ratio(r, def float64) float64 {
	if r == 0 {
		return def
	}
	return r
}

func newHost(h Host) (*host, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("host %s: %w: %s", h.Name, ErrInvalidHost, fmt.Sprintf(format, args...))
	}
	switch {
	case h.Name == "":
		return nil, bad("no name")
	case h.Arch == "":
		return nil, bad("no architecture")
	case h.VCPUs < 0 || h.MemoryMiB < 0:
		return nil, bad("negative size")
	case h.CPURatio < 0 || h.RAMRatio < 0:
		return nil, bad("negative overcommit ratio")
	}
	h.Emulated = slices.Clone(h.Emulated)
	h.NUMA = slices.Clone(h.NUMA)
	h.GPUs = slices.Clone(h.GPUs)
	h.Mode.MIGLayout = slices.Clone(h.Mode.MIGLayout)
	switch h.Mode.Kind {
	case "", Passthrough:
	case VGPU:
		if h.Mode.VGPUType == "" || h.Mode.VGPUMax < 1 {
			return nil, bad("vGPU mode needs a type and at least one instance per GPU")
		}
	case MIG:
		if len(h.Mode.MIGLayout) == 0 || slices.Contains(h.Mode.MIGLayout, "") {
			return nil, bad("MIG mode needs a layout of named profiles")
		}
	default:
		return nil, bad("unknown GPU mode %q", h.Mode.Kind)
	}

	reserved := h.ReservedMiB
	if reserved == 0 {
		reserved = DefaultReservedMiB
	}
	reserved = max(reserved, 0)
	cr, rr := ratio(h.CPURatio, DefaultCPURatio), ratio(h.RAMRatio, DefaultRAMRatio)
	s := &host{
		Host:   h,
		kind:   h.Mode.Kind,
		cpuCap: int(float64(h.VCPUs) * cr),
		memCap: int64(float64(max(h.MemoryMiB-reserved, 0)) * rr),
		byAddr: map[string]int{},
		vms:    map[string]*Allocation{},
	}
	if len(h.GPUs) == 0 {
		s.kind = ""
	}
	if len(h.NUMA) == 0 {
		s.nodes = []node{{id: 0, cpuCap: s.cpuCap, memCap: s.memCap}}
	}
	for _, n := range h.NUMA {
		if n.VCPUs < 0 || n.MemoryMiB < 0 || n.ID < 0 {
			return nil, bad("NUMA node %d: negative size or ID", n.ID)
		}
		s.nodes = append(s.nodes, node{id: n.ID, cpuCap: int(float64(n.VCPUs) * cr), memCap: int64(float64(n.MemoryMiB) * rr)})
	}
	slices.SortFunc(s.nodes, func(a, b node) int { return a.id - b.id })
	for i := 1; i < len(s.nodes); i++ {
		if s.nodes[i].id == s.nodes[i-1].id {
			return nil, bad("NUMA node %d listed twice", s.nodes[i].id)
		}
	}

	inGroup := map[string]int{} // any member address to its group
	vfOf := map[string]string{} // a virtual function to its card
	for i, g := range h.GPUs {
		if g.Address == "" {
			return nil, bad("GPU %d has no address", i)
		}
		if _, dup := s.byAddr[g.Address]; dup {
			return nil, bad("GPU %s listed twice", g.Address)
		}
		s.byAddr[g.Address] = i
		members := slices.Clone(g.Group)
		if !slices.Contains(members, g.Address) {
			members = append(members, g.Address)
		}
		slices.Sort(members)
		members = slices.Compact(members)
		gi, seen := inGroup[g.Address]
		if seen {
			if !slices.Equal(s.groups[gi].members, members) {
				return nil, bad("GPU %s: IOMMU group %v differs from %v listed by another GPU", g.Address, members, s.groups[gi].members)
			}
		} else {
			gi = len(s.groups)
			for _, m := range members {
				if _, other := inGroup[m]; other {
					return nil, bad("GPU %s: %s is in two IOMMU groups", g.Address, m)
				}
				inGroup[m] = gi
			}
			s.groups = append(s.groups, group{members: members})
		}
		m := strings.ToLower(g.Model)
		mi := slices.Index(s.models, m)
		if mi < 0 {
			if mi = len(s.models); mi == maxModels {
				return nil, bad("more than %d GPU models", maxModels)
			}
			s.models = append(s.models, m)
		}
		c := card{addr: g.Address, model: mi, node: -1, group: gi, closed: g.Closed}
		if len(h.NUMA) == 0 {
			c.node = 0
		} else {
			for ni, n := range s.nodes {
				if n.id == g.NUMA {
					c.node = ni
				}
			}
		}
		switch h.Mode.Kind {
		case VGPU:
			n := h.Mode.VGPUMax
			if len(g.VFs) > 0 {
				n = min(n, len(g.VFs))
			}
			c.slots = make([]string, n)
		case MIG:
			if len(g.VFs) > 0 && len(g.VFs) < len(h.Mode.MIGLayout) {
				return nil, bad("GPU %s has %d virtual functions for the %d partitions of its MIG layout", g.Address, len(g.VFs), len(h.Mode.MIGLayout))
			}
			c.slots = make([]string, len(h.Mode.MIGLayout))
		}
		if len(g.VFs) > 0 && (h.Mode.Kind == VGPU || h.Mode.Kind == MIG) {
			// Every function, not only those of a slot: two slots, or
			// two cards, on one function would put two VMs on it.
			for _, vf := range g.VFs {
				if vf == "" || vf == g.Address {
					return nil, bad("GPU %s: virtual function %q", g.Address, vf)
				}
				if other, dup := vfOf[strings.ToLower(vf)]; dup {
					return nil, bad("GPU %s: virtual function %s listed twice (also on GPU %s)", g.Address, vf, other)
				}
				vfOf[strings.ToLower(vf)] = g.Address
			}
			c.vfs = slices.Clone(g.VFs[:len(c.slots)])
			c.taken = make([]bool, len(c.slots))
			for i, vf := range c.vfs {
				if slices.ContainsFunc(g.Taken, func(t string) bool { return strings.EqualFold(t, vf) }) {
					c.taken[i] = true
					c.nTaken++
				}
			}
		}
		s.gpus = append(s.gpus, c)
	}
	for vf, g := range vfOf {
		if _, ok := s.byAddr[vf]; ok {
			return nil, bad("GPU %s: virtual function %s is a GPU of the host", g, vf)
		}
		if _, ok := inGroup[vf]; ok {
			return nil, bad("GPU %s: virtual function %s is in a GPU's IOMMU group", g, vf)
		}
	}
	return s, nil
}

// runs says whether the host can run a VM of arch, and natively.
func (h *host) runs(arch boot.Arch) (ok, native bool) {
	if h.Arch == arch {
		return true, true
	}
	return slices.Contains(h.Emulated, arch), false
}

func (h *host) nodeIndex(id int) int {
	for i, n := range h.nodes {
		if n.id == id {
			return i
		}
	}
	return -1
}

// maxModels bounds the distinct GPU models of one host, so that those a
// request matches fit in a mask.
const maxModels = 64

// matching returns the mask of the host's models that contain model, which
// is lower case: Place lowers it once. A host's cards are matched model by
// model rather than card by card, as a decision asks every host it
// considers.
func (h *host) matching(model string) uint64 {
	var m uint64
	for i, name := range h.models {
		if strings.Contains(name, model) {
			m |= 1 << i
		}
	}
	return m
}

// matches says whether card c, of a model in mask, on node ni unless that
// is -1, can serve a request, ignoring what is taken.
func matches(c *card, mask uint64, ni int) bool {
	return (ni < 0 || c.node == ni) && mask&(1<<c.model) != 0
}

// offers says whether the host offers what g asks for at all.
func (h *host) offers(g *GPURequest) bool {
	if h.kind != g.Kind {
		return false
	}
	switch g.Kind {
	case VGPU:
		if !strings.EqualFold(h.Mode.VGPUType, g.Profile) {
			return false
		}
	case MIG:
		if !slices.ContainsFunc(h.Mode.MIGLayout, func(p string) bool { return strings.EqualFold(p, g.Profile) }) {
			return false
		}
	}
	return h.matching(g.Model) != 0
}

// free counts the devices that could serve g: whole cards for passthrough,
// vGPU instances, or MIG partitions of the profile. ni limits the count to
// one node; -1 counts the whole host.
func (h *host) free(g *GPURequest, ni int) int {
	if h.kind != g.Kind {
		return 0
	}
	if g.Kind == VGPU && !strings.EqualFold(h.Mode.VGPUType, g.Profile) {
		return 0
	}
	mask := h.matching(g.Model)
	if mask == 0 {
		return 0
	}
	n := 0
	for i := range h.gpus {
		c := &h.gpus[i]
		if !matches(c, mask, ni) {
			continue
		}
		switch g.Kind {
		case Passthrough:
			if h.groups[c.group].owner == "" {
				n++
			}
		case VGPU:
			n += c.spare()
		case MIG:
			for s := range c.slots {
				if c.free(s) && strings.EqualFold(h.Mode.MIGLayout[s], g.Profile) {
					n++
				}
			}
		}
	}
	return n
}

// pick chooses the devices for g among the cards of node ni (-1: all). A
// vGPU or MIG device goes on the fullest card that has one free, so that
// whole cards stay free for the VMs that need them. The caller has checked
// that enough are free.
func (h *host) pick(g *GPURequest, ni int) []Device {
	mask := h.matching(g.Model)
	switch g.Kind {
	case VGPU, MIG:
		best, slot := -1, -1
		for i := range h.gpus {
			c := &h.gpus[i]
			if !matches(c, mask, ni) || (best >= 0 && c.used <= h.gpus[best].used) {
				continue
			}
			for s := range c.slots {
				if c.free(s) && (g.Kind == VGPU || strings.EqualFold(h.Mode.MIGLayout[s], g.Profile)) {
					best, slot = i, s
					break
				}
			}
		}
		if best < 0 {
			return nil
		}
		p := h.Mode.VGPUType
		if g.Kind == MIG {
			p = h.Mode.MIGLayout[slot]
		}
		d := Device{GPU: h.gpus[best].addr, Kind: g.Kind, Slot: slot, Profile: p}
		if vfs := h.gpus[best].vfs; len(vfs) > 0 {
			d.VF = vfs[slot]
		}
		return []Device{d}
	}

	// Passthrough: free matching cards by IOMMU group. Whole groups whose
	// cards are all wanted go first, so a group is not broken up for a VM
	// that uses only part of it while another group would do.
	var order []int
	byGroup := map[int][]int{}
	for i := range h.gpus {
		c := &h.gpus[i]
		if matches(c, mask, ni) && h.groups[c.group].owner == "" {
			if _, ok := byGroup[c.group]; !ok {
				order = append(order, c.group)
			}
			byGroup[c.group] = append(byGroup[c.group], i)
		}
	}
	var out []Device
	need := g.Count
	for need > 0 && len(order) > 0 {
		at := -1
		for k, gi := range order { // the largest group that fits whole
			if m := len(byGroup[gi]); m <= need && (at < 0 || m > len(byGroup[order[at]])) {
				at = k
			}
		}
		if at < 0 { // else the smallest group, partly
			for k, gi := range order {
				if at < 0 || len(byGroup[gi]) < len(byGroup[order[at]]) {
					at = k
				}
			}
		}
		cards := byGroup[order[at]]
		order = slices.Delete(order, at, at+1)
		for _, i := range cards[:min(need, len(cards))] {
			c := &h.gpus[i]
			var rest []string
			for _, m := range h.groups[c.group].members {
				if m != c.addr {
					rest = append(rest, m)
				}
			}
			out = append(out, Device{GPU: c.addr, Kind: Passthrough, Group: rest})
			need--
		}
	}
	if need > 0 {
		return nil
	}
	return out
}

// admit checks a against every rule and what the host holds, then records
// it. It leaves the host unchanged when it refuses.
func (h *host) admit(a Allocation) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidAllocation, fmt.Sprintf(format, args...))
	}
	clash := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrConflict, fmt.Sprintf(format, args...))
	}
	if a.VCPUs < 1 || a.MemoryMiB < 1 {
		return bad("%d vCPUs and %d MiB, at least 1 of each is needed", a.VCPUs, a.MemoryMiB)
	}
	if ok, _ := h.runs(a.Arch); !ok {
		return bad("%s host %s does not run %s", h.Arch, h.Name, a.Arch)
	}
	if h.cpu+a.VCPUs > h.cpuCap {
		return clash("needs %d vCPUs, %d free", a.VCPUs, h.cpuCap-h.cpu)
	}
	if h.mem+a.MemoryMiB > h.memCap {
		return clash("needs %s, %s free", mib(a.MemoryMiB), mib(h.memCap-h.mem))
	}
	ni := -1
	if a.NUMA != -1 {
		if ni = h.nodeIndex(a.NUMA); ni < 0 {
			return bad("no NUMA node %d", a.NUMA)
		}
		n := h.nodes[ni]
		if n.cpu+a.VCPUs > n.cpuCap || n.mem+a.MemoryMiB > n.memCap {
			return clash("NUMA node %d has %d vCPUs and %s free", n.id, n.cpuCap-n.cpu, mib(n.memCap-n.mem))
		}
	}
	if len(a.Devices) > 0 && h.kind == "" {
		return bad("host offers no GPUs")
	}
	if len(a.Devices) > 1 && h.kind != Passthrough {
		return bad("a VM gets one %s device, not %d", kindName(h.kind), len(a.Devices))
	}
	given := map[string]bool{}
	for _, d := range a.Devices {
		ci, ok := h.byAddr[d.GPU]
		if !ok {
			return bad("no GPU %s", d.GPU)
		}
		c := &h.gpus[ci]
		if d.Kind != h.kind {
			return bad("GPU %s is offered as %s, not %s", d.GPU, h.kind, d.Kind)
		}
		if ni >= 0 && c.node != ni {
			return bad("GPU %s is not on NUMA node %d", d.GPU, a.NUMA)
		}
		switch h.kind {
		case Passthrough:
			gr := h.groups[c.group]
			var rest []string
			for _, m := range gr.members {
				if m != c.addr {
					rest = append(rest, m)
				}
			}
			got := slices.Sorted(slices.Values(d.Group))
			if d.Slot != 0 || d.Profile != "" || d.VF != "" || !slices.Equal(got, rest) {
				return bad("GPU %s goes with its IOMMU group %v, no slot and no profile", d.GPU, rest)
			}
			if gr.owner != "" {
				return clash("GPU %s's IOMMU group is taken by vm %s", d.GPU, gr.owner)
			}
			if given[d.GPU] {
				return bad("GPU %s given twice", d.GPU)
			}
			given[d.GPU] = true
		default:
			if d.Slot < 0 || d.Slot >= len(c.slots) || len(d.Group) > 0 {
				return bad("GPU %s has no slot %d", d.GPU, d.Slot)
			}
			want := h.Mode.VGPUType
			if h.kind == MIG {
				want = h.Mode.MIGLayout[d.Slot]
			}
			if !strings.EqualFold(d.Profile, want) {
				return bad("slot %d of GPU %s is %s, not %s", d.Slot, d.GPU, want, d.Profile)
			}
			if vf := ""; len(c.vfs) > 0 || d.VF != "" {
				if len(c.vfs) > 0 {
					vf = c.vfs[d.Slot]
				}
				if !strings.EqualFold(d.VF, vf) {
					return bad("slot %d of GPU %s is virtual function %q, not %q", d.Slot, d.GPU, vf, d.VF)
				}
			}
			if vm := c.slots[d.Slot]; vm != "" {
				return clash("slot %d of GPU %s is taken by vm %s", d.Slot, d.GPU, vm)
			}
			if c.taken != nil && c.taken[d.Slot] {
				return clash("slot %d of GPU %s: its virtual function %s is used outside rackboot", d.Slot, d.GPU, c.vfs[d.Slot])
			}
		}
	}

	h.cpu += a.VCPUs
	h.mem += a.MemoryMiB
	if ni >= 0 {
		h.nodes[ni].cpu += a.VCPUs
		h.nodes[ni].mem += a.MemoryMiB
	}
	for _, d := range a.Devices {
		c := &h.gpus[h.byAddr[d.GPU]]
		if h.kind == Passthrough {
			h.groups[c.group].owner = a.VM
		} else {
			c.slots[d.Slot] = a.VM
			c.used++
		}
	}
	a.Devices = cloneDevices(a.Devices)
	h.vms[a.VM] = &a
	return nil
}

// release undoes admit.
func (h *host) release(vm string) (Allocation, bool) {
	a, ok := h.vms[vm]
	if !ok {
		return Allocation{}, false
	}
	delete(h.vms, vm)
	h.cpu -= a.VCPUs
	h.mem -= a.MemoryMiB
	if ni := h.nodeIndex(a.NUMA); a.NUMA != -1 && ni >= 0 {
		h.nodes[ni].cpu -= a.VCPUs
		h.nodes[ni].mem -= a.MemoryMiB
	}
	for _, d := range a.Devices {
		c := &h.gpus[h.byAddr[d.GPU]]
		if h.kind == Passthrough {
			h.groups[c.group].owner = ""
		} else {
			c.slots[d.Slot] = ""
			c.used--
		}
	}
	return *a, true
}

func cloneDevices(ds []Device) []Device {
	if ds == nil {
		return nil
	}
	out := slices.Clone(ds)
	for i := range out {
		out[i].Group = slices.Clone(out[i].Group)
	}
	return out
}
