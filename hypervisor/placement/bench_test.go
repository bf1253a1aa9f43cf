package placement

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/rackboot/rackboot/boot"
)

// bigFleet is n hosts in the proportions of the CERN fleet, with plain
// x86 hosts making up the rest, about half full.
func bigFleet(b *testing.B, n int) *Fleet {
	b.Helper()
	shape := cernFleet()
	var hosts []Host
	for i := range n {
		var h Host
		if i%3 == 0 {
			h = Host{Arch: boot.ArchX86_64, VCPUs: 64, MemoryMiB: 256 * 1024}
		} else {
			h = shape[i%len(shape)]
		}
		h.Name = fmt.Sprintf("hv-%05d", i)
		hosts = append(hosts, h)
	}
	f, err := NewFleet(hosts...)
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 2 * n {
		r, ok := randomRequest(rng, fmt.Sprintf("fill-%d", i))
		if !ok {
			continue
		}
		if d, err := f.Place(r); err == nil {
			if err := f.Commit(d.Allocation); err != nil {
				b.Fatal(err)
			}
		}
	}
	return f
}

// BenchmarkPlace10k measures decisions on a 10,000-host fleet, for each
// kind of request and for a request that no host can take.
func BenchmarkPlace10k(b *testing.B) {
	f := bigFleet(b, 10000)
	x := boot.ArchX86_64
	for _, c := range []struct {
		name string
		req  Request
	}{
		{"plain", Request{VM: "b", Arch: x, VCPUs: 4, MemoryMiB: 8192}},
		{"aarch64", Request{VM: "b", Arch: boot.ArchAArch64, VCPUs: 16, MemoryMiB: 32768}},
		{"passthrough", Request{VM: "b", Arch: x, VCPUs: 8, MemoryMiB: 32768, GPU: &GPURequest{Kind: Passthrough, Model: "T4", Count: 1}}},
		{"vgpu", Request{VM: "b", Arch: x, VCPUs: 4, MemoryMiB: 8192, GPU: &GPURequest{Kind: VGPU, Profile: "nvidia-222", Count: 1}}},
		{"mig", Request{VM: "b", Arch: x, VCPUs: 4, MemoryMiB: 8192, GPU: &GPURequest{Kind: MIG, Model: "A100", Profile: "1g.10gb", Count: 1}}},
		{"refused", Request{VM: "b", Arch: x, VCPUs: 4, MemoryMiB: 8192, GPU: &GPURequest{Kind: Passthrough, Model: "A100", Count: 8}}},
	} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				f.Place(c.req)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "decisions/s")
		})
	}
}
