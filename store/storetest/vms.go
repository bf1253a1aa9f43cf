package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/store"
)

func testHypervisors(t *testing.T, open Opener) {
	ctx := context.Background()
	s, _ := open(t)
	if err := s.PutHypervisor(ctx, store.Hypervisor{NodeID: "nope", URI: "qemu+tcp://h/system"}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("hypervisor of no node: %v", err)
	}
	n := enroll(t, s, 1, boot.ClientX64UEFI)
	h := store.Hypervisor{
		NodeID: n.ID, URI: "qemu+tls://gpu-01.example/system", GPUMode: "mig", GPUProfile: "3g.40gb,2g.20gb,1g.10gb,1g.10gb",
		CPURatio: 16, RAMRatio: 1.5, ReservedMiB: 512, Native: []boot.Arch{boot.ArchX86_64}, Emulated: []boot.Arch{boot.ArchAArch64},
		Bridge: "br0", VLAN: 120, Pool: "default",
	}
	if err := s.PutHypervisor(ctx, h); err != nil {
		t.Fatal(err)
	}
	h.Drained, h.CPURatio = true, 4
	if err := s.PutHypervisor(ctx, h); err != nil {
		t.Fatal(err)
	}
	got, err := s.Hypervisor(ctx, n.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Created.IsZero() || got.Updated.Before(got.Created) {
		t.Errorf("times %v %v", got.Created, got.Updated)
	}
	if d := cmp.Diff(h, got, cmpopts.IgnoreFields(store.Hypervisor{}, "Created", "Updated")); d != "" {
		t.Errorf("hypervisor (-put +got):\n%s", d)
	}
	if hs, err := s.Hypervisors(ctx); err != nil || len(hs) != 1 || hs[0].NodeID != n.ID {
		t.Errorf("list: %v %v", hs, err)
	}
	if _, err := s.Hypervisor(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("unknown hypervisor: %v", err)
	}

	// The agent's report: kept per hypervisor, replaced by the next,
	// and gone with the hypervisor.
	if err := s.PutHypervisorAgent(ctx, store.HypervisorAgent{NodeID: "nope"}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("agent report of no hypervisor: %v", err)
	}
	if _, err := s.HypervisorAgent(ctx, n.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("agent that never called in: %v", err)
	}
	booted := time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)
	rep := store.HypervisorAgent{NodeID: n.ID, Booted: booted, Applied: "mig 3g.40gb,2g.20gb,1g.10gb,1g.10gb",
		GPUs: []byte(`{"gpus":[{"index":0}]}`), Errors: []string{"GPU 1: pending reset", "GPU 0: busy"}, Round: 7, ErrorSince: []int64{3, 7},
		Version: "v1", Seen: booted.Add(time.Minute)}
	if err := s.PutHypervisorAgent(ctx, rep); err != nil {
		t.Fatal(err)
	}
	if got, err := s.HypervisorAgent(ctx, n.ID); err != nil || cmp.Diff(rep, got) != "" {
		t.Errorf("agent report with errors (-put +got): %v\n%s", err, cmp.Diff(rep, got))
	}
	rep.Errors, rep.ErrorSince, rep.Round, rep.GPUs, rep.Seen = []string{}, []int64{}, 8, nil, booted.Add(2*time.Minute)
	if err := s.PutHypervisorAgent(ctx, rep); err != nil {
		t.Fatal(err)
	}
	if got, err := s.HypervisorAgent(ctx, n.ID); err != nil || cmp.Diff(rep, got) != "" {
		t.Errorf("agent report (-put +got): %v\n%s", err, cmp.Diff(rep, got))
	}
	// A new hypervisor token replaces the old ones only when asked.
	var toks []store.Token
	for i := 0; i < 3; i++ {
		tok, err := s.CreateToken(ctx, store.Token{Hash: fmt.Sprintf("hv-%d", i), Kind: store.TokenHypervisor, NodeID: n.ID})
		if err != nil {
			t.Fatal(err)
		}
		toks = append(toks, tok)
	}
	if err := s.DeleteTokensBut(ctx, store.TokenHypervisor, n.ID, toks[1].ID); err != nil {
		t.Fatal(err)
	}
	for i, tok := range toks {
		if _, err := s.TokenByHash(ctx, tok.Hash); (err == nil) != (i == 1) {
			t.Errorf("hypervisor token %d after DeleteTokensBut: %v", i, err)
		}
	}
	if err := s.DeleteHypervisor(ctx, n.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.TokenByHash(ctx, toks[1].Hash); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("hypervisor token after its hypervisor went: %v", err)
	}
	if _, err := s.HypervisorAgent(ctx, n.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("agent report after its hypervisor went: %v", err)
	}
	if err := s.PutHypervisor(ctx, h); err != nil {
		t.Fatal(err)
	}

	f := store.Flavor{Name: "g1.mig3", VCPUs: 16, MemoryMiB: 65536, DiskGiB: 40, Arch: boot.ArchX86_64, GPUModel: "A100", GPUMode: "mig", GPUProfile: "3g.40gb", GPUCount: 1}
	if err := s.CreateFlavor(ctx, f); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateFlavor(ctx, f); !errors.Is(err, store.ErrConflict) {
		t.Errorf("second flavor of one name: %v", err)
	}
	if got, err := s.Flavor(ctx, f.Name); err != nil || cmp.Diff(f, got, cmpopts.IgnoreFields(store.Flavor{}, "Created")) != "" {
		t.Errorf("flavor %+v %v", got, err)
	}
	if fs, err := s.Flavors(ctx); err != nil || len(fs) != 1 {
		t.Errorf("flavors %v %v", fs, err)
	}
	if err := s.DeleteFlavor(ctx, f.Name); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteFlavor(ctx, f.Name); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("deleted flavor again: %v", err)
	}
}

