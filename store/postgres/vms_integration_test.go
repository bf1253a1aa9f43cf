//go:build integration

package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/hypervisor"
	"github.com/rackboot/rackboot/hypervisor/placement"
	"github.com/rackboot/rackboot/hypervisor/virttest"
	"github.com/rackboot/rackboot/store"
)

// TestTwoServersPlaceVMs runs two VM services, each on its own connection
// pool to one PostgreSQL database as two rackboot servers would, placing
// many more MIG VMs at once than one hypervisor has partitions: every
// partition goes to exactly one VM, and every other request is refused.
func TestTwoServersPlaceVMs(t *testing.T) {
	ctx := context.Background()
	dsn := freshDatabase(t)
	a, b := openTest(t, dsn), openTest(t, dsn)
	mac, _ := net.ParseMAC("52:54:00:dd:00:01")
	n, _, err := a.EnrollClient(ctx, boot.Client{MAC: mac, Arch: boot.ClientX64UEFI}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	inv, err := os.ReadFile(filepath.Join("..", "..", "agent", "inventory", "testdata", "a100x4.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.SetInventory(ctx, n.ID, inv, nil); err != nil {
		t.Fatal(err)
	}
	d := virttest.New([]boot.Arch{boot.ArchX86_64}, nil)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	svcs := []*hypervisor.Service{{Store: a, Dial: d.Dial, Logger: quiet}, {Store: b, Dial: d.Dial, Logger: quiet}}
	// Four A100s of two partitions each: eight.
	if _, err := svcs[0].SetHypervisor(ctx, n.ID, hypervisor.Settings{URI: "qemu+tls://a100-01/system", GPUMode: "mig", GPUProfile: "3g.20gb,3g.20gb", Bridge: "br0"}, "user:test"); err != nil {
		t.Fatal(err)
	}
	shape := store.Flavor{VCPUs: 2, MemoryMiB: 2048, DiskGiB: 10, Arch: boot.ArchX86_64, GPUMode: "mig", GPUProfile: "3g.20gb"}
	var wg sync.WaitGroup
	var mu sync.Mutex
	won, refused := 0, 0
	for i := 0; i < 24; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			_, err := svcs[i%2].CreateVM(ctx, hypervisor.VMRequest{Name: fmt.Sprintf("vm-%d", i), Shape: shape}, "user:test")
			var refusal *placement.Refusal
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				won++
			case errors.As(err, &refusal) || errors.Is(err, placement.ErrConflict):
				refused++
			default:
				t.Errorf("vm-%d: %v", i, err)
			}
		}(i)
	}
	wg.Wait()
	if won != 8 || refused != 16 {
		t.Fatalf("won %d, refused %d: want 8 and 16", won, refused)
	}
	vms, err := b.VMs(ctx, n.ID)
	if err != nil {
		t.Fatal(err)
	}
	held := map[string]string{}
	for _, vm := range vms {
		if len(vm.Devices) != 1 {
			t.Fatalf("vm %s holds %+v", vm.NodeID, vm.Devices)
		}
		k := fmt.Sprintf("%s/%d", vm.Devices[0].GPU, vm.Devices[0].Slot)
		if other, ok := held[k]; ok {
			t.Fatalf("partition %s given to %s and %s", k, other, vm.NodeID)
		}
		held[k] = vm.NodeID
	}
	if len(held) != 8 {
		t.Fatalf("%d partitions held, want 8", len(held))
	}
}
