package poll

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rackboot/rackboot/power"
	"github.com/rackboot/rackboot/store"
)

// fakeStore keeps power states in memory, as the real stores do: an event
// only on a change.
type fakeStore struct {
	mu     sync.Mutex
	bmcs   []store.BMC
	states map[string]store.PowerState
	events []store.Event
	fail   int // BMCs fails this many more times
}

func newStore(n int) *fakeStore {
	s := &fakeStore{states: map[string]store.PowerState{}}
	for i := range n {
		s.bmcs = append(s.bmcs, store.BMC{NodeID: fmt.Sprintf("n%05d", i), URL: "ipmi://10.0.0.1:" + strconv.Itoa(1000+i)})
	}
	return s
}

func (s *fakeStore) BMCs(context.Context) ([]store.BMC, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail > 0 {
		s.fail--
		return nil, errors.New("database is locked")
	}
	return s.bmcs, nil
}

func (s *fakeStore) RecordPower(_ context.Context, p store.PowerState, e store.Event) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, ok := s.states[p.NodeID]
	changed := !ok || old.State != p.State
	if changed {
		p.Changed = p.Checked
		e.NodeID = p.NodeID
		s.events = append(s.events, e)
	} else {
		p.Changed = old.Changed
	}
	s.states[p.NodeID] = p
	return changed, nil
}

// fakeBMCs are in-process BMCs: each answers its state after delay, or
// never (until its context ends) when silent.
type fakeBMCs struct {
	delay    time.Duration
	silent   map[string]bool
	inFlight atomic.Int64
	most     atomic.Int64
	mu       sync.Mutex
	polls    map[string]int
	dialedAt map[string][]time.Time
	now      func() time.Time
}

func newBMCs(delay time.Duration) *fakeBMCs {
	return &fakeBMCs{delay: delay, silent: map[string]bool{}, polls: map[string]int{}, dialedAt: map[string][]time.Time{}, now: time.Now}
}

func (f *fakeBMCs) dial(b store.BMC) (power.Driver, error) {
	f.mu.Lock()
	f.dialedAt[b.NodeID] = append(f.dialedAt[b.NodeID], f.now())
	// Counted here, in the poll's goroutine: a driver's State may run on
	// after the poll gave up on it.
	f.polls[b.NodeID]++
	f.mu.Unlock()
	return &fakeDriver{f: f, b: b}, nil
}

type fakeDriver struct {
	f *fakeBMCs
	b store.BMC
}

func (d *fakeDriver) State(ctx context.Context) (power.State, error) {
	f := d.f
	v := f.inFlight.Add(1)
	defer f.inFlight.Add(-1)
	for m := f.most.Load(); v > m && !f.most.CompareAndSwap(m, v); m = f.most.Load() {
	}
	silent := f.silent[d.b.NodeID] // written before Run

	if silent {
		<-ctx.Done()
		return "", &power.BMCError{BMC: d.b.URL, Op: "power state", Err: power.ErrNoAnswer}
	}
	if f.delay > 0 {
		time.Sleep(f.delay)
	}
	return power.StateOn, nil
}
func (d *fakeDriver) On(context.Context) error                        { return nil }
func (d *fakeDriver) Off(context.Context) error                       { return nil }
func (d *fakeDriver) SoftOff(context.Context) error                   { return nil }
func (d *fakeDriver) Cycle(context.Context) error                     { return nil }
func (d *fakeDriver) Reset(context.Context) error                     { return nil }
func (d *fakeDriver) SetBootDevice(context.Context, power.Boot) error { return nil }
func (d *fakeDriver) Close() error                                    { return nil }

// fakeClock's sleeps advance it at once; it never goes back.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) sleep(ctx context.Context, d time.Duration) error {
	c.mu.Lock()
	if d > 0 {
		c.t = c.t.Add(d)
	}
	c.mu.Unlock()
	return ctx.Err()
}

// runRounds runs p until it has finished rounds rounds, and returns the
// polls each round started.
func runRounds(t *testing.T, p *Poller, rounds int) []int {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var got []int
	p.round = func(n int) {
		got = append(got, n)
		if len(got) == rounds {
			cancel()
		}
	}
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Minute):
		t.Fatalf("%d rounds not done after 5 minutes; done: %v", rounds, got)
	}
	return got
}

