package sqlstore

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

func TestPgLost(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"pg_terminate_backend", &pgconn.PgError{Severity: "FATAL", Code: "57P01"}, true},
		{"crash shutdown", fmt.Errorf("bind: %w", &pgconn.PgError{Code: "57P02"}), true},
		{"server starting", &pgconn.PgError{Code: "57P03"}, true},
		{"serialization failure", &pgconn.PgError{Code: "40001"}, false},
		{"unique violation", &pgconn.PgError{Code: "23505"}, false},
		{"socket closed under a read", fmt.Errorf("read: %w", io.ErrUnexpectedEOF), true},
		{"connection reset", &net.OpError{Op: "read", Net: "unix", Err: syscall.ECONNRESET}, true},
		{"broken pipe", &net.OpError{Op: "write", Net: "unix", Err: syscall.EPIPE}, true},
		{"closed connection", driver.ErrBadConn, true},
		{"the caller's deadline", fmt.Errorf("exec: %w", context.DeadlineExceeded), false},
		{"the caller's cancel", context.Canceled, false},
		{"other", errors.New("syntax error"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := pgLost(tt.err); got != tt.want {
				t.Errorf("pgLost(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

// TestTxRetriesLostConnection: a transaction whose connection is lost
// before COMMIT runs again and commits once; one whose COMMIT fails is
// not run again, however its error reads, since it may have committed,
// unless it is idempotent; other errors end it at once. The engine is SQLite, with a dialect that
// takes errFakeLost, and a deferred foreign key's refusal at COMMIT, for
// a lost connection.
func TestTxRetriesLostConnection(t *testing.T) {
	ctx := context.Background()
	s, err := OpenSQLite(ctx, filepath.Join(t.TempDir(), "rackboot.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	errFakeLost := errors.New("fake: connection lost")
	d := *s.d
	d.lost = func(err error) bool {
		return errors.Is(err, errFakeLost) || err != nil && strings.Contains(err.Error(), "FOREIGN KEY")
	}
	s.d = &d
	insert := func(tx runner, ip string) error {
		_, err := tx.exec(ctx, `INSERT INTO leases (ip, mac, subnet, state, expires) VALUES (?, 'm', 's', 'bound', 1)`, ip)
		return err
	}
	count := func(ip string) int {
		var n int
		if err := s.db.row(ctx, `SELECT COUNT(*) FROM leases WHERE ip = ?`, ip).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	runs := 0
	err = s.tx(ctx, func(tx runner) error {
		runs++
		if err := insert(tx, "10.0.0.1"); err != nil {
			return err
		}
		if runs == 1 {
			return fmt.Errorf("exec: %w", errFakeLost)
		}
		return nil
	})
	if err != nil || runs != 2 || count("10.0.0.1") != 1 {
		t.Errorf("lost before COMMIT: err %v, %d runs, %d rows; want nil, 2 runs, 1 row", err, runs, count("10.0.0.1"))
	}

	runs = 0
	err = s.tx(ctx, func(tx runner) error {
		runs++
		if _, err := tx.exec(ctx, `PRAGMA defer_foreign_keys = ON`); err != nil {
			return err
		}
		if _, err := tx.exec(ctx, `INSERT INTO interfaces (mac, node_id) VALUES ('02:00:00:00:00:01', 'no such node')`); err != nil {
			return err
		}
		return insert(tx, "10.0.0.2")
	})
	if err == nil || !strings.Contains(err.Error(), "FOREIGN KEY") || runs != 1 || count("10.0.0.2") != 0 {
		t.Errorf("lost at COMMIT: err %v, %d runs, %d rows; want the foreign key's refusal, 1 run, no row", err, runs, count("10.0.0.2"))
	}

	// An idempotent one (a lease's) is run again after a COMMIT lost,
	// and the caller learns that it committed.
	runs = 0
	err = s.lockedTx(ctx, 1, true, func(tx runner) error {
		runs++
		if runs == 1 {
			if _, err := tx.exec(ctx, `PRAGMA defer_foreign_keys = ON`); err != nil {
				return err
			}
			if _, err := tx.exec(ctx, `INSERT INTO interfaces (mac, node_id) VALUES ('02:00:00:00:00:01', 'no such node')`); err != nil {
				return err
			}
		}
		return insert(tx, "10.0.0.3")
	})
	if err != nil || runs != 2 || count("10.0.0.3") != 1 {
		t.Errorf("idempotent, lost at COMMIT: err %v, %d runs, %d rows; want nil, 2 runs, 1 row", err, runs, count("10.0.0.3"))
	}

	runs = 0
	refused := errors.New("refused")
	if err := s.tx(ctx, func(runner) error { runs++; return refused }); !errors.Is(err, refused) || runs != 1 {
		t.Errorf("another error: %v after %d runs, want refused after 1", err, runs)
	}
}

// TestPooledAgain: a single statement whose connection was lost runs
// again when it reads, when it is idempotent, or when the driver says it
// was never sent; a write lost after it was sent does not.
func TestPooledAgain(t *testing.T) {
	sent := &pgconn.PgError{Severity: "FATAL", Code: "57P01"}
	for _, tc := range []struct {
		name       string
		query      string
		idempotent bool
		err        error
		want       bool
	}{
		{"read, lost", "SELECT kind FROM tokens WHERE id = ?", false, sent, true},
		{"read, indented", "\n\t  select 1", false, sent, true},
		{"read, another error", "SELECT 1", false, errors.New("syntax error"), false},
		{"read, the caller's cancel", "SELECT 1", false, context.Canceled, false},
		{"write, lost after it was sent", "UPDATE tokens SET kind = ? WHERE id = ? AND kind = ?", false, sent, false},
		{"write returning, lost after it was sent", "UPDATE tasks SET state = ? RETURNING id", false, sent, false},
		{"write, not sent", "UPDATE tokens SET kind = ? WHERE id = ? AND kind = ?", false, fmt.Errorf("exec: %w", driver.ErrBadConn), true},
		{"idempotent write, lost after it was sent", "DELETE FROM leases WHERE ip = ?", true, sent, true},
		{"idempotent write, unique violation", "INSERT INTO leases VALUES (?)", true, &pgconn.PgError{Code: "23505"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := pooled{d: postgresDialect, idempotent: tc.idempotent}
			if got := p.again(tc.err, p.idempotent || reads(tc.query)); got != tc.want {
				t.Errorf("again(%v) for %q = %v, want %v", tc.err, tc.query, got, tc.want)
			}
		})
	}
}
