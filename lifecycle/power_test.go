package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/power"
	"github.com/rackboot/rackboot/store"
	"github.com/rackboot/rackboot/store/sqlite"
)

// fakeBMC is a power.Driver that records the calls that change something
// (not State, which release polls a varying number of times).
type fakeBMC struct {
	mu    sync.Mutex
	calls []string
	state power.State
	// softWorks: a soft-off turns the node off (its OS shuts down).
	softWorks bool
	// fail makes the call of that name fail, as a BMC that does not answer.
	fail map[string]bool
}

func (f *fakeBMC) do(name string, then power.State) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, name)
	if f.fail[name] {
		return &power.BMCError{BMC: "ipmi://fake", Op: name, Err: power.ErrNoAnswer}
	}
	if then != "" {
		f.state = then
	}
	return nil
}

func (f *fakeBMC) State(context.Context) (power.State, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail["state"] {
		return "", &power.BMCError{BMC: "ipmi://fake", Op: "power state", Err: power.ErrNoAnswer}
	}
	return f.state, nil
}
func (f *fakeBMC) On(context.Context) error    { return f.do("on", power.StateOn) }
func (f *fakeBMC) Off(context.Context) error   { return f.do("off", power.StateOff) }
func (f *fakeBMC) Cycle(context.Context) error { return f.do("cycle", power.StateOn) }
func (f *fakeBMC) Reset(context.Context) error { return f.do("reset", "") }
func (f *fakeBMC) SoftOff(context.Context) error {
	then := power.State("")
	if f.softWorks {
		then = power.StateOff
	}
	return f.do("soft-off", then)
}
func (f *fakeBMC) SetBootDevice(_ context.Context, b power.Boot) error {
	name := "boot " + string(b.Device)
	if b.Persistent {
		name += " persistent"
	} else {
		name += " once"
	}
	if b.UEFI {
		name += " uefi"
	}
	return f.do(name, "")
}
func (f *fakeBMC) Close() error { return nil }

func (f *fakeBMC) got() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

// fakePower opens the fake BMCs of the nodes that have one.
type fakePower struct {
	mu   sync.Mutex
	bmcs map[string]*fakeBMC
}

func (p *fakePower) Open(_ context.Context, n store.Node) (power.Driver, store.BMC, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if b, ok := p.bmcs[n.ID]; ok {
		return b, store.BMC{NodeID: n.ID, URL: "ipmi://fake"}, nil
	}
	return nil, store.BMC{}, fmt.Errorf("node %s: no BMC: %w", n.ID, store.ErrNotFound)
}

func (p *fakePower) add(id string, b *fakeBMC) {
	p.mu.Lock()
	p.bmcs[id] = b
	p.mu.Unlock()
}

func powerMachine(t *testing.T) (*Machine, store.Store, *fakePower) {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if err := st.CreateImage(context.Background(), store.Image{Name: "img", Arch: boot.ArchX86_64, Format: "raw"}); err != nil {
		t.Fatal(err)
	}
	p := &fakePower{bmcs: map[string]*fakeBMC{}}
	m := &Machine{Store: st, Power: p, SoftOffTimeout: 100 * time.Millisecond, SoftOffPoll: 5 * time.Millisecond}
	t.Cleanup(m.WaitPower)
	return m, st, p
}

// powerEvents are the node's power events, oldest first.
func powerEvents(t *testing.T, st store.Store, id string) []store.Event {
	t.Helper()
	evs, err := st.Events(context.Background(), store.EventFilter{NodeID: id})
	if err != nil {
		t.Fatal(err)
	}
	var out []store.Event
	for _, e := range evs {
		if e.Kind == "power" {
			out = append(out, e)
		}
	}
	return out
}

// TestActionPower: each action on a node with a BMC makes the calls that
// start it with nobody at the rack, each recorded as a power event of the
// actor; a node without a BMC gets none.
// countingLimiter counts the power-ons that waited their turn at it.
type countingLimiter struct{ n atomic.Int32 }

func (l *countingLimiter) Do(ctx context.Context, f func(context.Context) error) error {
	l.n.Add(1)
	return f(ctx)
}

