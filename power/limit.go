package power

import (
	"context"
	"sync"
	"time"
)

// Limiter staggers power-ons, so a hall powered on after a site power cut
// does not overload its PDUs (and rackboot, which then boots every node):
// at most MaxConcurrent power-ons run at once, and they start at most Rate
// per second. Every path that powers a node on (on, cycle, reset) goes
// through one Limiter per server: the API's power actions, bulk actions,
// and the lifecycle (through Do). Off and soft-off are never held back.
//
// A Limiter is safe for concurrent use; the zero value uses the defaults.
type Limiter struct {
	// MaxConcurrent bounds the power-ons in progress (default 10).
	MaxConcurrent int
	// Rate is how many power-ons may start per second (default 2); the
	// starts are spaced 1/Rate apart, without bursts.
	Rate float64

	once sync.Once
	sem  chan struct{}
	mu   sync.Mutex
	next time.Time // the earliest start of the next power-on
	// now and sleepUntil are the clock (tests replace them).
	now        func() time.Time
	sleepUntil func(ctx context.Context, t time.Time) error
	// started, when set, is told each power-on's start (tests).
	started func(time.Time)
}

// Defaults of a Limiter.
const (
	DefaultMaxConcurrentOn = 10
	DefaultOnRate          = 2.0
)

// Limited says whether an action powers a node on and so goes through a
// Limiter.
func Limited(a Action) bool { return a == ActionOn || a == ActionCycle || a == ActionReset }

func (l *Limiter) init() {
	l.once.Do(func() {
		n := l.MaxConcurrent
		if n <= 0 {
			n = DefaultMaxConcurrentOn
		}
		l.sem = make(chan struct{}, n)
		if l.now == nil {
			l.now = time.Now
		}
		if l.sleepUntil == nil {
			l.sleepUntil = func(ctx context.Context, t time.Time) error { return Sleep(ctx, time.Until(t)) }
		}
	})
}

// Sleep waits d or until ctx ends, and says which (nil: d passed).
func Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Do runs f, a power-on, when the limits allow it: it waits for a free
// slot, then for its turn at Rate, then runs f and frees the slot. A
// context that ends while waiting returns its error without running f.
// A nil Limiter runs f at once.
func (l *Limiter) Do(ctx context.Context, f func(ctx context.Context) error) error {
	if l == nil {
		return f(ctx)
	}
	l.init()
	select {
	case l.sem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-l.sem }()
	rate := l.Rate
	if rate <= 0 {
		rate = DefaultOnRate
	}
	gap := time.Duration(float64(time.Second) / rate)
	l.mu.Lock()
	now := l.now()
	start := l.next
	if start.Before(now) {
		start = now
	}
	l.next = start.Add(gap)
	l.mu.Unlock()
	if err := l.sleepUntil(ctx, start); err != nil {
		return err
	}
	if l.started != nil {
		l.started(start)
	}
	return f(ctx)
}

// Run runs action a on d, through the limiter when a powers the node on.
// A nil Limiter runs every action at once.
func (l *Limiter) Run(ctx context.Context, d Driver, a Action) error {
	if l == nil || !Limited(a) {
		return Do(ctx, d, a)
	}
	return l.Do(ctx, func(ctx context.Context) error { return Do(ctx, d, a) })
}
