package placement

import (
	"errors"
	"fmt"
	"testing"

	"github.com/rackboot/rackboot/boot"
)

// choices hands out a fuzz input one choice at a time, zeros when it runs
// out.
type choices struct{ b []byte }

func (r *choices) next() int {
	if len(r.b) == 0 {
		return 0
	}
	v := int(r.b[0])
	r.b = r.b[1:]
	return v
}

func (r *choices) pick(n int) int { return r.next() % n }

func (r *choices) done() bool { return len(r.b) == 0 }

var fuzzModels = []string{"NVIDIA A100-SXM4-80GB", "Tesla T4", "Tesla V100S-PCIE-32GB", "NVIDIA H100"}

func fuzzHost(r *choices, i int) Host {
	archs := []boot.Arch{boot.ArchX86_64, boot.ArchAArch64}
	ratios := []float64{0, 1, 1.5, 16}
	h := Host{
		Name:        fmt.Sprintf("h%d", i),
		Arch:        archs[r.pick(2)],
		VCPUs:       r.pick(64),
		MemoryMiB:   int64(r.next()) * 256,
		ReservedMiB: int64(r.next()-128) * 8,
		CPURatio:    ratios[r.pick(4)],
		RAMRatio:    ratios[r.pick(4)],
		Drained:     r.pick(8) == 0,
	}
	if r.pick(3) == 0 {
		h.Emulated = []boot.Arch{archs[r.pick(2)]}
	}
	for n := range r.pick(3) {
		h.NUMA = append(h.NUMA, NUMANode{ID: n * (1 + r.pick(2)), VCPUs: r.pick(32), MemoryMiB: int64(r.next()) * 128})
	}
	for g := range r.pick(5) {
		gpu := GPU{Address: fmt.Sprintf("0000:%02x:00.0", g), Model: fuzzModels[r.pick(len(fuzzModels))], NUMA: r.pick(3)}
		if g%2 == 1 && r.pick(2) == 0 {
			pair := []string{fmt.Sprintf("0000:%02x:00.0", g-1), gpu.Address, fmt.Sprintf("0000:%02x:00.1", g)}
			gpu.Group = pair
			h.GPUs[g-1].Group = pair
		}
		h.GPUs = append(h.GPUs, gpu)
	}
	switch r.pick(4) {
	case 1:
		h.Mode = Mode{Kind: Passthrough}
	case 2:
		h.Mode = Mode{Kind: VGPU, VGPUType: []string{"nvidia-222", "nvidia-223"}[r.pick(2)], VGPUMax: 1 + r.pick(4)}
	case 3:
		layouts := [][]string{{"3g.40gb", "2g.20gb", "1g.10gb", "1g.10gb"}, {"7g.80gb"}, {"1g.10gb", "1g.10gb", "1g.10gb"}}
		h.Mode = Mode{Kind: MIG, MIGLayout: layouts[r.pick(len(layouts))]}
	}
	return h
}

// fuzzRequest draws mostly valid requests, so that the input reaches the
// rules, and now and then an invalid one.
func fuzzRequest(r *choices, vm string) Request {
	archs := []boot.Arch{boot.ArchX86_64, boot.ArchX86_64, boot.ArchX86_64, boot.ArchAArch64, boot.ArchAArch64, boot.ArchAArch64, "riscv64", ""}
	req := Request{VM: vm, Arch: archs[r.pick(len(archs))], VCPUs: r.pick(40) - 1, MemoryMiB: int64(r.pick(64))*512 - 256}
	kinds := []Kind{Passthrough, Passthrough, Passthrough, VGPU, VGPU, MIG, MIG}
	k := r.pick(len(kinds) + 2)
	if k > len(kinds) {
		return req
	}
	g := &GPURequest{Model: []string{"", "a100", "T4", "V100", "h100", "X"}[r.pick(6)], Count: 1}
	if k == len(kinds) {
		g.Kind = "sriov"
	} else {
		g.Kind = kinds[k]
	}
	switch g.Kind {
	case Passthrough:
		g.Count = r.pick(4)
	case VGPU:
		g.Profile = []string{"nvidia-222", "nvidia-223", ""}[r.pick(3)]
	case MIG:
		g.Profile = []string{"1g.10gb", "3g.40gb", "7g.80gb", "2g.20gb", ""}[r.pick(5)]
	}
	if r.pick(16) == 0 { // out of shape
		g.Count = r.pick(4) - 1
		g.Profile = "1g.10gb"
	}
	req.GPU = g
	return req
}

// FuzzPlace builds small fleets and request streams from the input. Place
// must never panic; every decision must commit, keep the checker's rules
// and go where the rules prefer; every refusal must be one the checker's
// brute force agrees with.
func FuzzPlace(f *testing.F) {
	f.Add([]byte{2, 0, 30, 64, 140, 1, 1, 7, 1, 0, 2, 0, 20, 3, 1, 0, 1, 2, 0, 9, 0, 0, 2, 0, 10, 20, 2, 1, 0, 0, 1})
	f.Add([]byte{1, 0, 63, 255, 128, 0, 0, 1, 1, 2, 0, 16, 200, 1, 8, 100, 4, 0, 0, 1, 0, 1, 2, 0, 2, 3, 0, 3, 1, 0, 3, 4, 2})
	f.Add([]byte{3, 1, 10, 10, 10, 3, 3, 1, 0, 0, 4, 1, 1, 2, 0, 3, 0, 1, 0, 4, 3, 1, 0, 1, 5, 9, 9, 9, 9, 9, 9, 9, 9, 9})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := &choices{data}
		var hosts []Host
		for i := range 1 + r.pick(4) {
			hosts = append(hosts, fuzzHost(r, i))
		}
		fl, err := NewFleet(hosts...)
		if err != nil {
			if !errors.Is(err, ErrInvalidHost) {
				t.Fatalf("new fleet: %v", err)
			}
			return
		}
		var allocs []Allocation
		for n := 0; !r.done() && n < 64; n++ {
			if r.pick(4) == 0 && len(allocs) > 0 {
				i := r.pick(len(allocs))
				if _, ok := fl.Remove(allocs[i].VM); !ok {
					t.Fatalf("remove %s", allocs[i].VM)
				}
				allocs = append(allocs[:i], allocs[i+1:]...)
				continue
			}
			req := fuzzRequest(r, fmt.Sprintf("vm%d", n))
			l := newLedger(hosts, allocs)
			d, err := fl.Place(req)
			var ref *Refusal
			switch {
			case errors.Is(err, ErrInvalidRequest):
				continue
			case errors.As(err, &ref):
				if h := l.expect(req); h != "" {
					t.Fatalf("refused %+v %+v (%v), but %s fits", req, req.GPU, err, h)
				}
				continue
			case err != nil:
				t.Fatalf("place: %v", err)
			}
			if want := l.expect(req); d.Host != want {
				t.Fatalf("%+v went to %s, the rules prefer %q", req, d.Host, want)
			}
			if err := fl.Commit(d.Allocation); err != nil {
				t.Fatalf("commit the decision %+v: %v", d, err)
			}
			allocs = append(allocs, d.Allocation)
			if l := newLedger(hosts, allocs); len(l.problems) > 0 {
				t.Fatalf("after %s: %v", req.VM, l.problems)
			}
		}
		checkUsage(t, hosts, allocs, fl.Usage())
	})
}
