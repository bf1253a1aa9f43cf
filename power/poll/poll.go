// Package poll asks every power-managed node's BMC for its power state at
// an interval, with bounded concurrency, and records what it hears: the
// last state and time per node, and an event on every change.
//
// Thousands of BMCs are never asked at once: each round lists the BMCs
// and spreads their polls evenly over the interval (node i of n at
// i*interval/n), at most Concurrency at a time. A BMC that does not answer
// is recorded as state "unknown" with the error, and backed off: it skips
// rounds, doubling, up to MaxBackoff. Each poll is bounded by Timeout, so
// a silent BMC holds a worker no longer than that.
package poll

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/rackboot/rackboot/power"
	"github.com/rackboot/rackboot/store"
)

// Store is what the poller reads and writes.
type Store interface {
	// BMCs lists the power-managed nodes.
	BMCs(ctx context.Context) ([]store.BMC, error)
	// RecordPower stores a state, appending the event when it changed.
	RecordPower(ctx context.Context, p store.PowerState, e store.Event) (bool, error)
}

// Defaults of a Poller.
const (
	DefaultInterval    = 5 * time.Minute
	DefaultConcurrency = 32
	DefaultTimeout     = 10 * time.Second
)

// Poller polls BMCs. Fields are read by Run; zero means the default.
type Poller struct {
	Store Store
	// Dial opens the driver of a BMC (the appliance opens its sealed
	// password; a driver of one attempt keeps a silent BMC short).
	Dial func(b store.BMC) (power.Driver, error)
	// Interval is how often each node is polled (default 5m).
	Interval time.Duration
	// Concurrency bounds the polls in flight (default 32).
	Concurrency int
	// Timeout bounds one poll, dial and state (default 10s).
	Timeout time.Duration
	// MaxBackoff bounds how long a BMC that does not answer goes
	// unpolled (default 8 intervals).
	MaxBackoff time.Duration
	// Changed, when set, is told each recorded change (to wake the API's
	// event streams).
	Changed func(store.PowerState)
	Logger  *slog.Logger

	// now and sleep are the clock; round is told each round's polls
	// (tests).
	now   func() time.Time
	sleep func(ctx context.Context, d time.Duration) error
	round func(polled int)

	mu     sync.Mutex
	states map[string]string // node → last state polled
	fails  map[string]backoff
}

type backoff struct {
	failures int
	next     time.Time
}

// Event kinds and actor of what the poller records.
const (
	EventKind  = "power"
	EventActor = "system"
)

func (p *Poller) log() *slog.Logger {
	if p.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return p.Logger
}

// Counts returns how many power-managed nodes the last polls found in
// each state ("on", "off", "unknown"), for the metrics.
func (p *Poller) Counts() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := map[string]int{string(power.StateOn): 0, string(power.StateOff): 0, store.PowerUnknown: 0}
	for _, s := range p.states {
		c[s]++
	}
	return c
}

// Run polls until ctx ends, and returns nil then. A store that fails to
// list the BMCs is logged and tried again, backing off; it never ends Run.
func (p *Poller) Run(ctx context.Context) error {
	interval := p.Interval
	if interval <= 0 {
		interval = DefaultInterval
	}
	if p.now == nil {
		p.now = time.Now
	}
	if p.sleep == nil {
		p.sleep = power.Sleep
	}
	var storeWait time.Duration
	for ctx.Err() == nil {
		start := p.now()
		bmcs, err := p.Store.BMCs(ctx)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			storeWait = min(max(2*storeWait, interval/16), interval)
			p.log().Warn("power poll: store error, trying again", "err", err, "retry_in", storeWait)
			p.sleep(ctx, storeWait)
			continue
		}
		storeWait = 0
		n := p.pollRound(ctx, start, interval, bmcs)
		if p.round != nil {
			p.round(n)
		}
		p.sleep(ctx, start.Add(interval).Sub(p.now()))
	}
	return nil
}

