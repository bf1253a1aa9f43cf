package sqlstore

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// dialect is everything the two engines do differently; every query of
// the store is written once, with ? placeholders, and runs on both.
type dialect struct {
	name       string
	migrations []string
	// versions is the DDL of the table that records applied migrations.
	versions string
	// begin starts a transaction.
	begin string
	// bind rewrites a query's ? placeholders as the engine wants them.
	bind func(string) string
	// instr is the function that finds a substring: instr(hay, needle) > 0.
	instr string
	// fleetIndex makes SQLite read the hypervisors' nodes from the
	// nodes_fleet index alone (its planner takes the primary key and
	// reads the rows, inventories and all); PostgreSQL keeps large values
	// out of its rows and needs no hint.
	fleetIndex string
	// blobHas is the condition that a BLOB/BYTEA column (%s) holds the
	// bytes of its one parameter.
	blobHas string
	// forUpdate locks the rows a SELECT reads until the commit, and
	// skipLocked also passes rows that another transaction holds. SQLite
	// needs neither: every transaction begins IMMEDIATE, taking the write
	// lock, so one writer holds the whole database.
	forUpdate, skipLocked string
	// lockMigrations and lock take transaction-scoped locks: around the
	// migrations, and on one of the keys below. Empty and nil for SQLite,
	// for the same reason.
	lockMigrations string
	lock           func(key int32) string
	// retryable says whether a transaction that failed with err may
	// succeed if run again.
	retryable func(err error) bool
	// unique says whether err is a unique constraint's refusal.
	unique func(err error) bool
	// lost says whether err means the connection is gone: the
	// transaction on it, if one was open, did not commit.
	lost func(err error) bool
	// laxBegin and laxEnd surround a transaction whose commit need not
	// survive a power loss (a DHCP offer): laxBegin runs in place of
	// begin, laxEnd, when not empty, after the transaction ends on the
	// same connection. Every other commit is durable before it returns
	// (SQLite's synchronous FULL, PostgreSQL's synchronous_commit on), so
	// a lease is on disk before its ACK leaves. A later durable commit
	// makes the lax ones before it durable too: both logs are written in
	// order.
	laxBegin, laxEnd string
	// oneWriter says the engine has one writer at a time (SQLite) and
	// pays an fsync per durable commit. Its transactions then queue for
	// an in-process lock rather than in SQLite's busy handler, which
	// polls with sleeps: 64 DHCP workers contending there served 250
	// DORA/s. And the durable lease writes of concurrent callers share
	// one transaction (see group). PostgreSQL needs neither: it runs the
	// transactions of its connections at once and already flushes the
	// commits that arrive together with one write of its log, and a
	// batch there would hold the advisory locks of several subnets at
	// once, in an order another server might take them in reverse.
	oneWriter bool
}

// Advisory lock keys of PostgreSQL. The two-int form (class, key) and
// the one-bigint form live in separate key spaces.
const (
	migrateLock int64 = 0x7261636b626f6f74 // "rackboot"
	lockClass   int32 = 0x72620000         // "rb": the class of every two-int key
	eventsKey   int32 = 1                  // numbering audit events in commit order
)

// lockKey is the second half of a two-int advisory lock key for name.
func lockKey(name string) int32 {
	h := fnv.New32a()
	h.Write([]byte(name))
	return int32(h.Sum32())
}

var sqliteDialect = &dialect{
	name:       "sqlite",
	migrations: sqliteMigrations,
	versions:   `CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)`,
	begin:      "BEGIN IMMEDIATE",
	laxBegin:   "PRAGMA synchronous = NORMAL; BEGIN IMMEDIATE",
	laxEnd:     "PRAGMA synchronous = FULL",
	oneWriter:  true,
	bind:       func(q string) string { return q },
	instr:      "instr",
	fleetIndex: " INDEXED BY nodes_fleet",
	blobHas:    "instr(%s, ?) > 0",
	retryable:  func(error) bool { return false },
	unique:     func(err error) bool { return err != nil && strings.Contains(err.Error(), "UNIQUE") },
	// An embedded file has no connection to lose.
	lost: func(error) bool { return false },
}

var postgresDialect = &dialect{
	name:           "postgres",
	migrations:     postgresMigrations,
	versions:       `CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)`,
	begin:          "BEGIN",
	laxBegin:       "BEGIN; SET LOCAL synchronous_commit = off",
	bind:           dollars,
	instr:          "strpos",
	blobHas:        "position(?::bytea IN %s) > 0",
	forUpdate:      " FOR UPDATE",
	skipLocked:     " FOR UPDATE SKIP LOCKED",
	lockMigrations: fmt.Sprintf(`SELECT pg_advisory_xact_lock(%d)`, migrateLock),
	lock: func(key int32) string {
		return fmt.Sprintf(`SELECT pg_advisory_xact_lock(%d, %d)`, lockClass, key)
	},
	retryable: func(err error) bool {
		// A serialization failure or a deadlock.
		var pe *pgconn.PgError
		return errors.As(err, &pe) && (pe.Code == "40001" || pe.Code == "40P01")
	},
	unique: func(err error) bool {
		var pe *pgconn.PgError
		return errors.As(err, &pe) && pe.Code == "23505"
	},
	lost: pgLost,
}

