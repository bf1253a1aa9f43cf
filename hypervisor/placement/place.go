package placement

import (
	"fmt"
	"strconv"
	"strings"
)

// Place decides where a VM goes, and records nothing; Commit records the
// decision. A host runs the request's architecture natively if any can,
// else under emulation. A VM without a GPU goes to a host that offers no
// GPUs if one fits, keeping GPU hosts for GPU work, and among those to the
// one with the most free memory, as Nova spreads. A GPU VM packs: it goes
// to the host with the fewest free devices that still serve it, so whole
// hosts stay free for the VMs that need many. Ties go to the first name.
//
// A request that no host could ever serve as asked is an ErrInvalidRequest;
// one that no host can serve now is a *Refusal.
func (f *Fleet) Place(r Request) (Decision, error) {
	if err := checkRequest(r); err != nil {
		return Decision{}, err
	}
	asked := r.GPU // as the caller wrote it, for a refusal to quote
	if r.GPU != nil {
		g := *r.GPU
		g.Model = strings.ToLower(g.Model)
		r.GPU = &g
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	if on, ok := f.vms[r.VM]; ok {
		return Decision{}, fmt.Errorf("place vm %s: %w on %s", r.VM, ErrVMExists, on)
	}
	for _, idx := range []map[tierKey]*tier{f.native, f.emulated} {
		if s := best(idx, r); s != nil {
			return s.decide(r), nil
		}
	}
	return Decision{}, f.refuse(r, asked)
}

// fits says whether the host has room for r now, and how many devices
// that could serve r's GPU it has free.
func (s *host) fits(r Request) (free int, ok bool) {
	if s.cpu+r.VCPUs > s.cpuCap || s.mem+r.MemoryMiB > s.memCap {
		return 0, false
	}
	if r.GPU == nil {
		return 0, true
	}
	n := s.free(r.GPU, -1)
	return n, n >= r.GPU.Count
}

// best returns the host of one index (native or emulated) that Place's
// preferences pick for r, or nil when none fits.
func best(idx map[tierKey]*tier, r Request) *host {
	if r.GPU == nil {
		if t := idx[tierKey{r.Arch, ""}]; t != nil {
			if s := roomiest(nil, t.all, r); s != nil {
				return s
			}
		}
		var s *host
		for _, k := range []Kind{Passthrough, VGPU, MIG} {
			if t := idx[tierKey{r.Arch, k}]; t != nil {
				s = roomiest(s, t.all, r)
			}
		}
		return s
	}
	t := idx[tierKey{r.Arch, r.GPU.Kind}]
	if t == nil {
		return nil
	}
	var b *host
	bFree := 0
	t.each(r.GPU.Model, func(s *host) bool {
		n, ok := s.fits(r)
		if ok && (b == nil || n < bFree || n == bFree && s.Name < b.Name) {
			b, bFree = s, n
		}
		return b != nil && bFree == r.GPU.Count // no host packs tighter
	})
	return b
}

// each calls fn once for every host of the tier with a card whose
// lower-case model contains model. When the hosts come from one list, they
// come in name order, and each stops when fn returns true; from several,
// it calls fn on all.
func (t *tier) each(model string, fn func(*host) (stop bool)) {
	if model == "" {
		for _, s := range t.all {
			if fn(s) {
				return
			}
		}
		return
	}
	lists := 0
	for m := range t.models {
		if strings.Contains(m, model) {
			lists++
		}
	}
	for m, hs := range t.models {
		if !strings.Contains(m, model) {
			continue
		}
		for _, s := range hs {
			// A host with cards of two matching models is in two lists;
			// it is taken in the list of the first.
			if len(s.models) > 1 && !firstMatch(s.models, model, m) {
				continue
			}
			if fn(s) && lists == 1 {
				return
			}
		}
	}
}

// firstMatch says whether m is the first of models that contains model.
func firstMatch(models []string, model, m string) bool {
	for _, o := range models {
		if strings.Contains(o, model) {
			return o == m
		}
	}
	return false
}

// roomiest returns the host among b and hs with the most free memory that
// fits r.
func roomiest(b *host, hs []*host, r Request) *host {
	for _, s := range hs {
		if _, ok := s.fits(r); !ok {
			continue
		}
		if b == nil {
			b = s
			continue
		}
		if d := (s.memCap - s.mem) - (b.memCap - b.mem); d > 0 || d == 0 && s.Name < b.Name {
			b = s
		}
	}
	return b
}

// decide places r on the host, which fits it: on the NUMA node that holds
// the vCPUs, the memory and the devices if one does, else spread.
func (s *host) decide(r Request) Decision {
	a := Allocation{VM: r.VM, Host: s.Name, Arch: r.Arch, VCPUs: r.VCPUs, MemoryMiB: r.MemoryMiB, NUMA: -1}
	at, atFree := -1, 0
	for ni := range s.nodes {
		n := &s.nodes[ni]
		if n.cpu+r.VCPUs > n.cpuCap || n.mem+r.MemoryMiB > n.memCap {
			continue
		}
		if r.GPU == nil {
			if at < 0 || n.memCap-n.mem > s.nodes[at].memCap-s.nodes[at].mem {
				at = ni
			}
			continue
		}
		if k := s.free(r.GPU, ni); k >= r.GPU.Count && (at < 0 || k < atFree) {
			at, atFree = ni, k
		}
	}
	if at >= 0 {
		a.NUMA = s.nodes[at].id
	}
	if r.GPU != nil {
		a.Devices = s.pick(r.GPU, at)
	}
	return Decision{Allocation: a, Note: s.note(r, at)}
}

func (s *host) note(r Request, at int) string {
	what, dev := "vCPUs and memory", ""
	if g := r.GPU; g != nil {
		switch {
		case g.Kind == VGPU:
			dev = "vGPU"
		case g.Kind == MIG:
			dev = "MIG partition"
		case g.Count == 1:
			dev = "GPU"
		default:
			dev = strconv.Itoa(g.Count) + " GPUs"
		}
		what = "vCPUs, memory and " + dev
	}
	if at >= 0 {
		n := fmt.Sprintf("%s on NUMA node %d", what, s.nodes[at].id)
		if len(s.NUMA) == 0 {
			n += " (the host reports no NUMA layout: one node)"
		}
		return n
	}
	lacks := fmt.Sprintf("%d free %s and %s", r.VCPUs, plural(r.VCPUs, "vCPU"), mib(r.MemoryMiB))
	if dev != "" {
		lacks = fmt.Sprintf("%d free %s, %s and the %s", r.VCPUs, plural(r.VCPUs, "vCPU"), mib(r.MemoryMiB), dev)
	}
	if len(s.nodes) == 1 {
		return fmt.Sprintf("spread over the host: NUMA node %d lacks %s", s.nodes[0].id, lacks)
	}
	ids := make([]string, len(s.nodes))
	for i, n := range s.nodes {
		ids[i] = strconv.Itoa(n.id)
	}
	list := strings.Join(ids[:len(ids)-1], ", ") + " and " + ids[len(ids)-1]
	return fmt.Sprintf("spread over NUMA nodes %s: no one node has %s", list, lacks)
}

// refuse explains why no host takes r, at the first rule that left no host,
// naming the host that came closest where there is one. It looks at the
// hosts of r's architecture, and of its GPU kind when it asks for one.
func (f *Fleet) refuse(r Request, asked *GPURequest) error {
	ref := &Refusal{VM: r.VM}
	var live []*host // hosts of the architecture, or those that could serve the GPU
	runs := false
	for _, idx := range []map[tierKey]*tier{f.native, f.emulated} {
		for k, t := range idx {
			if k.arch != r.Arch || len(t.all) == 0 {
				continue
			}
			runs = true
			if r.GPU == nil {
				live = append(live, t.all...)
			} else if k.kind == r.GPU.Kind {
				t.each(r.GPU.Model, func(s *host) bool { live = append(live, s); return false })
			}
		}
	}
	if !runs {
		ref.Reason = fmt.Sprintf("no host runs %s, natively or emulated", r.Arch)
		drained := 0
		for _, s := range f.hosts {
			if ok, _ := s.runs(r.Arch); ok && s.Drained {
				drained++
			}
		}
		switch {
		case drained == 1:
			ref.Reason += ": the 1 host that does is drained"
		case drained > 1:
			ref.Reason += fmt.Sprintf(": the %d hosts that do are drained", drained)
		}
		return ref
	}
	subject := fmt.Sprintf("no %s host", r.Arch)
	if g := r.GPU; g != nil {
		what := describe(asked)
		var offer, room []*host
		for _, s := range live {
			if s.offers(g) {
				offer = append(offer, s)
			}
		}
		if len(offer) == 0 {
			ref.Reason = fmt.Sprintf("%s offers %s", subject, what)
			return ref
		}
		var near *host
		nearFree := 0
		for _, s := range offer {
			n := s.free(g, -1)
			if n >= g.Count {
				room = append(room, s)
			} else if near == nil || n > nearFree || n == nearFree && s.Name < near.Name {
				near, nearFree = s, n
			}
		}
		if len(room) == 0 {
			have := hosts(len(offer), "has", "have")
			switch {
			case g.Kind == MIG:
				ref.Reason = fmt.Sprintf("%s offers %s: %s the profile, all its partitions are taken", subject, what, have)
			case g.Kind == VGPU:
				ref.Reason = fmt.Sprintf("%s offers %s: %s the type, all its instances are taken", subject, what, have)
			case nearFree == 0:
				ref.Reason = fmt.Sprintf("%s has %s free: %s such GPUs, all taken", subject, what, have)
			default:
				ref.Reason = fmt.Sprintf("%s has %s free: %s such GPUs; closest: %s, %d free", subject, what, have, near.Name, nearFree)
				ref.Closest = near.Name
			}
			if g.Kind == VGPU || g.Kind == MIG {
				closed := 0
				for _, h := range offer {
					mask := h.matching(g.Model)
					for i := range h.gpus {
						if h.gpus[i].closed && matches(&h.gpus[i], mask, -1) {
							closed++
						}
					}
				}
				if closed > 0 {
					ref.Reason += fmt.Sprintf(" (%d of its GPUs take none until their hypervisor's agent reports how their driver offers vGPU)", closed)
				}
			}
			return ref
		}
		live = room
		subject += " with " + what
	}

	var near *host
	nearShort := 0.0
	for _, s := range live {
		short := shortfall(r.VCPUs, s.cpuCap-s.cpu) + shortfall(int(r.MemoryMiB), int(s.memCap-s.mem))
		if near == nil || short < nearShort || short == nearShort && s.Name < near.Name {
			near, nearShort = s, short
		}
	}
	ref.Closest = near.Name
	cpu, mem := near.cpuCap-near.cpu, near.memCap-near.mem
	var has string
	switch {
	case cpu < r.VCPUs && mem < r.MemoryMiB:
		has = fmt.Sprintf("%s and %s free", vcpus(cpu), mib(mem))
	case cpu < r.VCPUs:
		has = vcpus(cpu) + " free"
	default:
		has = fmt.Sprintf("%s free", mib(mem))
	}
	ref.Reason = fmt.Sprintf("%s has %d free %s and %s free; closest: %s, %s", subject, r.VCPUs, plural(r.VCPUs, "vCPU"), mib(r.MemoryMiB), near.Name, has)
	return ref
}

func vcpus(n int) string { return strconv.Itoa(n) + " " + plural(n, "vCPU") }

func plural(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}

// shortfall is the part of need that free lacks, from 0 to 1.
func shortfall(need, free int) float64 {
	if free >= need {
		return 0
	}
	return float64(need-max(free, 0)) / float64(need)
}

func hosts(n int, one, many string) string {
	if n == 1 {
		return "1 host " + one
	}
	return fmt.Sprintf("%d hosts %s", n, many)
}
