package placement

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"testing"

	"github.com/rackboot/rackboot/boot"
)

var migLayout = []string{"3g.40gb", "2g.20gb", "1g.10gb", "1g.10gb"}

// cernFleet is shaped like the GPU fleet CERN's cloud describes: Ampere
// Altra hosts without GPUs, V100, V100S, T4 and A100 hosts offering their
// cards in all three ways, a few plain x86 hosts (two of which emulate
// aarch64) and one drained host.
func cernFleet() []Host {
	var hs []Host
	twoNodes := func(cpus int, mem int64) []NUMANode {
		return []NUMANode{{ID: 0, VCPUs: cpus / 2, MemoryMiB: mem / 2}, {ID: 1, VCPUs: cpus / 2, MemoryMiB: mem / 2}}
	}
	// cards of one host, bus numbers from base; paired puts cards two by
	// two in one IOMMU group, as behind one PCIe switch without ACS.
	cards := func(n, base int, model string, paired bool) []GPU {
		var gs []GPU
		for i := range n {
			g := GPU{Address: fmt.Sprintf("0000:%02x:00.0", base+i), Model: model, NUMA: i * 2 / max(n, 2)}
			if paired {
				a, b := i&^1, i|1
				if b < n {
					g.Group = []string{fmt.Sprintf("0000:%02x:00.0", base+a), fmt.Sprintf("0000:%02x:00.0", base+b)}
				}
			}
			gs = append(gs, g)
		}
		return gs
	}
	for i := range 5 {
		hs = append(hs, Host{Name: fmt.Sprintf("altra-%02d", i+1), Arch: boot.ArchAArch64, VCPUs: 80, MemoryMiB: 256 * 1024, CPURatio: 1})
	}
	for i, n := range []int{4, 4, 3, 3, 3} { // 17 cards
		hs = append(hs, Host{Name: fmt.Sprintf("v100-%02d", i+1), Arch: boot.ArchX86_64, VCPUs: 48, MemoryMiB: 384 * 1024,
			NUMA: twoNodes(48, 384*1024), GPUs: cards(n, 0x3b, "Tesla V100-PCIE-32GB", false), Mode: Mode{Kind: Passthrough}})
	}
	for i := range 6 { // 24 cards
		hs = append(hs, Host{Name: fmt.Sprintf("v100s-%02d", i+1), Arch: boot.ArchX86_64, VCPUs: 64, MemoryMiB: 512 * 1024,
			NUMA: twoNodes(64, 512*1024), GPUs: cards(4, 0x41, "Tesla V100S-PCIE-32GB", true), Mode: Mode{Kind: Passthrough}})
	}
	for i := range 73 { // 76 cards
		n := 1
		if i >= 70 {
			n = 2
		}
		h := Host{Name: fmt.Sprintf("t4-%02d", i+1), Arch: boot.ArchX86_64, VCPUs: 32, MemoryMiB: 128 * 1024,
			NUMA: twoNodes(32, 128*1024), GPUs: cards(n, 0x5e, "Tesla T4", false), Mode: Mode{Kind: Passthrough}}
		if i < 40 {
			h.Mode = Mode{Kind: VGPU, VGPUType: "nvidia-222", VGPUMax: 4}
		}
		if i == 6 {
			h.Drained = true
		}
		hs = append(hs, h)
	}
	for i := range 18 { // 72 cards
		h := Host{Name: fmt.Sprintf("a100-%02d", i+1), Arch: boot.ArchX86_64, VCPUs: 128, MemoryMiB: 1024 * 1024,
			NUMA: twoNodes(128, 1024*1024), GPUs: cards(4, 0x81, "NVIDIA A100-PCIE-40GB", i%5 == 0), Mode: Mode{Kind: Passthrough}, CPURatio: 2}
		if i >= 10 {
			h.GPUs = cards(4, 0x81, "NVIDIA A100-SXM4-80GB", false)
			h.Mode = Mode{Kind: MIG, MIGLayout: migLayout}
		}
		hs = append(hs, h)
	}
	for i := range 4 {
		h := Host{Name: fmt.Sprintf("plain-%02d", i+1), Arch: boot.ArchX86_64, VCPUs: 64, MemoryMiB: 256 * 1024, ReservedMiB: 4096}
		if i < 2 {
			h.Emulated = []boot.Arch{boot.ArchAArch64}
		}
		hs = append(hs, h)
	}
	return hs
}

