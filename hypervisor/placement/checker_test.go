package placement

import (
	"fmt"
	"slices"
	"sort"
	"strings"
)

// The checker recomputes the rules from host descriptions and a list of
// allocations alone, without the engine's indexes or counters, so that a
// mistake in the engine's bookkeeping cannot hide itself.

type checkSlot struct {
	host, gpu string
	slot      int
}

type checkAddr struct{ host, addr string }

type checkNode struct {
	host string
	node int
}

// ledger is what the allocations hold, summed from scratch.
type ledger struct {
	hosts    map[string]Host
	cpu      map[string]int
	mem      map[string]int64
	nodeCPU  map[checkNode]int
	nodeMem  map[checkNode]int64
	addr     map[checkAddr]string // passthrough PCI address to VM
	slot     map[checkSlot]string // vGPU instance or MIG partition to VM
	problems []string
}

func checkLimits(h Host) (int, int64) {
	cr, rr, res := h.CPURatio, h.RAMRatio, h.ReservedMiB
	if cr == 0 {
		cr = 16
	}
	if rr == 0 {
		rr = 1.5
	}
	if res == 0 {
		res = 512
	}
	if res < 0 {
		res = 0
	}
	m := h.MemoryMiB - res
	if m < 0 {
		m = 0
	}
	return int(float64(h.VCPUs) * cr), int64(float64(m) * rr)
}

func checkNodeLimits(h Host, id int) (int, int64, bool) {
	if len(h.NUMA) == 0 {
		c, m := checkLimits(h)
		return c, m, id == 0
	}
	cr, rr := h.CPURatio, h.RAMRatio
	if cr == 0 {
		cr = 16
	}
	if rr == 0 {
		rr = 1.5
	}
	for _, n := range h.NUMA {
		if n.ID == id {
			return int(float64(n.VCPUs) * cr), int64(float64(n.MemoryMiB) * rr), true
		}
	}
	return 0, 0, false
}

func checkOnNode(h Host, g GPU, id int) bool { return len(h.NUMA) == 0 || g.NUMA == id }

func checkGroup(g GPU) []string {
	set := map[string]bool{g.Address: true}
	for _, a := range g.Group {
		set[a] = true
	}
	var out []string
	for a := range set {
		out = append(out, a)
	}
	sort.Strings(out)
	return out
}

func checkGPU(h Host, addr string) (GPU, bool) {
	for _, g := range h.GPUs {
		if g.Address == addr {
			return g, true
		}
	}
	return GPU{}, false
}

func offersGPUs(h Host) bool { return h.Mode.Kind != "" && len(h.GPUs) > 0 }

func newLedger(hosts []Host, allocs []Allocation) *ledger {
	l := &ledger{
		hosts:   map[string]Host{},
		cpu:     map[string]int{},
		mem:     map[string]int64{},
		nodeCPU: map[checkNode]int{},
		nodeMem: map[checkNode]int64{},
		addr:    map[checkAddr]string{},
		slot:    map[checkSlot]string{},
	}
	for _, h := range hosts {
		l.hosts[h.Name] = h
	}
	seen := map[string]bool{}
	for _, a := range allocs {
		if seen[a.VM] {
			l.fail("vm %s allocated twice", a.VM)
		}
		seen[a.VM] = true
		l.add(a)
	}
	return l
}

func (l *ledger) fail(format string, args ...any) {
	l.problems = append(l.problems, fmt.Sprintf(format, args...))
}

