package lifecycle

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/store"
	"github.com/rackboot/rackboot/store/sqlite"
)

// failing opens a SQLite store whose database refuses every INSERT
// into table (a trigger aborts it, as a full disk or a dropped
// connection would), and returns it with a function that lifts the
// refusal.
func failing(t *testing.T, table string) (*Machine, store.Store, func()) {
	t.Helper()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "db")
	st, err := sqlite.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	raw, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	if _, err := raw.Exec(`CREATE TRIGGER refuse BEFORE INSERT ON ` + table + ` BEGIN SELECT RAISE(ABORT, 'database is full'); END`); err != nil {
		t.Fatal(err)
	}
	lift := func() {
		if _, err := raw.Exec(`DROP TRIGGER refuse`); err != nil {
			t.Fatal(err)
		}
	}
	return &Machine{Store: st}, st, lift
}

// TestActionIsOneTransaction: when the task an action starts cannot be
// stored, the node is not moved and no event claims it was; the same
// action then works once the database takes tasks again.
func TestActionIsOneTransaction(t *testing.T) {
	m, st, lift := failing(t, "tasks")
	ctx := context.Background()
	if err := st.CreateImage(ctx, store.Image{Name: "img", Arch: boot.ArchX86_64, Format: "raw"}); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		a    Action
		from store.State
	}{
		{Inspect, store.StateDiscovered},
		{Deploy, store.StateAvailable},
		{Release, store.StateActive},
		{Wipe, store.StateFailed},
		{Burnin, store.StateAvailable},
		{Reboot, store.StateInspecting},
	}
	var nodes []store.Node
	for i, tc := range cases {
		n := node(t, st, i+1, boot.ClientX64UEFI, tc.from)
		nodes = append(nodes, n)
		if _, _, err := m.Do(ctx, n.ID, tc.a, Params{Image: "img"}, "user:t"); err == nil {
			t.Errorf("%s from %s: no error though the task could not be stored", tc.a, tc.from)
		}
		got, _ := st.Node(ctx, n.ID)
		if got.State != tc.from {
			t.Errorf("%s from %s: node is %s with no task, want it left %s", tc.a, tc.from, got.State, tc.from)
		}
		if evs, _ := st.Events(ctx, store.EventFilter{NodeID: n.ID}); len(evs) != 0 {
			t.Errorf("%s from %s: %d events written for a change that did not happen", tc.a, tc.from, len(evs))
		}
	}
	lift()
	for i, tc := range cases {
		got, _, err := m.Do(ctx, nodes[i].ID, tc.a, Params{Image: "img"}, "user:t")
		if err != nil {
			t.Fatalf("%s from %s, again: %v", tc.a, tc.from, err)
		}
		tasks, _ := st.Tasks(ctx, store.TaskFilter{NodeID: got.ID})
		if len(tasks) != 1 || tasks[0].State != store.TaskPending {
			t.Errorf("%s from %s, again: node %s, tasks %+v", tc.a, tc.from, got.State, tasks)
		}
	}
}

// TestTaskEndIsOneTransaction: when the report of a task's end cannot
// be logged, the task stays running and the node stays in the task's
// state, so the agent's report can be sent again; it is never marked
// ended while its node is still busy.
func TestTaskEndIsOneTransaction(t *testing.T) {
	m, st, lift := failing(t, "events")
	ctx := context.Background()
	n := node(t, st, 1, boot.ClientX64UEFI, store.StateDeploying)
	task, err := st.CreateTask(ctx, store.Task{NodeID: n.ID, Kind: "deploy", State: store.TaskRunning})
	if err != nil {
		t.Fatal(err)
	}
	task.State = store.TaskDone
	report := []store.Event{{Actor: "agent:" + n.ID, Kind: "task", Message: "deploy done"}}
	if _, err := m.TaskEnded(ctx, task, "agent:"+n.ID, report); err == nil {
		t.Fatal("no error though the events could not be stored")
	}
	if got, _ := st.Task(ctx, task.ID); got.State != store.TaskRunning {
		t.Errorf("task is %s after a failed end, want running", got.State)
	}
	if got, _ := st.Node(ctx, n.ID); got.State != store.StateDeploying {
		t.Errorf("node is %s after a failed end, want deploying", got.State)
	}
	lift()
	got, err := m.TaskEnded(ctx, task, "agent:"+n.ID, report)
	if err != nil || got.State != store.StateActive {
		t.Fatalf("again: %s, %v; want active", got.State, err)
	}
}

