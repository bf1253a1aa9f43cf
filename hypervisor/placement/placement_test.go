package placement

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/rackboot/rackboot/boot"
)

const gib = 1024

// x86 is a host without overcommit or reserve, so sizes in tests read as
// they are.
func x86(name string, cpus int, memGiB int64) Host {
	return Host{Name: name, Arch: boot.ArchX86_64, VCPUs: cpus, MemoryMiB: memGiB * gib, ReservedMiB: -1, CPURatio: 1, RAMRatio: 1}
}

func arm(name string, cpus int, memGiB int64) Host {
	h := x86(name, cpus, memGiB)
	h.Arch = boot.ArchAArch64
	return h
}

func emulating(h Host, a ...boot.Arch) Host { h.Emulated = a; return h }

func drained(h Host) Host { h.Drained = true; return h }

// numa splits a host into two equal nodes.
func numa(h Host) Host {
	h.NUMA = []NUMANode{{ID: 0, VCPUs: h.VCPUs / 2, MemoryMiB: h.MemoryMiB / 2}, {ID: 1, VCPUs: h.VCPUs / 2, MemoryMiB: h.MemoryMiB / 2}}
	return h
}

func gpus(h Host, m Mode, model string, nodes ...int) Host {
	h.Mode = m
	for i, n := range nodes {
		h.GPUs = append(h.GPUs, GPU{Address: fmt.Sprintf("0000:%02x:00.0", 0x41+i), Model: model, NUMA: n})
	}
	return h
}

// paired puts the first two cards of h in one IOMMU group.
func paired(h Host) Host { return pairedAt(h, 0, 1) }

func pairedAt(h Host, i, j int) Host {
	g := []string{h.GPUs[i].Address, h.GPUs[j].Address}
	h.GPUs[i].Group, h.GPUs[j].Group = g, g
	return h
}

var (
	pt   = Mode{Kind: Passthrough}
	t4v  = Mode{Kind: VGPU, VGPUType: "nvidia-222", VGPUMax: 2}
	mig  = Mode{Kind: MIG, MIGLayout: []string{"3g.40gb", "2g.20gb", "1g.10gb", "1g.10gb"}}
	a100 = "NVIDIA A100-SXM4-80GB"
	t4   = "Tesla T4"
)

func vm(name string, arch boot.Arch, cpus int, memGiB int64) Request {
	return Request{VM: name, Arch: arch, VCPUs: cpus, MemoryMiB: memGiB * gib}
}

func withGPU(r Request, k Kind, model, profile string, count int) Request {
	r.GPU = &GPURequest{Kind: k, Model: model, Profile: profile, Count: count}
	return r
}

