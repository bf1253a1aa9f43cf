package sqlstore

import (
	"context"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/store"
)

// EnrollClient implements store.Store.
func (s *Store) EnrollClient(ctx context.Context, c boot.Client, now time.Time) (store.Node, bool, error) {
	if len(c.MAC) == 0 {
		return store.Node{}, false, fmt.Errorf("enroll client: no MAC")
	}
	mac := macText(c.MAC)
	var id string
	var created bool
	err := s.tx(ctx, func(tx runner) error {
		created = false
		err := tx.row(ctx, `SELECT node_id FROM interfaces WHERE mac = ?`, mac).Scan(&id)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			id = uuid.NewString()
			created = true
			if _, err := tx.exec(ctx, `INSERT INTO nodes (id, state, first_seen, last_seen, state_changed) VALUES (?, ?, ?, ?, ?)`,
				id, string(store.StateDiscovered), now.UnixNano(), now.UnixNano(), now.UnixNano()); err != nil {
				return err
			}
			// Another server may be enrolling the same MAC: the loser
			// rolls back its node and finds the winner's on retry.
			n, err := tx.exec(ctx, `INSERT INTO interfaces (mac, node_id) VALUES (?, ?) ON CONFLICT (mac) DO NOTHING`, mac, id)
			if err != nil {
				return err
			}
			if n == 0 {
				return errRetry
			}
		case err != nil:
			return err
		}
		set := []string{"last_seen = ?"}
		args := []any{now.UnixNano()}
		if a := c.Arch.Arch(); a != boot.ArchUnknown {
			set = append(set, "arch = ?", "firmware = ?", "client_arch = ?")
			args = append(args, string(a), string(c.Arch.Firmware()), int(c.Arch))
		}
		if len(c.UUID) > 0 {
			set = append(set, "uuid = ?")
			args = append(args, hex.EncodeToString(c.UUID))
		}
		_, err = tx.exec(ctx, `UPDATE nodes SET `+strings.Join(set, ", ")+` WHERE id = ?`, append(args, id)...)
		return err
	})
	if err != nil {
		return store.Node{}, false, fmt.Errorf("enroll client %s: %w", mac, err)
	}
	n, err := s.Node(ctx, id)
	return n, created, err
}

const nodeColumns = `id, name, arch, firmware, client_arch, state, secure_boot, uuid, first_seen, last_seen,
	kind, rack, position, tags, owner, inventory, gpu_models, last_error, state_changed, inventory_rev`

// nodeHeaderColumns are nodeColumns without the inventory, which is
// most of a node's row: readers that need only its revision take these.
var nodeHeaderColumns = strings.Replace(nodeColumns, "owner, inventory,", "owner, NULL,", 1)

func scanNode(row scanner) (store.Node, error) {
	var n store.Node
	var arch, fw, state, tags, gpus string
	var ca int
	var sb sql.NullBool
	var first, last, changed int64
	var inv []byte
	if err := row.Scan(&n.ID, &n.Name, &arch, &fw, &ca, &state, &sb, &n.UUID, &first, &last,
		&n.Kind, &n.Rack, &n.Position, &tags, &n.Owner, &inv, &gpus, &n.LastError, &changed, &n.InventoryRev); err != nil {
		return n, err
	}
	if err := json.Unmarshal([]byte(tags), &n.Tags); err != nil {
		return n, fmt.Errorf("tags: %w", err)
	}
	if err := json.Unmarshal([]byte(gpus), &n.GPUModels); err != nil {
		return n, fmt.Errorf("gpu models: %w", err)
	}
	n.Inventory = rawJSON(inv)
	n.Arch, n.Firmware, n.ClientArch, n.State = boot.Arch(arch), boot.Firmware(fw), boot.ClientArch(ca), store.State(state)
	if sb.Valid {
		n.SecureBoot = &sb.Bool
	}
	n.FirstSeen, n.LastSeen, n.StateChanged = unixNanos(first), unixNanos(last), unixNanos(changed)
	return n, nil
}

// macBatch is how many nodes' MACs one query reads.
const macBatch = 500

