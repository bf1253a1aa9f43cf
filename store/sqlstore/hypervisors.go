package sqlstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/store"
)

const hypervisorColumns = `node_id, uri, gpu_mode, gpu_profile, vgpu_max, cpu_ratio, ram_ratio, reserved_mib,
	drained, native, emulated, bridge, vlan, pool, created, updated`

func scanHypervisor(r scanner) (store.Hypervisor, error) {
	var h store.Hypervisor
	var native, emulated string
	var created, updated int64
	err := r.Scan(&h.NodeID, &h.URI, &h.GPUMode, &h.GPUProfile, &h.VGPUMax, &h.CPURatio, &h.RAMRatio, &h.ReservedMiB,
		&h.Drained, &native, &emulated, &h.Bridge, &h.VLAN, &h.Pool, &created, &updated)
	if err != nil {
		return h, err
	}
	h.Created, h.Updated = fromNanos(created), fromNanos(updated)
	if h.Native, err = archList(native); err != nil {
		return h, err
	}
	h.Emulated, err = archList(emulated)
	return h, err
}

func archList(text string) ([]boot.Arch, error) {
	var out []boot.Arch
	if err := json.Unmarshal([]byte(text), &out); err != nil {
		return nil, fmt.Errorf("architecture list %q: %w", text, err)
	}
	return out, nil
}

// PutHypervisor implements store.Store.
func (s *Store) PutHypervisor(ctx context.Context, h store.Hypervisor) error {
	now := time.Now().UTC()
	if h.Updated.IsZero() {
		h.Updated = now
	}
	if h.Native == nil {
		h.Native = []boot.Arch{}
	}
	if h.Emulated == nil {
		h.Emulated = []boot.Arch{}
	}
	err := s.tx(ctx, func(tx runner) error {
		var one int
		if err := tx.row(ctx, `SELECT 1 FROM nodes WHERE id = ?`, h.NodeID).Scan(&one); err != nil {
			return noRows(err)
		}
		// The GPU mode stays while VMs hold devices of it: checked under
		// the row's lock, which CreateVM takes too.
		var mode, profile string
		var max int
		err := tx.row(ctx, `SELECT gpu_mode, gpu_profile, vgpu_max FROM hypervisors WHERE node_id = ?`+s.d.forUpdate, h.NodeID).Scan(&mode, &profile, &max)
		if err == nil && (mode != h.GPUMode || profile != h.GPUProfile || max != h.VGPUMax) {
			var held int
			if err := tx.row(ctx, `SELECT COUNT(*) FROM vm_devices WHERE hypervisor = ?`, h.NodeID).Scan(&held); err != nil {
				return err
			}
			if held > 0 {
				return fmt.Errorf("its GPU mode cannot change while VMs hold %d of its devices: %w", held, store.ErrConflict)
			}
		} else if err != nil && !errors.Is(noRows(err), store.ErrNotFound) {
			return err
		}
		_, err = tx.exec(ctx, `INSERT INTO hypervisors (`+hypervisorColumns+`)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (node_id) DO UPDATE SET uri = excluded.uri, gpu_mode = excluded.gpu_mode,
			gpu_profile = excluded.gpu_profile, vgpu_max = excluded.vgpu_max, cpu_ratio = excluded.cpu_ratio,
			ram_ratio = excluded.ram_ratio, reserved_mib = excluded.reserved_mib, drained = excluded.drained,
			native = excluded.native, emulated = excluded.emulated, bridge = excluded.bridge, vlan = excluded.vlan,
			pool = excluded.pool, updated = excluded.updated`,
			h.NodeID, h.URI, h.GPUMode, h.GPUProfile, h.VGPUMax, h.CPURatio, h.RAMRatio, h.ReservedMiB,
			h.Drained, jsonText(h.Native), jsonText(h.Emulated), h.Bridge, h.VLAN, h.Pool, nanos(now), nanos(h.Updated))
		return err
	})
	if err != nil {
		return fmt.Errorf("put hypervisor %s: %w", h.NodeID, err)
	}
	return nil
}

// Hypervisor implements store.Store.
func (s *Store) Hypervisor(ctx context.Context, nodeID string) (store.Hypervisor, error) {
	h, err := one(ctx, s.db, scanHypervisor, `SELECT `+hypervisorColumns+` FROM hypervisors WHERE node_id = ?`, nodeID)
	if err != nil {
		return h, fmt.Errorf("hypervisor %s: %w", nodeID, err)
	}
	return h, nil
}

