// Package postgres is the shared Store: one PostgreSQL database that
// several rackboot servers use at once, through github.com/jackc/pgx/v5.
//
// It mirrors the SQLite store (store/sqlite) row for row: the same tables,
// times as int64 nanoseconds since the epoch (so every time read back is
// exactly the one written, in UTC), JSON lists as text. What SQLite gets
// from its single writer, this store gets from row locks and advisory
// locks: lease allocation takes a transaction-scoped advisory lock per
// subnet and claims each address with a conditional upsert, so two
// servers never hand one address to two MACs; a transition locks its
// node's row; a task is claimed with SKIP LOCKED; audit events are
// numbered in commit order. Migrations run at Open under an advisory
// lock, so servers starting together apply each one once.
package postgres

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/store"
)

// migrations are applied in order, each once; never edit a released one.
var migrations = []string{
	`CREATE TABLE nodes (
		id            TEXT PRIMARY KEY,
		name          TEXT NOT NULL DEFAULT '',
		arch          TEXT NOT NULL DEFAULT '',
		firmware      TEXT NOT NULL DEFAULT '',
		client_arch   INTEGER NOT NULL DEFAULT 0,
		state         TEXT NOT NULL,
		secure_boot   BOOLEAN,
		uuid          TEXT NOT NULL DEFAULT '',
		first_seen    BIGINT NOT NULL,
		last_seen     BIGINT NOT NULL,
		kind          TEXT NOT NULL DEFAULT 'metal',
		rack          TEXT NOT NULL DEFAULT '',
		position      INTEGER NOT NULL DEFAULT 0,
		tags          TEXT NOT NULL DEFAULT '[]',
		owner         TEXT NOT NULL DEFAULT 'rackboot',
		inventory     BYTEA,
		gpu_models    TEXT NOT NULL DEFAULT '[]',
		last_error    TEXT NOT NULL DEFAULT '',
		state_changed BIGINT NOT NULL DEFAULT 0
	);
	CREATE UNIQUE INDEX nodes_name ON nodes(name) WHERE name <> '';
	CREATE INDEX nodes_first_seen ON nodes(first_seen, id);
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
		expires  BIGINT NOT NULL,
		hostname TEXT NOT NULL DEFAULT ''
	);
	CREATE INDEX leases_mac ON leases(mac, subnet);
	CREATE TABLE boot_events (
		seq         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
		node_id     TEXT NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
		time        BIGINT NOT NULL,
		mac         TEXT NOT NULL,
		ip          TEXT NOT NULL,
		proto       TEXT NOT NULL,
		kind        TEXT NOT NULL,
		file        TEXT NOT NULL,
		bytes       BIGINT NOT NULL,
		size        BIGINT NOT NULL,
		block_size  INTEGER NOT NULL,
		window_size INTEGER NOT NULL,
		complete    BOOLEAN NOT NULL,
		error       TEXT NOT NULL,
		options     TEXT NOT NULL
	);
	CREATE INDEX boot_events_node ON boot_events(node_id, seq);
	CREATE TABLE events (
		seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
		time       BIGINT NOT NULL,
		node_id    TEXT NOT NULL,
		actor      TEXT NOT NULL,
		kind       TEXT NOT NULL,
		from_state TEXT NOT NULL,
		to_state   TEXT NOT NULL,
		reason     TEXT NOT NULL,
		message    TEXT NOT NULL
	);
	CREATE INDEX events_node ON events(node_id, seq);
	CREATE TABLE images (
		name       TEXT PRIMARY KEY,
		arch       TEXT NOT NULL,
		format     TEXT NOT NULL,
		size       BIGINT NOT NULL,
		sha256     TEXT NOT NULL,
		raw_size   BIGINT NOT NULL DEFAULT 0,
		raw_sha256 TEXT NOT NULL DEFAULT '',
		source     TEXT NOT NULL,
		created    BIGINT NOT NULL
	);
	CREATE TABLE tasks (
		id      TEXT PRIMARY KEY,
		node_id TEXT NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
		kind    TEXT NOT NULL,
		state   TEXT NOT NULL,
		params  BYTEA,
		result  BYTEA,
		error   TEXT NOT NULL,
		created BIGINT NOT NULL,
		updated BIGINT NOT NULL
	);
	CREATE INDEX tasks_node ON tasks(node_id, created);
	CREATE TABLE users (
		name          TEXT PRIMARY KEY,
		role          TEXT NOT NULL,
		password_hash TEXT NOT NULL,
		created       BIGINT NOT NULL
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
		created    BIGINT NOT NULL,
		expires    BIGINT NOT NULL
	);
	CREATE INDEX tokens_node ON tokens(node_id);
	CREATE INDEX tokens_user ON tokens(user_name);`,
}

