package sqlstore

import (
	"context"
	"path/filepath"
	"testing"
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
	if err := s.laxLockedTx(ctx, 1, func(tx runner) error {
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