func mustFleet(t *testing.T, hs ...Host) *Fleet {
	t.Helper()
	f, err := NewFleet(hs...)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// placeAll places and commits each request in turn.
func placeAll(t *testing.T, f *Fleet, rs ...Request) {
	t.Helper()
	for _, r := range rs {
		d, err := f.Place(r)
		if err != nil {
			t.Fatalf("place %s: %v", r.VM, err)
		}
		if err := f.Commit(d.Allocation); err != nil {
			t.Fatalf("commit %s: %v", r.VM, err)
		}
	}
}

func TestPlace(t *testing.T) {
	x := boot.ArchX86_64
	a := boot.ArchAArch64
	for _, c := range []struct {
		name    string
		hosts   []Host
		before  []Request
		req     Request
		host    string
		numa    int
		devices []Device
		note    string
		err     string
	}{
		// Rule 1: architecture.
		{
			name:  "native host before an emulating one",
			hosts: []Host{emulating(x86("emu", 64, 256), a), arm("altra-01", 8, 16)},
			req:   vm("v", a, 4, 8), host: "altra-01", numa: 0,
			note: "vCPUs and memory on NUMA node 0 (the host reports no NUMA layout: one node)",
		},
		{
			name:   "emulating host when the native ones are full",
			hosts:  []Host{emulating(x86("emu", 64, 256), a), arm("altra-01", 8, 16)},
			before: []Request{vm("w", a, 8, 8)},
			req:    vm("v", a, 4, 8), host: "emu",
		},
		{
			name:  "no host runs the architecture",
			hosts: []Host{x86("h1", 8, 16)},
			req:   vm("v", "riscv64", 1, 1),
			err:   "place vm v: no host runs riscv64, natively or emulated",
		},
		{
			name:  "the only host that runs it is drained",
			hosts: []Host{x86("h1", 8, 16), drained(arm("altra-01", 80, 256))},
			req:   vm("v", a, 1, 1),
			err:   "place vm v: no host runs aarch64, natively or emulated: the 1 host that does is drained",
		},
		// Rule 2: vCPUs and memory.
		{
			name:   "the closest host is named with what it lacks",
			hosts:  []Host{arm("altra-01", 80, 256), arm("altra-03", 80, 256)},
			before: []Request{vm("w1", a, 70, 100), vm("w2", a, 68, 100)},
			req:    vm("v", a, 16, 64),
			err:    "place vm v: no aarch64 host has 16 free vCPUs and 64 GiB free; closest: altra-03, 12 vCPUs free",
		},
		{
			name:   "short of memory",
			hosts:  []Host{x86("h1", 80, 64)},
			before: []Request{vm("w1", x, 1, 40)},
			req:    vm("v", x, 1, 32),
			err:    "place vm v: no x86_64 host has 1 free vCPU and 32 GiB free; closest: h1, 24 GiB free",
		},
		// Rule 3: passthrough takes IOMMU groups whole.
		{
			name:  "a lone card before breaking up a group",
			hosts: []Host{paired(gpus(x86("g1", 64, 256), pt, a100, 0, 0, 0))},
			req:   withGPU(vm("v", x, 4, 8), Passthrough, "", "", 1), host: "g1", numa: 0,
			devices: []Device{{GPU: "0000:43:00.0", Kind: Passthrough}},
			note:    "vCPUs, memory and GPU on NUMA node 0 (the host reports no NUMA layout: one node)",
		},
		{
			name:   "one card of a group takes the group",
			hosts:  []Host{paired(gpus(x86("g1", 64, 256), pt, a100, 0, 0, 0))},
			before: []Request{withGPU(vm("w", x, 4, 8), Passthrough, "", "", 1)},
			req:    withGPU(vm("v", x, 4, 8), Passthrough, "a100", "", 1), host: "g1", numa: 0,
			devices: []Device{{GPU: "0000:41:00.0", Kind: Passthrough, Group: []string{"0000:42:00.0"}}},
		},
		{
			name:   "the other card of a taken group is not free",
			hosts:  []Host{paired(gpus(x86("g1", 64, 256), pt, a100, 0, 0))},
			before: []Request{withGPU(vm("w", x, 4, 8), Passthrough, "", "", 1)},
			req:    withGPU(vm("v", x, 4, 8), Passthrough, "A100", "", 1),
			err:    "place vm v: no x86_64 host has a passthrough A100 free: 1 host has such GPUs, all taken",
		},
		{
			name:  "two cards of one group",
			hosts: []Host{paired(gpus(x86("g1", 64, 256), pt, a100, 0, 0, 0))},
			req:   withGPU(vm("v", x, 4, 8), Passthrough, "", "", 2), host: "g1", numa: 0,
			devices: []Device{
				{GPU: "0000:41:00.0", Kind: Passthrough, Group: []string{"0000:42:00.0"}},
				{GPU: "0000:42:00.0", Kind: Passthrough, Group: []string{"0000:41:00.0"}},
			},
		},
		{
			name:  "a whole group before two part groups",
			hosts: []Host{pairedAt(gpus(x86("g1", 64, 256), pt, a100, 0, 0, 0), 1, 2)},
			req:   withGPU(vm("v", x, 4, 8), Passthrough, "", "", 2), host: "g1", numa: 0,
			devices: []Device{
				{GPU: "0000:42:00.0", Kind: Passthrough, Group: []string{"0000:43:00.0"}},
				{GPU: "0000:43:00.0", Kind: Passthrough, Group: []string{"0000:42:00.0"}},
			},
		},
		{
			name:   "not enough free cards, the closest named",
			hosts:  []Host{gpus(x86("g1", 64, 256), pt, a100, 0, 0), gpus(x86("g2", 64, 256), pt, a100, 0, 0, 0)},
			before: []Request{withGPU(vm("w", x, 4, 8), Passthrough, "", "", 2), withGPU(vm("w2", x, 4, 8), Passthrough, "", "", 1)},
			req:    withGPU(vm("v", x, 4, 8), Passthrough, "", "", 3),
			err:    "place vm v: no x86_64 host has 3 passthrough GPUs free: 2 hosts have such GPUs; closest: g2, 2 free",
		},
		{
			name:  "no card of the model",
			hosts: []Host{gpus(x86("g1", 64, 256), pt, a100, 0)},
			req:   withGPU(vm("v", x, 4, 8), Passthrough, "H100", "", 1),
			err:   "place vm v: no x86_64 host offers a passthrough H100",
		},
		// Rule 4: vGPU.
		{
			name:   "vGPU packs onto the fuller card",
			hosts:  []Host{gpus(x86("t4-01", 64, 256), t4v, t4, 0, 0)},
			before: []Request{withGPU(vm("w", x, 1, 1), VGPU, "", "nvidia-222", 1)},
			req:    withGPU(vm("v", x, 1, 1), VGPU, "t4", "NVIDIA-222", 1), host: "t4-01", numa: 0,
			devices: []Device{{GPU: "0000:41:00.0", Kind: VGPU, Slot: 1, Profile: "nvidia-222"}},
		},
		{
			name:   "every instance of the type taken",
			hosts:  []Host{gpus(x86("t4-01", 64, 256), t4v, t4, 0)},
			before: []Request{withGPU(vm("w1", x, 1, 1), VGPU, "", "nvidia-222", 1), withGPU(vm("w2", x, 1, 1), VGPU, "", "nvidia-222", 1)},
			req:    withGPU(vm("v", x, 1, 1), VGPU, "T4", "nvidia-222", 1),
			err:    "place vm v: no x86_64 host offers vGPU nvidia-222 on a T4: 1 host has the type, all its instances are taken",
		},
		{
			name:  "a vGPU type no host has",
			hosts: []Host{gpus(x86("t4-01", 64, 256), t4v, t4, 0)},
			req:   withGPU(vm("v", x, 1, 1), VGPU, "", "nvidia-223", 1),
			err:   "place vm v: no x86_64 host offers vGPU nvidia-223",
		},
		// Rule 5: MIG.
		{
			name:   "the partition of the profile on the fuller card",
			hosts:  []Host{gpus(x86("a100-01", 64, 256), mig, a100, 0, 0)},
			before: []Request{withGPU(vm("w", x, 1, 1), MIG, "", "1g.10gb", 1)},
			req:    withGPU(vm("v", x, 1, 1), MIG, "A100", "1g.10gb", 1), host: "a100-01", numa: 0,
			devices: []Device{{GPU: "0000:41:00.0", Kind: MIG, Slot: 3, Profile: "1g.10gb"}},
		},
		{
			name:   "every partition of the profile taken",
			hosts:  []Host{gpus(x86("a100-01", 64, 256), mig, a100, 0), gpus(x86("a100-02", 64, 256), mig, a100, 0)},
			before: []Request{withGPU(vm("w1", x, 1, 1), MIG, "", "3g.40gb", 1), withGPU(vm("w2", x, 1, 1), MIG, "", "3g.40gb", 1)},
			req:    withGPU(vm("v", x, 1, 1), MIG, "A100", "3g.40gb", 1),
			err:    "place vm v: no x86_64 host offers MIG 3g.40gb on an A100: 2 hosts have the profile, all its partitions are taken",
		},
		{
			name:  "a profile outside the layout",
			hosts: []Host{gpus(x86("a100-01", 64, 256), mig, a100, 0)},
			req:   withGPU(vm("v", x, 1, 1), MIG, "", "7g.80gb", 1),
			err:   "place vm v: no x86_64 host offers MIG 7g.80gb",
		},
		// Rule 6: NUMA.
		{
			name:  "vCPUs, memory and GPU on the GPU's node",
			hosts: []Host{numa(gpus(x86("g1", 64, 256), pt, a100, 1))},
			req:   withGPU(vm("v", x, 8, 32), Passthrough, "", "", 1), host: "g1", numa: 1,
			devices: []Device{{GPU: "0000:41:00.0", Kind: Passthrough}},
			note:    "vCPUs, memory and GPU on NUMA node 1",
		},
		{
			name:  "spread when no node holds it all",
			hosts: []Host{numa(gpus(x86("g1", 24, 256), pt, a100, 1))},
			req:   withGPU(vm("v", x, 16, 64), Passthrough, "", "", 1), host: "g1", numa: -1,
			devices: []Device{{GPU: "0000:41:00.0", Kind: Passthrough}},
			note:    "spread over NUMA nodes 0 and 1: no one node has 16 free vCPUs, 64 GiB and the GPU",
		},
		{
			name:  "spread when the GPUs are on two nodes",
			hosts: []Host{numa(gpus(x86("g1", 64, 256), pt, a100, 0, 1))},
			req:   withGPU(vm("v", x, 4, 8), Passthrough, "", "", 2), host: "g1", numa: -1,
			devices: []Device{{GPU: "0000:41:00.0", Kind: Passthrough}, {GPU: "0000:42:00.0", Kind: Passthrough}},
			note:    "spread over NUMA nodes 0 and 1: no one node has 4 free vCPUs, 8 GiB and the 2 GPUs",
		},
		{
			name: "spread over a host whose one node is too small",
			hosts: []Host{func() Host {
				h := x86("h1", 8, 16)
				h.NUMA = []NUMANode{{ID: 0, VCPUs: 4, MemoryMiB: 16 * gib}}
				return h
			}()},
			req: vm("v", x, 6, 1), host: "h1", numa: -1,
			note: "spread over the host: NUMA node 0 lacks 6 free vCPUs and 1 GiB",
		},
		{
			name:   "a plain VM on the node with more free memory",
			hosts:  []Host{numa(x86("h1", 64, 256))},
			before: []Request{vm("w", x, 1, 64)},
			req:    vm("v", x, 8, 32), host: "h1", numa: 1,
			note: "vCPUs and memory on NUMA node 1",
		},
		// Rule 7: drained hosts.
		{
			name:  "a drained host takes nothing",
			hosts: []Host{drained(x86("h1", 64, 256)), x86("h2", 8, 16)},
			req:   vm("v", x, 1, 1), host: "h2", numa: 0,
		},
		{
			name:  "drained GPU hosts do not count as offering",
			hosts: []Host{drained(gpus(x86("a100-01", 64, 256), mig, a100, 0)), x86("h2", 8, 16)},
			req:   withGPU(vm("v", x, 1, 1), MIG, "", "3g.40gb", 1),
			err:   "place vm v: no x86_64 host offers MIG 3g.40gb",
		},
		// Rule 8: spreading plain VMs, packing GPU VMs.
		{
			name:  "a plain VM keeps off GPU hosts",
			hosts: []Host{gpus(x86("a100-01", 128, 1024), mig, a100, 0), x86("h2", 8, 16)},
			req:   vm("v", x, 1, 1), host: "h2",
		},
		{
			name:  "a plain VM on a GPU host when nothing else fits",
			hosts: []Host{gpus(x86("a100-01", 128, 1024), mig, a100, 0), x86("h2", 8, 16)},
			req:   vm("v", x, 16, 1), host: "a100-01",
		},
		{
			name:  "plain VMs go to the most free memory",
			hosts: []Host{x86("h1", 8, 16), x86("h2", 8, 32), x86("h3", 8, 32)},
			req:   vm("v", x, 1, 1), host: "h2",
		},
		{
			name:   "GPU VMs go to the fewest free devices",
			hosts:  []Host{gpus(x86("a100-01", 64, 256), mig, a100, 0), gpus(x86("a100-02", 64, 256), mig, a100, 0)},
			before: []Request{withGPU(vm("w", x, 1, 1), MIG, "", "1g.10gb", 1)},
			req:    withGPU(vm("v", x, 1, 1), MIG, "", "1g.10gb", 1), host: "a100-01",
		},
		{
			name:  "GPU VMs go to the fewest free devices, not the first name",
			hosts: []Host{gpus(x86("a100-01", 64, 256), mig, a100, 0, 0), gpus(x86("a100-02", 64, 256), mig, a100, 0)},
			req:   withGPU(vm("v", x, 1, 1), MIG, "", "1g.10gb", 1), host: "a100-02",
		},
		{
			name:  "a GPU model is a case-insensitive substring",
			hosts: []Host{gpus(x86("v100s-01", 64, 256), pt, "Tesla V100S-PCIE-32GB", 0), gpus(x86("a100-01", 64, 256), pt, a100, 0)},
			req:   withGPU(vm("v", x, 1, 1), Passthrough, "v100", "", 1), host: "v100s-01",
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := mustFleet(t, c.hosts...)
			placeAll(t, f, c.before...)
			d, err := f.Place(c.req)
			if c.err != "" {
				var ref *Refusal
				if !errors.As(err, &ref) {
					t.Fatalf("got %v, %v; want refusal %q", d, err, c.err)
				}
				if err.Error() != c.err {
					t.Errorf("refusal\n got %q\nwant %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d.Host != c.host {
				t.Errorf("host %s, want %s (%s)", d.Host, c.host, d.Note)
			}
			if c.devices != nil || c.note != "" {
				if d.NUMA != c.numa {
					t.Errorf("NUMA %d, want %d", d.NUMA, c.numa)
				}
				if diff := cmp.Diff(c.devices, d.Devices); diff != "" {
					t.Errorf("devices (-want +got):\n%s", diff)
				}
			}
			if c.note != "" && d.Note != c.note {
				t.Errorf("note\n got %q\nwant %q", d.Note, c.note)
			}
			if err := f.Commit(d.Allocation); err != nil {
				t.Errorf("commit the decision: %v", err)
			}
		})
	}
}

func TestPlaceInvalid(t *testing.T) {
	x := boot.ArchX86_64
	f := mustFleet(t, x86("h1", 8, 16))
	placeAll(t, f, vm("taken", x, 1, 1))
	for _, c := range []struct {
		name string
		req  Request
		want error
		msg  string
	}{
		{"no name", vm("", x, 1, 1), ErrInvalidRequest, "no vm name"},
		{"no architecture", vm("v", "", 1, 1), ErrInvalidRequest, "no architecture"},
		{"zero vCPUs", vm("v", x, 0, 1), ErrInvalidRequest, "0 vCPUs, at least 1 is needed"},
		{"negative memory", Request{VM: "v", Arch: x, VCPUs: 1, MemoryMiB: -5}, ErrInvalidRequest, "-5 MiB of memory"},
		{"GPU count 0", withGPU(vm("v", x, 1, 1), Passthrough, "", "", 0), ErrInvalidRequest, "GPU count 0"},
		{"negative GPU count", withGPU(vm("v", x, 1, 1), Passthrough, "", "", -1), ErrInvalidRequest, "GPU count -1"},
		{"two MIG partitions", withGPU(vm("v", x, 1, 1), MIG, "", "1g.10gb", 2), ErrInvalidRequest, "a VM gets one MIG partition, not 2"},
		{"two vGPUs", withGPU(vm("v", x, 1, 1), VGPU, "", "nvidia-222", 2), ErrInvalidRequest, "a VM gets one vGPU, not 2"},
		{"unknown mode", withGPU(vm("v", x, 1, 1), "sriov", "", "", 1), ErrInvalidRequest, `unknown GPU mode "sriov"`},
		{"no mode", withGPU(vm("v", x, 1, 1), "", "", "", 1), ErrInvalidRequest, `unknown GPU mode ""`},
		{"MIG without profile", withGPU(vm("v", x, 1, 1), MIG, "", "", 1), ErrInvalidRequest, "MIG needs a profile"},
		{"passthrough with profile", withGPU(vm("v", x, 1, 1), Passthrough, "", "1g.10gb", 1), ErrInvalidRequest, "takes no profile"},
		{"already allocated", vm("taken", x, 1, 1), ErrVMExists, "on h1"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := f.Place(c.req)
			if !errors.Is(err, c.want) || !strings.Contains(fmt.Sprint(err), c.msg) {
				t.Errorf("got %v, want %v with %q", err, c.want, c.msg)
			}
			var ref *Refusal
			if errors.As(err, &ref) {
				t.Errorf("an invalid request is refused as if it could fit later: %v", err)
			}
		})
	}
}

func TestCapacity(t *testing.T) {
	x := boot.ArchX86_64
	host := func(cpus int, mem, reserved int64, cr, rr float64) Host {
		return Host{Name: "h", Arch: x, VCPUs: cpus, MemoryMiB: mem, ReservedMiB: reserved, CPURatio: cr, RAMRatio: rr}
	}
	for _, c := range []struct {
		name string
		host Host
		req  Request
		fits bool
	}{
		{"Nova's 16 vCPUs per CPU", host(2, 4096, 0, 0, 0), Request{VM: "v", Arch: x, VCPUs: 32, MemoryMiB: 1}, true},
		{"one vCPU beyond", host(2, 4096, 0, 0, 0), Request{VM: "v", Arch: x, VCPUs: 33, MemoryMiB: 1}, false},
		{"Nova's 1.5 memory ratio after 512 MiB reserved", host(2, 2048, 0, 0, 0), Request{VM: "v", Arch: x, VCPUs: 1, MemoryMiB: 2304}, true},
		{"one MiB beyond", host(2, 2048, 0, 0, 0), Request{VM: "v", Arch: x, VCPUs: 1, MemoryMiB: 2305}, false},
		{"a reserve of its own", host(2, 2048, 1024, 1, 1), Request{VM: "v", Arch: x, VCPUs: 1, MemoryMiB: 1025}, false},
		{"a negative reserve keeps nothing back", host(2, 2048, -1, 1, 1), Request{VM: "v", Arch: x, VCPUs: 1, MemoryMiB: 2048}, true},
		{"a ratio of its own", host(8, 2048, -1, 1.5, 1), Request{VM: "v", Arch: x, VCPUs: 12, MemoryMiB: 1}, true},
		{"a ratio of its own, one beyond", host(8, 2048, -1, 1.5, 1), Request{VM: "v", Arch: x, VCPUs: 13, MemoryMiB: 1}, false},
		{"less memory than the reserve", host(8, 256, 0, 0, 0), Request{VM: "v", Arch: x, VCPUs: 1, MemoryMiB: 1}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := mustFleet(t, c.host)
			d, err := f.Place(c.req)
			if (err == nil) != c.fits {
				t.Fatalf("place: %v, want fits=%v", err, c.fits)
			}
			// Commit holds the same line as Place.
			a := Allocation{VM: "v", Host: "h", Arch: x, VCPUs: c.req.VCPUs, MemoryMiB: c.req.MemoryMiB, NUMA: -1}
			if err == nil {
				a = d.Allocation
			}
			if err := f.Commit(a); (err == nil) != c.fits || !c.fits && !errors.Is(err, ErrConflict) {
				t.Errorf("commit: %v, want fits=%v", err, c.fits)
			}
		})
	}
}