// testScale polls n simulated BMCs for rounds rounds at a 2s interval on
// the real clock: every node is polled once a round, and never more than
// the concurrency limit at once. Durations are not asserted: a loaded
// machine only makes rounds late.
func testScale(t *testing.T, n, rounds, conc int) {
	st, bmcs := newStore(n), newBMCs(2*time.Millisecond)
	p := &Poller{Store: st, Dial: bmcs.dial, Interval: 2 * time.Second, Concurrency: conc}
	got := runRounds(t, p, rounds)
	for i, c := range got {
		if c != n {
			t.Errorf("round %d polled %d nodes, want %d", i, c, n)
		}
	}
	if m := bmcs.most.Load(); m > int64(conc) || m < 2 {
		t.Errorf("%d polls in flight at most, want between 2 and %d", m, conc)
	}
	for _, b := range st.bmcs {
		if c := bmcs.polls[b.NodeID]; c != rounds {
			t.Fatalf("node %s polled %d times in %d rounds", b.NodeID, c, rounds)
		}
	}
	// One event per node: the state never changed after the first poll.
	if len(st.events) != n {
		t.Errorf("%d events, want %d", len(st.events), n)
	}
	if c := p.Counts(); c["on"] != n || c["unknown"] != 0 {
		t.Errorf("counts %v", c)
	}
	t.Logf("%d BMCs, %d rounds, at most %d polls in flight (limit %d)", n, rounds, bmcs.most.Load(), conc)
}

func TestPoll10000(t *testing.T) {
	testScale(t, 10000, 2, 32)
}

// TestPollSoak is the long variant, for make soak: RACKBOOT_SOAK=1.
func TestPollSoak(t *testing.T) {
	if os.Getenv("RACKBOOT_SOAK") == "" {
		t.Skip("set RACKBOOT_SOAK=1 (make soak)")
	}
	testScale(t, 10000, 30, 32)
}

func TestPollConcurrencyLimit(t *testing.T) {
	// Every slot is due at once (a tiny interval), and each poll takes a
	// while: the dispatcher must wait for free workers.
	st, bmcs := newStore(500), newBMCs(5*time.Millisecond)
	p := &Poller{Store: st, Dial: bmcs.dial, Interval: time.Millisecond, Concurrency: 8}
	got := runRounds(t, p, 2)
	if got[0] != 500 || got[1] != 500 {
		t.Errorf("rounds polled %v", got)
	}
	if m := bmcs.most.Load(); m > 8 || m < 2 {
		t.Errorf("%d in flight at most, want between 2 and 8", m)
	}
}

func TestPollSpread(t *testing.T) {
	const n = 100
	clock := &fakeClock{t: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)}
	st, bmcs := newStore(n), newBMCs(0)
	bmcs.now = clock.now
	p := &Poller{Store: st, Dial: bmcs.dial, Interval: 100 * time.Second, now: clock.now, sleep: clock.sleep}
	start := clock.now()
	runRounds(t, p, 3)
	for i, b := range st.bmcs {
		at := bmcs.dialedAt[b.NodeID]
		if len(at) != 3 {
			t.Fatalf("node %s polled at %v, want 3 times", b.NodeID, at)
		}
		for r, a := range at {
			round := start.Add(time.Duration(r) * 100 * time.Second)
			slot := round.Add(time.Duration(i) * time.Second)
			if a.Before(slot) || !a.Before(round.Add(100*time.Second)) {
				t.Fatalf("node %d polled at +%v in round %d, want from its slot +%v and within the round", i, a.Sub(start), r, slot.Sub(start))
			}
		}
	}
}

func TestPollUnknownAndBackoff(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)}
	st, bmcs := newStore(4), newBMCs(0)
	bmcs.now = clock.now
	silent := st.bmcs[1].NodeID
	bmcs.silent[silent] = true
	st.fail = 2 // the store fails the first two listings
	var changes atomic.Int64
	p := &Poller{Store: st, Dial: bmcs.dial, Interval: time.Minute, Timeout: 20 * time.Millisecond,
		now: clock.now, sleep: clock.sleep, Changed: func(store.PowerState) { changes.Add(1) }}
	const rounds = 16
	runRounds(t, p, rounds)
	if c := bmcs.polls[st.bmcs[0].NodeID]; c != rounds {
		t.Errorf("a good BMC polled %d times in %d rounds", c, rounds)
	}
	// Failures 1, 2, 3, 4, 5 come at rounds 1, 2, 4, 8, 16 (waits of
	// 1, 2, 4, 8 intervals; the cap is 8).
	if c := bmcs.polls[silent]; c != 5 {
		t.Errorf("a silent BMC polled %d times in %d rounds, want 5 (backed off)", c, rounds)
	}
	ps := st.states[silent]
	if ps.State != store.PowerUnknown || ps.Error == "" {
		t.Errorf("silent BMC's state: %+v", ps)
	}
	if st.states[st.bmcs[0].NodeID].State != "on" {
		t.Errorf("good BMC's state: %+v", st.states[st.bmcs[0].NodeID])
	}
	// One event per node, each its first state: no event per poll.
	if len(st.events) != 4 || changes.Load() != 4 {
		t.Errorf("%d events, %d changes, want 4", len(st.events), changes.Load())
	}
	if c := p.Counts(); c["on"] != 3 || c["unknown"] != 1 {
		t.Errorf("counts %v", c)
	}
}