func testVMs(t *testing.T, open Opener) {
	ctx := context.Background()
	s, _ := open(t)
	host := enroll(t, s, 1, boot.ClientX64UEFI)
	if err := s.PutHypervisor(ctx, store.Hypervisor{NodeID: host.ID, URI: "qemu+tcp://h/system", GPUMode: "mig", CPURatio: 16, RAMRatio: 1.5}); err != nil {
		t.Fatal(err)
	}
	vm := store.VM{
		Hypervisor: host.ID, Flavor: "g1.mig3", Image: "debian-12", Arch: boot.ArchX86_64, VCPUs: 16, MemoryMiB: 65536, DiskGiB: 40,
		NUMA: 1, MAC: "52:54:00:AA:00:01", UUID: "4b1d2f5e-6c1a-4d7e-9a0b-1c2d3e4f5a6b", Volume: "vm-1.raw", Note: "on NUMA node 1",
		Devices: []store.VMDevice{{Device: "0000:41:00.0", Slot: 0, GPU: "0000:41:00.0", Kind: "mig", Profile: "3g.40gb", Mdev: "0b8c3a52-9d6e-4f1a-8b2c-3d4e5f6a7b8c"}},
	}

	// A check that refuses stores nothing, and the refusal is its own.
	refused := errors.New("no room")
	if _, err := s.CreateVM(ctx, vm, "vm-1", func(store.PlaceState) error { return refused }); !errors.Is(err, refused) {
		t.Fatalf("refused create: %v", err)
	}
	if _, err := s.NodeByMAC(ctx, mac(0)); err == nil {
		t.Fatal("a node appeared")
	}
	if vs, _ := s.VMs(ctx, ""); len(vs) != 0 {
		t.Fatalf("refused VM stored: %v", vs)
	}
	if _, err := s.CreateVM(ctx, store.VM{Hypervisor: "nope", MAC: "52:54:00:aa:00:09"}, "x", nil); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("vm on no hypervisor: %v", err)
	}

	var seen []store.VM
	got, err := s.CreateVM(ctx, vm, "vm-1", func(ps store.PlaceState) error {
		if h := ps.Hypervisor; h.NodeID != host.ID || h.GPUMode != "mig" {
			return fmt.Errorf("check got hypervisor %+v", h)
		}
		if ps.HasAgent {
			return fmt.Errorf("check got an agent that never called in: %+v", ps.Agent)
		}
		seen = ps.VMs
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(seen) != 0 {
		t.Errorf("first check saw %v", seen)
	}
	if got.NodeID == "" || got.MAC != "52:54:00:aa:00:01" {
		t.Errorf("created %+v", got)
	}
	n, err := s.Node(ctx, "vm-1")
	if err != nil {
		t.Fatal(err)
	}
	if n.ID != got.NodeID || n.Kind != "vm" || n.State != store.StateDiscovered || n.Arch != boot.ArchX86_64 || len(n.MACs) != 1 || n.MACs[0] != got.MAC {
		t.Errorf("the VM's node: %+v", n)
	}
	read, err := s.VM(ctx, got.NodeID)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(got, read, cmpopts.EquateApproxTime(0)); d != "" {
		t.Errorf("vm (-created +read):\n%s", d)
	}

	// The partition is taken: a second VM holding it is refused whole.
	vm2 := vm
	vm2.NodeID, vm2.MAC = "", "52:54:00:aa:00:02"
	if _, err := s.CreateVM(ctx, vm2, "vm-2", nil); !errors.Is(err, store.ErrConflict) {
		t.Errorf("a taken partition: %v", err)
	}
	if _, err := s.Node(ctx, "vm-2"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the refused VM's node: %v", err)
	}
	vm2.Devices = []store.VMDevice{{Device: "0000:41:00.0", Slot: 1, GPU: "0000:41:00.0", Kind: "mig", Profile: "2g.20gb"}}
	vm2.MAC = got.MAC
	if _, err := s.CreateVM(ctx, vm2, "vm-2", nil); !errors.Is(err, store.ErrConflict) {
		t.Errorf("a taken MAC: %v", err)
	}
	vm2.MAC = "52:54:00:aa:00:02"

	// A slot is one VM's whether it is an mdev or a vendor VFIO virtual
	// function, and a function is one VM's whatever its slot.
	vf := vm
	vf.NodeID, vf.MAC = "", "52:54:00:aa:00:03"
	vf.Devices = []store.VMDevice{{Device: "0000:41:00.4", Slot: 0, GPU: "0000:41:00.0", Kind: "mig", Profile: "3g.40gb"}}
	if _, err := s.CreateVM(ctx, vf, "vm-vf", nil); !errors.Is(err, store.ErrConflict) {
		t.Errorf("a virtual function on the slot an mdev holds: %v", err)
	}
	vf.Devices = []store.VMDevice{{Device: "0000:41:00.5", Slot: 2, GPU: "0000:41:00.0", Kind: "mig", Profile: "1g.10gb"}}
	held, err := s.CreateVM(ctx, vf, "vm-vf", nil)
	if err != nil {
		t.Fatal(err)
	}
	vf2 := vf
	vf2.MAC = "52:54:00:aa:00:04"
	vf2.Devices = []store.VMDevice{{Device: "0000:41:00.5", Slot: 3, GPU: "0000:41:00.0", Kind: "mig", Profile: "1g.10gb"}}
	if _, err := s.CreateVM(ctx, vf2, "vm-vf2", nil); !errors.Is(err, store.ErrConflict) {
		t.Errorf("a virtual function at a second slot: %v", err)
	}
	if err := s.DeleteVM(ctx, held.NodeID); err != nil {
		t.Fatal(err)
	}

	if _, err := s.CreateVM(ctx, vm2, "vm-1", nil); !errors.Is(err, store.ErrConflict) {
		t.Errorf("a taken name: %v", err)
	}
	// The check reads the agent's report in the transaction too.
	report := json.RawMessage(`{"gpus":[{"pci_address":"0000:41:00.0","vgpu":"vfio"}]}`)
	if err := s.PutHypervisorAgent(ctx, store.HypervisorAgent{NodeID: host.ID, Booted: time.Unix(1, 0).UTC(), GPUs: report}); err != nil {
		t.Fatal(err)
	}
	got2, err := s.CreateVM(ctx, vm2, "vm-2", func(ps store.PlaceState) error {
		if !ps.HasAgent || ps.Agent.NodeID != host.ID || string(ps.Agent.GPUs) != string(report) {
			return fmt.Errorf("check got agent %+v (has %v)", ps.Agent, ps.HasAgent)
		}
		seen = ps.VMs
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(seen) != 1 || seen[0].NodeID != got.NodeID || len(seen[0].Devices) != 1 || seen[0].Devices[0].Profile != "3g.40gb" {
		t.Errorf("second check saw %+v", seen)
	}
	if vs, err := s.VMs(ctx, host.ID); err != nil || len(vs) != 2 || vs[0].NodeID != got.NodeID || vs[1].NodeID != got2.NodeID {
		t.Errorf("vms on the host: %+v %v", vs, err)
	}

	h, _ := s.Hypervisor(ctx, host.ID)
	h.GPUMode = "passthrough"
	if err := s.PutHypervisor(ctx, h); !errors.Is(err, store.ErrConflict) {
		t.Errorf("GPU mode change under VMs holding partitions: %v", err)
	}
	h.GPUMode, h.Drained = "mig", true
	if err := s.PutHypervisor(ctx, h); err != nil {
		t.Errorf("drain under VMs: %v", err)
	}
	if err := s.DeleteHypervisor(ctx, host.ID); !errors.Is(err, store.ErrConflict) {
		t.Errorf("delete a hypervisor with VMs: %v", err)
	}
	if err := s.DeleteNode(ctx, host.ID); !errors.Is(err, store.ErrConflict) {
		t.Errorf("delete the node of a hypervisor with VMs: %v", err)
	}
	if err := s.DeleteVM(ctx, got.NodeID); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteVM(ctx, got.NodeID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("delete a deleted VM: %v", err)
	}
	if _, err := s.Node(ctx, got.NodeID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the deleted VM's node: %v", err)
	}
	// Its partition and MAC are free again.
	vm3 := vm
	vm3.NodeID = ""
	if _, err := s.CreateVM(ctx, vm3, "vm-3", nil); err != nil {
		t.Errorf("reuse the freed partition: %v", err)
	}
	// A VM's node goes only with its VM.
	if err := s.DeleteNode(ctx, got2.NodeID); !errors.Is(err, store.ErrConflict) {
		t.Errorf("delete a VM's node: %v", err)
	}
	if _, err := s.VM(ctx, got2.NodeID); err != nil {
		t.Errorf("the VM after its node's refused delete: %v", err)
	}
}

// testConcurrentVMs places VMs on one hypervisor from many callers at
// once, each checking a limit of three: the check and the write are one
// step, so exactly three get in.
func testConcurrentVMs(t *testing.T, open Opener) {
	ctx := context.Background()
	s, _ := open(t)
	host := enroll(t, s, 1, boot.ClientX64UEFI)
	if err := s.PutHypervisor(ctx, store.Hypervisor{NodeID: host.ID, URI: "qemu+tcp://h/system", CPURatio: 1, RAMRatio: 1}); err != nil {
		t.Fatal(err)
	}
	full := errors.New("full")
	var wg sync.WaitGroup
	var mu sync.Mutex
	won, lost := 0, 0
	for i := 0; i < 12; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			vm := store.VM{Hypervisor: host.ID, Arch: boot.ArchX86_64, VCPUs: 1, MemoryMiB: 1024, MAC: fmt.Sprintf("52:54:00:bb:00:%02x", i)}
			_, err := s.CreateVM(ctx, vm, fmt.Sprint("vm-", i), func(ps store.PlaceState) error {
				if len(ps.VMs) >= 3 {
					return full
				}
				return nil
			})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				won++
			case errors.Is(err, full):
				lost++
			default:
				t.Errorf("caller %d: %v", i, err)
			}
		}(i)
	}
	wg.Wait()
	if won != 3 || lost != 9 {
		t.Fatalf("won %d, lost %d; want 3 and 9", won, lost)
	}
	if vs, _ := s.VMs(ctx, host.ID); len(vs) != 3 {
		t.Fatalf("%d VMs stored, want 3", len(vs))
	}
}