// nodes runs a query for nodeColumns and fills in every node's MACs. The
// MACs are read after the rows are closed, so one connection is never
// asked for two result sets at once.
func (s *Store) nodes(ctx context.Context, q string, args ...any) ([]store.Node, error) {
	nodes, err := all(ctx, s.db, scanNode, q, args...)
	if err != nil {
		return nil, err
	}
	idx := make(map[string]int, len(nodes))
	for i, n := range nodes {
		idx[n.ID] = i
	}
	for lo := 0; lo < len(nodes); lo += macBatch {
		batch := nodes[lo:min(lo+macBatch, len(nodes))]
		ids := make([]any, len(batch))
		for i, n := range batch {
			ids[i] = n.ID
		}
		type iface struct{ node, mac string }
		ifaces, err := all(ctx, s.db, func(r scanner) (iface, error) {
			var i iface
			return i, r.Scan(&i.node, &i.mac)
		}, `SELECT node_id, mac FROM interfaces WHERE node_id IN (?`+strings.Repeat(", ?", len(ids)-1)+`) ORDER BY mac`, ids...)
		if err != nil {
			return nil, err
		}
		for _, i := range ifaces {
			n := &nodes[idx[i.node]]
			n.MACs = append(n.MACs, i.mac)
		}
	}
	return nodes, nil
}

// NodeByMAC implements store.Store.
func (s *Store) NodeByMAC(ctx context.Context, mac net.HardwareAddr) (store.Node, error) {
	return s.Node(ctx, macText(mac))
}

// Node implements store.Store.
func (s *Store) Node(ctx context.Context, ref string) (store.Node, error) {
	ref = strings.TrimSpace(ref)
	if hw, err := net.ParseMAC(ref); err == nil {
		ref = macText(hw)
	}
	nodes, err := s.nodes(ctx, `SELECT `+nodeColumns+` FROM nodes
		WHERE id = ? OR (name = ? AND name <> '') OR id = (SELECT node_id FROM interfaces WHERE mac = ?)
		LIMIT 1`, ref, ref, ref)
	if err == nil && len(nodes) == 0 {
		err = store.ErrNotFound
	}
	if err != nil {
		return store.Node{}, fmt.Errorf("node %q: %w", ref, err)
	}
	return nodes[0], nil
}

// Nodes implements store.Store.
func (s *Store) Nodes(ctx context.Context) ([]store.Node, error) {
	nodes, err := s.nodes(ctx, `SELECT `+nodeColumns+` FROM nodes ORDER BY first_seen, id`)
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	if nodes == nil {
		nodes = []store.Node{}
	}
	return nodes, nil
}