func TestCommit(t *testing.T) {
	x := boot.ArchX86_64
	hosts := []Host{
		x86("plain", 8, 16),
		drained(x86("off", 8, 16)),
		numa(paired(gpus(x86("pt", 8, 16), pt, a100, 0, 0, 1))),
		gpus(x86("vg", 8, 16), t4v, t4, 0),
		gpus(x86("mg", 8, 16), mig, a100, 0),
	}
	pass := func(gpu string, group ...string) Device { return Device{GPU: gpu, Kind: Passthrough, Group: group} }
	alloc := func(name, host string, numa int, ds ...Device) Allocation {
		return Allocation{VM: name, Host: host, Arch: x, VCPUs: 1, MemoryMiB: 1024, NUMA: numa, Devices: ds}
	}
	existing := []Allocation{
		alloc("pt-vm", "pt", 0, pass("0000:41:00.0", "0000:42:00.0")),
		alloc("vg-vm", "vg", -1, Device{GPU: "0000:41:00.0", Kind: VGPU, Slot: 0, Profile: "nvidia-222"}),
		alloc("mg-vm", "mg", -1, Device{GPU: "0000:41:00.0", Kind: MIG, Slot: 2, Profile: "1g.10gb"}),
	}
	big := alloc("v", "plain", -1)
	big.VCPUs = 9
	huge := alloc("v", "plain", -1)
	huge.MemoryMiB = 16*gib + 1
	arm := alloc("v", "plain", -1)
	arm.Arch = boot.ArchAArch64
	zero := alloc("v", "plain", -1)
	zero.VCPUs = 0
	nodeFull := alloc("v", "pt", 1)
	nodeFull.VCPUs = 5
	for _, c := range []struct {
		name string
		a    Allocation
		want error
	}{
		{"fits", alloc("v", "plain", 0), nil},
		{"spread fits", alloc("v", "pt", -1, pass("0000:43:00.0")), nil},
		{"no vm name", alloc("", "plain", -1), ErrInvalidAllocation},
		{"vm already allocated", alloc("pt-vm", "plain", -1), ErrVMExists},
		{"unknown host", alloc("v", "nowhere", -1), ErrUnknownHost},
		{"drained host", alloc("v", "off", -1), ErrConflict},
		{"wrong architecture", arm, ErrInvalidAllocation},
		{"zero vCPUs", zero, ErrInvalidAllocation},
		{"over the vCPUs", big, ErrConflict},
		{"over the memory", huge, ErrConflict},
		{"no such NUMA node", alloc("v", "plain", 1), ErrInvalidAllocation},
		{"over the NUMA node", nodeFull, ErrConflict},
		{"GPU off the pinned node", alloc("v", "pt", 0, pass("0000:43:00.0")), ErrInvalidAllocation},
		{"device on a host without GPUs", alloc("v", "plain", -1, pass("0000:41:00.0")), ErrInvalidAllocation},
		{"no such GPU", alloc("v", "pt", -1, pass("0000:99:00.0")), ErrInvalidAllocation},
		{"kind the host does not offer", alloc("v", "pt", -1, Device{GPU: "0000:43:00.0", Kind: VGPU, Profile: "nvidia-222"}), ErrInvalidAllocation},
		{"group left behind", alloc("v", "pt", 0, pass("0000:42:00.0")), ErrInvalidAllocation},
		{"group already taken", alloc("v", "pt", 0, pass("0000:42:00.0", "0000:41:00.0")), ErrConflict},
		{"same card twice", alloc("v", "pt", -1, pass("0000:43:00.0"), pass("0000:43:00.0")), ErrInvalidAllocation},
		{"passthrough with a slot", alloc("v", "pt", -1, Device{GPU: "0000:43:00.0", Kind: Passthrough, Slot: 1}), ErrInvalidAllocation},
		{"vGPU instance taken", alloc("v", "vg", -1, Device{GPU: "0000:41:00.0", Kind: VGPU, Slot: 0, Profile: "nvidia-222"}), ErrConflict},
		{"vGPU instance beyond the max", alloc("v", "vg", -1, Device{GPU: "0000:41:00.0", Kind: VGPU, Slot: 2, Profile: "nvidia-222"}), ErrInvalidAllocation},
		{"vGPU of another type", alloc("v", "vg", -1, Device{GPU: "0000:41:00.0", Kind: VGPU, Slot: 1, Profile: "nvidia-223"}), ErrInvalidAllocation},
		{"two vGPUs", alloc("v", "vg", -1, Device{GPU: "0000:41:00.0", Kind: VGPU, Slot: 1, Profile: "nvidia-222"}, Device{GPU: "0000:41:00.0", Kind: VGPU, Slot: 1, Profile: "nvidia-222"}), ErrInvalidAllocation},
		{"MIG partition free", alloc("v", "mg", -1, Device{GPU: "0000:41:00.0", Kind: MIG, Slot: 3, Profile: "1g.10gb"}), nil},
		{"MIG partition taken", alloc("v", "mg", -1, Device{GPU: "0000:41:00.0", Kind: MIG, Slot: 2, Profile: "1g.10gb"}), ErrConflict},
		{"MIG profile not the slot's", alloc("v", "mg", -1, Device{GPU: "0000:41:00.0", Kind: MIG, Slot: 0, Profile: "1g.10gb"}), ErrInvalidAllocation},
		{"MIG slot outside the layout", alloc("v", "mg", -1, Device{GPU: "0000:41:00.0", Kind: MIG, Slot: 4, Profile: "1g.10gb"}), ErrInvalidAllocation},
		{"two MIG partitions", alloc("v", "mg", -1, Device{GPU: "0000:41:00.0", Kind: MIG, Slot: 0, Profile: "3g.40gb"}, Device{GPU: "0000:41:00.0", Kind: MIG, Slot: 1, Profile: "2g.20gb"}), ErrInvalidAllocation},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := mustFleet(t, hosts...)
			for _, a := range existing {
				if err := f.Commit(a); err != nil {
					t.Fatal(err)
				}
			}
			before := f.Usage()
			err := f.Commit(c.a)
			if c.want == nil && err != nil || c.want != nil && !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
			if err != nil {
				if diff := cmp.Diff(before, f.Usage()); diff != "" {
					t.Errorf("a refused commit changed the fleet (-before +after):\n%s", diff)
				}
			}
			// The checker agrees.
			l := newLedger(hosts, existing)
			l.addNew(c.a)
			if ok := len(l.problems) == 0; ok != (err == nil) && c.want != ErrVMExists && c.a.VM != "" {
				t.Errorf("the checker says %v", l.problems)
			}
		})
	}
}