// add sums one allocation in and notes every rule it breaks.
func (l *ledger) add(a Allocation) {
	h, ok := l.hosts[a.Host]
	if !ok {
		l.fail("vm %s on unknown host %s", a.VM, a.Host)
		return
	}
	if a.Arch != h.Arch && !slices.Contains(h.Emulated, a.Arch) {
		l.fail("vm %s: %s on %s host %s", a.VM, a.Arch, h.Arch, h.Name)
	}
	if a.VCPUs < 1 || a.MemoryMiB < 1 {
		l.fail("vm %s: size %d vCPUs %d MiB", a.VM, a.VCPUs, a.MemoryMiB)
	}
	l.cpu[h.Name] += a.VCPUs
	l.mem[h.Name] += a.MemoryMiB
	if c, m := checkLimits(h); l.cpu[h.Name] > c || l.mem[h.Name] > m {
		l.fail("host %s over its limits: %d/%d vCPUs, %d/%d MiB", h.Name, l.cpu[h.Name], c, l.mem[h.Name], m)
	}
	if a.NUMA != -1 {
		c, m, ok := checkNodeLimits(h, a.NUMA)
		k := checkNode{h.Name, a.NUMA}
		l.nodeCPU[k] += a.VCPUs
		l.nodeMem[k] += a.MemoryMiB
		if !ok {
			l.fail("vm %s pinned to missing node %d of %s", a.VM, a.NUMA, h.Name)
		} else if l.nodeCPU[k] > c || l.nodeMem[k] > m {
			l.fail("node %d of %s over its limits", a.NUMA, h.Name)
		}
	}
	if len(a.Devices) > 0 && !offersGPUs(h) {
		l.fail("vm %s has devices on %s, which offers none", a.VM, h.Name)
		return
	}
	if len(a.Devices) > 1 && h.Mode.Kind != Passthrough {
		l.fail("vm %s has %d %s devices", a.VM, len(a.Devices), h.Mode.Kind)
	}
	mine := map[string]bool{}
	for _, d := range a.Devices {
		g, ok := checkGPU(h, d.GPU)
		if !ok {
			l.fail("vm %s: no GPU %s on %s", a.VM, d.GPU, h.Name)
			continue
		}
		if d.Kind != h.Mode.Kind {
			l.fail("vm %s: %s device on %s host", a.VM, d.Kind, h.Mode.Kind)
		}
		if a.NUMA != -1 && !checkOnNode(h, g, a.NUMA) {
			l.fail("vm %s pinned to node %d, GPU %s on node %d", a.VM, a.NUMA, g.Address, g.NUMA)
		}
		switch h.Mode.Kind {
		case Passthrough:
			want := slices.DeleteFunc(checkGroup(g), func(s string) bool { return s == g.Address })
			got := slices.Clone(d.Group)
			sort.Strings(got)
			if !slices.Equal(want, got) {
				l.fail("vm %s: GPU %s taken with %v, its group is %v", a.VM, g.Address, got, want)
			}
			if d.Slot != 0 || d.Profile != "" {
				l.fail("vm %s: passthrough GPU %s with slot %d profile %q", a.VM, g.Address, d.Slot, d.Profile)
			}
			if mine[g.Address] {
				l.fail("vm %s has GPU %s twice", a.VM, g.Address)
			}
			mine[g.Address] = true
			for _, m := range checkGroup(g) {
				k := checkAddr{h.Name, m}
				if o, ok := l.addr[k]; ok && o != a.VM {
					l.fail("%s on %s used by vm %s and vm %s", m, h.Name, o, a.VM)
				}
				l.addr[k] = a.VM
			}
		case VGPU, MIG:
			limit := h.Mode.VGPUMax
			want := h.Mode.VGPUType
			if h.Mode.Kind == MIG {
				limit = len(h.Mode.MIGLayout)
			}
			if len(d.Group) > 0 {
				l.fail("vm %s: %s device of %s lists an IOMMU group", a.VM, h.Mode.Kind, g.Address)
			}
			if d.Slot < 0 || d.Slot >= limit {
				l.fail("vm %s: slot %d of GPU %s out of range", a.VM, d.Slot, g.Address)
				continue
			}
			if h.Mode.Kind == MIG {
				want = h.Mode.MIGLayout[d.Slot]
			}
			if !strings.EqualFold(d.Profile, want) {
				l.fail("vm %s: slot %d of %s is %s, allocation says %s", a.VM, d.Slot, g.Address, want, d.Profile)
			}
			k := checkSlot{h.Name, g.Address, d.Slot}
			if o, ok := l.slot[k]; ok {
				l.fail("slot %d of %s on %s used by vm %s and vm %s", d.Slot, g.Address, h.Name, o, a.VM)
			}
			l.slot[k] = a.VM
		}
	}
}

