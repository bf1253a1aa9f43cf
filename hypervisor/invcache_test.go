package hypervisor_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/hypervisor"
	"github.com/rackboot/rackboot/hypervisor/placement"
	"github.com/rackboot/rackboot/hypervisor/virttest"
	"github.com/rackboot/rackboot/store"
)

// TestReinspectedHost: what placement keeps of a host's inventory is
// replaced as soon as the host is inspected again, by this server or
// another on the same database: a host found to have more memory takes a
// VM it refused before, and one found to have less refuses it again.
func TestReinspectedHost(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, virttest.New(x86, arm))
	n := r.node(t, 1, "t4-01", "t4")
	if _, err := r.svc.SetHypervisor(ctx, "t4-01", hypervisor.Settings{URI: "u", Bridge: "br0", RAMRatio: 1}, "user:test"); err != nil {
		t.Fatal(err)
	}
	// The T4 host has 384 GiB.
	req := hypervisor.VMRequest{Name: "big", Shape: store.Flavor{Arch: boot.ArchX86_64, VCPUs: 4, MemoryMiB: 512 << 10, DiskGiB: 10}}
	var refused *placement.Refusal
	if _, err := r.svc.Plan(ctx, req); !errors.As(err, &refused) {
		t.Fatalf("512 GiB on a 384 GiB host: %v", err)
	}
	b, err := os.ReadFile(filepath.Join("..", "agent", "inventory", "testdata", "t4.json"))
	if err != nil {
		t.Fatal(err)
	}
	inspect := func(mib int64) {
		t.Helper()
		var inv map[string]any
		if err := json.Unmarshal(b, &inv); err != nil {
			t.Fatal(err)
		}
		inv["memory"] = map[string]any{"total": mib << 20, "physical_mb": mib}
		inv["cpu"].(map[string]any)["numa_nodes"] = nil
		out, _ := json.Marshal(inv)
		if err := r.st.SetInventory(ctx, n.ID, out, nil); err != nil {
			t.Fatal(err)
		}
	}
	inspect(1 << 20)
	p, err := r.svc.Plan(ctx, req)
	if err != nil || p.Decision.Host != n.ID {
		t.Fatalf("after the host was found to have 1 TiB: %+v, %v", p.Decision, err)
	}
	// Another server on the database decides on the same inventory, and
	// both see the host shrink.
	other := &hypervisor.Service{Store: r.st, Dial: r.d.Dial, Logger: quiet}
	if _, err := other.Plan(ctx, req); err != nil {
		t.Fatalf("the other server on a 1 TiB host: %v", err)
	}
	inspect(256 << 10)
	for i, s := range []*hypervisor.Service{r.svc, other} {
		if _, err := s.Plan(ctx, req); !errors.As(err, &refused) {
			t.Errorf("server %d after the host was found to have 256 GiB: %v", i, err)
		}
	}
}