// Advisory lock keys. The two-int form (class, key) and the one-bigint
// form live in separate key spaces in PostgreSQL.
const (
	migrateLock int64 = 0x7261636b626f6f74 // "rackboot"
	lockClass   int32 = 0x72620000         // "rb": the class of every two-int key
	eventsKey   int32 = 1                  // numbering audit events in commit order
)

// Store is a store.Store on a PostgreSQL database.
type Store struct {
	pool *pgxpool.Pool

	mu   sync.Mutex
	next map[netip.Prefix]netip.Addr // allocation cursor per subnet
}

var _ store.Store = (*Store)(nil)

// ParseDSN checks that dsn is a PostgreSQL URL (postgres:// or
// postgresql://) that pgx can use, and returns the pool configuration it
// describes.
func ParseDSN(dsn string) (*pgxpool.Config, error) {
	u, err := url.Parse(dsn)
	if err != nil {
		// url.Error quotes the whole URL, password included.
		if ue := (*url.Error)(nil); errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("database url: %w", err)
	}
	if u.Scheme != "postgres" && u.Scheme != "postgresql" {
		return nil, fmt.Errorf("database url: scheme %q: want postgres:// or postgresql://", u.Scheme)
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// pgx's errors quote the whole URL, password included.
		return nil, fmt.Errorf("database url %s: %w", u.Redacted(), errors.Unwrap(err))
	}
	return cfg, nil
}

// Open connects to the database dsn names (postgres://...) and applies the
// migrations it lacks.
func Open(ctx context.Context, dsn string) (*Store, error) {
	cfg, err := ParseDSN(dsn)
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	where := redact(dsn)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open database %s: %w", where, err)
	}
	s := &Store{pool: pool}
	if err := s.migrate(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("open database %s: %w", where, err)
	}
	return s, nil
}

func redact(dsn string) string {
	if u, err := url.Parse(dsn); err == nil {
		return u.Redacted()
	}
	return "(unparsable url)"
}

// Close closes every connection.
func (s *Store) Close() error {
	s.pool.Close()
	return nil
}

// migrate applies the missing migrations in one transaction that holds an
// advisory lock: a second server starting at the same time waits, then
// finds every migration applied.
func (s *Store) migrate(ctx context.Context) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, migrateLock); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)`); err != nil {
			return err
		}
		var have int
		if err := tx.QueryRow(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&have); err != nil {
			return err
		}
		if have > len(migrations) {
			return fmt.Errorf("database is at version %d, newer than this rackboot (%d): upgrade rackboot", have, len(migrations))
		}
		for i := have; i < len(migrations); i++ {
			if _, err := tx.Exec(ctx, migrations[i]); err != nil {
				return fmt.Errorf("to version %d: %w", i+1, err)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)`, i+1, time.Now().Unix()); err != nil {
				return fmt.Errorf("to version %d: %w", i+1, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	return nil
}

// errRetry makes tx run its function again: a race that another writer
// won, which a fresh attempt sees.
var errRetry = errors.New("retry")

const maxAttempts = 8

// tx runs f in a transaction, again when it failed for a reason a retry
// cures: a serialization failure, a deadlock, or f's errRetry.
func (s *Store) tx(ctx context.Context, f func(pgx.Tx) error) error {
	for attempt := 1; ; attempt++ {
		err := pgx.BeginFunc(ctx, s.pool, f)
		if err == nil || attempt == maxAttempts || !retryable(err) {
			if errors.Is(err, errRetry) {
				err = fmt.Errorf("lost the race %d times", attempt)
			}
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(rand.IntN(1000*attempt)) * time.Microsecond):
		}
	}
}