func TestNewFleetInvalid(t *testing.T) {
	for _, c := range []struct {
		name string
		host Host
		msg  string
	}{
		{"no name", Host{Arch: boot.ArchX86_64}, "no name"},
		{"no architecture", Host{Name: "h"}, "no architecture"},
		{"negative size", Host{Name: "h", Arch: boot.ArchX86_64, VCPUs: -1}, "negative size"},
		{"negative ratio", Host{Name: "h", Arch: boot.ArchX86_64, CPURatio: -1}, "negative overcommit ratio"},
		{"unknown mode", gpus(x86("h", 8, 8), Mode{Kind: "sriov"}, t4, 0), `unknown GPU mode "sriov"`},
		{"vGPU without a type", gpus(x86("h", 8, 8), Mode{Kind: VGPU, VGPUMax: 4}, t4, 0), "needs a type"},
		{"vGPU without instances", gpus(x86("h", 8, 8), Mode{Kind: VGPU, VGPUType: "nvidia-222"}, t4, 0), "at least one instance"},
		{"MIG without a layout", gpus(x86("h", 8, 8), Mode{Kind: MIG}, a100, 0), "needs a layout"},
		{"same NUMA node twice", Host{Name: "h", Arch: boot.ArchX86_64, NUMA: []NUMANode{{ID: 0}, {ID: 0}}}, "listed twice"},
		{"same GPU twice", Host{Name: "h", Arch: boot.ArchX86_64, GPUs: []GPU{{Address: "a"}, {Address: "a"}}}, "GPU a listed twice"},
		{"GPU without address", Host{Name: "h", Arch: boot.ArchX86_64, GPUs: []GPU{{}}}, "no address"},
		{"groups that disagree", Host{Name: "h", Arch: boot.ArchX86_64, GPUs: []GPU{{Address: "a", Group: []string{"a", "b"}}, {Address: "b"}}}, "differs"},
		{"address in two groups", Host{Name: "h", Arch: boot.ArchX86_64, GPUs: []GPU{{Address: "a", Group: []string{"a", "x"}}, {Address: "b", Group: []string{"b", "x"}}}}, "in two IOMMU groups"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := NewFleet(c.host)
			if !errors.Is(err, ErrInvalidHost) || !strings.Contains(err.Error(), c.msg) {
				t.Errorf("got %v, want ErrInvalidHost with %q", err, c.msg)
			}
		})
	}
	if _, err := NewFleet(x86("h", 1, 1), x86("h", 1, 1)); !errors.Is(err, ErrInvalidHost) {
		t.Errorf("two hosts of one name: %v", err)
	}
}