// pgLost says whether err means the session is gone: the server ended it
// (admin_shutdown, as pg_terminate_backend does; crash_shutdown; a
// server still starting), or the socket broke or closed under it.
func pgLost(err error) bool {
	// A context that ended is the caller's doing, not the connection's.
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code == "57P01" || pe.Code == "57P02" || pe.Code == "57P03"
	}
	var ne net.Error
	return errors.Is(err, driver.ErrBadConn) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.As(err, &ne) || pgconn.SafeToRetry(err)
}

// unsent says whether err, of a connection lost, came before the
// statement was sent: database/sql's driver.ErrBadConn, pgx's
// SafeToRetry.
func unsent(err error) bool {
	return errors.Is(err, driver.ErrBadConn) || pgconn.SafeToRetry(err)
}

// dollars numbers a query's placeholders: ? becomes $1, $2, ... The
// store's queries hold no ? in string literals.
func dollars(q string) string {
	var b strings.Builder
	b.Grow(len(q) + 16)
	n := 0
	for {
		i := strings.IndexByte(q, '?')
		if i < 0 {
			b.WriteString(q)
			return b.String()
		}
		n++
		b.WriteString(q[:i])
		b.WriteByte('$')
		b.WriteString(strconv.Itoa(n))
		q = q[i+1:]
	}
}

// OpenSQLite opens (creating if needed) the SQLite database at path and
// applies the migrations it lacks. A file that is not SQLite, is
// damaged (SQLite's quick_check reads it all first), or is another
// application's SQLite database is refused with ErrNotRackboot and left
// as it was. Writers are serialised by SQLite's own
// lock (every transaction begins IMMEDIATE, and waits up to the busy
// timeout for it), which is what keeps lease allocation free of double
// grants.
func OpenSQLite(ctx context.Context, path string) (*Store, error) {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "foreign_keys(1)")
	// FULL: a commit is on disk before it returns (see dialect.laxBegin).
	q.Add("_pragma", "synchronous(FULL)")
	// A file that is not a rackboot database is refused before SQLite
	// writes a byte to it: no silent new database over another file.
	if err := checkHeader(path); err != nil {
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	if err := checkExisting(ctx, path); err != nil {
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	db := openSQLiteDB("file:" + path + "?" + q.Encode())
	// Connections are kept, not closed past database/sql's default of
	// two idle ones: a new SQLite connection reads the schema again, and
	// the DHCP workers use dozens at once.
	db.SetMaxIdleConns(64)
	s, err := open(ctx, db, sqliteDialect, path)
	if isDamaged(err) {
		return nil, fmt.Errorf("open database %s: %w: damaged: %w", path, ErrNotRackboot, errors.Unwrap(err))
	}
	if err != nil {
		return nil, err
	}
	s.wal = path + "-wal"
	return s, nil
}

// ParseDSN checks that dsn is a PostgreSQL URL (postgres:// or
// postgresql://) that pgx can use, and returns the configuration it
// describes, pool settings (pool_max_conns) included, and
// application_name rackboot unless the DSN sets one. Its errors never
// show the password.
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
	// Named, so that an operator (or a test) finds rackboot's sessions in
	// pg_stat_activity, and can end them, without touching anyone else's.
	if _, ok := cfg.ConnConfig.RuntimeParams["application_name"]; !ok {
		cfg.ConnConfig.RuntimeParams["application_name"] = ApplicationName
	}
	return cfg, nil
}

// ApplicationName is the application_name of rackboot's PostgreSQL
// sessions, unless the DSN (or PGAPPNAME) names another.
const ApplicationName = "rackboot"

// OpenPostgres connects to the PostgreSQL database dsn names
// (postgres://...) through pgx and applies the migrations it lacks, under
// an advisory lock, so servers starting together apply each one once.
// What SQLite gets from its single writer, this gets from row locks and
// advisory locks: lease allocation takes a transaction-scoped advisory
// lock per subnet and claims each address with a conditional upsert, so
// two servers never hand one address to two MACs; a transition locks its
// node's row; a task is claimed with SKIP LOCKED; audit events are
// numbered in commit order.
func OpenPostgres(ctx context.Context, dsn string) (*Store, error) {
	cfg, err := ParseDSN(dsn)
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	db := stdlib.OpenDB(*cfg.ConnConfig)
	// As many connections as pgxpool would keep (pool_max_conns, by
	// default the larger of 4 and the CPUs), all kept open, so a DORA
	// does not wait for a connection to be made, and replaced as pgxpool
	// would (pool_max_conn_lifetime, pool_max_conn_idle_time).
	db.SetMaxOpenConns(int(cfg.MaxConns))
	db.SetMaxIdleConns(int(cfg.MaxConns))
	db.SetConnMaxLifetime(cfg.MaxConnLifetime)
	db.SetConnMaxIdleTime(cfg.MaxConnIdleTime)
	u, _ := url.Parse(dsn)
	return open(ctx, db, postgresDialect, u.Redacted())
}
