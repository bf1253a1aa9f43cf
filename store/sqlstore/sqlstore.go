// Package sqlstore is the Store on a SQL database, one implementation for
// both engines: SQLite (modernc.org/sqlite, no cgo), the embedded
// database of one appliance, and PostgreSQL (pgx through database/sql),
// which several rackboot servers share. Every query is written once; what
// the engines do differently (placeholders, locking, column types, error
// codes) is in dialect.go, the schemas in schema.go.
package sqlstore

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rackboot/rackboot/store"
)

// Store is a store.Store on a SQLite or PostgreSQL database.
type Store struct {
	pool *sql.DB
	db   runner // on pool
	// idem is db for writes that, run twice, change nothing more and
	// report the same as run once: a connection lost under one runs it
	// again.
	idem runner
	d    *dialect

	mu   sync.Mutex
	next map[netip.Prefix]netip.Addr // allocation cursor per subnet
	// probes counts the addresses Allocate tried to claim, commits the
	// transactions committed, syncs the fsyncs of the log by syncLog.
	probes, commits, syncs atomic.Int64
	// groups are the group commits of each subnet's binds (PostgreSQL).
	groupsMu sync.Mutex
	groups   map[netip.Prefix]*group
	wal      string // SQLite's write-ahead log
	group    group  // the durable lease writes waiting to commit
	// writer, on an engine of one writer, is held by the transaction
	// that writes (see dialect.oneWriter).
	writer chan struct{}
}

var _ store.Store = (*Store)(nil)

// conn is what a database and a transaction both run queries on.
type conn interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// pooled is the pool as a conn for single statements outside a
// transaction. A statement whose connection turns out lost (the
// database ended the session while it sat idle in the pool: database/sql
// pings only connections idle for over a second) runs again, on another
// connection, when that is safe: a read always, a write when it is
// idempotent or failed before it was sent (the driver says so, as for
// database/sql's own retry of driver.ErrBadConn). Any other write lost
// on its way may have committed, and its caller sees the error.
type pooled struct {
	c conn
	d *dialect
	// idempotent says that every write run through it may run twice.
	idempotent bool
}

// reads says whether q only reads: the store's SELECTs outside a
// transaction neither lock nor call anything that writes.
func reads(q string) bool {
	q = strings.TrimSpace(q)
	return len(q) >= 6 && strings.EqualFold(q[:6], "SELECT")
}

// again says whether a statement that failed with err runs again; safe
// says it may, wherever its connection was lost.
func (p pooled) again(err error, safe bool) bool {
	return p.d.lost(err) && (safe || unsent(err))
}

func (p pooled) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	for attempt := 1; ; attempt++ {
		res, err := p.c.ExecContext(ctx, query, args...)
		if err == nil || attempt == maxAttempts || !p.again(err, p.idempotent) {
			return res, err
		}
	}
}

func (p pooled) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	for attempt := 1; ; attempt++ {
		rows, err := p.c.QueryContext(ctx, query, args...)
		if err == nil || attempt == maxAttempts || !p.again(err, p.idempotent || reads(query)) {
			return rows, err
		}
	}
}

func (p pooled) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	for attempt := 1; ; attempt++ {
		// The query's error is the row's, before Scan: a lost
		// connection shows there (the driver reads the first row).
		row := p.c.QueryRowContext(ctx, query, args...)
		if err := row.Err(); err == nil || attempt == maxAttempts || !p.again(err, p.idempotent || reads(query)) {
			return row
		}
	}
}

// runner runs queries written with ? placeholders on a conn.
type runner struct {
	c conn
	d *dialect
	// group, when set, is the pool's runner's on an engine of one
	// writer: a write it runs alone joins the group commit (see write).
	group func(context.Context, func(context.Context, runner) error) error
}

// write runs f, the writes of one statement, on r. On the pool of an
// engine of one writer it runs in the group commit: in turn with the
// transactions, and durable when it returns, as its own commit would be.
// Run alone, SQLite's commit would hold the write lock through its
// fsync, and a write that came while a transaction held the lock would
// wait in SQLite's busy handler, which sleeps in steps of up to 100 ms:
// in a boot storm the boot scripts' tokens and the agents' lookups held
// the DHCP offers up that way for most of a second.
func (r runner) write(ctx context.Context, f func(context.Context, runner) error) error {
	if r.group == nil {
		return f(ctx, r)
	}
	return r.group(ctx, f)
}

