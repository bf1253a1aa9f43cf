package power

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeClock is a clock whose sleeps advance it at once, to their wake
// time (never back).
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

func (c *fakeClock) sleepUntil(ctx context.Context, t time.Time) error {
	c.mu.Lock()
	if t.After(c.t) {
		c.t = t
	}
	c.mu.Unlock()
	return ctx.Err()
}

func TestLimiterConcurrencyAndRate(t *testing.T) {
	const n, maxOn, rate = 200, 7, 4.0
	clock := &fakeClock{t: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)}
	var mu sync.Mutex
	var starts []time.Time
	l := &Limiter{MaxConcurrent: maxOn, Rate: rate, now: clock.now, sleepUntil: clock.sleepUntil,
		started: func(t time.Time) { mu.Lock(); starts = append(starts, t); mu.Unlock() }}
	var inFlight, most atomic.Int64
	var wg sync.WaitGroup
	release := make(chan struct{})
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := l.Do(context.Background(), func(context.Context) error {
				v := inFlight.Add(1)
				for {
					m := most.Load()
					if v <= m || most.CompareAndSwap(m, v) {
						break
					}
				}
				<-release
				inFlight.Add(-1)
				return nil
			})
			if err != nil {
				t.Error(err)
			}
		}()
	}
	// Let the first ones in, then let every one finish.
	go func() {
		for inFlight.Load() < maxOn {
			time.Sleep(time.Millisecond)
		}
		close(release)
	}()
	wg.Wait()
	if got := most.Load(); got > maxOn || got < 2 {
		t.Errorf("at most %d power-ons at once, want between 2 and %d", got, maxOn)
	}
	if len(starts) != n {
		t.Fatalf("%d power-ons ran, want %d", len(starts), n)
	}
	// Each power-on was given its own start, 1/rate after the one before:
	// n starts at rate r span (n-1)/r.
	gap := time.Duration(float64(time.Second) / rate)
	seen := map[time.Time]bool{}
	first, last := starts[0], starts[0]
	for _, s := range starts {
		if seen[s] {
			t.Fatalf("two power-ons given the start %v", s)
		}
		seen[s] = true
		if s.Before(first) {
			first = s
		}
		if s.After(last) {
			last = s
		}
	}
	if span := last.Sub(first); span != time.Duration(n-1)*gap {
		t.Errorf("starts span %v, want %v (%d at %v/s)", span, time.Duration(n-1)*gap, n, rate)
	}
}

func TestLimiterRealClock(t *testing.T) {
	// With the real clock the rate is a lower bound on the time taken,
	// which a loaded machine can only make longer.
	l := &Limiter{MaxConcurrent: 3, Rate: 50}
	var inFlight, most atomic.Int64
	var wg sync.WaitGroup
	begin := time.Now()
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.Do(context.Background(), func(context.Context) error {
				v := inFlight.Add(1)
				for m := most.Load(); v > m && !most.CompareAndSwap(m, v); m = most.Load() {
				}
				time.Sleep(5 * time.Millisecond)
				inFlight.Add(-1)
				return nil
			})
		}()
	}
	wg.Wait()
	if most.Load() > 3 {
		t.Errorf("%d at once, want at most 3", most.Load())
	}
	if took, least := time.Since(begin), 19*time.Second/50; took < least {
		t.Errorf("20 power-ons at 50/s took %v, less than %v", took, least)
	}
}

func TestLimiterCancelAndPassThrough(t *testing.T) {
	l := &Limiter{MaxConcurrent: 1, Rate: 1000}
	hold, in := make(chan struct{}), make(chan struct{})
	go l.Do(context.Background(), func(context.Context) error { close(in); <-hold; return nil })
	<-in
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	ran := false
	if err := l.Do(ctx, func(context.Context) error { ran = true; return nil }); err == nil || ran {
		t.Fatalf("a cancelled wait: err %v, ran %v", err, ran)
	}
	// Off is never held back, even with every slot taken.
	d := &countDriver{}
	if err := l.Run(context.Background(), d, ActionOff); err != nil || d.off != 1 {
		t.Fatalf("off through a full limiter: %v, %d", err, d.off)
	}
	close(hold)
}

type countDriver struct{ on, off int }

func (d *countDriver) State(context.Context) (State, error)      { return StateOn, nil }
func (d *countDriver) On(context.Context) error                  { d.on++; return nil }
func (d *countDriver) Off(context.Context) error                 { d.off++; return nil }
func (d *countDriver) SoftOff(context.Context) error             { return nil }
func (d *countDriver) Cycle(context.Context) error               { return nil }
func (d *countDriver) Reset(context.Context) error               { return nil }
func (d *countDriver) SetBootDevice(context.Context, Boot) error { return nil }
func (d *countDriver) Close() error                              { return nil }