func TestActionPower(t *testing.T) {
	m, st, p := powerMachine(t)
	ctx := context.Background()
	limiter := &countingLimiter{}
	m.PowerOn = limiter
	cases := []struct {
		name   string
		action Action
		from   store.State
		bmc    *fakeBMC // nil: no BMC
		want   []string
	}{
		{"inspect off", Inspect, store.StateDiscovered, &fakeBMC{state: power.StateOff}, []string{"boot pxe once uefi", "on"}},
		{"inspect own OS", Inspect, store.StateDiscovered, &fakeBMC{state: power.StateOn}, []string{"boot pxe once uefi", "cycle"}},
		{"inspect agent running", Inspect, store.StateAvailable, &fakeBMC{state: power.StateOn}, nil},
		{"inspect agent node off", Inspect, store.StateAvailable, &fakeBMC{state: power.StateOff}, []string{"boot pxe once uefi", "on"}},
		{"deploy off", Deploy, store.StateAvailable, &fakeBMC{state: power.StateOff}, []string{"boot pxe once uefi", "on"}},
		{"deploy failed node running the agent", Deploy, store.StateFailed, &fakeBMC{state: power.StateOn}, nil},
		{"wipe off", Wipe, store.StateFailed, &fakeBMC{state: power.StateOff}, []string{"boot pxe once uefi", "on"}},
		{"burnin off", Burnin, store.StateAvailable, &fakeBMC{state: power.StateOff}, []string{"boot pxe once uefi", "on"}},
		{"release shuts down", Release, store.StateActive, &fakeBMC{state: power.StateOn, softWorks: true}, []string{"soft-off", "boot pxe once uefi", "on"}},
		{"release forced off", Release, store.StateActive, &fakeBMC{state: power.StateOn}, []string{"soft-off", "off", "boot pxe once uefi", "on"}},
		{"release soft-off refused", Release, store.StateActive, &fakeBMC{state: power.StateOn, fail: map[string]bool{"soft-off": true}}, []string{"soft-off", "off", "boot pxe once uefi", "on"}},
		{"release off", Release, store.StateActive, &fakeBMC{state: power.StateOff}, []string{"boot pxe once uefi", "on"}},
		{"reboot is the agent's", Reboot, store.StateAvailable, &fakeBMC{state: power.StateOn}, nil},
		{"no BMC: inspect", Inspect, store.StateDiscovered, nil, nil},
		{"no BMC: release", Release, store.StateActive, nil, nil},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			n := node(t, st, 100+i, boot.ClientX64UEFI, c.from)
			if c.bmc != nil {
				p.add(n.ID, c.bmc)
			}
			got, _, err := m.Do(ctx, n.ID, c.action, Params{Image: "img"}, "user:t")
			if err != nil {
				t.Fatal(err)
			}
			m.WaitPower()
			var calls []string
			if c.bmc != nil {
				calls = c.bmc.got()
			}
			if d := cmp.Diff(c.want, calls); d != "" {
				t.Errorf("calls (-want +got):\n%s", d)
			}
			// Every power-on and cycle waited its turn at the limiter.
			ons := int32(0)
			for _, c := range calls {
				if c == "on" || c == "cycle" {
					ons++
				}
			}
			if got := limiter.n.Swap(0); got != ons {
				t.Errorf("%d power-ons went through the limiter, want %d", got, ons)
			}
			evs := powerEvents(t, st, n.ID)
			if len(evs) != len(c.want) {
				t.Errorf("%d power events, want one per call (%d): %+v", len(evs), len(c.want), evs)
			}
			for _, e := range evs {
				failing := c.bmc != nil && len(c.bmc.fail) > 0 && strings.HasPrefix(e.Message, "failed: ")
				if e.Actor != "user:t" || e.Message != "done" && !failing || !strings.HasPrefix(e.Reason, string(c.action)+": ") {
					t.Errorf("event %+v: want actor user:t, message done, reason %s: ...", e, c.action)
				}
			}
			if c.action != Reboot && got.State == c.from {
				t.Errorf("node stayed %s", got.State)
			}
		})
	}
}