// ListNodes implements store.Store. Tags and GPU models are matched in
// their JSON text.
func (s *Store) ListNodes(ctx context.Context, f store.NodeFilter) ([]store.Node, error) {
	where := []string{"1 = 1"}
	var args []any
	// Conditions find substrings with SQLite's instr; the dialect names
	// its own function.
	add := func(cond string, arg ...any) {
		where, args = append(where, strings.ReplaceAll(cond, "instr(", s.d.instr+"(")), append(args, arg...)
	}
	if f.State != "" {
		add("state = ?", string(f.State))
	}
	if f.Arch != "" {
		add("arch = ?", string(f.Arch))
	}
	if f.Rack != "" {
		add("rack = ?", f.Rack)
	}
	if f.Tag != "" {
		add("instr(tags, ?) > 0", jsonText(f.Tag))
	}
	if f.GPU != "" {
		add("instr(lower(gpu_models), lower(?)) > 0", f.GPU)
	}
	if f.Query != "" {
		add(`(instr(lower(id || ' ' || name || ' ' || rack || ' ' || tags || ' ' || gpu_models), lower(?)) > 0
			OR id IN (SELECT node_id FROM interfaces WHERE instr(mac, lower(?)) > 0))`, f.Query, f.Query)
	}
	if f.After != "" {
		add("id > ?", f.After)
	}
	q := `SELECT ` + nodeColumns + ` FROM nodes WHERE ` + strings.Join(where, " AND ") + ` ORDER BY id`
	if f.Limit > 0 {
		q += fmt.Sprintf(" LIMIT %d", f.Limit)
	}
	nodes, err := s.nodes(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	return nodes, nil
}

// updateNode sets columns to values given, so the statement is
// idempotent.
func (s *Store) updateNode(ctx context.Context, op, id, set string, args ...any) error {
	if err := s.idem.change(ctx, `UPDATE nodes SET `+set+` WHERE id = ?`, append(args, id)...); err != nil {
		return fmt.Errorf("%s %s: %w", op, id, err)
	}
	return nil
}

// SetOwner implements store.Store.
func (s *Store) SetOwner(ctx context.Context, id, from, to string, states ...store.State) (store.Node, error) {
	q := `UPDATE nodes SET owner = ? WHERE id = ? AND owner = ?`
	args := []any{to, id, from}
	if len(states) > 0 {
		q += ` AND state IN (?` + strings.Repeat(", ?", len(states)-1) + `)`
		for _, st := range states {
			args = append(args, string(st))
		}
	}
	n, err := s.db.exec(ctx, q, args...)
	if err != nil {
		return store.Node{}, fmt.Errorf("set owner of node %s: %w", id, err)
	}
	cur, err := s.Node(ctx, id)
	if err != nil {
		return store.Node{}, fmt.Errorf("set owner of node %s: %w", id, err)
	}
	if n == 0 {
		return cur, fmt.Errorf("set owner of node %s to %s: it is %s's and %s now: %w", id, to, cur.Owner, cur.State, store.ErrConflict)
	}
	return cur, nil
}

// SetState implements store.Store.
func (s *Store) SetState(ctx context.Context, id string, st store.State) error {
	return s.updateNode(ctx, "set state of node", id, "state = ?, state_changed = ?", string(st), time.Now().UnixNano())
}

// SetSecureBoot implements store.Store.
func (s *Store) SetSecureBoot(ctx context.Context, id string, on *bool) error {
	var v any
	if on != nil {
		v = *on
	}
	return s.updateNode(ctx, "set secure boot of node", id, "secure_boot = ?", v)
}

// TouchNode implements store.Store. A heartbeat's write need not survive
// a power cut (the next heartbeat writes it again), so it does not wait
// for the disk; on SQLite it joins the group commit, so a thousand
// agents' heartbeats share transactions and the write lock's turns
// instead of polling for the lock in SQLite's busy handler one by one.
func (s *Store) TouchNode(ctx context.Context, id string, now time.Time) error {
	f := func(ctx context.Context, tx runner) error {
		return tx.change(ctx, `UPDATE nodes SET last_seen = ? WHERE id = ?`, now.UnixNano(), id)
	}
	var err error
	if s.d.oneWriter {
		err = s.laxGroupTx(ctx, f)
	} else {
		err = s.retry(ctx, func() error {
			return s.tx1(ctx, s.d.laxBegin, s.d.laxEnd, true, func(tx runner) error { return f(ctx, tx) })
		})
	}
	if err != nil {
		return fmt.Errorf("touch node %s: %w", id, err)
	}
	return nil
}

// SetInventory implements store.Store.
func (s *Store) SetInventory(ctx context.Context, id string, inv json.RawMessage, gpuModels []string) error {
	if gpuModels == nil {
		gpuModels = []string{}
	}
	return s.updateNode(ctx, "set inventory of node", id, "inventory = ?, gpu_models = ?, inventory_rev = inventory_rev + 1", []byte(inv), jsonText(gpuModels))
}

// Transition implements store.Store.
func (s *Store) Transition(ctx context.Context, id string, from, to store.State, lastError string, e store.Event) (store.Node, store.Event, error) {
	n, e, _, err := s.Apply(ctx, store.Change{NodeID: id, From: from, To: to, LastError: lastError, Event: e})
	return n, e, err
}

// Apply implements store.Store. The node's row stays locked from the
// state check to the commit, so of two changes out of one state, the
// second sees the first's result and fails with ErrConflict.
func (s *Store) Apply(ctx context.Context, c store.Change) (store.Node, store.Event, []store.Task, error) {
	e := c.Event
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	e.NodeID, e.From, e.To = c.NodeID, c.From, c.To
	if c.To == "" {
		e.To = c.From
	}
	if e.Kind == "" {
		e.Kind = "transition"
	}
	created := make([]store.Task, len(c.Create))
	for i, t := range c.Create {
		if t.ID == "" {
			t.ID = uuid.NewString()
		}
		if t.NodeID == "" {
			t.NodeID = c.NodeID
		}
		if t.Created.IsZero() {
			t.Created = e.Time
		}
		if t.Updated.IsZero() {
			t.Updated = t.Created
		}
		if t.State == "" {
			t.State = store.TaskPending
		}
		created[i] = t
	}
	err := s.tx(ctx, func(tx runner) error {
		var cur string
		err := tx.row(ctx, `SELECT state FROM nodes WHERE id = ?`+s.d.forUpdate, c.NodeID).Scan(&cur)
		if errors.Is(err, sql.ErrNoRows) {
			return store.ErrNotFound
		}
		if err != nil {
			return err
		}
		if store.State(cur) != c.From {
			return fmt.Errorf("node is %s, not %s: %w", cur, c.From, store.ErrConflict)
		}
		if c.To != "" {
			if _, err := tx.exec(ctx, `UPDATE nodes SET state = ?, last_error = ?, state_changed = ? WHERE id = ?`,
				string(c.To), c.LastError, e.Time.UnixNano(), c.NodeID); err != nil {
				return err
			}
			// An agent's token is good for one state of its node only.
			if _, err := tx.exec(ctx, `DELETE FROM tokens WHERE kind = 'agent' AND node_id = ?`, c.NodeID); err != nil {
				return err
			}
		}
		for _, t := range c.Update {
			if t.Updated.IsZero() {
				t.Updated = e.Time
			}
			if err := tx.change(ctx, `UPDATE tasks SET state = ?, result = ?, error = ?, updated = ? WHERE id = ?`,
				string(t.State), []byte(t.Result), t.Error, t.Updated.UnixNano(), t.ID); err != nil {
				return fmt.Errorf("update task %s: %w", t.ID, err)
			}
		}
		for _, t := range created {
			if err := insertTask(ctx, tx, t); err != nil {
				return err
			}
		}
		for _, a := range c.Also {
			if a.Time.IsZero() {
				a.Time = e.Time
			}
			if a.NodeID == "" {
				a.NodeID = c.NodeID
			}
			if _, err := insertEvent(ctx, tx, a); err != nil {
				return err
			}
		}
		e.Seq, err = insertEvent(ctx, tx, e)
		return err
	})
	if err != nil {
		if c.To == "" {
			return store.Node{}, store.Event{}, nil, fmt.Errorf("change node %s in %s: %w", c.NodeID, c.From, err)
		}
		return store.Node{}, store.Event{}, nil, fmt.Errorf("transition node %s from %s to %s: %w", c.NodeID, c.From, c.To, err)
	}
	n, err := s.Node(ctx, c.NodeID)
	return n, e, created, err
}

// UpdateNode implements store.Store.
func (s *Store) UpdateNode(ctx context.Context, id string, p store.NodePatch) (store.Node, error) {
	set := []string{"id = id"}
	var args []any
	add := func(col string, v any) { set, args = append(set, col+" = ?"), append(args, v) }
	if p.Name != nil {
		add("name", *p.Name)
	}
	if p.Rack != nil {
		add("rack", *p.Rack)
	}
	if p.Position != nil {
		add("position", *p.Position)
	}
	if p.Tags != nil {
		tags := *p.Tags
		if tags == nil {
			tags = []string{}
		}
		add("tags", jsonText(tags))
	}
	if p.Owner != nil {
		add("owner", *p.Owner)
	}
	err := s.tx(ctx, func(tx runner) error {
		if p.Name != nil && *p.Name != "" {
			var other string
			err := tx.row(ctx, `SELECT id FROM nodes WHERE name = ? AND id <> ?`, *p.Name, id).Scan(&other)
			if err == nil {
				return fmt.Errorf("name %q is taken by node %s: %w", *p.Name, other, store.ErrConflict)
			}
			if !errors.Is(err, sql.ErrNoRows) {
				return err
			}
		}
		err := tx.change(ctx, `UPDATE nodes SET `+strings.Join(set, ", ")+` WHERE id = ?`, append(args, id)...)
		if s.d.unique(err) {
			// Another server named a node the same a moment ago.
			return fmt.Errorf("name is taken: %w", store.ErrConflict)
		}
		return err
	})
	if err != nil {
		return store.Node{}, fmt.Errorf("update node %s: %w", id, err)
	}
	return s.Node(ctx, id)
}

// DeleteNode implements store.Store.
func (s *Store) DeleteNode(ctx context.Context, id string) error {
	err := s.tx(ctx, func(tx runner) error {
		var vms int
		if err := tx.row(ctx, `SELECT COUNT(*) FROM vms WHERE hypervisor = ?`, id).Scan(&vms); err != nil {
			return err
		}
		if vms > 0 {
			return fmt.Errorf("it is the hypervisor of %d VMs: %w", vms, store.ErrConflict)
		}
		// A VM's node goes with its VM (DeleteVM), after its domain:
		// alone it would free devices a running domain still holds.
		if err := tx.row(ctx, `SELECT COUNT(*) FROM vms WHERE node_id = ?`, id).Scan(&vms); err != nil {
			return err
		}
		if vms > 0 {
			return fmt.Errorf("it is a VM: delete the VM (rackboot vm delete): %w", store.ErrConflict)
		}
		if _, err := tx.exec(ctx, `DELETE FROM tokens WHERE node_id = ?`, id); err != nil {
			return err
		}
		return tx.change(ctx, `DELETE FROM nodes WHERE id = ?`, id)
	})
	if err != nil {
		return fmt.Errorf("delete node %s: %w", id, err)
	}
	return nil
}

// CountNodes implements store.Store.
func (s *Store) CountNodes(ctx context.Context) (map[store.State]int, error) {
	type count struct {
		st string
		n  int
	}
	counts, err := all(ctx, s.db, func(r scanner) (count, error) {
		var c count
		return c, r.Scan(&c.st, &c.n)
	}, `SELECT state, COUNT(*) FROM nodes GROUP BY state`)
	if err != nil {
		return nil, fmt.Errorf("count nodes: %w", err)
	}
	out := map[store.State]int{}
	for _, c := range counts {
		out[store.State(c.st)] = c.n
	}
	return out, nil
}

// AddTrace implements store.Store.
func (s *Store) AddTrace(ctx context.Context, nodeID string, e boot.Event) error {
	if err := addTrace(ctx, s.db, nodeID, e); err != nil {
		return fmt.Errorf("add trace of node %s: %w", nodeID, err)
	}
	return nil
}

// AddTraces implements store.Store.
func (s *Store) AddTraces(ctx context.Context, es []store.TraceEvent) error {
	if len(es) == 0 {
		return nil
	}
	err := s.retry(ctx, func() error {
		return s.tx1(ctx, s.d.laxBegin, s.d.laxEnd, false, func(tx runner) error {
			for _, e := range es {
				if err := addTrace(ctx, tx, e.NodeID, e.Event); err != nil {
					return fmt.Errorf("node %s: %w", e.NodeID, err)
				}
			}
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("add %d trace events: %w", len(es), err)
	}
	return nil
}

func addTrace(ctx context.Context, r runner, nodeID string, e boot.Event) error {
	opts, err := json.Marshal(e.Options)
	if err != nil {
		return err
	}
	mac := ""
	if len(e.MAC) > 0 {
		mac = macText(e.MAC)
	}
	_, err = r.exec(ctx, `INSERT INTO boot_events
		(node_id, time, mac, ip, proto, kind, file, bytes, size, block_size, window_size, complete, error, options)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		nodeID, e.Time.UnixNano(), mac, addrText(e.IP), e.Proto, e.Kind, e.File, e.Bytes, e.Size, e.BlockSize, e.WindowSize, e.Complete, e.Error, string(opts))
	return err
}

// Trace implements store.Store.
func (s *Store) Trace(ctx context.Context, nodeID string, limit int) ([]store.TraceEvent, error) {
	if limit <= 0 {
		limit = 1000
	}
	out, err := all(ctx, s.db, func(r scanner) (store.TraceEvent, error) {
		e := store.TraceEvent{NodeID: nodeID}
		var t int64
		var mac, ip, opts string
		if err := r.Scan(&e.Seq, &t, &mac, &ip, &e.Proto, &e.Kind, &e.File, &e.Bytes, &e.Size, &e.BlockSize, &e.WindowSize, &e.Complete, &e.Error, &opts); err != nil {
			return e, err
		}
		e.Time = unixNanos(t)
		if mac != "" {
			e.MAC, _ = net.ParseMAC(mac)
		}
		if ip != "" {
			e.IP, _ = netip.ParseAddr(ip)
		}
		if opts != "" && opts != "null" {
			if err := json.Unmarshal([]byte(opts), &e.Options); err != nil {
				return e, fmt.Errorf("options of event %d: %w", e.Seq, err)
			}
		}
		return e, nil
	}, `SELECT seq, time, mac, ip, proto, kind, file, bytes, size, block_size, window_size, complete, error, options
		FROM (SELECT * FROM boot_events WHERE node_id = ? ORDER BY seq DESC LIMIT ?) newest ORDER BY seq`, nodeID, limit)
	if err != nil {
		return nil, fmt.Errorf("trace of node %s: %w", nodeID, err)
	}
	return out, nil
}