// testHypervisorFleet: the fleet read gives every hypervisor with its
// node's name, architecture and inventory revision, and its agent's report
// where one came; each inventory set moves the revision, and the
// inventories and headers are read by id.
func testHypervisorFleet(t *testing.T, open Opener) {
	ctx := context.Background()
	s, _ := open(t)
	a, b, plain := enroll(t, s, 1, boot.ClientX64UEFI), enroll(t, s, 2, boot.ClientARM64UEFI), enroll(t, s, 3, boot.ClientX64UEFI)
	name := "gpu-01"
	if _, err := s.UpdateNode(ctx, a.ID, store.NodePatch{Name: &name}); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.Node(ctx, a.ID); n.InventoryRev != 0 {
		t.Fatalf("a node never inspected has inventory revision %d", n.InventoryRev)
	}
	for i, inv := range []string{`{"cpu":{"count":8}}`, `{"cpu":{"count":16}}`} {
		if err := s.SetInventory(ctx, a.ID, json.RawMessage(inv), nil); err != nil {
			t.Fatal(err)
		}
		if n, _ := s.Node(ctx, a.ID); n.InventoryRev != int64(i+1) {
			t.Fatalf("after %d inventories the revision is %d", i+1, n.InventoryRev)
		}
	}
	for _, n := range []store.Node{a, b} {
		if err := s.PutHypervisor(ctx, store.Hypervisor{NodeID: n.ID, URI: "qemu+tcp://h/system", Pool: "default"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.PutHypervisorAgent(ctx, store.HypervisorAgent{NodeID: a.ID, Applied: "passthrough", Version: "1"}); err != nil {
		t.Fatal(err)
	}
	fleet, err := s.HypervisorFleet(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]store.FleetHost{}
	for _, fh := range fleet {
		got[fh.Node.ID] = fh
	}
	if len(fleet) != 2 || len(got) != 2 {
		t.Fatalf("fleet of %d hosts, want the 2 hypervisors: %+v", len(fleet), fleet)
	}
	ga, gb := got[a.ID], got[b.ID]
	if ga.Hypervisor.NodeID != a.ID || ga.Node.Name != "gpu-01" || ga.Node.Arch != a.Arch || ga.Node.InventoryRev != 2 || ga.Node.Inventory != nil {
		t.Errorf("host a: %+v", ga)
	}
	if !ga.HasAgent || ga.Agent.Applied != "passthrough" {
		t.Errorf("host a's agent: %+v", ga.Agent)
	}
	if gb.HasAgent || gb.Node.InventoryRev != 0 {
		t.Errorf("host b: %+v", gb)
	}

	invs, err := s.NodeInventories(ctx, []string{a.ID, b.ID, "nope"})
	if err != nil {
		t.Fatal(err)
	}
	if len(invs) != 2 || invs[a.ID].Rev != 2 || !strings.Contains(string(invs[a.ID].Inventory), `"count":16`) || invs[b.ID].Inventory != nil {
		t.Errorf("inventories: %+v", invs)
	}
	heads, err := s.NodeHeaders(ctx, []string{plain.ID, a.ID, "nope"})
	if err != nil {
		t.Fatal(err)
	}
	if len(heads) != 2 || heads[0].ID > heads[1].ID {
		t.Fatalf("headers: %+v", heads)
	}
	for _, h := range heads {
		if h.Inventory != nil || len(h.MACs) != 1 {
			t.Errorf("header %+v: want no inventory and its MAC", h)
		}
	}
	if h, err := s.NodeHeaders(ctx, nil); err != nil || len(h) != 0 {
		t.Errorf("headers of none: %v %v", h, err)
	}
	if i, err := s.NodeInventories(ctx, nil); err != nil || len(i) != 0 {
		t.Errorf("inventories of none: %v %v", i, err)
	}
}
