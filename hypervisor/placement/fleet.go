package placement

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/rackboot/rackboot/boot"
)

// Fleet is the hosts of a cloud and the VMs allocated on them. It is safe
// for concurrent use: decisions share a read lock, changes take the lock
// alone.
//
// Hosts that take new VMs are indexed by architecture, GPU kind and GPU
// model, so a decision looks only at hosts that could serve it; adding or
// removing a host costs time in proportion to the fleet.
type Fleet struct {
	mu    sync.RWMutex
	hosts map[string]*host
	vms   map[string]string // VM to host
	// native and emulated index the hosts that are not drained by the
	// architecture they run natively, or under emulation.
	native, emulated map[tierKey]*tier
}

type tierKey struct {
	arch boot.Arch
	kind Kind
}

// tier is the hosts of one architecture and GPU kind.
type tier struct {
	all    []*host
	models map[string][]*host // by lower-case GPU model
}

// NewFleet returns a fleet of hosts with nothing allocated.
func NewFleet(hosts ...Host) (*Fleet, error) {
	f := &Fleet{
		hosts:    map[string]*host{},
		vms:      map[string]string{},
		native:   map[tierKey]*tier{},
		emulated: map[tierKey]*tier{},
	}
	for _, h := range hosts {
		s, err := newHost(h)
		if err != nil {
			return nil, fmt.Errorf("new fleet: %w", err)
		}
		if _, dup := f.hosts[h.Name]; dup {
			return nil, fmt.Errorf("new fleet: host %s: %w: listed twice", h.Name, ErrInvalidHost)
		}
		f.hosts[h.Name] = s
		f.index(s)
	}
	return f, nil
}

func (f *Fleet) tiers(s *host) []*tier {
	if s.Drained {
		return nil
	}
	at := func(m map[tierKey]*tier, a boot.Arch) *tier {
		k := tierKey{a, s.kind}
		t := m[k]
		if t == nil {
			t = &tier{models: map[string][]*host{}}
			m[k] = t
		}
		return t
	}
	ts := []*tier{at(f.native, s.Arch)}
	for _, a := range s.Emulated {
		if a == s.Arch {
			continue
		}
		if t := at(f.emulated, a); !slices.Contains(ts, t) {
			ts = append(ts, t)
		}
	}
	return ts
}

// index adds s to its tiers, keeping each list in name order: a GPU
// decision then stops at the first host that fits exactly.
func (f *Fleet) index(s *host) {
	add := func(hs []*host) []*host {
		i, _ := slices.BinarySearchFunc(hs, s.Name, func(o *host, name string) int { return cmp.Compare(o.Name, name) })
		return slices.Insert(hs, i, s)
	}
	for _, t := range f.tiers(s) {
		t.all = add(t.all)
		for _, m := range s.models {
			t.models[m] = add(t.models[m])
		}
	}
}

func (f *Fleet) unindex(s *host) {
	drop := func(hs []*host) []*host {
		return slices.DeleteFunc(hs, func(o *host) bool { return o == s })
	}
	for _, t := range f.tiers(s) {
		t.all = drop(t.all)
		for _, m := range s.models {
			if t.models[m] = drop(t.models[m]); len(t.models[m]) == 0 {
				delete(t.models, m)
			}
		}
	}
}

