//go:build integration

package postgres

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/rackboot/rackboot/lease"
	"github.com/rackboot/rackboot/store"
	"github.com/rackboot/rackboot/store/sqlstore"
)

// sessionsRig is a store on a fresh database, an admin connection to it,
// and end, which ends every session of the store (as an operator's
// pg_terminate_backend does) and says how many it ended.
func sessionsRig(t *testing.T) (*Store, *pgx.Conn, func() int) {
	t.Helper()
	ctx := context.Background()
	dsn := freshDatabase(t)
	s := openTest(t, dsn)
	admin, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Close(ctx) })
	end := func() int {
		var n int
		if err := admin.QueryRow(ctx, `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity
			WHERE datname = current_database() AND application_name = $1 AND pid <> pg_backend_pid()`, sqlstore.ApplicationName).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	return s, admin, end
}

// TestSessionsEnded: PostgreSQL ends every session of the store
// (pg_terminate_backend, as an operator, a pooler or a failover does)
// right after a transaction, so that database/sql hands out the dead
// connection again without pinging it (it pings only those idle over a
// second); the next Bind runs on a new session instead of failing. Both
// with the sessions idle and ended while a transaction holds one of
// them open: that transaction runs again and commits once.
func TestSessionsEnded(t *testing.T) {
	ctx := context.Background()
	s, admin, end := sessionsRig(t)
	subnet := netip.MustParsePrefix("10.80.0.0/24")
	mac := net.HardwareAddr{0x02, 0x80, 0, 0, 0, 1}
	ip := netip.MustParseAddr("10.80.0.10")
	ended := 0
	for i := 0; i < 20; i++ {
		if _, err := s.Bind(ctx, subnet, mac, ip, "", time.Now().Add(time.Hour)); err != nil {
			t.Fatalf("round %d: bind before the sessions end: %v", i, err)
		}
		ended += end()
		if _, err := s.Bind(ctx, subnet, mac, ip, "", time.Now().Add(time.Hour)); err != nil {
			t.Errorf("round %d: bind after the sessions ended: %v", i, err)
		}
	}
	if ended < 20 {
		t.Errorf("%d sessions ended in 20 rounds: the store's sessions are not named %q", ended, sqlstore.ApplicationName)
	}

	// Ended in the middle of a transaction, which waits on a row lock
	// the test holds, so that it is surely inside when its session ends.
	for i := 0; i < 5; i++ {
		lock, err := admin.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := lock.Exec(ctx, `SELECT 1 FROM leases WHERE ip = $1 FOR UPDATE`, ip.String()); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() {
			_, err := s.Bind(ctx, subnet, mac, ip, "", time.Now().Add(time.Duration(i+2)*time.Hour))
			done <- err
		}()
		waitWaiting(t, admin)
		end()
		lock.Rollback(ctx)
		if err := <-done; err != nil {
			t.Errorf("round %d: bind whose session ended while it waited: %v", i, err)
		}
		l, err := s.ByIP(ctx, ip)
		if err != nil || time.Until(l.Expires) < time.Duration(i+1)*time.Hour {
			t.Errorf("round %d: lease %+v, %v; want it bound for %d hours", i, l, err, i+2)
		}
	}
}

// waitWaiting waits until a session of rackboot's waits on a lock.
func waitWaiting(t *testing.T, admin *pgx.Conn) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		var n int
		if err := admin.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND application_name = $1 AND wait_event_type = 'Lock'`, sqlstore.ApplicationName).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			return
		}
	}
	t.Fatal("no session of rackboot's waits on the test's lock")
}

// TestStatementsAfterSessionsEnded: single statements, outside a
// transaction, on the pool's connections after PostgreSQL ended their
// sessions (right after a use, so database/sql hands them out without a
// ping): a read and an idempotent write (a decline) succeed, on a new
// session. Ended while the server runs them: the decline runs again and
// succeeds; a write that is not idempotent (a boot secret's mark) may
// have committed, so it is reported, and not run again.
func TestStatementsAfterSessionsEnded(t *testing.T) {
	ctx := context.Background()
	s, admin, end := sessionsRig(t)
	// used ends the sessions right after a statement, so the pool holds
	// a connection used within the last second.
	used := func(round int) {
		if _, err := s.Images(ctx); err != nil {
			t.Fatalf("round %d: read before the sessions end: %v", round, err)
		}
		if end() == 0 {
			t.Fatalf("round %d: no session ended: the store's sessions are not named %q", round, sqlstore.ApplicationName)
		}
	}
	ip := netip.MustParseAddr("10.81.0.10")
	readFailed, writeFailed := 0, 0
	for i := 0; i < 20; i++ {
		used(i)
		if _, err := s.Images(ctx); err != nil {
			readFailed++
			t.Errorf("round %d: read after the sessions ended: %v", i, err)
		}
		used(i)
		expires := time.Now().Add(time.Duration(i+1) * time.Hour).Truncate(time.Second)
		if err := s.Decline(ctx, ip, expires); err != nil {
			writeFailed++
			t.Errorf("round %d: decline after the sessions ended: %v", i, err)
		}
		if l, err := s.ByIP(ctx, ip); err != nil || l.State != lease.Declined || !l.Expires.Equal(expires) {
			t.Errorf("round %d: lease %+v, %v; want declined until %s", i, l, err, expires)
		}
	}
	t.Logf("sessions ended 40 times, each right after a read: %d of 20 reads and %d of 20 declines after them failed", readFailed, writeFailed)

	// Mid-flight: the statement waits on a row lock the test holds, so
	// the server is surely running it when its session ends.
	midFlight := func(lockRow, key string, run func() error) error {
		lock, err := admin.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := lock.Exec(ctx, lockRow, key); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- run() }()
		waitWaiting(t, admin)
		end()
		lock.Rollback(ctx)
		return <-done
	}
	tok, err := s.CreateToken(ctx, store.Token{ID: "boot-n1", Hash: "h1", Kind: store.TokenBoot, Role: store.RoleAgent, NodeID: "n1", Created: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		expires := time.Now().Add(time.Duration(i+30) * time.Hour).Truncate(time.Second)
		err := midFlight(`SELECT 1 FROM leases WHERE ip = $1 FOR UPDATE`, ip.String(), func() error { return s.Decline(ctx, ip, expires) })
		if err != nil {
			t.Errorf("round %d: a decline whose session ended under it: %v", i, err)
		}
		if l, err := s.ByIP(ctx, ip); err != nil || !l.Expires.Equal(expires) {
			t.Errorf("round %d: lease %+v, %v; want declined until %s", i, l, err, expires)
		}
		err = midFlight(`SELECT 1 FROM tokens WHERE id = $1 FOR UPDATE`, tok.ID, func() error {
			return s.SetTokenKind(ctx, tok.ID, tok.Hash, store.TokenBoot, store.TokenBootUsed)
		})
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "57P01" {
			t.Errorf("round %d: a mark whose session ended under it: %v; want the server's 57P01", i, err)
		}
		if got, terr := s.TokenByHash(ctx, tok.Hash); terr != nil || got.Kind != store.TokenBoot {
			t.Errorf("round %d: token %+v, %v after a failed mark; want it still %q (the mark not run again)", i, got, terr, store.TokenBoot)
		}
	}
	if err := s.SetTokenKind(ctx, tok.ID, tok.Hash, store.TokenBoot, store.TokenBootUsed); err != nil {
		t.Errorf("the mark on a live session: %v", err)
	}
}
