// Package sqlite is the embedded Store: one SQLite file in the data dir,
// through modernc.org/sqlite (no cgo). Writers are serialised by SQLite's
// own lock (every transaction begins IMMEDIATE), which is what keeps lease
// allocation free of double grants.
package sqlite

import (
	"context"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/store"
)

// migrations are applied in order, each once; never edit a released one.
var migrations = []string{
	`CREATE TABLE nodes (
		id          TEXT PRIMARY KEY,
		name        TEXT NOT NULL DEFAULT '',
		arch        TEXT NOT NULL DEFAULT '',
		firmware    TEXT NOT NULL DEFAULT '',
		client_arch INTEGER NOT NULL DEFAULT 0,
		state       TEXT NOT NULL,
		secure_boot INTEGER,
		uuid        TEXT NOT NULL DEFAULT '',
		first_seen  INTEGER NOT NULL,
		last_seen   INTEGER NOT NULL
	);
	CREATE TABLE interfaces (
		mac     TEXT PRIMARY KEY,
		node_id TEXT NOT NULL REFERENCES nodes(id) ON DELETE CASCADE
	);
	CREATE INDEX interfaces_node ON interfaces(node_id);
	CREATE TABLE leases (
		ip       TEXT PRIMARY KEY,
		mac      TEXT NOT NULL,
		subnet   TEXT NOT NULL,
		state    TEXT NOT NULL,
		expires  INTEGER NOT NULL,
		hostname TEXT NOT NULL DEFAULT ''
	);
	CREATE INDEX leases_mac ON leases(mac, subnet);
	CREATE TABLE boot_events (
		seq         INTEGER PRIMARY KEY AUTOINCREMENT,
		node_id     TEXT NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
		time        INTEGER NOT NULL,
		mac         TEXT NOT NULL,
		ip          TEXT NOT NULL,
		proto       TEXT NOT NULL,
		kind        TEXT NOT NULL,
		file        TEXT NOT NULL,
		bytes       INTEGER NOT NULL,
		size        INTEGER NOT NULL,
		block_size  INTEGER NOT NULL,
		window_size INTEGER NOT NULL,
		complete    INTEGER NOT NULL,
		error       TEXT NOT NULL,
		options     TEXT NOT NULL
	);
	CREATE INDEX boot_events_node ON boot_events(node_id, seq);`,
	`ALTER TABLE nodes ADD COLUMN kind TEXT NOT NULL DEFAULT 'metal';
	ALTER TABLE nodes ADD COLUMN rack TEXT NOT NULL DEFAULT '';
	ALTER TABLE nodes ADD COLUMN position INTEGER NOT NULL DEFAULT 0;
	ALTER TABLE nodes ADD COLUMN tags TEXT NOT NULL DEFAULT '[]';
	ALTER TABLE nodes ADD COLUMN owner TEXT NOT NULL DEFAULT 'rackboot';
	ALTER TABLE nodes ADD COLUMN inventory BLOB;
	ALTER TABLE nodes ADD COLUMN gpu_models TEXT NOT NULL DEFAULT '[]';
	ALTER TABLE nodes ADD COLUMN last_error TEXT NOT NULL DEFAULT '';
	ALTER TABLE nodes ADD COLUMN state_changed INTEGER NOT NULL DEFAULT 0;
	CREATE TABLE events (
		seq     INTEGER PRIMARY KEY AUTOINCREMENT,
		time    INTEGER NOT NULL,
		node_id TEXT NOT NULL,
		actor   TEXT NOT NULL,
		kind    TEXT NOT NULL,
		from_state TEXT NOT NULL,
		to_state   TEXT NOT NULL,
		reason  TEXT NOT NULL,
		message TEXT NOT NULL
	);
	CREATE INDEX events_node ON events(node_id, seq);
	CREATE TABLE images (
		name    TEXT PRIMARY KEY,
		arch    TEXT NOT NULL,
		format  TEXT NOT NULL,
		size    INTEGER NOT NULL,
		sha256  TEXT NOT NULL,
		source  TEXT NOT NULL,
		created INTEGER NOT NULL
	);
	CREATE TABLE tasks (
		id      TEXT PRIMARY KEY,
		node_id TEXT NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
		kind    TEXT NOT NULL,
		state   TEXT NOT NULL,
		params  BLOB,
		result  BLOB,
		error   TEXT NOT NULL,
		created INTEGER NOT NULL,
		updated INTEGER NOT NULL
	);
	CREATE INDEX tasks_node ON tasks(node_id, created);
	CREATE TABLE users (
		name          TEXT PRIMARY KEY,
		role          TEXT NOT NULL,
		password_hash TEXT NOT NULL,
		created       INTEGER NOT NULL
	);
	CREATE TABLE tokens (
		id         TEXT PRIMARY KEY,
		hash       TEXT NOT NULL UNIQUE,
		kind       TEXT NOT NULL,
		name       TEXT NOT NULL,
		role       TEXT NOT NULL,
		user_name  TEXT NOT NULL,
		node_id    TEXT NOT NULL,
		node_state TEXT NOT NULL,
		created    INTEGER NOT NULL,
		expires    INTEGER NOT NULL
	);
	CREATE INDEX tokens_node ON tokens(node_id);`,
	`ALTER TABLE images ADD COLUMN raw_size INTEGER NOT NULL DEFAULT 0;
	ALTER TABLE images ADD COLUMN raw_sha256 TEXT NOT NULL DEFAULT '';`,
}