func retryable(err error) bool {
	if errors.Is(err, errRetry) {
		return true
	}
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "40001" || pe.Code == "40P01")
}

// uniqueViolation reports whether err is a unique constraint's refusal.
func uniqueViolation(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505"
}

// lockKey is the second half of a two-int advisory lock key for name.
func lockKey(name string) int32 {
	h := fnv.New32a()
	h.Write([]byte(name))
	return int32(h.Sum32())
}

func advisoryLock(ctx context.Context, tx pgx.Tx, key int32) error {
	_, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1, $2)`, lockClass, key)
	return err
}

func macText(mac net.HardwareAddr) string { return strings.ToLower(mac.String()) }

func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

func jsonText(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// EnrollClient implements store.Store.
func (s *Store) EnrollClient(ctx context.Context, c boot.Client, now time.Time) (store.Node, bool, error) {
	if len(c.MAC) == 0 {
		return store.Node{}, false, fmt.Errorf("enroll client: no MAC")
	}
	mac := macText(c.MAC)
	var id string
	var created bool
	err := s.tx(ctx, func(tx pgx.Tx) error {
		created = false
		err := tx.QueryRow(ctx, `SELECT node_id FROM interfaces WHERE mac = $1`, mac).Scan(&id)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			id = uuid.NewString()
			created = true
			if _, err := tx.Exec(ctx, `INSERT INTO nodes (id, state, first_seen, last_seen, state_changed) VALUES ($1, $2, $3, $3, $3)`,
				id, string(store.StateDiscovered), now.UnixNano()); err != nil {
				return err
			}
			// Another server may be enrolling the same MAC: the loser
			// rolls back its node and finds the winner's on retry.
			tag, err := tx.Exec(ctx, `INSERT INTO interfaces (mac, node_id) VALUES ($1, $2) ON CONFLICT (mac) DO NOTHING`, mac, id)
			if err != nil {
				return err
			}
			if tag.RowsAffected() == 0 {
				return errRetry
			}
		case err != nil:
			return err
		}
		set := []string{"last_seen = $1"}
		args := []any{now.UnixNano()}
		if a := c.Arch.Arch(); a != boot.ArchUnknown {
			set = append(set, "arch = $2", "firmware = $3", "client_arch = $4")
			args = append(args, string(a), string(c.Arch.Firmware()), int(c.Arch))
		}
		if len(c.UUID) > 0 {
			args = append(args, hex.EncodeToString(c.UUID))
			set = append(set, fmt.Sprintf("uuid = $%d", len(args)))
		}
		args = append(args, id)
		_, err = tx.Exec(ctx, `UPDATE nodes SET `+strings.Join(set, ", ")+fmt.Sprintf(` WHERE id = $%d`, len(args)), args...)
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

func scanNodeRow(row pgx.Row) (store.Node, error) {
	var n store.Node
	var arch, fw, state, tags, gpus string
	var ca int32
	var position int32
	var sb *bool
	var first, last, changed int64
	var inv []byte
	if err := row.Scan(&n.ID, &n.Name, &arch, &fw, &ca, &state, &sb, &n.UUID, &first, &last,
		&n.Kind, &n.Rack, &position, &tags, &n.Owner, &inv, &gpus, &n.LastError, &changed); err != nil {
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
	n.Position = int(position)
	n.SecureBoot = sb
	n.StateChanged = time.Unix(0, changed).UTC()
	n.Arch, n.Firmware, n.ClientArch, n.State = boot.Arch(arch), boot.Firmware(fw), boot.ClientArch(ca), store.State(state)
	n.FirstSeen, n.LastSeen = time.Unix(0, first).UTC(), time.Unix(0, last).UTC()
	return n, nil
}

// queryNodes runs a query for nodeColumns and fills in every node's MACs.
func (s *Store) queryNodes(ctx context.Context, q string, args ...any) ([]store.Node, error) {
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	var nodes []store.Node
	for rows.Next() {
		n, err := scanNodeRow(rows)
		if err != nil {
			rows.Close()
			return nil, err
		}
		nodes = append(nodes, n)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(nodes) == 0 {
		return nodes, nil
	}
	idx := make(map[string]int, len(nodes))
	ids := make([]string, len(nodes))
	for i, n := range nodes {
		idx[n.ID], ids[i] = i, n.ID
	}
	rows, err = s.pool.Query(ctx, `SELECT node_id, mac FROM interfaces WHERE node_id = ANY($1) ORDER BY mac`, ids)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var id, mac string
		if err := rows.Scan(&id, &mac); err != nil {
			return nil, err
		}
		n := &nodes[idx[id]]
		n.MACs = append(n.MACs, mac)
	}
	return nodes, rows.Err()
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
	nodes, err := s.queryNodes(ctx, `SELECT `+nodeColumns+` FROM nodes
		WHERE id = $1 OR (name = $1 AND name <> '') OR id = (SELECT node_id FROM interfaces WHERE mac = $1)
		LIMIT 1`, ref)
	if err != nil {
		return store.Node{}, fmt.Errorf("node %q: %w", ref, err)
	}
	if len(nodes) == 0 {
		return store.Node{}, fmt.Errorf("node %q: %w", ref, store.ErrNotFound)
	}
	return nodes[0], nil
}

// Nodes implements store.Store.
func (s *Store) Nodes(ctx context.Context) ([]store.Node, error) {
	nodes, err := s.queryNodes(ctx, `SELECT `+nodeColumns+` FROM nodes ORDER BY first_seen, id`)
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	if nodes == nil {
		nodes = []store.Node{}
	}
	return nodes, nil
}

func (s *Store) updateNode(ctx context.Context, op, id, set string, arg any) error {
	tag, err := s.pool.Exec(ctx, `UPDATE nodes SET `+set+` = $1 WHERE id = $2`, arg, id)
	if err != nil {
		return fmt.Errorf("%s %s: %w", op, id, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("%s %s: %w", op, id, store.ErrNotFound)
	}
	return nil
}

// SetState implements store.Store.
func (s *Store) SetState(ctx context.Context, id string, st store.State) error {
	tag, err := s.pool.Exec(ctx, `UPDATE nodes SET state = $1, state_changed = $2 WHERE id = $3`, string(st), time.Now().UnixNano(), id)
	if err != nil {
		return fmt.Errorf("set state of node %s: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("set state of node %s: %w", id, store.ErrNotFound)
	}
	return nil
}

// SetSecureBoot implements store.Store.
func (s *Store) SetSecureBoot(ctx context.Context, id string, on *bool) error {
	return s.updateNode(ctx, "set secure boot of node", id, "secure_boot", on)
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
	_, err = s.pool.Exec(ctx, `INSERT INTO boot_events
		(node_id, time, mac, ip, proto, kind, file, bytes, size, block_size, window_size, complete, error, options)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)`,
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
	rows, err := s.pool.Query(ctx, `SELECT seq, time, mac, ip, proto, kind, file, bytes, size, block_size, window_size, complete, error, options
		FROM (SELECT * FROM boot_events WHERE node_id = $1 ORDER BY seq DESC LIMIT $2) newest ORDER BY seq`, nodeID, limit)
	if err != nil {
		return nil, fmt.Errorf("trace of node %s: %w", nodeID, err)
	}
	defer rows.Close()
	var out []store.TraceEvent
	for rows.Next() {
		var e store.TraceEvent
		var t int64
		var bs, ws int32
		var mac, ip, opts string
		if err := rows.Scan(&e.Seq, &t, &mac, &ip, &e.Proto, &e.Kind, &e.File, &e.Bytes, &e.Size, &bs, &ws, &e.Complete, &e.Error, &opts); err != nil {
			return nil, fmt.Errorf("trace of node %s: %w", nodeID, err)
		}
		e.NodeID = nodeID
		e.Time = time.Unix(0, t).UTC()
		e.BlockSize, e.WindowSize = int(bs), int(ws)
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
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("trace of node %s: %w", nodeID, err)
	}
	return out, nil
}