// TestReapIsOneTransaction: a node the reaper fails and its tasks fail
// together; when the node's move cannot be logged, its tasks stay as
// they were.
func TestReapIsOneTransaction(t *testing.T) {
	m, st, lift := failing(t, "events")
	ctx := context.Background()
	now := time.Now().UTC()
	m.Now = func() time.Time { return now.Add(time.Hour) }
	n := node(t, st, 1, boot.ClientX64UEFI, store.StateInspecting)
	task, err := st.CreateTask(ctx, store.Task{NodeID: n.ID, Kind: "inspect", State: store.TaskRunning})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Reap(ctx, time.Minute); err == nil {
		t.Fatal("reap: no error though its event could not be stored")
	}
	if got, _ := st.Task(ctx, task.ID); got.State != store.TaskRunning {
		t.Errorf("task is %s after a failed reap, want running", got.State)
	}
	lift()
	reaped, err := m.Reap(ctx, time.Minute)
	if err != nil || len(reaped) != 1 || reaped[0].State != store.StateFailed {
		t.Fatalf("reap again: %+v, %v", reaped, err)
	}
	if got, _ := st.Task(ctx, task.ID); got.State != store.TaskFailed {
		t.Errorf("task is %s after the reap, want failed", got.State)
	}
}

// listFails is a store whose node listings fail while fail is set: a
// database that stopped answering.
type listFails struct {
	store.Store
	mu   sync.Mutex
	fail bool
}

func (s *listFails) set(on bool) { s.mu.Lock(); s.fail = on; s.mu.Unlock() }

func (s *listFails) ListNodes(ctx context.Context, f store.NodeFilter) ([]store.Node, error) {
	s.mu.Lock()
	fail := s.fail
	s.mu.Unlock()
	if fail {
		return nil, errors.New("database hiccup")
	}
	return s.Store.ListNodes(ctx, f)
}

// TestReaperSurvivesStoreErrors: a reaper whose store fails keeps
// running, says so with a growing wait that never passes the interval,
// and reaps once the store answers again. Its context's end stops it
// with nil.
func TestReaperSurvivesStoreErrors(t *testing.T) {
	_, base, _ := newMachine(t)
	st := &listFails{Store: base, fail: true}
	m := &Machine{Store: st, Now: func() time.Time { return time.Now().Add(time.Hour) }}
	n := node(t, base, 1, boot.ClientX64UEFI, store.StateInspecting)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type failure struct {
		err   error
		retry time.Duration
	}
	failures := make(chan failure, 100)
	reaped := make(chan store.Node, 1)
	done := make(chan error, 1)
	const interval = 800 * time.Millisecond
	go func() {
		done <- m.RunReaper(ctx, time.Minute, interval, func(n store.Node) { reaped <- n },
			func(err error, retry time.Duration) { failures <- failure{err, retry} })
	}()
	// The first reap comes after one interval; the next ones an eighth
	// of it later, a quarter, a half, then one interval apart.
	var waits []time.Duration
	for len(waits) < 5 {
		select {
		case f := <-failures:
			if !strings.Contains(f.err.Error(), "database hiccup") {
				t.Fatalf("failure %v", f.err)
			}
			waits = append(waits, f.retry)
		case err := <-done:
			t.Fatalf("the reaper ended on a store error: %v", err)
		case <-time.After(10 * time.Second):
			t.Fatalf("no failure reported in 10 s (after %v)", waits)
		}
	}
	if want := []time.Duration{interval / 8, interval / 4, interval / 2, interval, interval}; !slices.Equal(waits, want) {
		t.Errorf("waits %v, want %v", waits, want)
	}
	st.set(false)
	select {
	case got := <-reaped:
		if got.ID != n.ID || got.State != store.StateFailed {
			t.Errorf("reaped %+v", got)
		}
	case err := <-done:
		t.Fatalf("the reaper ended: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("no reap in 10 s after the store came back")
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("RunReaper after its context ended: %v", err)
	}
}