// Store is a store.Store on one SQLite database file.
type Store struct {
	db *sql.DB

	mu   sync.Mutex
	next map[netip.Prefix]netip.Addr // allocation cursor per subnet
}

var _ store.Store = (*Store)(nil)

// Open opens (creating if needed) the database at path and applies the
// migrations it lacks.
func Open(ctx context.Context, path string) (*Store, error) {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "foreign_keys(1)")
	q.Add("_pragma", "synchronous(NORMAL)")
	q.Set("_txlock", "immediate")
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	s := &Store{db: db}
	if err := s.migrate(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	return s, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

func (s *Store) migrate(ctx context.Context) error {
	if _, err := s.db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)`); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	for i, m := range migrations {
		version := i + 1
		err := s.tx(ctx, func(tx *sql.Tx) error {
			var n int
			if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM schema_migrations WHERE version = ?`, version).Scan(&n); err != nil {
				return err
			}
			if n > 0 {
				return nil
			}
			if _, err := tx.ExecContext(ctx, m); err != nil {
				return err
			}
			_, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)`, version, time.Now().Unix())
			return err
		})
		if err != nil {
			return fmt.Errorf("migrate to version %d: %w", version, err)
		}
	}
	return nil
}

func (s *Store) tx(ctx context.Context, f func(*sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := f(tx); err != nil {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}

func macText(mac net.HardwareAddr) string { return strings.ToLower(mac.String()) }

// EnrollClient implements store.Store.
func (s *Store) EnrollClient(ctx context.Context, c boot.Client, now time.Time) (store.Node, bool, error) {
	if len(c.MAC) == 0 {
		return store.Node{}, false, fmt.Errorf("enroll client: no MAC")
	}
	mac := macText(c.MAC)
	var id string
	created := false
	err := s.tx(ctx, func(tx *sql.Tx) error {
		err := tx.QueryRowContext(ctx, `SELECT node_id FROM interfaces WHERE mac = ?`, mac).Scan(&id)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			id = uuid.NewString()
			created = true
			if _, err := tx.ExecContext(ctx, `INSERT INTO nodes (id, state, first_seen, last_seen, state_changed) VALUES (?, ?, ?, ?, ?)`,
				id, store.StateDiscovered, now.UnixNano(), now.UnixNano(), now.UnixNano()); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO interfaces (mac, node_id) VALUES (?, ?)`, mac, id); err != nil {
				return err
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
		args = append(args, id)
		_, err = tx.ExecContext(ctx, `UPDATE nodes SET `+strings.Join(set, ", ")+` WHERE id = ?`, args...)
		return err
	})
	if err != nil {
		return store.Node{}, false, fmt.Errorf("enroll client %s: %w", mac, err)
	}
	n, err := s.Node(ctx, id)
	return n, created, err
}