// TestActionPowerFails: a BMC that fails leaves the action in place (the
// node waits for a reboot) and says why in an event; nothing after the
// failed call is tried.
func TestActionPowerFails(t *testing.T) {
	m, st, p := powerMachine(t)
	ctx := context.Background()
	for i, fail := range []string{"state", "boot pxe once uefi", "on"} {
		t.Run(fail, func(t *testing.T) {
			n := node(t, st, 200+i, boot.ClientX64UEFI, store.StateAvailable)
			b := &fakeBMC{state: power.StateOff, fail: map[string]bool{fail: true}}
			p.add(n.ID, b)
			if _, _, err := m.Do(ctx, n.ID, Deploy, Params{Image: "img"}, "user:t"); err != nil {
				t.Fatal(err)
			}
			m.WaitPower()
			cur, _ := st.Node(ctx, n.ID)
			tasks, _ := st.Tasks(ctx, store.TaskFilter{NodeID: n.ID, State: store.TaskPending})
			if cur.State != store.StateDeploying || len(tasks) != 1 {
				t.Fatalf("node %s with %d pending tasks, want deploying with its task", cur.State, len(tasks))
			}
			evs := powerEvents(t, st, n.ID)
			if len(evs) == 0 {
				t.Fatal("no power event")
			}
			last := evs[len(evs)-1]
			if !strings.HasPrefix(last.Message, "failed: ") || !strings.Contains(last.Message, "does not answer") {
				t.Errorf("last power event %+v: want the failure and its reason", last)
			}
			if calls := b.got(); len(calls) > 0 && calls[len(calls)-1] != fail {
				t.Errorf("calls %v: nothing should follow the failed %s", calls, fail)
			}
		})
	}
	t.Run("open", func(t *testing.T) {
		n := node(t, st, 210, boot.ClientX64UEFI, store.StateDiscovered)
		m2 := &Machine{Store: st, Power: openFails{}}
		if _, _, err := m2.Do(ctx, n.ID, Inspect, Params{}, "user:t"); err != nil {
			t.Fatal(err)
		}
		m2.WaitPower()
		evs := powerEvents(t, st, n.ID)
		if len(evs) != 1 || !strings.Contains(evs[0].Message, "does not decrypt") {
			t.Errorf("events %+v: want one saying the BMC could not be opened", evs)
		}
	})
}

type openFails struct{}

func (openFails) Open(context.Context, store.Node) (power.Driver, store.BMC, error) {
	return nil, store.BMC{}, errors.New("the BMC password does not decrypt")
}

// TestDeployDoneBootsDisk: a deploy the agent reports done sets the next
// boots to the disk, for good; a failed one does not.
func TestDeployDoneBootsDisk(t *testing.T) {
	m, st, p := powerMachine(t)
	ctx := context.Background()
	for i, ok := range []bool{true, false} {
		t.Run(fmt.Sprint("done=", ok), func(t *testing.T) {
			n := node(t, st, 300+i, boot.ClientX64UEFI, store.StateAvailable)
			b := &fakeBMC{state: power.StateOn} // the agent runs: no calls to start
			p.add(n.ID, b)
			if _, _, err := m.Do(ctx, n.ID, Deploy, Params{Image: "img"}, "user:t"); err != nil {
				t.Fatal(err)
			}
			m.WaitPower()
			tasks, _ := st.Tasks(ctx, store.TaskFilter{NodeID: n.ID})
			task := tasks[0]
			task.State = store.TaskDone
			if !ok {
				task.State, task.Error = store.TaskFailed, "disk full"
			}
			if _, err := m.TaskEnded(ctx, task, "agent:"+n.ID, nil); err != nil {
				t.Fatal(err)
			}
			m.WaitPower()
			var want []string
			if ok {
				want = []string{"boot disk persistent uefi"}
			}
			if d := cmp.Diff(want, b.got()); d != "" {
				t.Errorf("calls (-want +got):\n%s", d)
			}
		})
	}
}