func countCards(hs []Host, model string) (hosts, cards int) {
	for _, h := range hs {
		n := 0
		for _, g := range h.GPUs {
			if g.Model == model {
				n++
			}
		}
		if n > 0 {
			hosts++
			cards += n
		}
	}
	return hosts, cards
}

func TestCERNFleetShape(t *testing.T) {
	hs := cernFleet()
	a100h, a100c := countCards(hs, "NVIDIA A100-PCIE-40GB")
	a100mh, a100mc := countCards(hs, "NVIDIA A100-SXM4-80GB")
	for _, c := range []struct {
		model        string
		hosts, cards int
	}{
		{"Tesla V100-PCIE-32GB", 5, 17},
		{"Tesla V100S-PCIE-32GB", 6, 24},
		{"Tesla T4", 73, 76},
	} {
		if h, n := countCards(hs, c.model); h != c.hosts || n != c.cards {
			t.Errorf("%s: %d hosts, %d cards; want %d, %d", c.model, h, n, c.hosts, c.cards)
		}
	}
	if a100h+a100mh != 18 || a100c+a100mc != 72 {
		t.Errorf("A100: %d hosts, %d cards; want 18, 72", a100h+a100mh, a100c+a100mc)
	}
	if _, err := NewFleet(hs...); err != nil {
		t.Fatal(err)
	}
}

// randomRequest draws a request of every shape the fleet serves, some it
// cannot, and a few invalid ones.
func randomRequest(rng *rand.Rand, vm string) (Request, bool) {
	r := Request{VM: vm, Arch: boot.ArchX86_64, VCPUs: 1 << rng.IntN(6), MemoryMiB: int64(1<<rng.IntN(8)) * 1024}
	switch p := rng.IntN(100); {
	case p < 20:
	case p < 30:
		r.Arch = boot.ArchAArch64
		r.VCPUs = 2 << rng.IntN(6)
	case p < 55:
		models := []string{"", "V100", "v100s", "T4", "A100", "H100"}
		r.GPU = &GPURequest{Kind: Passthrough, Model: models[rng.IntN(len(models))], Count: []int{1, 1, 1, 2, 4}[rng.IntN(5)]}
	case p < 75:
		r.GPU = &GPURequest{Kind: VGPU, Model: []string{"", "t4"}[rng.IntN(2)], Profile: "nvidia-222", Count: 1}
		if rng.IntN(10) == 0 {
			r.GPU.Profile = "nvidia-999"
		}
	case p < 97:
		profiles := append(slices.Clone(migLayout), "7g.80gb")
		r.GPU = &GPURequest{Kind: MIG, Model: []string{"", "A100"}[rng.IntN(2)], Profile: profiles[rng.IntN(len(profiles))], Count: 1}
	default:
		bad := []Request{
			{VM: vm, Arch: boot.ArchX86_64, VCPUs: 0, MemoryMiB: 1024},
			{VM: vm, Arch: boot.ArchX86_64, VCPUs: 2, MemoryMiB: -1},
			{VM: vm, Arch: boot.ArchX86_64, VCPUs: 2, MemoryMiB: 1024, GPU: &GPURequest{Kind: MIG, Profile: "1g.10gb", Count: 2}},
			{VM: vm, Arch: boot.ArchX86_64, VCPUs: 2, MemoryMiB: 1024, GPU: &GPURequest{Kind: Passthrough}},
			{VM: vm, Arch: boot.ArchX86_64, VCPUs: 2, MemoryMiB: 1024, GPU: &GPURequest{Kind: "sriov", Count: 1}},
		}
		return bad[rng.IntN(len(bad))], false
	}
	return r, true
}

// seeds are the fixed seeds of the property test, or the one in
// PLACEMENT_SEED to reproduce a failure.
func seeds(t *testing.T) []uint64 {
	if s := os.Getenv("PLACEMENT_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("PLACEMENT_SEED: %v", err)
		}
		return []uint64{n}
	}
	return []uint64{1, 2, 3}
}

