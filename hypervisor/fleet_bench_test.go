package hypervisor_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/hypervisor"
	"github.com/rackboot/rackboot/hypervisor/virttest"
	"github.com/rackboot/rackboot/store"
	"github.com/rackboot/rackboot/store/sqlite"
)

// BenchmarkPlanFleet measures a VM's placement as vm create --dry-run
// asks for it: through the store, on fleets of T4 hypervisors; fleet is
// the store's read alone (docs/benchmarks.md has the figures).
func BenchmarkPlanFleet(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			ctx := context.Background()
			st, err := sqlite.Open(ctx, filepath.Join(b.TempDir(), "rackboot.db"))
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			svc := &hypervisor.Service{Store: st, Dial: virttest.New(x86, arm).Dial, Logger: quiet}
			inv, err := os.ReadFile(filepath.Join("..", "agent", "inventory", "testdata", "t4.json"))
			if err != nil {
				b.Fatal(err)
			}
			for i := range n {
				nd, _, err := st.EnrollClient(ctx, boot.Client{MAC: net.HardwareAddr{0x52, 0x54, 0, 0xdd, byte(i >> 8), byte(i)}, Arch: boot.ClientX64UEFI}, testTime)
				if err != nil {
					b.Fatal(err)
				}
				if err := st.SetInventory(ctx, nd.ID, inv, nil); err != nil {
					b.Fatal(err)
				}
				if _, err := svc.SetHypervisor(ctx, nd.ID, hypervisor.Settings{URI: "qemu+tcp://h/system", Bridge: "br0"}, "user:bench"); err != nil {
					b.Fatal(err)
				}
			}
			if _, err := svc.CreateFlavor(ctx, store.Flavor{Name: "small", Arch: boot.ArchX86_64, VCPUs: 2, MemoryMiB: 2048, DiskGiB: 10}); err != nil {
				b.Fatal(err)
			}
			b.Run("fleet", func(b *testing.B) {
				for b.Loop() {
					st.HypervisorFleet(ctx)
				}
			})
			b.Run("vms", func(b *testing.B) {
				for b.Loop() {
					st.VMs(ctx, "")
				}
			})
			b.Run("plan", func(b *testing.B) {
				for b.Loop() {
					if _, err := svc.Plan(ctx, hypervisor.VMRequest{Name: "vm-1", Flavor: "small"}); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}
