package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/power"
	"github.com/rackboot/rackboot/store"
)

// Power opens the driver of a node's BMC; nodepower.Opener implements it.
// An error wrapping store.ErrNotFound means the node has no BMC: it then
// waits for somebody to reboot it, as it does when Machine.Power is nil.
type Power interface {
	Open(ctx context.Context, n store.Node) (power.Driver, store.BMC, error)
}

// Defaults of the Machine's power fields.
const (
	DefaultPowerTimeout   = 5 * time.Minute
	DefaultSoftOffTimeout = 2 * time.Minute
	DefaultSoftOffPoll    = 5 * time.Second
)

// reapCycle is the reason of the event that records the reaper's one
// power cycle of a quiet node: a node with one after its last state
// change is failed at the next timeout instead of cycled again.
const reapCycle = "agent quiet: power cycle into a network boot"

// powerWork is the BMC work in flight, tied to RunPower's context.
type powerWork struct {
	mu     sync.Mutex
	ctx    context.Context // RunPower's; nil before it runs
	closed bool            // RunPower has ended: start nothing more
	wg     sync.WaitGroup
}

func (m *Machine) log() *slog.Logger {
	if m.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return m.Logger
}

func (m *Machine) powerTimeout() time.Duration {
	if m.PowerTimeout > 0 {
		return m.PowerTimeout
	}
	return DefaultPowerTimeout
}

// RunPower holds the lifetime of the machine's BMC work: work runs in
// goroutines whose contexts end with ctx (and each after PowerTimeout),
// and RunPower returns nil once ctx has ended and every piece of work
// started has returned. Work started before RunPower runs is bounded by
// its timeout alone; none starts after RunPower has returned.
func (m *Machine) RunPower(ctx context.Context) error {
	m.pw.mu.Lock()
	m.pw.ctx = ctx
	m.pw.mu.Unlock()
	<-ctx.Done()
	m.pw.mu.Lock()
	m.pw.closed = true
	m.pw.mu.Unlock()
	m.pw.wg.Wait()
	return nil
}

// WaitPower waits for the BMC work started so far to end (tests; a
// graceful stop uses RunPower).
func (m *Machine) WaitPower() { m.pw.wg.Wait() }

// goPower runs f in a goroutine with a bounded context: BMC work never
// runs inside a transaction or holds up the caller. It reports false,
// running nothing, once RunPower has returned.
func (m *Machine) goPower(f func(ctx context.Context)) bool {
	m.pw.mu.Lock()
	defer m.pw.mu.Unlock()
	if m.pw.closed {
		return false
	}
	base := m.pw.ctx
	if base == nil {
		base = context.Background()
	}
	m.pw.wg.Add(1)
	go func() {
		defer m.pw.wg.Done()
		ctx, cancel := context.WithTimeout(base, m.powerTimeout())
		defer cancel()
		f(ctx)
	}()
	return true
}

// powerEvent records a BMC call, done or failed, as the API records the
// ones people make: kind "power", the reason naming the call.
func (m *Machine) powerEvent(n store.Node, actor, reason string, err error) {
	msg := "done"
	if err != nil {
		msg = "failed: " + err.Error()
	}
	m.addEvent(store.Event{NodeID: n.ID, Time: m.now(), Actor: actor, Kind: "power", Reason: reason, Message: msg})
}

func (m *Machine) addEvent(e store.Event) {
	// Written even when the work's context has ended: the log says why
	// the work stopped.
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	e, err := m.Store.AddEvent(ctx, e)
	if err != nil {
		m.log().Error("power event", "node", e.NodeID, "reason", e.Reason, "err", err)
		return
	}
	m.notify(e)
}

// openPower opens n's driver. ok is false when there is none to use: the
// node has no BMC (nothing recorded: it waits for a reboot, as ever) or
// it cannot be opened (recorded as a failed power event).
func (m *Machine) openPower(ctx context.Context, n store.Node, actor, what string) (power.Driver, bool) {
	// The node as it is now, not as the caller read it: one handed to
	// Ironic since is Ironic's to power, and two systems driving one BMC
	// fight.
	if cur, err := m.Store.Node(ctx, n.ID); err != nil || cur.Owner == store.OwnerIronic {
		return nil, false
	}
	d, _, err := m.Power.Open(ctx, n)
	if errors.Is(err, store.ErrNotFound) {
		return nil, false
	}
	if err != nil {
		m.powerEvent(n, actor, what+": open the BMC", err)
		return nil, false
	}
	return d, true
}

// call runs one BMC call and records it; it reports whether it worked.
func (m *Machine) call(ctx context.Context, n store.Node, actor, reason string, f func(context.Context) error) bool {
	err := f(ctx)
	m.powerEvent(n, actor, reason, err)
	return err == nil
}

// pxeBoot is the next boot from the network, once, in the node's firmware
// mode (UEFI unless it last booted BIOS, as the API chooses).
func pxeBoot(n store.Node) power.Boot {
	return power.Boot{Device: power.DevicePXE, UEFI: n.Firmware != boot.FirmwareBIOS}
}