// Hypervisors implements store.Store.
func (s *Store) Hypervisors(ctx context.Context) ([]store.Hypervisor, error) {
	hs, err := all(ctx, s.db, scanHypervisor, `SELECT `+hypervisorColumns+` FROM hypervisors ORDER BY node_id`)
	if err != nil {
		return nil, fmt.Errorf("list hypervisors: %w", err)
	}
	return hs, nil
}

// DeleteHypervisor implements store.Store.
func (s *Store) DeleteHypervisor(ctx context.Context, nodeID string) error {
	err := s.tx(ctx, func(tx runner) error {
		var n int
		if err := tx.row(ctx, `SELECT COUNT(*) FROM vms WHERE hypervisor = ?`, nodeID).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return fmt.Errorf("it has %d VMs: %w", n, store.ErrConflict)
		}
		// Its agent's report and credential go with it: a host that
		// is no hypervisor keeps no standing token.
		if _, err := tx.exec(ctx, `DELETE FROM hypervisor_agents WHERE node_id = ?`, nodeID); err != nil {
			return err
		}
		if _, err := tx.exec(ctx, `DELETE FROM tokens WHERE kind = ? AND node_id = ?`, store.TokenHypervisor, nodeID); err != nil {
			return err
		}
		return tx.change(ctx, `DELETE FROM hypervisors WHERE node_id = ?`, nodeID)
	})
	if err != nil {
		return fmt.Errorf("delete hypervisor %s: %w", nodeID, err)
	}
	return nil
}

const flavorColumns = `name, vcpus, memory_mib, disk_gib, arch, gpu_model, gpu_mode, gpu_profile, gpu_count, created`

func scanFlavor(r scanner) (store.Flavor, error) {
	var f store.Flavor
	var arch string
	var created int64
	err := r.Scan(&f.Name, &f.VCPUs, &f.MemoryMiB, &f.DiskGiB, &arch, &f.GPUModel, &f.GPUMode, &f.GPUProfile, &f.GPUCount, &created)
	f.Arch, f.Created = boot.Arch(arch), fromNanos(created)
	return f, err
}

// CreateFlavor implements store.Store.
func (s *Store) CreateFlavor(ctx context.Context, f store.Flavor) error {
	if f.Created.IsZero() {
		f.Created = time.Now().UTC()
	}
	_, err := s.db.exec(ctx, `INSERT INTO flavors (`+flavorColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		f.Name, f.VCPUs, f.MemoryMiB, f.DiskGiB, string(f.Arch), f.GPUModel, f.GPUMode, f.GPUProfile, f.GPUCount, nanos(f.Created))
	if s.d.unique(err) {
		err = store.ErrConflict
	}
	if err != nil {
		return fmt.Errorf("create flavor %s: %w", f.Name, err)
	}
	return nil
}

// Flavor implements store.Store.
func (s *Store) Flavor(ctx context.Context, name string) (store.Flavor, error) {
	f, err := one(ctx, s.db, scanFlavor, `SELECT `+flavorColumns+` FROM flavors WHERE name = ?`, name)
	if err != nil {
		return f, fmt.Errorf("flavor %s: %w", name, err)
	}
	return f, nil
}

