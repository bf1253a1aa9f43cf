package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"slices"
	"sync"
)

// maxBatch bounds how many writes one group commit carries, so that the
// write lock is never held for long and a batch's last caller does not
// wait behind thousands of others.
const maxBatch = 256

// group collects durable writes that arrive while another batch is being
// committed and commits them together: one transaction, one fsync, for
// as many DHCP ACKs as came in meanwhile. SQLite has one writer and an
// fsync per commit, so without it the ACK rate is the disk's fsync rate.
//
// There is no committer goroutine: the first caller to find no batch
// running commits, and when it is done hands the turn to the oldest
// waiting caller, which commits everything queued by then. So a Store
// needs no Close to stop it, and an idle Store runs nothing.
//
// The commit's fsync is not SQLite's: the batch commits without one, the
// write lock is let go, and then the log is synced by syncLog, so the
// next batch and the offers (which need no fsync) are written while the
// disk works, and each caller still returns only after an fsync that
// began after its commit.
//
// On PostgreSQL, which has many writers and syncs its own log at each
// commit, the binds of one subnet are grouped (subnetGroup): a batch
// takes the subnet's lock once and commits once, where each bind alone
// would hold the lock through a commit's wait for the disk, so that a
// subnet's binds went no faster than the disk's flushes.
type group struct {
	mu      sync.Mutex
	pending []*groupItem
	running bool
	// lock, when locked, is the advisory lock a batch takes (a subnet's
	// on PostgreSQL); its commit then waits for the disk itself.
	lock   int32
	locked bool
}

type groupItem struct {
	ctx context.Context
	f   func(context.Context, runner) error
	err error
	// lax: the write need not be on disk when its caller returns (a
	// heartbeat's last_seen); a batch of only such writes is not synced.
	lax  bool
	done chan struct{} // closed when the item's batch committed or failed
	turn chan struct{} // receives when this caller is to commit the next batch
}

// groupTx runs f inside a transaction shared with the writes of other
// callers and returns once that transaction committed durably (or f
// failed). f runs on a context that is never cancelled (see
// commitBatch); a caller whose ctx ended before its turn is not run. f
// runs under a savepoint: its error undoes its own writes
// only, and the rest of the batch commits. f must not keep state across
// calls that a failing neighbour could undo: the batch is committed as
// a whole or not at all, in which case every item sees the error.
func (s *Store) groupTx(ctx context.Context, f func(context.Context, runner) error) error {
	return s.group1(ctx, &s.group, false, f)
}

// subnetGroup is the group of the binds of subnet on PostgreSQL.
func (s *Store) subnetGroup(subnet netip.Prefix) *group {
	s.groupsMu.Lock()
	defer s.groupsMu.Unlock()
	g := s.groups[subnet]
	if g == nil {
		if s.groups == nil {
			s.groups = map[netip.Prefix]*group{}
		}
		g = &group{lock: lockKey("lease " + subnet.String()), locked: true}
		s.groups[subnet] = g
	}
	return g
}

// laxGroupTx is groupTx for a write that may be lost in a power cut
// without harm: it shares the batch, and so the write lock's turn, with
// the durable writes, but returns without waiting for the disk.
func (s *Store) laxGroupTx(ctx context.Context, f func(context.Context, runner) error) error {
	return s.group1(ctx, &s.group, true, f)
}

func (s *Store) group1(ctx context.Context, g *group, lax bool, f func(context.Context, runner) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	it := &groupItem{ctx: ctx, f: f, lax: lax, done: make(chan struct{}), turn: make(chan struct{}, 1)}
	g.mu.Lock()
	g.pending = append(g.pending, it)
	lead := !g.running
	g.running = true
	g.mu.Unlock()
	if !lead {
		// Wait for the item's batch even when ctx ends: the write may
		// be committed already, and the caller must not be told it was
		// not. A batch is short: the wait ends with it.
		select {
		case <-it.done:
			return it.err
		case <-it.turn:
		}
	}
	s.commitBatch(ctx, g)
	<-it.done // the batch just committed holds it: it was the oldest pending
	return it.err
}

// commitBatch commits what is pending (up to maxBatch items) and passes
// the turn to the oldest caller still waiting, if any.
func (s *Store) commitBatch(ctx context.Context, g *group) {
	g.mu.Lock()
	n := min(len(g.pending), maxBatch)
	batch := g.pending[:n:n]
	g.pending = g.pending[n:]
	g.mu.Unlock()

	// The statements of the batch run on a context of no caller's: a
	// cancelled context interrupts SQLite mid-statement, which rolls the
	// whole transaction back, everyone's writes with it.
	bctx := context.WithoutCancel(ctx)
	run := func(tx runner) error {
		for i, it := range batch {
			if it.err = it.ctx.Err(); it.err != nil {
				continue // never run: its caller has gone
			}
			sp := fmt.Sprintf("item%d", i)
			if _, err := tx.exec(bctx, "SAVEPOINT "+sp); err != nil {
				return err
			}
			if it.err = it.f(context.WithoutCancel(it.ctx), tx); it.err != nil {
				if _, err := tx.exec(bctx, "ROLLBACK TO "+sp); err != nil {
					return err
				}
			}
			if _, err := tx.exec(bctx, "RELEASE "+sp); err != nil {
				return err
			}
		}
		return nil
	}
	var err error
	if g.locked {
		// PostgreSQL: the commit waits for the disk. The binds are
		// idempotent, so a batch whose connection was lost runs again.
		err = s.retry(bctx, func() error { return s.tx1(bctx, s.d.begin+"; "+s.d.lock(g.lock), "", true, run) })
	} else {
		// The commit itself does not wait for the disk (laxBegin): that
		// would hold the write lock through the fsync, and every offer
		// with it. The log is synced below, after the lock is let go and
		// before any caller hears back.
		err = s.tx1(bctx, s.d.laxBegin, s.d.laxEnd, false, run)
	}

	// The next batch may run while this one's log reaches the disk.
	g.mu.Lock()
	if len(g.pending) > 0 {
		g.pending[0].turn <- struct{}{}
	} else {
		g.running = false
	}
	g.mu.Unlock()

	if err == nil && !g.locked && slices.ContainsFunc(batch, func(it *groupItem) bool { return !it.lax }) {
		err = s.syncLog()
	}
	for _, it := range batch {
		if err != nil {
			it.err = err
		}
		close(it.done)
	}
}

// syncLog makes every commit so far durable: an fsync of SQLite's
// write-ahead log, which holds them until a checkpoint copies them into
// the database file (and syncs the log first, and the file after, at
// synchronous NORMAL). The log is opened anew each time: SQLite deletes
// it when its last connection closes (after a checkpoint) and makes a
// new one, and a file kept open would be the deleted one.
func (s *Store) syncLog() error {
	f, err := os.Open(s.wal)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // checkpointed into the database file, and synced
	}
	if err != nil {
		return fmt.Errorf("sync database log: %w", err)
	}
	defer f.Close()
	s.syncs.Add(1)
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync database log: %w", err)
	}
	return nil
}