// netboot sets n's next boot to the network and then powers it on (off)
// or cycles it (on). It stops at the first call that fails: the action
// still stands and the node waits for a reboot.
func (m *Machine) netboot(ctx context.Context, d power.Driver, n store.Node, actor, what string, on bool) {
	b := pxeBoot(n)
	if !m.call(ctx, n, actor, what+": "+b.String(), func(ctx context.Context) error { return d.SetBootDevice(ctx, b) }) {
		return
	}
	if on {
		m.call(ctx, n, actor, what+": power cycle", m.limited(d.Cycle))
	} else {
		m.call(ctx, n, actor, what+": power on", m.limited(d.On))
	}
}

// limited runs a power-on through the Machine's PowerOn limiter, the one
// the API's power actions share, so a rack's actions do not power a
// hall on at once.
func (m *Machine) limited(f func(context.Context) error) func(context.Context) error {
	if m.PowerOn == nil {
		return f
	}
	return func(ctx context.Context) error { return m.PowerOn.Do(ctx, f) }
}

// Limiter staggers power-ons (power.Limiter).
type Limiter interface {
	Do(ctx context.Context, f func(context.Context) error) error
}

// afterAction starts the BMC work of action a, applied to n (as it was
// before, in state from): a node that is off is powered on into a
// network boot; one that is on and runs its own OS (not the agent) is
// cycled into one; one whose agent runs is left to it. Release shuts the
// OS down first (see release).
func (m *Machine) afterAction(n store.Node, a Action, actor string) {
	if m.Power == nil {
		return
	}
	m.goPower(func(ctx context.Context) {
		d, ok := m.openPower(ctx, n, actor, string(a))
		if !ok {
			return
		}
		defer d.Close()
		st, err := d.State(ctx)
		if err != nil {
			m.powerEvent(n, actor, string(a)+": power state", err)
			return
		}
		if a == Release && st == power.StateOn {
			if !m.shutdown(ctx, d, n, actor) {
				return
			}
			st = power.StateOff
		}
		if st == power.StateOn && RunsAgent(n.State) {
			return // the agent takes the task at its next call
		}
		m.netboot(ctx, d, n, actor, string(a), st == power.StateOn)
	})
}

// shutdown asks n's OS to shut down (soft off), waits SoftOffTimeout for
// the node to be off, reading its state every SoftOffPoll, and forces it
// off when it is still on (or the soft off failed). It reports whether
// the node is off.
func (m *Machine) shutdown(ctx context.Context, d power.Driver, n store.Node, actor string) bool {
	timeout, poll := m.SoftOffTimeout, m.SoftOffPoll
	if timeout <= 0 {
		timeout = DefaultSoftOffTimeout
	}
	if poll <= 0 {
		poll = DefaultSoftOffPoll
	}
	if m.call(ctx, n, actor, "release: power soft-off", d.SoftOff) {
		deadline := time.NewTimer(timeout)
		defer deadline.Stop()
		tick := time.NewTicker(poll)
		defer tick.Stop()
	wait:
		for {
			select {
			case <-ctx.Done():
				m.powerEvent(n, actor, "release: wait for the shutdown", ctx.Err())
				return false
			case <-deadline.C:
				break wait
			case <-tick.C:
				if st, err := d.State(ctx); err == nil && st == power.StateOff {
					return true
				}
			}
		}
	}
	return m.call(ctx, n, actor, fmt.Sprintf("release: power off (still on %s after the soft-off)", timeout), d.Off)
}

// afterDeploy sets a node that was deployed to boot its disk from now on.
func (m *Machine) afterDeploy(n store.Node) {
	if m.Power == nil {
		return
	}
	m.goPower(func(ctx context.Context) {
		d, ok := m.openPower(ctx, n, "system", "deploy done")
		if !ok {
			return
		}
		defer d.Close()
		b := power.Boot{Device: power.DeviceDisk, Persistent: true, UEFI: n.Firmware != boot.FirmwareBIOS}
		m.call(ctx, n, "system", "deploy done: "+b.String(), func(ctx context.Context) error { return d.SetBootDevice(ctx, b) })
	})
}

// reapCycled reports when the reaper last power-cycled n since its last
// state change (zero: never).
func (m *Machine) reapCycled(ctx context.Context, n store.Node) (time.Time, error) {
	evs, err := m.Store.Events(ctx, store.EventFilter{NodeID: n.ID, Newest: true, Limit: 200})
	if err != nil {
		return time.Time{}, err
	}
	for _, e := range evs {
		if e.Time.Before(n.StateChanged) {
			break
		}
		if e.Kind == "power" && e.Reason == reapCycle {
			return e.Time, nil
		}
	}
	return time.Time{}, nil
}

// reapPower gives a quiet node with a BMC its one power cycle into a
// fresh network boot. It reports whether it started one (the node then
// gets another timeout before it is failed); an error is the store's.
func (m *Machine) reapPower(ctx context.Context, n store.Node, reason string) (bool, error) {
	if m.Power == nil {
		return false, nil
	}
	d, ok := m.openPower(ctx, n, "system", "agent quiet")
	if !ok {
		return false, nil
	}
	// Recorded before the work starts: once, whatever the BMC does.
	e, err := m.Store.AddEvent(ctx, store.Event{NodeID: n.ID, Time: m.now(), Actor: "system", Kind: "power", Reason: reapCycle, Message: reason})
	if err != nil {
		d.Close()
		return false, err
	}
	m.notify(e)
	if !m.goPower(func(ctx context.Context) {
		defer d.Close()
		m.netboot(ctx, d, n, "system", "agent quiet", true)
	}) {
		d.Close()
	}
	return true, nil
}