// TestReapCyclesOnce: a quiet busy node with a BMC is power-cycled into a
// network boot once, then failed when the timeout passes again; one
// without a BMC fails at once, as before.
func TestReapCyclesOnce(t *testing.T) {
	m, st, p := powerMachine(t)
	ctx := context.Background()
	withBMC := node(t, st, 400, boot.ClientX64UEFI, store.StateAvailable)
	without := node(t, st, 401, boot.ClientX64UEFI, store.StateAvailable)
	b := &fakeBMC{state: power.StateOn, fail: map[string]bool{"cycle": true}}
	p.add(withBMC.ID, b)
	for _, n := range []store.Node{withBMC, without} {
		if _, _, err := m.Do(ctx, n.ID, Inspect, Params{}, "user:t"); err != nil {
			t.Fatal(err)
		}
	}
	m.WaitPower()
	if got := b.got(); len(got) != 0 {
		t.Fatalf("calls %v before the reap, want none (the agent runs)", got)
	}
	const timeout = time.Hour
	start := time.Now()
	at := func(d time.Duration) []string {
		t.Helper()
		m.Now = func() time.Time { return start.Add(d) }
		reaped, err := m.Reap(ctx, timeout)
		if err != nil {
			t.Fatal(err)
		}
		m.WaitPower()
		var ids []string
		for _, n := range reaped {
			ids = append(ids, n.ID)
		}
		return ids
	}
	if d := cmp.Diff([]string{without.ID}, at(timeout+time.Minute)); d != "" {
		t.Errorf("first reap (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]string{"boot pxe once uefi", "cycle"}, b.got()); d != "" {
		t.Errorf("calls (-want +got):\n%s", d)
	}
	if got := at(timeout + 30*time.Minute); len(got) != 0 {
		t.Errorf("reaped %v before a timeout passed since the cycle", got)
	}
	if d := cmp.Diff([]string{withBMC.ID}, at(2*timeout+2*time.Minute)); d != "" {
		t.Errorf("reap after the cycle (-want +got):\n%s", d)
	}
	if got := b.got(); len(got) != 2 {
		t.Errorf("calls %v: want one cycle only", got)
	}
	cur, _ := st.Node(ctx, withBMC.ID)
	if cur.State != store.StateFailed || !strings.Contains(cur.LastError, "power cycle") {
		t.Errorf("node %s (%q), want failed, saying the cycle did not help", cur.State, cur.LastError)
	}
	var reasons []string
	for _, e := range powerEvents(t, st, withBMC.ID) {
		if e.Actor != "system" {
			t.Errorf("event %+v: want actor system", e)
		}
		reasons = append(reasons, e.Reason+" "+strings.SplitN(e.Message, ":", 2)[0])
	}
	want := []string{reapCycle + " no word from the node's agent for",
		"agent quiet: boot device pxe, next boot, UEFI done", "agent quiet: power cycle failed"}
	if len(reasons) != 3 || !strings.HasPrefix(reasons[0], want[0]) || reasons[1] != want[1] || reasons[2] != want[2] {
		t.Errorf("power events %q, want %q", reasons, want)
	}
	if evs := powerEvents(t, st, without.ID); len(evs) != 0 {
		t.Errorf("node without a BMC: power events %+v", evs)
	}
}

// TestRunPowerEndsWork: the appliance's stop cancels BMC work in flight
// (a release waiting for the shutdown) and RunPower waits for it.
func TestRunPowerEndsWork(t *testing.T) {
	m, st, p := powerMachine(t)
	m.SoftOffTimeout = time.Hour
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.RunPower(ctx) }()
	n := node(t, st, 500, boot.ClientX64UEFI, store.StateActive)
	b := &fakeBMC{state: power.StateOn}
	p.add(n.ID, b)
	// RunPower holds its context before the work starts.
	for {
		m.pw.mu.Lock()
		ready := m.pw.ctx != nil
		m.pw.mu.Unlock()
		if ready {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if _, _, err := m.Do(context.Background(), n.ID, Release, Params{}, "user:t"); err != nil {
		t.Fatal(err)
	}
	for wait := time.Now(); len(b.got()) == 0; time.Sleep(time.Millisecond) {
		if time.Since(wait) > 10*time.Second {
			t.Fatal("no BMC call after the release")
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("RunPower did not return after its context ended")
	}
	evs := powerEvents(t, st, n.ID)
	if len(evs) == 0 {
		t.Fatal("no power event")
	}
	if last := evs[len(evs)-1]; !strings.Contains(last.Message, "context canceled") {
		t.Errorf("last event %+v: want the wait cut short", last)
	}
	if d := cmp.Diff([]string{"soft-off"}, b.got()); d != "" {
		t.Errorf("calls (-want +got):\n%s", d)
	}
	// Nothing starts after the stop.
	m.afterAction(n, Inspect, "user:t")
	m.WaitPower()
	if len(b.got()) != 1 {
		t.Errorf("calls %v after the stop", b.got())
	}
}

// TestNoPowerForIronicsNodes: a busy node handed to Ironic since its
// action began is never power-cycled by the reaper; Ironic drives its BMC.
func TestNoPowerForIronicsNodes(t *testing.T) {
	m, st, p := powerMachine(t)
	ctx := context.Background()
	n := node(t, st, 402, boot.ClientX64UEFI, store.StateAvailable)
	b := &fakeBMC{state: power.StateOn}
	p.add(n.ID, b)
	if _, _, err := m.Do(ctx, n.ID, Inspect, Params{}, "user:t"); err != nil {
		t.Fatal(err)
	}
	m.WaitPower()
	before := len(b.got())
	ironic := store.OwnerIronic
	if _, err := st.UpdateNode(ctx, n.ID, store.NodePatch{Owner: &ironic}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	m.Now = func() time.Time { return start.Add(2 * time.Hour) }
	if _, err := m.Reap(ctx, time.Hour); err != nil {
		t.Fatal(err)
	}
	m.WaitPower()
	if got := b.got(); len(got) != before {
		t.Errorf("BMC calls %v after the node became Ironic's (had %d before)", got, before)
	}
}