const nodeColumns = `id, name, arch, firmware, client_arch, state, secure_boot, uuid, first_seen, last_seen,
	kind, rack, position, tags, owner, inventory, gpu_models, last_error, state_changed`

func (s *Store) scanNode(ctx context.Context, row interface{ Scan(...any) error }) (store.Node, error) {
	n, err := scanNodeRow(row)
	if err != nil {
		return n, err
	}
	return n, s.fillMACs(ctx, &n)
}

func scanNodeRow(row interface{ Scan(...any) error }) (store.Node, error) {
	var n store.Node
	var arch, fw, state, tags, gpus string
	var ca int
	var sb sql.NullInt64
	var first, last, changed int64
	var inv []byte
	if err := row.Scan(&n.ID, &n.Name, &arch, &fw, &ca, &state, &sb, &n.UUID, &first, &last,
		&n.Kind, &n.Rack, &n.Position, &tags, &n.Owner, &inv, &gpus, &n.LastError, &changed); err != nil {
		return n, err
	}
	if err := json.Unmarshal([]byte(tags), &n.Tags); err != nil {
		return n, fmt.Errorf("tags: %w", err)
	}
	if err := json.Unmarshal([]byte(gpus), &n.GPUModels); err != nil {
		return n, fmt.Errorf("gpu models: %w", err)
	}
	if len(inv) > 0 {
		n.Inventory = json.RawMessage(inv)
	}
	n.StateChanged = time.Unix(0, changed).UTC()
	n.Arch, n.Firmware, n.ClientArch, n.State = boot.Arch(arch), boot.Firmware(fw), boot.ClientArch(ca), store.State(state)
	if sb.Valid {
		on := sb.Int64 != 0
		n.SecureBoot = &on
	}
	n.FirstSeen, n.LastSeen = time.Unix(0, first).UTC(), time.Unix(0, last).UTC()
	return n, nil
}

func (s *Store) fillMACs(ctx context.Context, n *store.Node) error {
	n.MACs = nil
	rows, err := s.db.QueryContext(ctx, `SELECT mac FROM interfaces WHERE node_id = ? ORDER BY mac`, n.ID)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var m string
		if err := rows.Scan(&m); err != nil {
			return err
		}
		n.MACs = append(n.MACs, m)
	}
	return rows.Err()
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
	row := s.db.QueryRowContext(ctx, `SELECT `+nodeColumns+` FROM nodes
		WHERE id = ?1 OR (name = ?1 AND name != '') OR id = (SELECT node_id FROM interfaces WHERE mac = ?1)
		LIMIT 1`, ref)
	n, err := s.scanNode(ctx, row)
	if errors.Is(err, sql.ErrNoRows) {
		return n, fmt.Errorf("node %q: %w", ref, store.ErrNotFound)
	}
	if err != nil {
		return n, fmt.Errorf("node %q: %w", ref, err)
	}
	return n, nil
}