// Flavors implements store.Store.
func (s *Store) Flavors(ctx context.Context) ([]store.Flavor, error) {
	fs, err := all(ctx, s.db, scanFlavor, `SELECT `+flavorColumns+` FROM flavors ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list flavors: %w", err)
	}
	return fs, nil
}

// DeleteFlavor implements store.Store. VMs made from it keep their shape:
// they store it, not the flavor's name alone.
func (s *Store) DeleteFlavor(ctx context.Context, name string) error {
	if err := s.db.change(ctx, `DELETE FROM flavors WHERE name = ?`, name); err != nil {
		return fmt.Errorf("delete flavor %s: %w", name, err)
	}
	return nil
}

const vmColumns = `node_id, hypervisor, flavor, image, arch, vcpus, memory_mib, disk_gib, numa, mac, uuid, volume, note, created`

func scanVM(r scanner) (store.VM, error) {
	var v store.VM
	var arch string
	var created int64
	err := r.Scan(&v.NodeID, &v.Hypervisor, &v.Flavor, &v.Image, &arch, &v.VCPUs, &v.MemoryMiB, &v.DiskGiB,
		&v.NUMA, &v.MAC, &v.UUID, &v.Volume, &v.Note, &created)
	v.Arch, v.Created = boot.Arch(arch), fromNanos(created)
	return v, err
}

type vmDevice struct {
	vm string
	store.VMDevice
}

func scanVMDevice(r scanner) (vmDevice, error) {
	var d vmDevice
	err := r.Scan(&d.vm, &d.Device, &d.Slot, &d.GPU, &d.Kind, &d.Profile, &d.Mdev)
	return d, err
}

// vms reads VMs with their devices; where is the condition on vms, args
// its arguments.
func (s *Store) vms(ctx context.Context, r runner, where string, args ...any) ([]store.VM, error) {
	vs, err := all(ctx, r, scanVM, `SELECT `+vmColumns+` FROM vms`+where+` ORDER BY created, node_id`, args...)
	if err != nil || len(vs) == 0 {
		return vs, err
	}
	ds, err := all(ctx, r, scanVMDevice, `SELECT vm, device, slot, gpu, kind, profile, mdev FROM vm_devices
		WHERE vm IN (SELECT node_id FROM vms`+where+`) ORDER BY vm, gpu, kind, device, slot`, args...)
	if err != nil {
		return nil, err
	}
	byVM := map[string][]store.VMDevice{}
	for _, d := range ds {
		byVM[d.vm] = append(byVM[d.vm], d.VMDevice)
	}
	for i := range vs {
		vs[i].Devices = byVM[vs[i].NodeID]
	}
	return vs, nil
}

// CreateVM implements store.Store.
func (s *Store) CreateVM(ctx context.Context, vm store.VM, name string, check store.PlaceCheck) (store.VM, error) {
	if vm.NodeID == "" {
		vm.NodeID = uuid.NewString()
	}
	if vm.Created.IsZero() {
		vm.Created = time.Now().UTC()
	}
	vm.MAC = strings.ToLower(vm.MAC)
	err := s.tx(ctx, func(tx runner) error {
		h, err := one(ctx, tx, scanHypervisor, `SELECT `+hypervisorColumns+` FROM hypervisors WHERE node_id = ?`+s.d.forUpdate, vm.Hypervisor)
		if err != nil {
			return fmt.Errorf("hypervisor %s: %w", vm.Hypervisor, err)
		}
		on, err := s.vms(ctx, tx, ` WHERE hypervisor = ?`, vm.Hypervisor)
		if err != nil {
			return err
		}
		if check != nil {
			ps := store.PlaceState{Hypervisor: h, VMs: on}
			ps.Agent, err = one(ctx, tx, scanHypervisorAgent, `SELECT `+agentColumns+` FROM hypervisor_agents WHERE node_id = ?`, vm.Hypervisor)
			switch {
			case err == nil:
				ps.HasAgent = true
			case !errors.Is(err, store.ErrNotFound):
				return fmt.Errorf("hypervisor agent %s: %w", vm.Hypervisor, err)
			}
			if err := check(ps); err != nil {
				return err
			}
		}
		if name != "" {
			var other string
			err := tx.row(ctx, `SELECT id FROM nodes WHERE name = ?`, name).Scan(&other)
			if err == nil {
				return fmt.Errorf("name %q is taken by node %s: %w", name, other, store.ErrConflict)
			}
			if err = noRows(err); !errors.Is(err, store.ErrNotFound) {
				return err
			}
		}
		now := vm.Created.UnixNano()
		_, err = tx.exec(ctx, `INSERT INTO nodes (id, name, arch, state, first_seen, last_seen, state_changed, kind)
			VALUES (?, ?, ?, ?, ?, ?, ?, 'vm')`, vm.NodeID, name, string(vm.Arch), string(store.StateDiscovered), now, now, now)
		if s.d.unique(err) {
			return fmt.Errorf("a node is already named %q or has id %s: %w", name, vm.NodeID, store.ErrConflict)
		}
		if err != nil {
			return err
		}
		_, err = tx.exec(ctx, `INSERT INTO interfaces (mac, node_id) VALUES (?, ?)`, vm.MAC, vm.NodeID)
		if s.d.unique(err) {
			return fmt.Errorf("MAC %s belongs to another node: %w", vm.MAC, store.ErrConflict)
		}
		if err != nil {
			return err
		}
		_, err = tx.exec(ctx, `INSERT INTO vms (`+vmColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			vm.NodeID, vm.Hypervisor, vm.Flavor, vm.Image, string(vm.Arch), vm.VCPUs, vm.MemoryMiB, vm.DiskGiB,
			vm.NUMA, vm.MAC, vm.UUID, vm.Volume, vm.Note, now)
		if err != nil {
			return err
		}
		for _, d := range vm.Devices {
			_, err := tx.exec(ctx, `INSERT INTO vm_devices (hypervisor, device, slot, vm, gpu, kind, profile, mdev)
				VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, vm.Hypervisor, d.Device, d.Slot, vm.NodeID, d.GPU, d.Kind, d.Profile, d.Mdev)
			if s.d.unique(err) {
				return fmt.Errorf("device %s slot %d of hypervisor %s is taken: %w", d.Device, d.Slot, vm.Hypervisor, store.ErrConflict)
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return store.VM{}, fmt.Errorf("create vm %s on %s: %w", name, vm.Hypervisor, err)
	}
	return vm, nil
}

// VM implements store.Store.
func (s *Store) VM(ctx context.Context, nodeID string) (store.VM, error) {
	vs, err := s.vms(ctx, s.db, ` WHERE node_id = ?`, nodeID)
	if err == nil && len(vs) == 0 {
		err = store.ErrNotFound
	}
	if err != nil {
		return store.VM{}, fmt.Errorf("vm %s: %w", nodeID, err)
	}
	return vs[0], nil
}

// VMs implements store.Store.
func (s *Store) VMs(ctx context.Context, hypervisor string) ([]store.VM, error) {
	var vs []store.VM
	var err error
	if hypervisor == "" {
		vs, err = s.vms(ctx, s.db, ``)
	} else {
		vs, err = s.vms(ctx, s.db, ` WHERE hypervisor = ?`, hypervisor)
	}
	if err != nil {
		return nil, fmt.Errorf("list vms: %w", err)
	}
	return vs, nil
}

// DeleteVM implements store.Store.
func (s *Store) DeleteVM(ctx context.Context, nodeID string) error {
	err := s.tx(ctx, func(tx runner) error {
		if err := tx.change(ctx, `DELETE FROM vms WHERE node_id = ?`, nodeID); err != nil {
			return err
		}
		if _, err := tx.exec(ctx, `DELETE FROM tokens WHERE node_id = ?`, nodeID); err != nil {
			return err
		}
		_, err := tx.exec(ctx, `DELETE FROM nodes WHERE id = ?`, nodeID)
		return err
	})
	if err != nil {
		return fmt.Errorf("delete vm %s: %w", nodeID, err)
	}
	return nil
}

// PutHypervisorAgent implements store.Store.
func (s *Store) PutHypervisorAgent(ctx context.Context, a store.HypervisorAgent) error {
	if a.Seen.IsZero() {
		a.Seen = time.Now().UTC()
	}
	if a.Errors == nil {
		a.Errors = []string{}
	}
	if a.ErrorSince == nil {
		a.ErrorSince = []int64{}
	}
	var gpus []byte
	if len(a.GPUs) > 0 {
		gpus = []byte(a.GPUs)
	}
	err := s.tx(ctx, func(tx runner) error {
		// The hypervisor's row is locked so that its delete cannot
		// slip between this check and the insert.
		var one int
		if err := tx.row(ctx, `SELECT 1 FROM hypervisors WHERE node_id = ?`+s.d.forUpdate, a.NodeID).Scan(&one); err != nil {
			return noRows(err)
		}
		_, err := tx.exec(ctx, `INSERT INTO hypervisor_agents (node_id, booted, applied, gpus, errors, round, error_since, version, seen)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (node_id) DO UPDATE SET booted = excluded.booted, applied = excluded.applied, gpus = excluded.gpus,
			errors = excluded.errors, round = excluded.round, error_since = excluded.error_since, version = excluded.version, seen = excluded.seen`,
			a.NodeID, nanos(a.Booted), a.Applied, gpus, jsonText(a.Errors), a.Round, jsonText(a.ErrorSince), a.Version, nanos(a.Seen))
		return err
	})
	if err != nil {
		return fmt.Errorf("put hypervisor agent %s: %w", a.NodeID, err)
	}
	return nil
}

// HypervisorAgent implements store.Store.
const agentColumns = `node_id, booted, applied, gpus, errors, round, error_since, version, seen`

func scanHypervisorAgent(r scanner) (store.HypervisorAgent, error) {
	var a store.HypervisorAgent
	var booted, seen int64
	var gpus []byte
	var errs, since string
	if err := r.Scan(&a.NodeID, &booted, &a.Applied, &gpus, &errs, &a.Round, &since, &a.Version, &seen); err != nil {
		return a, err
	}
	a.Booted, a.Seen, a.GPUs = fromNanos(booted), fromNanos(seen), rawJSON(gpus)
	if err := json.Unmarshal([]byte(errs), &a.Errors); err != nil {
		return a, fmt.Errorf("errors %q: %w", errs, err)
	}
	if err := json.Unmarshal([]byte(since), &a.ErrorSince); err != nil {
		return a, fmt.Errorf("error_since %q: %w", since, err)
	}
	return a, nil
}

func (s *Store) HypervisorAgent(ctx context.Context, nodeID string) (store.HypervisorAgent, error) {
	a, err := one(ctx, s.db, scanHypervisorAgent, `SELECT `+agentColumns+` FROM hypervisor_agents WHERE node_id = ?`, nodeID)
	if err != nil {
		return a, fmt.Errorf("hypervisor agent %s: %w", nodeID, err)
	}
	return a, nil
}

// HypervisorFleet implements store.Store: three reads, none touching the
// inventories, so that a fleet of thousands is read in milliseconds.
func (s *Store) HypervisorFleet(ctx context.Context) ([]store.FleetHost, error) {
	hs, err := s.Hypervisors(ctx)
	if err != nil {
		return nil, err
	}
	// nodes_fleet covers this read: in SQLite a row's later columns lie
	// past its inventory, in overflow pages, and reading them reads the
	// inventory's pages too.
	nodes, err := all(ctx, s.db, func(r scanner) (store.Node, error) {
		var n store.Node
		var arch string
		err := r.Scan(&n.ID, &n.InventoryRev, &n.Name, &arch)
		n.Arch = boot.Arch(arch)
		return n, err
	}, `SELECT n.id, n.inventory_rev, n.name, n.arch FROM hypervisors h JOIN nodes n`+s.d.fleetIndex+` ON n.id = h.node_id`)
	if err != nil {
		return nil, fmt.Errorf("hypervisor fleet: nodes: %w", err)
	}
	agents, err := all(ctx, s.db, scanHypervisorAgent, `SELECT `+agentColumns+` FROM hypervisor_agents`)
	if err != nil {
		return nil, fmt.Errorf("hypervisor fleet: agents: %w", err)
	}
	byID := make(map[string]store.Node, len(nodes))
	for _, n := range nodes {
		byID[n.ID] = n
	}
	agentOf := make(map[string]store.HypervisorAgent, len(agents))
	for _, a := range agents {
		agentOf[a.NodeID] = a
	}
	out := make([]store.FleetHost, 0, len(hs))
	for _, h := range hs {
		n, ok := byID[h.NodeID]
		if !ok {
			// Deleted between the reads: it is no hypervisor now.
			continue
		}
		a, has := agentOf[h.NodeID]
		out = append(out, store.FleetHost{Hypervisor: h, Node: n, Agent: a, HasAgent: has})
	}
	return out, nil
}

// NodeInventories implements store.Store.
func (s *Store) NodeInventories(ctx context.Context, ids []string) (map[string]store.NodeInventory, error) {
	out := make(map[string]store.NodeInventory, len(ids))
	for lo := 0; lo < len(ids); lo += macBatch {
		batch := ids[lo:min(lo+macBatch, len(ids))]
		args := make([]any, len(batch))
		for i, id := range batch {
			args[i] = id
		}
		type row struct {
			id  string
			inv store.NodeInventory
		}
		rows, err := all(ctx, s.db, func(r scanner) (row, error) {
			var x row
			var inv []byte
			err := r.Scan(&x.id, &inv, &x.inv.Rev)
			x.inv.Inventory = rawJSON(inv)
			return x, err
		}, `SELECT id, inventory, inventory_rev FROM nodes WHERE id IN (?`+strings.Repeat(", ?", len(args)-1)+`)`, args...)
		if err != nil {
			return nil, fmt.Errorf("node inventories: %w", err)
		}
		for _, x := range rows {
			out[x.id] = x.inv
		}
	}
	return out, nil
}

// NodeHeaders implements store.Store.
func (s *Store) NodeHeaders(ctx context.Context, ids []string) ([]store.Node, error) {
	out := []store.Node{}
	for lo := 0; lo < len(ids); lo += macBatch {
		batch := ids[lo:min(lo+macBatch, len(ids))]
		args := make([]any, len(batch))
		for i, id := range batch {
			args[i] = id
		}
		nodes, err := s.nodes(ctx, `SELECT `+nodeHeaderColumns+` FROM nodes WHERE id IN (?`+strings.Repeat(", ?", len(args)-1)+`) ORDER BY id`, args...)
		if err != nil {
			return nil, fmt.Errorf("node headers: %w", err)
		}
		out = append(out, nodes...)
	}
	return out, nil
}