func TestUsage(t *testing.T) {
	x := boot.ArchX86_64
	f := mustFleet(t,
		x86("plain", 8, 16),
		paired(gpus(x86("pt", 16, 64), pt, a100, 0, 0, 0)),
		drained(gpus(x86("vg", 16, 64), Mode{Kind: VGPU, VGPUType: "nvidia-222", VGPUMax: 4}, t4, 0, 0)),
		gpus(x86("mg", 32, 128), mig, a100, 0),
	)
	placeAll(t, f,
		vm("p1", x, 2, 4),
		withGPU(vm("g1", x, 4, 8), Passthrough, "", "", 1), // the lone card
		withGPU(vm("g2", x, 4, 8), Passthrough, "", "", 1), // one card of the pair takes both
		withGPU(vm("m1", x, 2, 2), MIG, "", "3g.40gb", 1),
		withGPU(vm("m2", x, 2, 2), MIG, "", "1g.10gb", 1),
	)
	// The drained host keeps VMs committed before it was drained.
	h := drained(gpus(x86("vg", 16, 64), Mode{Kind: VGPU, VGPUType: "nvidia-222", VGPUMax: 4}, t4, 0, 0))
	h.Drained = false
	if err := f.SetHost(h); err != nil {
		t.Fatal(err)
	}
	placeAll(t, f, withGPU(vm("v1", x, 1, 1), VGPU, "", "nvidia-222", 1))
	h.Drained = true
	if err := f.SetHost(h); err != nil {
		t.Fatal(err)
	}
	want := Usage{
		Hosts: []HostUsage{
			{Host: "mg", Counts: Counts{VMs: 2, VCPUs: 4, VCPUsFree: 28, MemoryMiB: 4 * gib, MemoryFreeMiB: 124 * gib, GPUs: 1, Partitions: 2, PartitionsFree: 2}},
			{Host: "plain", Counts: Counts{VMs: 1, VCPUs: 2, VCPUsFree: 6, MemoryMiB: 4 * gib, MemoryFreeMiB: 12 * gib}},
			{Host: "pt", Counts: Counts{VMs: 2, VCPUs: 8, VCPUsFree: 8, MemoryMiB: 16 * gib, MemoryFreeMiB: 48 * gib, GPUs: 3}},
			{Host: "vg", Drained: true, Counts: Counts{VMs: 1, VCPUs: 1, VCPUsFree: 15, MemoryMiB: 1 * gib, MemoryFreeMiB: 63 * gib, GPUs: 1, GPUsFree: 1, VGPUs: 1, VGPUsFree: 7}},
		},
		Total: Counts{VMs: 6, VCPUs: 15, VCPUsFree: 57, MemoryMiB: 25 * gib, MemoryFreeMiB: 247 * gib, GPUs: 5, GPUsFree: 1, VGPUs: 1, VGPUsFree: 7, Partitions: 2, PartitionsFree: 2},
	}
	if diff := cmp.Diff(want, f.Usage()); diff != "" {
		t.Errorf("usage (-want +got):\n%s", diff)
	}
	f.Remove("g2")
	f.Remove("m1")
	u := f.Usage()
	if got := u.Hosts[2].GPUsFree; got != 2 {
		t.Errorf("after removing g2, pt has %d free GPUs, want the pair back: 2", got)
	}
	if got := u.Total.PartitionsFree; got != 3 {
		t.Errorf("after removing m1, %d free partitions, want 3", got)
	}
}