// addNew adds an allocation made now: on top of the rules add checks, a
// drained host takes no new VM.
func (l *ledger) addNew(a Allocation) {
	if h, ok := l.hosts[a.Host]; ok && h.Drained {
		l.fail("new vm %s on drained host %s", a.VM, a.Host)
	}
	l.add(a)
}

// freeDevices counts the devices of h that could serve g now, on node id
// or anywhere (-1).
func (l *ledger) freeDevices(h Host, g *GPURequest, id int) int {
	if !offersGPUs(h) || h.Mode.Kind != g.Kind {
		return 0
	}
	n := 0
	for _, c := range h.GPUs {
		if !strings.Contains(strings.ToLower(c.Model), strings.ToLower(g.Model)) || id != -1 && !checkOnNode(h, c, id) {
			continue
		}
		switch g.Kind {
		case Passthrough:
			free := true
			for _, m := range checkGroup(c) {
				if _, ok := l.addr[checkAddr{h.Name, m}]; ok {
					free = false
				}
			}
			if free {
				n++
			}
		case VGPU:
			if !strings.EqualFold(h.Mode.VGPUType, g.Profile) {
				return 0
			}
			for s := range h.Mode.VGPUMax {
				if _, ok := l.slot[checkSlot{h.Name, c.Address, s}]; !ok {
					n++
				}
			}
		case MIG:
			for s, p := range h.Mode.MIGLayout {
				if _, ok := l.slot[checkSlot{h.Name, c.Address, s}]; !ok && strings.EqualFold(p, g.Profile) {
					n++
				}
			}
		}
	}
	return n
}

// fitsNow says whether r fits host h as the ledger stands, by brute force.
func (l *ledger) fitsNow(h Host, r Request) bool {
	if h.Drained || h.Arch != r.Arch && !slices.Contains(h.Emulated, r.Arch) {
		return false
	}
	c, m := checkLimits(h)
	if l.cpu[h.Name]+r.VCPUs > c || l.mem[h.Name]+r.MemoryMiB > m {
		return false
	}
	return r.GPU == nil || l.freeDevices(h, r.GPU, -1) >= r.GPU.Count
}

// fitsNode says whether r fits one NUMA node of h whole.
func (l *ledger) fitsNode(h Host, r Request, id int) bool {
	c, m, ok := checkNodeLimits(h, id)
	k := checkNode{h.Name, id}
	if !ok || l.nodeCPU[k]+r.VCPUs > c || l.nodeMem[k]+r.MemoryMiB > m {
		return false
	}
	return r.GPU == nil || l.freeDevices(h, r.GPU, id) >= r.GPU.Count
}

// expect is the host the rules choose for r, or "" when none fits: native
// before emulated; for a plain VM, hosts without GPUs first, then the most
// free memory; for a GPU VM, the fewest free devices; then the name.
func (l *ledger) expect(r Request) string {
	type cand struct {
		name          string
		native, plain bool
		free          int
		memFree       int64
	}
	var cs []cand
	for _, h := range l.hosts {
		if !l.fitsNow(h, r) {
			continue
		}
		_, m := checkLimits(h)
		c := cand{name: h.Name, native: h.Arch == r.Arch, plain: !offersGPUs(h), memFree: m - l.mem[h.Name]}
		if r.GPU != nil {
			c.free = l.freeDevices(h, r.GPU, -1)
		}
		cs = append(cs, c)
	}
	if len(cs) == 0 {
		return ""
	}
	sort.Slice(cs, func(i, j int) bool {
		a, b := cs[i], cs[j]
		if a.native != b.native {
			return a.native
		}
		if r.GPU == nil {
			if a.plain != b.plain {
				return a.plain
			}
			if a.memFree != b.memFree {
				return a.memFree > b.memFree
			}
		} else if a.free != b.free {
			return a.free < b.free
		}
		return a.name < b.name
	})
	return cs[0].name
}

// hostNodes lists the NUMA node IDs of h, one for a host without NUMA data.
func hostNodes(h Host) []int {
	if len(h.NUMA) == 0 {
		return []int{0}
	}
	var ids []int
	for _, n := range h.NUMA {
		ids = append(ids, n.ID)
	}
	return ids
}