// TestFleetProperties creates and deletes thousands of VMs on the CERN
// fleet at random and, after every step, checks with the independent
// ledger that no rule is broken, that Commit accepts exactly what the
// rules allow, and that Place chose the host the rules prefer and refused
// only when no host fits.
func TestFleetProperties(t *testing.T) {
	steps := 3000
	if testing.Short() {
		steps = 800
	}
	for _, seed := range seeds(t) {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			runProperties(t, seed, steps)
		})
	}
}

func runProperties(t *testing.T, seed uint64, steps int) {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	hosts := cernFleet()
	f, err := NewFleet(hosts...)
	if err != nil {
		t.Fatal(err)
	}
	var allocs []Allocation
	refused, placed, spread, stale, conflicts, forgeries := 0, 0, 0, 0, 0, 0
	next := 0
	for step := range steps {
		l := newLedger(hosts, allocs)
		if len(l.problems) > 0 {
			t.Fatalf("seed %d step %d: %v", seed, step, l.problems)
		}
		switch op := rng.IntN(100); {
		case op < 35 && len(allocs) > 0:
			i := rng.IntN(len(allocs))
			if _, ok := f.Remove(allocs[i].VM); !ok {
				t.Fatalf("step %d: remove %s: not found", step, allocs[i].VM)
			}
			allocs = slices.Delete(allocs, i, i+1)
			continue
		case op == 99:
			i := rng.IntN(len(hosts))
			hosts[i].Drained = !hosts[i].Drained
			if err := f.SetHost(hosts[i]); err != nil {
				t.Fatalf("step %d: drain %s: %v", step, hosts[i].Name, err)
			}
			continue
		}
		next++
		r, valid := randomRequest(rng, fmt.Sprintf("vm-%05d", next))
		d, err := f.Place(r)
		want := ""
		if valid {
			want = l.expect(r)
		}
		switch {
		case !valid:
			if !errors.Is(err, ErrInvalidRequest) {
				t.Fatalf("step %d: invalid %+v: got %v, want ErrInvalidRequest", step, r, err)
			}
			continue
		case err != nil:
			var ref *Refusal
			if !errors.As(err, &ref) {
				t.Fatalf("step %d: %+v: %v", step, r, err)
			}
			if want != "" {
				t.Fatalf("step %d: refused %+v (%v), but %s fits", step, r, err, want)
			}
			refused++
			continue
		case d.Host != want:
			t.Fatalf("step %d: %+v went to %s, the rules prefer %q", step, r, d.Host, want)
		}
		h := l.hosts[d.Host]
		if h.Drained {
			t.Fatalf("step %d: %s placed on drained host %s", step, r.VM, d.Host)
		}
		if d.NUMA == -1 {
			spread++
			for _, id := range hostNodes(h) {
				if l.fitsNode(h, r, id) {
					t.Fatalf("step %d: %s spread on %s (%s), but node %d fits", step, r.VM, d.Host, d.Note, id)
				}
			}
		}
		if r.GPU != nil && len(d.Devices) != r.GPU.Count {
			t.Fatalf("step %d: asked %d devices, got %v", step, r.GPU.Count, d.Devices)
		}

		// Sometimes another VM wins the race for the same host before this
		// decision is committed; Commit must then accept it exactly when
		// the rules still allow it.
		if rng.IntN(10) == 0 {
			next++
			o := r
			o.VM = fmt.Sprintf("vm-%05d", next)
			if od, err := f.Place(o); err == nil {
				if err := f.Commit(od.Allocation); err != nil {
					t.Fatalf("step %d: commit %s: %v", step, o.VM, err)
				}
				allocs = append(allocs, od.Allocation)
				stale++
			}
		}
		forged := rng.IntN(8) == 0
		if forged {
			d.Allocation = forge(rng, newLedger(hosts, allocs), hosts, d.Allocation)
		}
		l = newLedger(hosts, allocs)
		l.addNew(d.Allocation)
		err = f.Commit(d.Allocation)
		if ok := len(l.problems) == 0; ok != (err == nil) {
			t.Fatalf("step %d: commit %+v (forged %v): %v; checker: %v", step, d.Allocation, forged, err, l.problems)
		}
		if forged && err != nil && !errors.Is(err, ErrConflict) && !errors.Is(err, ErrInvalidAllocation) && !errors.Is(err, ErrUnknownHost) {
			t.Fatalf("step %d: forged commit refused with %v", step, err)
		}
		if forged {
			forgeries++
			if err != nil {
				conflicts--
			}
		}
		if err == nil {
			allocs = append(allocs, d.Allocation)
			placed++
		} else if errors.Is(err, ErrConflict) || forged {
			conflicts++
		} else {
			t.Fatalf("step %d: stale commit refused with %v, want ErrConflict", step, err)
		}
	}
	if len(allocs) != len(f.Allocations()) {
		t.Fatalf("fleet holds %d allocations, the test %d", len(f.Allocations()), len(allocs))
	}
	checkUsage(t, hosts, allocs, f.Usage())
	u := f.Usage().Total
	t.Logf("seed %d: %d placed (%d spread over NUMA nodes), %d refused, %d raced of which %d lost, %d forged commits; now %d VMs: vCPUs %d used %d free, memory %d GiB used %d GiB free, GPUs %d used %d free, vGPUs %d used %d free, MIG partitions %d used %d free",
		seed, placed, spread, refused, stale, conflicts, forgeries, u.VMs, u.VCPUs, u.VCPUsFree, u.MemoryMiB/1024, u.MemoryFreeMiB/1024,
		u.GPUs, u.GPUsFree, u.VGPUs, u.VGPUsFree, u.Partitions, u.PartitionsFree)
}