func TestSetHost(t *testing.T) {
	x := boot.ArchX86_64
	f := mustFleet(t, x86("h1", 8, 16), x86("h2", 8, 16))
	placeAll(t, f, vm("v1", x, 4, 8), vm("v2", x, 4, 8))
	on := func(name string) string {
		for _, a := range f.Allocations() {
			if a.VM == name {
				return a.Host
			}
		}
		return ""
	}
	h1 := on("v1")
	if err := f.SetHost(drained(x86(h1, 8, 16))); err != nil {
		t.Fatalf("drain: %v", err)
	}
	if on("v1") != h1 {
		t.Errorf("draining moved v1 away from %s", h1)
	}
	d, err := f.Place(vm("v3", x, 1, 1))
	if err != nil || d.Host == h1 {
		t.Errorf("placed on %s (%v) after draining %s", d.Host, err, h1)
	}
	if err := f.SetHost(x86(h1, 2, 16)); !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "vm v1 no longer fits") {
		t.Errorf("shrinking under a VM: %v", err)
	}
	if err := f.RemoveHost(h1); !errors.Is(err, ErrHostInUse) {
		t.Errorf("removing a host with VMs: %v", err)
	}
	if err := f.RemoveHost("nowhere"); !errors.Is(err, ErrUnknownHost) {
		t.Errorf("removing an unknown host: %v", err)
	}
	if _, ok := f.Remove("v1"); !ok {
		t.Fatal("remove v1")
	}
	if _, ok := f.Remove("v1"); ok {
		t.Error("v1 removed twice")
	}
	if err := f.RemoveHost(h1); err != nil {
		t.Errorf("removing an empty host: %v", err)
	}
	if err := f.Commit(Allocation{VM: "v9", Host: h1, Arch: x, VCPUs: 1, MemoryMiB: 1, NUMA: -1}); !errors.Is(err, ErrUnknownHost) {
		t.Errorf("commit on a removed host: %v", err)
	}
	if err := f.SetHost(emulating(x86(h1, 8, 16), boot.ArchAArch64)); err != nil {
		t.Fatal(err)
	}
	if d, err := f.Place(vm("a1", boot.ArchAArch64, 1, 1)); err != nil || d.Host != h1 {
		t.Errorf("aarch64 after adding an emulating host: %v, %v", d.Host, err)
	}
}