// exec runs a statement and returns how many rows it changed.
func (r runner) exec(ctx context.Context, q string, args ...any) (int64, error) {
	if r.group != nil {
		var n int64
		err := r.group(ctx, func(ctx context.Context, tx runner) error {
			var err error
			n, err = tx.exec(ctx, q, args...)
			return err
		})
		return n, err
	}
	res, err := r.c.ExecContext(ctx, r.d.bind(q), args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// change runs a statement that must change a row: none is ErrNotFound.
func (r runner) change(ctx context.Context, q string, args ...any) error {
	n, err := r.exec(ctx, q, args...)
	if err == nil && n == 0 {
		err = store.ErrNotFound
	}
	return err
}

func (r runner) query(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	return r.c.QueryContext(ctx, r.d.bind(q), args...)
}

func (r runner) row(ctx context.Context, q string, args ...any) *sql.Row {
	return r.c.QueryRowContext(ctx, r.d.bind(q), args...)
}

// lock takes a transaction-scoped lock on key where the engine needs one.
func (r runner) lock(ctx context.Context, key int32) error {
	if r.d.lock == nil {
		return nil
	}
	_, err := r.exec(ctx, r.d.lock(key))
	return err
}

type scanner interface{ Scan(...any) error }

// all runs a query and scans every row it returns.
func all[T any](ctx context.Context, r runner, scan func(scanner) (T, error), q string, args ...any) ([]T, error) {
	rows, err := r.query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// one scans the row a query returns; no row is ErrNotFound.
func one[T any](ctx context.Context, r runner, scan func(scanner) (T, error), q string, args ...any) (T, error) {
	v, err := scan(r.row(ctx, q, args...))
	if errors.Is(err, sql.ErrNoRows) {
		err = store.ErrNotFound
	}
	return v, err
}

func open(ctx context.Context, db *sql.DB, d *dialect, where string) (*Store, error) {
	s := &Store{pool: db, d: d}
	if d.oneWriter {
		s.writer = make(chan struct{}, 1)
	}
	s.db, s.idem = runner{c: pooled{db, d, false}, d: d}, runner{c: pooled{db, d, true}, d: d}
	if d.oneWriter {
		s.db.group, s.idem.group = s.groupTx, s.groupTx
	}
	if err := s.migrate(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("open database %s: %w", where, err)
	}
	return s, nil
}

// Ping implements store.Store: one query that reads the database.
func (s *Store) Ping(ctx context.Context) error {
	var v int
	err := s.db.row(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&v)
	if err != nil {
		return fmt.Errorf("ping database: %w", err)
	}
	return nil
}

// Close closes the database.
func (s *Store) Close() error { return s.pool.Close() }

// migrate applies the missing migrations in one transaction, which on
// PostgreSQL holds an advisory lock: a second server starting at the same
// time waits, then finds every migration applied.
func (s *Store) migrate(ctx context.Context) error {
	err := s.tx(ctx, func(tx runner) error {
		if s.d.lockMigrations != "" {
			if _, err := tx.exec(ctx, s.d.lockMigrations); err != nil {
				return err
			}
		}
		if _, err := tx.exec(ctx, s.d.versions); err != nil {
			return err
		}
		var have int
		if err := tx.row(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&have); err != nil {
			return err
		}
		if have > len(s.d.migrations) {
			return fmt.Errorf("database is at version %d, newer than this rackboot (%d): upgrade rackboot", have, len(s.d.migrations))
		}
		for i := have; i < len(s.d.migrations); i++ {
			if _, err := tx.exec(ctx, s.d.migrations[i]); err != nil {
				return fmt.Errorf("to version %d: %w", i+1, err)
			}
			if _, err := tx.exec(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)`, i+1, time.Now().Unix()); err != nil {
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
// cures: the dialect's (a serialization failure, a deadlock) or f's
// errRetry.
func (s *Store) tx(ctx context.Context, f func(runner) error) error {
	return s.retry(ctx, func() error { return s.tx1(ctx, s.d.begin, "", false, f) })
}

// lockedTx is tx holding, where the engine needs it, the lock on key
// from the start. On PostgreSQL the lock is taken with the BEGIN, in one
// round trip: on the DHCP path, one of five. idempotent says that f, run
// again after it committed, changes nothing more (a lease's Bind of the
// same MAC and address): then a connection lost during COMMIT runs it
// again too, and the caller learns for sure that it committed.
func (s *Store) lockedTx(ctx context.Context, key int32, idempotent bool, f func(runner) error) error {
	begin := s.d.begin
	if s.d.lock != nil {
		begin += "; " + s.d.lock(key)
	}
	return s.retry(ctx, func() error { return s.tx1(ctx, begin, "", idempotent, f) })
}

// laxLockedTx is lockedTx for a write that may be lost in a power cut
// without harm, such as an offer: its commit does not wait for the disk.
func (s *Store) laxLockedTx(ctx context.Context, key int32, idempotent bool, f func(runner) error) error {
	begin := s.d.laxBegin
	if s.d.lock != nil {
		begin += "; " + s.d.lock(key)
	}
	return s.retry(ctx, func() error { return s.tx1(ctx, begin, s.d.laxEnd, idempotent, f) })
}

// errLost marks a transaction that failed because its connection was
// lost before COMMIT was sent (the database ended the session, or it had
// ended while the connection sat idle in the pool): nothing of it
// committed, so it runs again, on another connection. A connection lost
// during COMMIT is retried only for an idempotent transaction (see
// lockedTx): the commit may have happened, and any other caller must see
// the error (a DHCP server then sends no ACK).
var errLost = errors.New("database connection lost")

func (s *Store) retry(ctx context.Context, run func() error) error {
	for attempt := 1; ; attempt++ {
		err := run()
		if err == nil || attempt == maxAttempts || !(errors.Is(err, errRetry) || errors.Is(err, errLost) || s.d.retryable(err)) {
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

// tx1 runs f in one transaction that the statement begin starts, on a
// connection of its own with BEGIN and COMMIT statements rather than a
// sql.Tx: a sql.Tx watches its context with a goroutine, and every query
// in it another, which on PostgreSQL cost a DORA a sixth of its time.
// end, when not empty, runs on the connection after the transaction, to
// undo a setting begin made: a connection where it fails is not reused.
func (s *Store) tx1(ctx context.Context, begin, end string, idempotent bool, f func(runner) error) error {
	if s.writer != nil {
		if err := takeTurn(ctx, s.writer); err != nil {
			return err
		}
		defer func() { <-s.writer }()
	}
	c, err := s.pool.Conn(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	tx := runner{c: c, d: s.d}
	if end != "" {
		defer func() {
			if _, err := tx.exec(context.WithoutCancel(ctx), end); err != nil {
				c.Raw(func(any) error { return driver.ErrBadConn })
			}
		}()
	}
	lost := func(err error) error {
		if s.d.lost(err) {
			c.Raw(func(any) error { return driver.ErrBadConn })
			return fmt.Errorf("%w: %w", errLost, err)
		}
		return err
	}
	if _, err := tx.exec(ctx, begin); err != nil {
		// No transaction is open (SQLite), or the driver discards the
		// connection for the one left (pgx, when the lock failed).
		return lost(err)
	}
	if err = f(tx); err == nil {
		_, err = tx.exec(ctx, "COMMIT")
		if err == nil {
			s.commits.Add(1)
			return nil
		}
		if idempotent && s.d.lost(err) {
			return lost(err)
		}
		// Said so: where the connection was lost, whether the change
		// committed is unknown.
		err = fmt.Errorf("commit: %w", err)
	} else if s.d.lost(err) {
		return lost(err)
	}
	if _, rerr := tx.exec(context.WithoutCancel(ctx), "ROLLBACK"); rerr != nil {
		// The connection may still be in the transaction: never reuse it.
		c.Raw(func(any) error { return driver.ErrBadConn })
	}
	return err
}

// writerWait is how long a transaction waits for its turn to write, as
// long as SQLite's busy timeout that it waited in before.
const writerWait = 10 * time.Second

// takeTurn waits for the turn to write: writer's one place. Its waiters
// are served in the order they came (a channel's senders queue).
func takeTurn(ctx context.Context, writer chan struct{}) error {
	t := time.NewTimer(writerWait)
	defer t.Stop()
	select {
	case writer <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return fmt.Errorf("database busy: no turn to write in %s", writerWait)
	}
}

func macText(mac net.HardwareAddr) string { return strings.ToLower(mac.String()) }

func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// unixNanos is a stored time: 0 is the epoch.
func unixNanos(n int64) time.Time { return time.Unix(0, n).UTC() }

// fromNanos is a stored time that may be unset: 0 is the zero time.
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

// rawJSON is a stored JSON column: nil when empty.
func rawJSON(b []byte) json.RawMessage {
	if len(b) == 0 {
		return nil
	}
	return json.RawMessage(b)
}