// forge bends an allocation the way a buggy caller or a stale store might,
// so that Commit's verdict on it can be compared with the checker's.
func forge(rng *rand.Rand, l *ledger, hosts []Host, a Allocation) Allocation {
	a.Devices = cloneDevices(a.Devices)
	c, m := checkLimits(l.hosts[a.Host])
	switch rng.IntN(8) { // sizes at the host's limit, one either side
	case 0:
		a.VCPUs = max(1, c-l.cpu[a.Host]+rng.IntN(3)-1)
	case 1:
		a.MemoryMiB = max(1, m-l.mem[a.Host]+int64(rng.IntN(3)-1))
	case 2:
		a.NUMA = rng.IntN(3) - 1
	case 3:
		a.Arch = []boot.Arch{boot.ArchX86_64, boot.ArchAArch64, "riscv64"}[rng.IntN(3)]
	case 4:
		a.Host = hosts[rng.IntN(len(hosts))].Name
	}
	if len(a.Devices) == 0 {
		return a
	}
	d := &a.Devices[rng.IntN(len(a.Devices))]
	switch rng.IntN(4) {
	case 0:
		d.Slot = rng.IntN(5)
	case 1:
		for _, h := range hosts {
			if h.Name == a.Host && len(h.GPUs) > 0 {
				d.GPU = h.GPUs[rng.IntN(len(h.GPUs))].Address
			}
		}
	case 2:
		d.Group = nil
	case 3:
		a.Devices = append(a.Devices, *d)
	}
	return a
}

// checkUsage compares the fleet's Usage totals with the ledger's sums.
func checkUsage(t *testing.T, hosts []Host, allocs []Allocation, u Usage) {
	t.Helper()
	l := newLedger(hosts, allocs)
	var want Counts
	want.VMs = len(allocs)
	for _, h := range hosts {
		c, m := checkLimits(h)
		want.VCPUs += l.cpu[h.Name]
		want.VCPUsFree += c - l.cpu[h.Name]
		want.MemoryMiB += l.mem[h.Name]
		want.MemoryFreeMiB += m - l.mem[h.Name]
		if !offersGPUs(h) {
			continue
		}
		for _, g := range h.GPUs {
			used := 0
			switch h.Mode.Kind {
			case Passthrough:
				if _, ok := l.addr[checkAddr{h.Name, g.Address}]; ok {
					used = 1
				}
			case VGPU, MIG:
				n := h.Mode.VGPUMax
				if h.Mode.Kind == MIG {
					n = len(h.Mode.MIGLayout)
				}
				for s := range n {
					if _, ok := l.slot[checkSlot{h.Name, g.Address, s}]; ok {
						used++
					}
				}
				if h.Mode.Kind == VGPU {
					want.VGPUs += used
					want.VGPUsFree += n - used
				} else {
					want.Partitions += used
					want.PartitionsFree += n - used
				}
			}
			if used > 0 {
				want.GPUs++
			} else {
				want.GPUsFree++
			}
		}
	}
	if u.Total != want {
		t.Errorf("usage total\n got %+v\nwant %+v", u.Total, want)
	}
}
