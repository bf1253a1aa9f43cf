package sqlstore

import (
	"context"
	"net"
	"net/netip"
	"path/filepath"
	"testing"
	"time"
)

func TestMigrateTwice(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rackboot.db")
	for i := 0; i < 2; i++ {
		s, err := OpenSQLite(context.Background(), path)
		if err != nil {
			t.Fatalf("open %d: %v", i, err)
		}
		var n int
		if err := s.db.row(context.Background(), `SELECT COUNT(*) FROM schema_migrations`).Scan(&n); err != nil || n != len(sqliteMigrations) {
			t.Fatalf("open %d: %d migrations recorded, %v", i, n, err)
		}
		s.Close()
	}
}

func TestLockKeyStable(t *testing.T) {
	// Every server computes the same key for a subnet, or the lock
	// serialises nothing.
	if a, b := lockKey("lease 10.0.0.0/24"), lockKey("lease 10.0.0.0/24"); a != b {
		t.Fatalf("lock keys differ: %d, %d", a, b)
	}
	if lockKey("lease 10.0.0.0/24") == lockKey("lease 10.0.1.0/24") {
		t.Fatal("two subnets share a lock key")
	}
	// The key is what every release computed: servers of two releases
	// sharing one database during an upgrade lock the same subnet alike.
	if got := lockKey("lease 10.0.0.0/24"); got != -83540937 {
		t.Fatalf("lock key of 10.0.0.0/24 is %d, want -83540937", got)
	}
}

func TestDollars(t *testing.T) {
	for q, want := range map[string]string{
		`SELECT 1`:                    `SELECT 1`,
		`x = ? AND y IN (?, ?)`:       `x = $1 AND y IN ($2, $3)`,
		`pg_advisory_xact_lock(1, ?)`: `pg_advisory_xact_lock(1, $1)`,
	} {
		if got := dollars(q); got != want {
			t.Errorf("dollars(%q) = %q, want %q", q, got, want)
		}
	}
}

// TestDurability shows that a commit is synchronous (FULL) unless it is
// an offer's, and that an offer leaves its connection synchronous again.
func TestDurability(t *testing.T) {
	ctx := context.Background()
	s, err := OpenSQLite(ctx, filepath.Join(t.TempDir(), "rackboot.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.pool.SetMaxOpenConns(1)
	mode := func(r runner) int {
		var m int
		if err := r.row(ctx, `PRAGMA synchronous`).Scan(&m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	const normal, full = 1, 2
	if m := mode(s.db); m != full {
		t.Fatalf("synchronous %d outside a transaction, want FULL (%d)", m, full)
	}
	if err := s.tx(ctx, func(tx runner) error {
		if m := mode(tx); m != full {
			t.Errorf("synchronous %d in a transaction, want FULL", m)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.laxLockedTx(ctx, 1, false, func(tx runner) error {
		if m := mode(tx); m != normal {
			t.Errorf("synchronous %d in an offer's transaction, want NORMAL (%d)", m, normal)
		}
		_, err := tx.exec(ctx, `INSERT INTO leases (ip, mac, subnet, state, expires) VALUES ('10.0.0.9', 'm', 's', 'offered', 1)`)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if m := mode(s.db); m != full {
		t.Fatalf("synchronous %d after an offer, want FULL again", m)
	}
	var n int
	if err := s.db.row(ctx, `SELECT COUNT(*) FROM leases`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("the offer's row: %d, %v", n, err)
	}
}

// TestColdCursor: a server that has just started finds its subnet's first
// free address with one read, not by claiming each taken address in turn;
// one that holds a cursor goes on from it.
func TestColdCursor(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "rackboot.db")
	s, err := OpenSQLite(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	subnet := netip.MustParsePrefix("10.9.0.0/16")
	first, last := netip.MustParseAddr("10.9.0.10"), netip.MustParseAddr("10.9.255.250")
	expires := time.Now().Add(time.Hour)
	mac := func(i int) net.HardwareAddr { return net.HardwareAddr{2, 0, 0, byte(i >> 16), byte(i >> 8), byte(i)} }
	const n = 3000
	a := first
	for i := 0; i < n; i++ {
		if _, err := s.Bind(ctx, subnet, mac(i), a, "", expires); err != nil {
			t.Fatal(err)
		}
		a = a.Next()
	}
	// A gap the first new client of the restarted server gets, with the
	// reserved address before it skipped.
	gap := netip.MustParseAddr("10.9.1.0")
	if err := s.Release(ctx, mac(int(gap.As4()[3])+256-10), gap); err != nil {
		t.Fatal(err)
	}
	s.Close()

	s, err = OpenSQLite(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	l, err := s.Allocate(ctx, subnet, first, last, mac(n), netip.Addr{}, nil, expires)
	if err != nil {
		t.Fatal(err)
	}
	if l.IP != gap || s.probes.Load() > 1 {
		t.Errorf("first allocation after a start: %s after %d probes, want %s after 1", l.IP, s.probes.Load(), gap)
	}
	// The next one goes on from there: past the gap, the taken run ends
	// at first+n.
	before := s.probes.Load()
	l, err = s.Allocate(ctx, subnet, first, last, mac(n+1), netip.Addr{}, []netip.Addr{a}, expires)
	if err != nil {
		t.Fatal(err)
	}
	if want := a.Next(); l.IP != want {
		t.Errorf("second allocation: %s, want %s (%s is reserved)", l.IP, want, a)
	}
	if p := s.probes.Load() - before; p > int64(n) {
		t.Errorf("second allocation took %d probes", p)
	}
}
