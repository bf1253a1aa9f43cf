package sqlstore

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/lease"
	"github.com/rackboot/rackboot/store"
)

// holdWriteLock takes SQLite's write lock on a connection of its own, so
// that the next batch blocks at its BEGIN while the test queues more
// binds behind it; the returned function lets go.
func holdWriteLock(t *testing.T, s *Store) func() {
	t.Helper()
	ctx := context.Background()
	c, err := s.pool.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		t.Fatal(err)
	}
	return func() {
		if _, err := c.ExecContext(ctx, "ROLLBACK"); err != nil {
			t.Error(err)
		}
		c.Close()
	}
}

// waitGroup waits until the group commit is running with n binds queued
// behind the batch in flight.
func waitGroup(t *testing.T, s *Store, n int) {
	t.Helper()
	waitQueued(t, &s.group, n)
}

// waitQueued waits until g is running with n writes queued behind the
// batch in flight.
func waitQueued(t *testing.T, g *group, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		g.mu.Lock()
		got, running := len(g.pending), g.running
		g.mu.Unlock()
		if running && got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("group commit: %d queued (running %v), want %d", got, running, n)
		}
		time.Sleep(time.Millisecond)
	}
}

func testMAC(i int) net.HardwareAddr { return net.HardwareAddr{2, 0, 0, 0, byte(i >> 8), byte(i)} }

func testIP(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}) }

var testSubnet = netip.MustParsePrefix("10.0.0.0/16")

// queuedBinds binds n MACs, the first alone in a batch that waits for a
// lock the test holds, the rest queued behind it in g, then lets the
// lock go (release) and checks that every bind succeeded.
func queuedBinds(t *testing.T, s *Store, g *group, n int, release func()) {
	t.Helper()
	ctx := context.Background()
	errs := make([]error, n)
	var wg sync.WaitGroup
	bind := func(i int) {
		defer wg.Done()
		_, errs[i] = s.Bind(ctx, testSubnet, testMAC(i), testIP(i+1), "", time.Now().Add(time.Hour))
	}
	wg.Add(n)
	go bind(0)
	waitQueued(t, g, 0) // the first batch took bind 0 and waits for the lock
	for i := 1; i < n; i++ {
		go bind(i)
	}
	waitQueued(t, g, n-1)
	release()
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("bind %d: %v", i, err)
		}
	}
}