// SetHost adds a host or replaces the one of the same name, e.g. to drain
// it. A replaced host keeps its VMs; SetHost refuses a new shape that one
// of them no longer fits.
func (f *Fleet) SetHost(h Host) error {
	s, err := newHost(h)
	if err != nil {
		return fmt.Errorf("set host: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	old := f.hosts[h.Name]
	if old != nil {
		for _, vm := range slices.Sorted(maps.Keys(old.vms)) {
			if err := s.admit(*old.vms[vm]); err != nil {
				return fmt.Errorf("set host %s: vm %s no longer fits: %w", h.Name, vm, err)
			}
		}
		f.unindex(old)
	}
	f.hosts[h.Name] = s
	f.index(s)
	return nil
}

// RemoveHost takes a host out of the fleet. It refuses while VMs are
// allocated on it, as they would be lost from the accounts.
func (f *Fleet) RemoveHost(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.hosts[name]
	if s == nil {
		return fmt.Errorf("remove host %s: %w", name, ErrUnknownHost)
	}
	if n := len(s.vms); n > 0 {
		return fmt.Errorf("remove host %s: %w: %d VMs", name, ErrHostInUse, n)
	}
	f.unindex(s)
	delete(f.hosts, name)
	return nil
}

// Commit records an allocation, Place's or one read back from a store. It
// checks every rule again against what the fleet holds now, so a decision
// made before another VM took the same devices is refused with
// ErrConflict.
func (f *Fleet) Commit(a Allocation) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if a.VM == "" {
		return fmt.Errorf("commit: %w: no vm name", ErrInvalidAllocation)
	}
	if on, ok := f.vms[a.VM]; ok {
		return fmt.Errorf("commit vm %s: %w on %s", a.VM, ErrVMExists, on)
	}
	s := f.hosts[a.Host]
	if s == nil {
		return fmt.Errorf("commit vm %s: %w %q", a.VM, ErrUnknownHost, a.Host)
	}
	if s.Drained {
		return fmt.Errorf("commit vm %s on %s: %w: host is drained", a.VM, a.Host, ErrConflict)
	}
	if err := s.admit(a); err != nil {
		return fmt.Errorf("commit vm %s on %s: %w", a.VM, a.Host, err)
	}
	f.vms[a.VM] = a.Host
	return nil
}

// Remove releases a VM's allocation and returns it.
func (f *Fleet) Remove(vm string) (Allocation, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	on, ok := f.vms[vm]
	if !ok {
		return Allocation{}, false
	}
	delete(f.vms, vm)
	return f.hosts[on].release(vm)
}

// Allocations returns every allocation, by VM name.
func (f *Fleet) Allocations() []Allocation {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]Allocation, 0, len(f.vms))
	for vm, on := range f.vms {
		a := *f.hosts[on].vms[vm]
		a.Devices = cloneDevices(a.Devices)
		out = append(out, a)
	}
	slices.SortFunc(out, func(a, b Allocation) int { return cmp.Compare(a.VM, b.VM) })
	return out
}

// Counts is what is used and free of a host or a fleet. Free vCPUs and
// memory are after overcommit and the host's reserve.
type Counts struct {
	VMs              int
	VCPUs, VCPUsFree int
	MemoryMiB        int64
	MemoryFreeMiB    int64
	GPUs, GPUsFree   int // cards offered: with a VM on them, or idle
	VGPUs, VGPUsFree int // vGPU instances
	Partitions       int // MIG partitions
	PartitionsFree   int
}

func (c *Counts) add(o Counts) {
	c.VMs += o.VMs
	c.VCPUs += o.VCPUs
	c.VCPUsFree += o.VCPUsFree
	c.MemoryMiB += o.MemoryMiB
	c.MemoryFreeMiB += o.MemoryFreeMiB
	c.GPUs += o.GPUs
	c.GPUsFree += o.GPUsFree
	c.VGPUs += o.VGPUs
	c.VGPUsFree += o.VGPUsFree
	c.Partitions += o.Partitions
	c.PartitionsFree += o.PartitionsFree
}

// HostUsage is one host's Counts. A drained host's free share is counted
// but takes no new VMs.
type HostUsage struct {
	Host    string
	Drained bool
	Counts
}

// Usage is every host's Counts, by name, and their sum.
type Usage struct {
	Hosts []HostUsage
	Total Counts
}

// Host is the Counts of host name.
func (u Usage) Host(name string) (Counts, bool) {
	// Hosts are in the order of their names.
	i, ok := slices.BinarySearchFunc(u.Hosts, name, func(h HostUsage, name string) int { return strings.Compare(h.Host, name) })
	if !ok {
		return Counts{}, false
	}
	return u.Hosts[i].Counts, true
}

// Usage reports what is used and free on every host.
func (f *Fleet) Usage() Usage {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var u Usage
	for _, name := range slices.Sorted(maps.Keys(f.hosts)) {
		s := f.hosts[name]
		c := Counts{
			VMs:           len(s.vms),
			VCPUs:         s.cpu,
			VCPUsFree:     s.cpuCap - s.cpu,
			MemoryMiB:     s.mem,
			MemoryFreeMiB: s.memCap - s.mem,
		}
		for _, g := range s.gpus {
			used := g.used > 0
			switch s.kind {
			case "":
				continue
			case Passthrough:
				used = s.groups[g.group].owner != ""
			case VGPU:
				c.VGPUs += g.used
				c.VGPUsFree += g.spare()
			case MIG:
				c.Partitions += g.used
				c.PartitionsFree += g.spare()
			}
			if used {
				c.GPUs++
			} else {
				c.GPUsFree++
			}
		}
		u.Hosts = append(u.Hosts, HostUsage{Host: name, Drained: s.Drained, Counts: c})
		u.Total.add(c)
	}
	return u
}