// TestConcurrent places and commits from many goroutines at once, each
// placing again when another won the devices first; no rule may break.
func TestConcurrent(t *testing.T) {
	hosts := []Host{gpus(x86("a100-01", 64, 256), mig, a100, 0, 0), gpus(x86("t4-01", 64, 256), t4v, t4, 0, 0), x86("h1", 64, 256)}
	f := mustFleet(t, hosts...)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 20 {
				r := vm(fmt.Sprintf("w%d-%d", w, i), boot.ArchX86_64, 1, 1)
				switch i % 3 {
				case 0:
					r = withGPU(r, MIG, "", "1g.10gb", 1)
				case 1:
					r = withGPU(r, VGPU, "", "nvidia-222", 1)
				}
				for {
					d, err := f.Place(r)
					if err != nil {
						break
					}
					if err := f.Commit(d.Allocation); err == nil || !errors.Is(err, ErrConflict) {
						break
					}
				}
			}
		})
	}
	wg.Wait()
	allocs := f.Allocations()
	if l := newLedger(hosts, allocs); len(l.problems) > 0 {
		t.Fatal(l.problems)
	}
	u := f.Usage().Total
	if u.PartitionsFree != 4 || u.VGPUsFree != 0 || u.VMs != 4+4+48 {
		t.Errorf("usage after the race: %+v", u)
	}
}
