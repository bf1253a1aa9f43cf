package placement_test

import (
	"fmt"

	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/hypervisor/placement"
)

func ExampleFleet_Place() {
	f, err := placement.NewFleet(placement.Host{
		Name: "a100-01", Arch: boot.ArchX86_64, VCPUs: 128, MemoryMiB: 1 << 20,
		NUMA: []placement.NUMANode{{ID: 0, VCPUs: 64, MemoryMiB: 1 << 19}, {ID: 1, VCPUs: 64, MemoryMiB: 1 << 19}},
		GPUs: []placement.GPU{{Address: "0000:c1:00.0", Model: "NVIDIA A100-SXM4-80GB", NUMA: 1}},
		Mode: placement.Mode{Kind: placement.MIG, MIGLayout: []string{"3g.40gb", "2g.20gb", "1g.10gb", "1g.10gb"}},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	req := placement.Request{VM: "train-1", Arch: boot.ArchX86_64, VCPUs: 16, MemoryMiB: 64 << 10,
		GPU: &placement.GPURequest{Kind: placement.MIG, Model: "a100", Profile: "3g.40gb", Count: 1}}
	d, err := f.Place(req)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(d.Host, d.Devices[0].GPU, d.Devices[0].Slot, d.Note)
	if err := f.Commit(d.Allocation); err != nil {
		fmt.Println(err)
	}
	req.VM = "train-2"
	_, err = f.Place(req)
	fmt.Println(err)
	// Output:
	// a100-01 0000:c1:00.0 0 vCPUs, memory and MIG partition on NUMA node 1
	// place vm train-2: no x86_64 host offers MIG 3g.40gb on an a100: 1 host has the profile, all its partitions are taken
}