// Nodes implements store.Store.
func (s *Store) Nodes(ctx context.Context) ([]store.Node, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id FROM nodes ORDER BY first_seen, id`)
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, fmt.Errorf("list nodes: %w", err)
		}
		ids = append(ids, id)
	}
	rows.Close()
	nodes := make([]store.Node, 0, len(ids))
	for _, id := range ids {
		n, err := s.Node(ctx, id)
		if err != nil {
			return nil, fmt.Errorf("list nodes: %w", err)
		}
		nodes = append(nodes, n)
	}
	return nodes, nil
}

func (s *Store) updateNode(ctx context.Context, op, id, set string, arg any) error {
	res, err := s.db.ExecContext(ctx, `UPDATE nodes SET `+set+` = ? WHERE id = ?`, arg, id)
	if err != nil {
		return fmt.Errorf("%s %s: %w", op, id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("%s %s: %w", op, id, store.ErrNotFound)
	}
	return nil
}

// SetState implements store.Store.
func (s *Store) SetState(ctx context.Context, id string, st store.State) error {
	res, err := s.db.ExecContext(ctx, `UPDATE nodes SET state = ?, state_changed = ? WHERE id = ?`, string(st), time.Now().UnixNano(), id)
	if err != nil {
		return fmt.Errorf("set state of node %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("set state of node %s: %w", id, store.ErrNotFound)
	}
	return nil
}

// SetSecureBoot implements store.Store.
func (s *Store) SetSecureBoot(ctx context.Context, id string, on *bool) error {
	var v any
	if on != nil {
		v = *on
	}
	return s.updateNode(ctx, "set secure boot of node", id, "secure_boot", v)
}

// TouchNode implements store.Store.
func (s *Store) TouchNode(ctx context.Context, id string, now time.Time) error {
	return s.updateNode(ctx, "touch node", id, "last_seen", now.UnixNano())
}

// AddTrace implements store.Store.
func (s *Store) AddTrace(ctx context.Context, nodeID string, e boot.Event) error {
	opts, err := json.Marshal(e.Options)
	if err != nil {
		return fmt.Errorf("add trace of node %s: %w", nodeID, err)
	}
	ip := ""
	if e.IP.IsValid() {
		ip = e.IP.String()
	}
	mac := ""
	if len(e.MAC) > 0 {
		mac = macText(e.MAC)
	}
	_, err = s.db.ExecContext(ctx, `INSERT INTO boot_events
		(node_id, time, mac, ip, proto, kind, file, bytes, size, block_size, window_size, complete, error, options)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		nodeID, e.Time.UnixNano(), mac, ip, e.Proto, e.Kind, e.File, e.Bytes, e.Size, e.BlockSize, e.WindowSize, e.Complete, e.Error, string(opts))
	if err != nil {
		return fmt.Errorf("add trace of node %s: %w", nodeID, err)
	}
	return nil
}

// Trace implements store.Store.
func (s *Store) Trace(ctx context.Context, nodeID string, limit int) ([]store.TraceEvent, error) {
	if limit <= 0 {
		limit = 1000
	}
	rows, err := s.db.QueryContext(ctx, `SELECT seq, time, mac, ip, proto, kind, file, bytes, size, block_size, window_size, complete, error, options
		FROM (SELECT * FROM boot_events WHERE node_id = ? ORDER BY seq DESC LIMIT ?) ORDER BY seq`, nodeID, limit)
	if err != nil {
		return nil, fmt.Errorf("trace of node %s: %w", nodeID, err)
	}
	defer rows.Close()
	var out []store.TraceEvent
	for rows.Next() {
		var e store.TraceEvent
		var t int64
		var mac, ip, opts string
		if err := rows.Scan(&e.Seq, &t, &mac, &ip, &e.Proto, &e.Kind, &e.File, &e.Bytes, &e.Size, &e.BlockSize, &e.WindowSize, &e.Complete, &e.Error, &opts); err != nil {
			return nil, fmt.Errorf("trace of node %s: %w", nodeID, err)
		}
		e.NodeID = nodeID
		e.Time = time.Unix(0, t).UTC()
		if mac != "" {
			e.MAC, _ = net.ParseMAC(mac)
		}
		if ip != "" {
			e.IP, _ = netip.ParseAddr(ip)
		}
		if opts != "" && opts != "null" {
			if err := json.Unmarshal([]byte(opts), &e.Options); err != nil {
				return nil, fmt.Errorf("trace of node %s: options of event %d: %w", nodeID, e.Seq, err)
			}
		}
		out = append(out, e)
	}
	return out, rows.Err()
}