// pollRound polls bmcs once, spread over interval from start, and waits
// for the polls; it returns how many it started.
func (p *Poller) pollRound(ctx context.Context, start time.Time, interval time.Duration, bmcs []store.BMC) int {
	conc := p.Concurrency
	if conc <= 0 {
		conc = DefaultConcurrency
	}
	// Forget the nodes whose BMC is gone.
	p.mu.Lock()
	p.init()
	listed := make(map[string]bool, len(bmcs))
	for _, b := range bmcs {
		listed[b.NodeID] = true
	}
	for id := range p.states {
		if !listed[id] {
			delete(p.states, id)
			delete(p.fails, id)
		}
	}
	p.mu.Unlock()

	sem := make(chan struct{}, conc)
	var wg sync.WaitGroup
	started := 0
	for i, b := range bmcs {
		slot := start.Add(time.Duration(int64(interval) * int64(i) / int64(len(bmcs))))
		// Short waits are taken together: a timer per 200µs slot would
		// cost more than it spreads.
		if d := slot.Sub(p.now()); d > time.Millisecond {
			if p.sleep(ctx, d) != nil {
				break
			}
		}
		p.mu.Lock()
		f := p.fails[b.NodeID]
		p.mu.Unlock()
		if f.failures > 0 && p.now().Before(f.next) {
			continue
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		started++
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			p.poll(ctx, b, interval)
		}()
	}
	wg.Wait()
	return started
}

// poll asks one BMC and records the answer.
func (p *Poller) poll(ctx context.Context, b store.BMC, interval time.Duration) {
	timeout := p.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	pctx, cancel := context.WithTimeout(ctx, timeout)
	st, err := p.state(pctx, b)
	cancel()
	if ctx.Err() != nil {
		return // the server is stopping: that says nothing of the BMC
	}
	ps := store.PowerState{NodeID: b.NodeID, State: string(st), Checked: p.now().UTC()}
	if err != nil {
		ps.State, ps.Error = store.PowerUnknown, err.Error()
	}
	p.mu.Lock()
	if err != nil {
		f := p.fails[b.NodeID]
		f.failures++
		maxWait := p.MaxBackoff
		if maxWait <= 0 {
			maxWait = 8 * interval
		}
		// After k failures in a row the next poll is due 2^(k-1)
		// intervals later (the next round, then one round skipped,
		// then three...), at most maxWait.
		wait := interval
		for i := 1; i < f.failures && wait < maxWait; i++ {
			wait *= 2
		}
		f.next = ps.Checked.Add(min(wait, maxWait) - interval/2)
		p.fails[b.NodeID] = f
	} else {
		delete(p.fails, b.NodeID)
	}
	p.mu.Unlock()
	if err := p.Record(ctx, ps); err != nil {
		p.log().Warn("power poll: store error", "node", b.NodeID, "err", err)
	}
}

// Record stores a power state just asked of a node's BMC (by the poller,
// or by the API's power status), with an event when it changed.
func (p *Poller) Record(ctx context.Context, ps store.PowerState) error {
	msg := ps.State
	if ps.Error != "" {
		msg += ": " + ps.Error
	}
	changed, err := p.Store.RecordPower(ctx, ps, store.Event{Actor: EventActor, Kind: EventKind, Reason: "power state", Message: msg})
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.init()
	p.states[ps.NodeID] = ps.State
	p.mu.Unlock()
	if changed {
		p.log().Info("power state changed", "node", ps.NodeID, "state", ps.State, "err", ps.Error)
		if p.Changed != nil {
			p.Changed(ps)
		}
	}
	return nil
}

// init makes the maps; p.mu is held.
func (p *Poller) init() {
	if p.states == nil {
		p.states, p.fails = map[string]string{}, map[string]backoff{}
	}
}

func (p *Poller) state(ctx context.Context, b store.BMC) (power.State, error) {
	d, err := p.Dial(b)
	if err != nil {
		return "", err
	}
	type answer struct {
		st  power.State
		err error
	}
	// A driver that ignores its context still frees the worker at the
	// timeout; its goroutine ends when the driver does.
	ch := make(chan answer, 1)
	go func() {
		st, err := d.State(ctx)
		d.Close()
		ch <- answer{st, err}
	}()
	select {
	case a := <-ch:
		return a.st, a.err
	case <-ctx.Done():
		return "", &power.BMCError{BMC: b.URL, Op: "power state", Err: power.ErrNoAnswer}
	}
}