// TestGroupCommitShares checks that binds arriving while a commit is in
// flight share the next one: 32 concurrent binds, two commits. Without
// group commit each bind is a transaction of its own.
func TestGroupCommitShares(t *testing.T) {
	ctx := context.Background()
	s, err := OpenSQLite(ctx, filepath.Join(t.TempDir(), "rackboot.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const n = 32
	before, syncs := s.commits.Load(), s.syncs.Load()
	queuedBinds(t, s, &s.group, n, holdWriteLock(t, s))
	if got := s.commits.Load() - before; got != 2 {
		t.Errorf("%d binds took %d commits, want 2 (one for the first, one for the rest)", n, got)
	}
	// The commits do not wait for the disk: the log's fsync after each
	// does, before its binds return.
	if got := s.syncs.Load() - syncs; got != 2 {
		t.Errorf("%d binds took %d fsyncs of the log, want 2", n, got)
	}
	syncs = s.syncs.Load()
	if _, err := s.Bind(ctx, testSubnet, testMAC(n), testIP(n+1), "", time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if s.syncs.Load() == syncs {
		t.Error("a bind returned without an fsync of the log")
	}
	for i := 0; i < n; i++ {
		l, err := s.ByIP(ctx, testIP(i+1))
		if err != nil || l.State != lease.Bound || l.MAC.String() != testMAC(i).String() {
			t.Errorf("lease on %s: %+v, %v", testIP(i+1), l, err)
		}
	}
}

// TestGroupCommitConflictFailsAlone checks that a bind refused inside a
// batch (its address is another MAC's, committed before or earlier in
// the same batch) fails alone, and the rest of the batch commits.
func TestGroupCommitConflictFailsAlone(t *testing.T) {
	ctx := context.Background()
	s, err := OpenSQLite(ctx, filepath.Join(t.TempDir(), "rackboot.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	exp := time.Now().Add(time.Hour)
	if _, err := s.Bind(ctx, testSubnet, testMAC(1), testIP(1), "", exp); err != nil {
		t.Fatal(err)
	}
	binds := []struct {
		mac, ip int
		refused bool
	}{
		{mac: 9, ip: 9},                // the first batch, alone
		{mac: 2, ip: 1, refused: true}, // bound to MAC 1 before
		{mac: 3, ip: 3},                // a free address
		{mac: 4, ip: 4},                // free, and taken first...
		{mac: 5, ip: 4, refused: true}, // ...so refused in the same batch
		{mac: 1, ip: 1},                // MAC 1 renews its own
		{mac: 6, ip: 6},                // after the refusals
	}
	release := holdWriteLock(t, s)
	errs := make([]error, len(binds))
	var wg sync.WaitGroup
	for i, b := range binds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = s.Bind(ctx, testSubnet, testMAC(b.mac), testIP(b.ip), "", exp)
		}()
		waitGroup(t, s, i) // queued in this order, all but the first in one batch
	}
	before := s.commits.Load()
	release()
	wg.Wait()
	for i, b := range binds {
		if b.refused != errors.Is(errs[i], lease.ErrNoLease) || !b.refused && errs[i] != nil {
			t.Errorf("bind of MAC %d to %s: %v, refused %v", b.mac, testIP(b.ip), errs[i], b.refused)
		}
	}
	if got := s.commits.Load() - before; got != 2 {
		t.Errorf("%d commits, want 2", got)
	}
	for ip, mac := range map[int]int{1: 1, 3: 3, 4: 4, 6: 6, 9: 9} {
		l, err := s.ByIP(ctx, testIP(ip))
		if err != nil || l.MAC.String() != testMAC(mac).String() || l.State != lease.Bound {
			t.Errorf("lease on %s: %+v, %v; want MAC %s", testIP(ip), l, err, testMAC(mac))
		}
	}
	if _, err := s.ByMAC(ctx, testSubnet, testMAC(5)); !errors.Is(err, lease.ErrNoLease) {
		t.Errorf("MAC 5, refused, has a lease: %v", err)
	}
}

// TestHeartbeatsShareCommits checks that concurrent heartbeats (TouchNode)
// share group commits and, alone in a batch, wait for no fsync, while a
// bind in their batch still gets its fsync; and a touch of a node that
// is not there fails alone.
func TestHeartbeatsShareCommits(t *testing.T) {
	ctx := context.Background()
	s, err := OpenSQLite(ctx, filepath.Join(t.TempDir(), "rackboot.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const n = 32
	ids := make([]string, n)
	for i := range n {
		node, _, err := s.EnrollClient(ctx, boot.Client{MAC: testMAC(i), Arch: boot.ClientX64UEFI}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = node.ID
	}
	ids[n-1] = "no-such-node"
	heard := time.Date(2026, 12, 3, 8, 0, 0, 0, time.UTC)
	before, syncs := s.commits.Load(), s.syncs.Load()
	release := holdWriteLock(t, s)
	errs := make([]error, n)
	var wg sync.WaitGroup
	touch := func(i int) {
		defer wg.Done()
		errs[i] = s.TouchNode(ctx, ids[i], heard)
	}
	wg.Add(n)
	go touch(0)
	waitGroup(t, s, 0)
	for i := 1; i < n; i++ {
		go touch(i)
	}
	waitGroup(t, s, n-1)
	release()
	wg.Wait()
	for i, err := range errs[:n-1] {
		if err != nil {
			t.Errorf("touch %d: %v", i, err)
		}
	}
	if !errors.Is(errs[n-1], store.ErrNotFound) {
		t.Errorf("touch of a node that is not there: %v, want ErrNotFound", errs[n-1])
	}
	if got := s.commits.Load() - before; got != 2 {
		t.Errorf("%d heartbeats took %d commits, want 2", n, got)
	}
	if got := s.syncs.Load() - syncs; got != 0 {
		t.Errorf("%d heartbeats took %d fsyncs, want none", n, got)
	}
	for _, id := range ids[:n-1] {
		if node, err := s.Node(ctx, id); err != nil || !node.LastSeen.Equal(heard) {
			t.Fatalf("node %s last seen %v, %v", id, node.LastSeen, err)
		}
	}
	// A bind and a heartbeat in one batch: the bind's fsync is made.
	syncs = s.syncs.Load()
	release = holdWriteLock(t, s)
	wg.Add(3)
	go touch(0)
	waitGroup(t, s, 0)
	var bindErr error
	go func() {
		defer wg.Done()
		_, bindErr = s.Bind(ctx, testSubnet, testMAC(99), testIP(99), "", time.Now().Add(time.Hour))
	}()
	go touch(1)
	waitGroup(t, s, 2)
	release()
	wg.Wait()
	if bindErr != nil || errs[0] != nil || errs[1] != nil {
		t.Fatalf("bind %v, touches %v %v", bindErr, errs[0], errs[1])
	}
	if s.syncs.Load() == syncs {
		t.Error("a bind batched with heartbeats returned without an fsync")
	}
}
