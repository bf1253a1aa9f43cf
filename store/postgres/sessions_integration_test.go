//go:build integration

package postgres

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rackboot/rackboot/store/sqlstore"
)

// TestSessionsEnded: PostgreSQL ends every session of the store
// (pg_terminate_backend, as an operator, a pooler or a failover does)
// right after a transaction, so that database/sql hands out the dead
// connection again without pinging it (it pings only those idle over a
// second); the next Bind runs on a new session instead of failing. Both
// with the sessions idle and ended while a transaction holds one of
// them open: that transaction runs again and commits once.
func TestSessionsEnded(t *testing.T) {
	ctx := context.Background()
	dsn := freshDatabase(t)
	s := openTest(t, dsn)
	admin, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	end := func() int {
		var n int
		if err := admin.QueryRow(ctx, `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity
			WHERE datname = current_database() AND application_name = $1 AND pid <> pg_backend_pid()`, sqlstore.ApplicationName).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
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
