package dnsmasq

import (
	"context"
	"path/filepath"
	"time"
)

// change is what an inotify event asks to read again.
type change struct {
	hosts bool
	dir   int
	name  string // "" for the whole directory
	all   bool   // the event queue overflowed: everything
}

// Watch keeps the view current until ctx ends, then returns nil: it reads
// a file again when inotify reports it changed, every directory every
// Rescan, and a half-written file once it has had time to settle. It
// returns an error only when it cannot watch at all.
func (d *Dir) Watch(ctx context.Context) error {
	w, err := newWatcher(d)
	if err != nil {
		return err
	}
	defer w.close()
	// A missing directory is reported when it goes missing, not on every
	// rescan until a conductor creates it.
	var lastErr string
	report := func(err error) {
		s := ""
		if err != nil {
			s = err.Error()
		}
		if s != lastErr && err != nil {
			d.logger().Warn("ironic dnsmasq directories", "err", err)
		}
		lastErr = s
	}
	w.add()
	retry, err := d.scan(time.Now())
	report(err)
	rescan := d.Rescan
	if rescan == 0 {
		rescan = 30 * time.Second
	}
	var tick <-chan time.Time
	if rescan > 0 {
		t := time.NewTicker(rescan)
		defer t.Stop()
		tick = t.C
	}
	// Events come in bursts (truncate, write, close); one read after a
	// short pause sees the file whole more often than one per event.
	const debounce = 20 * time.Millisecond
	pending := map[change]bool{}
	var quiet <-chan time.Time
	settle := time.NewTimer(time.Hour)
	settle.Stop()
	defer settle.Stop()
	var armed time.Time
	arm := func(at time.Time) {
		if !at.IsZero() && (armed.IsZero() || at.Before(armed)) {
			settle.Reset(time.Until(at))
			armed = at
		}
	}
	arm(retry)
	for {
		select {
		case <-ctx.Done():
			return nil
		case c := <-w.events:
			pending[c] = true
			if quiet == nil {
				quiet = time.After(debounce)
			}
		case <-quiet:
			quiet = nil
			arm(d.apply(pending))
			clear(pending)
		case <-tick:
			w.add()
			r, err := d.scan(time.Now())
			report(err)
			arm(r)
		case <-settle.C:
			armed = time.Time{}
			arm(d.recheck())
		}
	}
}

// apply reads what the events named, and returns when to look again.
func (d *Dir) apply(cs map[change]bool) time.Time {
	now := time.Now()
	for c := range cs {
		if c.all || c.name == "" {
			r, err := d.scan(now)
			if err != nil {
				d.logger().Warn("ironic dnsmasq directories", "err", err)
			}
			return r
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	changed := false
	var retry time.Time
	for c := range cs {
		if skipName(c.name) {
			continue
		}
		ch, r := d.readFile(c.hosts, c.dir, filepath.Join(d.dir(c.hosts, c.dir), c.name), now)
		changed = changed || ch
		retry = earliest(retry, r)
	}
	if changed {
		d.publish()
	}
	return retry
}

// recheck reads again the files that looked half-written.
func (d *Dir) recheck() time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := time.Now()
	changed := false
	var retry time.Time
	for k, f := range d.files {
		if !f.half {
			continue
		}
		ch, r := d.readFile(k.hosts, f.dir, k.path, now)
		changed = changed || ch
		retry = earliest(retry, r)
	}
	if changed {
		d.publish()
	}
	return retry
}
