//go:build integration

package sqlstore

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rackboot/rackboot/internal/pgtest"
	"github.com/rackboot/rackboot/lease"
)

// TestPostgresBindsShareCommits checks that on PostgreSQL binds of one
// subnet that arrive while a batch waits for the subnet's lock share the
// next transaction: 32 concurrent binds, two commits, each bind's lease
// bound. Without the group each bind takes the lock and commits alone.
func TestPostgresBindsShareCommits(t *testing.T) {
	ctx := context.Background()
	base, stop, err := pgtest.Server(filepath.Join("..", "..", "scripts", "postgres.sh"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	dsn := pgtest.Database(t, base)
	s, err := OpenPostgres(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// Another session holds the subnet's lock, as another server's
	// offer would: the first batch waits for it at its BEGIN.
	other, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close(ctx)
	tx, err := other.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, postgresDialect.lock(lockKey("lease "+testSubnet.String()))); err != nil {
		t.Fatal(err)
	}
	const n = 32
	before := s.commits.Load()
	queuedBinds(t, s, s.subnetGroup(testSubnet), n, func() {
		if err := tx.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
	})
	if got := s.commits.Load() - before; got != 2 {
		t.Errorf("%d binds took %d commits, want 2 (one for the first, one for the rest)", n, got)
	}
	for i := range n {
		l, err := s.ByIP(ctx, testIP(i+1))
		if err != nil || l.State != lease.Bound || l.MAC.String() != testMAC(i).String() {
			t.Errorf("lease on %s: %+v, %v", testIP(i+1), l, err)
		}
	}
	// A bind of another MAC's address fails alone in its batch.
	if _, err := s.Bind(ctx, testSubnet, testMAC(n+1), testIP(1), "", time.Now().Add(time.Hour)); err == nil {
		t.Errorf("bound %s, another MAC's, to a second MAC", testIP(1))
	}
}
