package lifecycle

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/store"
	"github.com/rackboot/rackboot/store/sqlite"
)

var allStates = []store.State{store.StateDiscovered, store.StateInspecting, store.StateAvailable, store.StateDeploying,
	store.StateActive, store.StateCleaning, store.StateBurnin, store.StateFailed, store.StateMaintenance}

func newMachine(t *testing.T) (*Machine, store.Store, *[]store.Event) {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	var heard []store.Event
	return &Machine{Store: st, Notify: func(e store.Event) { heard = append(heard, e) }}, st, &heard
}

func node(t *testing.T, st store.Store, i int, arch boot.ClientArch, s store.State) store.Node {
	t.Helper()
	ctx := context.Background()
	n, _, err := st.EnrollClient(ctx, boot.Client{MAC: net.HardwareAddr{2, 0, 0, 0, byte(i >> 8), byte(i)}, Arch: arch}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := st.SetState(ctx, n.ID, s); err != nil {
		t.Fatal(err)
	}
	n.State = s
	return n
}

// TestMatrix tries every action in every state: exactly the edges of the
// state machine succeed, everything else is refused and changes nothing.
func TestMatrix(t *testing.T) {
	m, st, heard := newMachine(t)
	ctx := context.Background()
	if err := st.CreateImage(ctx, store.Image{Name: "img", Arch: boot.ArchX86_64, Format: "raw"}); err != nil {
		t.Fatal(err)
	}
	want := map[Action]map[store.State]store.State{
		Inspect: {store.StateDiscovered: store.StateInspecting, store.StateAvailable: store.StateInspecting, store.StateFailed: store.StateInspecting},
		Deploy:  {store.StateAvailable: store.StateDeploying, store.StateFailed: store.StateDeploying},
		Release: {store.StateActive: store.StateCleaning},
		Wipe:    {store.StateAvailable: store.StateCleaning, store.StateFailed: store.StateCleaning},
		Burnin:  {store.StateAvailable: store.StateBurnin, store.StateFailed: store.StateBurnin},
		Reboot: {store.StateInspecting: store.StateInspecting, store.StateAvailable: store.StateAvailable, store.StateDeploying: store.StateDeploying,
			store.StateCleaning: store.StateCleaning, store.StateBurnin: store.StateBurnin, store.StateFailed: store.StateFailed},
	}
	wantTask := map[Action]string{Inspect: "inspect", Deploy: "deploy", Release: "wipe", Wipe: "wipe", Burnin: "burnin", Reboot: "reboot"}
	i := 0
	for a, edges := range want {
		for _, s := range allStates {
			i++
			n := node(t, st, i, boot.ClientX64UEFI, s)
			t.Run(string(a)+"/"+string(s), func(t *testing.T) {
				before := len(*heard)
				got, ev, err := m.Do(ctx, n.ID, a, Params{Image: "img", Reason: "test"}, "user:t")
				to, ok := edges[s]
				tasks, _ := st.Tasks(ctx, store.TaskFilter{NodeID: n.ID})
				if !ok {
					var refused *RefusedError
					if !errors.As(err, &refused) {
						t.Fatalf("err = %v, want RefusedError", err)
					}
					cur, _ := st.Node(ctx, n.ID)
					if cur.State != s || len(tasks) != 0 || len(*heard) != before {
						t.Fatalf("a refused action changed things: state %s, %d tasks, %d events", cur.State, len(tasks), len(*heard)-before)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				if got.State != to || ev.From != s || ev.To != to || ev.Actor != "user:t" || ev.Reason != "test" || ev.Seq == 0 {
					t.Fatalf("node %s, event %+v; want %s", got.State, ev, to)
				}
				if len(*heard) != before+1 {
					t.Fatalf("notified %d times, want once", len(*heard)-before)
				}
				if len(tasks) != 1 || tasks[0].Kind != wantTask[a] || tasks[0].State != store.TaskPending {
					t.Fatalf("tasks = %+v, want one %s", tasks, wantTask[a])
				}
				if slices.Index(Allowed(s), a) < 0 {
					t.Fatalf("Allowed(%s) = %v lacks %s", s, Allowed(s), a)
				}
			})
		}
	}
}

func TestDeployChecksImage(t *testing.T) {
	m, st, _ := newMachine(t)
	ctx := context.Background()
	st.CreateImage(ctx, store.Image{Name: "arm", Arch: boot.ArchAArch64, Format: "raw.zst", SHA256: "aa", Size: 5})
	st.CreateImage(ctx, store.Image{Name: "x86", Arch: boot.ArchX86_64, Format: "raw", SHA256: "bb", Size: 7})
	n := node(t, st, 1, boot.ClientX64UEFI, store.StateAvailable)
	for _, tc := range []struct {
		image   string
		refused bool
		invalid bool
	}{{"", false, true}, {"missing", true, false}, {"arm", true, false}} {
		_, _, err := m.Do(ctx, n.ID, Deploy, Params{Image: tc.image}, "u")
		var r *RefusedError
		var inv *InvalidError
		if errors.As(err, &r) != tc.refused || errors.As(err, &inv) != tc.invalid {
			t.Errorf("image %q: err = %v", tc.image, err)
		}
	}
	if cur, _ := st.Node(ctx, n.ID); cur.State != store.StateAvailable {
		t.Fatalf("refused deploys moved the node to %s", cur.State)
	}
	var inv *InvalidError
	if _, _, err := m.Do(ctx, n.ID, Deploy, Params{Image: "x86", CloudInit: json.RawMessage(`"text"`)}, "u"); !errors.As(err, &inv) {
		t.Fatalf("cloud_init that is not an object: %v", err)
	}
	if _, _, err := m.Do(ctx, n.ID, Deploy, Params{Image: "x86", Grow: true, RootDevice: json.RawMessage(`{"serial":"S1"}`),
		CloudInit: json.RawMessage(`{"hostname":"gpu-01","ssh_keys":["ssh-ed25519 AAAA"]}`)}, "u"); err != nil {
		t.Fatal(err)
	}
	tasks, _ := st.Tasks(ctx, store.TaskFilter{NodeID: n.ID})
	var p map[string]any
	json.Unmarshal(tasks[0].Params, &p)
	if p["image"] != "x86" || p["sha256"] != "bb" || p["format"] != "raw" || p["path"] != "/images/x86" || p["grow"] != true {
		t.Fatalf("deploy task params = %s", tasks[0].Params)
	}
	if !strings.Contains(string(tasks[0].Params), `"root_device":{"serial":"S1"}`) || !strings.Contains(string(tasks[0].Params), `"hostname":"gpu-01"`) {
		t.Fatalf("deploy task params = %s", tasks[0].Params)
	}
}

func TestBadParams(t *testing.T) {
	m, st, _ := newMachine(t)
	ctx := context.Background()
	n := node(t, st, 1, boot.ClientX64UEFI, store.StateAvailable)
	for _, tc := range []struct {
		a Action
		p Params
	}{
		{Burnin, Params{Duration: "forever"}},
		{Burnin, Params{Duration: "-5m"}},
		{Wipe, Params{Method: "shred"}},
		{Maintenance, Params{}},
		{Action("explode"), Params{}},
	} {
		var inv *InvalidError
		if _, _, err := m.Do(ctx, n.ID, tc.a, tc.p, "u"); !errors.As(err, &inv) {
			t.Errorf("%s %+v: err = %v, want InvalidError", tc.a, tc.p, err)
		}
	}
	if _, _, err := m.Do(ctx, "no-such-node", Inspect, Params{}, "u"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("unknown node: %v", err)
	}
}

func TestMaintenanceReturns(t *testing.T) {
	m, st, _ := newMachine(t)
	ctx := context.Background()
	on, off := true, false
	for _, tc := range []struct{ from, back store.State }{
		{store.StateActive, store.StateActive},
		{store.StateAvailable, store.StateAvailable},
		// Work cut short by maintenance is not resumed: its agent may be gone.
		{store.StateDeploying, store.StateFailed},
	} {
		n := node(t, st, int(time.Now().UnixNano()%60000), boot.ClientX64UEFI, tc.from)
		if _, _, err := m.Do(ctx, n.ID, Maintenance, Params{On: &on, Reason: "fan"}, "u"); err != nil {
			t.Fatal(err)
		}
		var r *RefusedError
		if _, _, err := m.Do(ctx, n.ID, Maintenance, Params{On: &on}, "u"); !errors.As(err, &r) {
			t.Fatalf("maintenance twice: %v", err)
		}
		if _, _, err := m.Do(ctx, n.ID, Deploy, Params{Image: "x"}, "u"); !errors.As(err, &r) {
			t.Fatalf("deploy in maintenance: %v", err)
		}
		got, _, err := m.Do(ctx, n.ID, Maintenance, Params{On: &off}, "u")
		if err != nil || got.State != tc.back {
			t.Fatalf("from %s: back in %s (%v), want %s", tc.from, got.State, err, tc.back)
		}
	}
}

func TestFinish(t *testing.T) {
	m, st, _ := newMachine(t)
	ctx := context.Background()
	n := node(t, st, 1, boot.ClientX64UEFI, store.StateDeploying)
	var r *RefusedError
	if _, err := m.Finish(ctx, n.ID, store.StateDeploying, store.StateAvailable, "agent", ""); !errors.As(err, &r) {
		t.Fatalf("deploying → available: %v, want refused", err)
	}
	got, err := m.Finish(ctx, n.ID, store.StateDeploying, store.StateFailed, "agent:"+n.ID, "sha256 mismatch")
	if err != nil || got.State != store.StateFailed || got.LastError != "sha256 mismatch" {
		t.Fatalf("to failed: %+v %v", got, err)
	}
	// A second report of the same outcome finds the node moved on.
	if _, err := m.Finish(ctx, n.ID, store.StateDeploying, store.StateActive, "agent", ""); !errors.As(err, &r) {
		t.Fatalf("stale finish: %v", err)
	}
	got, err = m.Finish(ctx, node(t, st, 2, boot.ClientX64UEFI, store.StateInspecting).ID, store.StateInspecting, store.StateAvailable, "agent", "inventory in")
	if err != nil || got.State != store.StateAvailable || got.LastError != "" {
		t.Fatalf("inspect done: %+v %v", got, err)
	}
}

func TestReap(t *testing.T) {
	m, st, _ := newMachine(t)
	ctx := context.Background()
	now := time.Now().UTC()
	m.Now = func() time.Time { return now }
	quiet := node(t, st, 1, boot.ClientX64UEFI, store.StateAvailable)
	if _, _, err := m.Do(ctx, quiet.ID, Deploy, Params{Image: "img"}, "u"); err == nil {
		t.Fatal("deploy without an image worked")
	}
	st.CreateImage(ctx, store.Image{Name: "img", Arch: boot.ArchX86_64})
	if _, _, err := m.Do(ctx, quiet.ID, Deploy, Params{Image: "img"}, "u"); err != nil {
		t.Fatal(err)
	}
	talking := node(t, st, 2, boot.ClientX64UEFI, store.StateAvailable)
	if _, _, err := m.Do(ctx, talking.ID, Burnin, Params{}, "u"); err != nil {
		t.Fatal(err)
	}
	idle := node(t, st, 3, boot.ClientX64UEFI, store.StateAvailable)
	// Half an hour on: one agent called in a minute ago, one never did.
	now = now.Add(30 * time.Minute)
	st.TouchNode(ctx, talking.ID, now.Add(-time.Minute))
	reaped, err := m.Reap(ctx, 20*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if len(reaped) != 1 || reaped[0].ID != quiet.ID || reaped[0].State != store.StateFailed || !strings.Contains(reaped[0].LastError, "no word") {
		t.Fatalf("reaped %+v", reaped)
	}
	tasks, _ := st.Tasks(ctx, store.TaskFilter{NodeID: quiet.ID})
	if len(tasks) != 1 || tasks[0].State != store.TaskFailed {
		t.Fatalf("the quiet node's task: %+v", tasks)
	}
	for _, id := range []string{talking.ID, idle.ID} {
		if n, _ := st.Node(ctx, id); n.State == store.StateFailed {
			t.Errorf("node %s reaped though it talks or idles", id)
		}
	}
}

// TestIncompleteBurnin: a burn-in that could not test the node's GPUs
// leaves it available, and its history says it did not pass.
func TestIncompleteBurnin(t *testing.T) {
	m, st, _ := newMachine(t)
	ctx := context.Background()
	n := node(t, st, 150, boot.ClientX64UEFI, store.StateBurnin)
	task, err := st.CreateTask(ctx, store.Task{NodeID: n.ID, Kind: "burnin", State: store.TaskRunning})
	if err != nil {
		t.Fatal(err)
	}
	task.State = store.TaskDone
	task.Result = json.RawMessage(`{"passed":false,"verdict":"incomplete","untested":["gpu: 8 GPUs, but no NVIDIA driver here"]}`)
	got, err := m.TaskEnded(ctx, task, "agent", nil)
	if err != nil || got.State != store.StateAvailable {
		t.Fatalf("node %s, %v", got.State, err)
	}
	evs, _ := st.Events(ctx, store.EventFilter{NodeID: n.ID})
	if len(evs) != 1 || evs[0].Reason != "burnin incomplete: gpu: 8 GPUs, but no NVIDIA driver here" {
		t.Errorf("events %+v: want the transition to say the burn-in was incomplete", evs)
	}
}

func TestTaskEnded(t *testing.T) {
	m, st, _ := newMachine(t)
	ctx := context.Background()
	for i, tc := range []struct {
		kind string
		from store.State
		ok   bool
		want store.State
	}{
		{"inspect", store.StateInspecting, true, store.StateAvailable},
		{"deploy", store.StateDeploying, true, store.StateActive},
		{"wipe", store.StateCleaning, false, store.StateFailed},
		{"burnin", store.StateBurnin, true, store.StateAvailable},
		// Nothing moves: a reboot, or a node that left the task's state.
		{"reboot", store.StateAvailable, true, store.StateAvailable},
		{"deploy", store.StateMaintenance, true, store.StateMaintenance},
	} {
		n := node(t, st, 100+i, boot.ClientX64UEFI, tc.from)
		task, err := st.CreateTask(ctx, store.Task{NodeID: n.ID, Kind: tc.kind, State: store.TaskRunning})
		if err != nil {
			t.Fatal(err)
		}
		task.State = store.TaskDone
		if !tc.ok {
			task.State, task.Error = store.TaskFailed, "disk gone"
		}
		got, err := m.TaskEnded(ctx, task, "agent", []store.Event{{Actor: "agent", Kind: "task", Message: "reported"}})
		if err != nil || got.State != tc.want {
			t.Errorf("%s from %s (ok %v): %s, %v; want %s", tc.kind, tc.from, tc.ok, got.State, err, tc.want)
		}
		if tc.want == store.StateFailed && got.LastError != "wipe failed: disk gone" {
			t.Errorf("last error %q", got.LastError)
		}
		if stored, _ := st.Task(ctx, task.ID); stored.State != task.State || stored.Error != task.Error {
			t.Errorf("%s from %s: task stored as %s %q", tc.kind, tc.from, stored.State, stored.Error)
		}
		evs, _ := st.Events(ctx, store.EventFilter{NodeID: n.ID})
		if len(evs) == 0 || evs[0].Message != "reported" || (tc.want != tc.from) != (len(evs) == 2) {
			t.Errorf("%s from %s: events %+v", tc.kind, tc.from, evs)
		}
	}
}

// TestIronicOwned refuses every action on a node Ironic owns, and changes
// nothing; owned by rackboot again, it acts.
func TestIronicOwned(t *testing.T) {
	m, st, _ := newMachine(t)
	ctx := context.Background()
	n := node(t, st, 1, boot.ClientX64UEFI, store.StateAvailable)
	owner := store.OwnerIronic
	if _, err := st.UpdateNode(ctx, n.ID, store.NodePatch{Owner: &owner}); err != nil {
		t.Fatal(err)
	}
	for _, a := range Actions {
		var refused *RefusedError
		if _, _, err := m.Do(ctx, n.ID, a, Params{Image: "x", On: new(bool)}, "u"); !errors.As(err, &refused) || !strings.Contains(err.Error(), "owned by Ironic") {
			t.Errorf("%s on an Ironic node: %v", a, err)
		}
	}
	if got, _ := st.Node(ctx, n.ID); got.State != store.StateAvailable {
		t.Errorf("state %s after refused actions", got.State)
	}
	if tasks, _ := st.Tasks(ctx, store.TaskFilter{NodeID: n.ID}); len(tasks) != 0 {
		t.Errorf("tasks %v", tasks)
	}
	owner = store.OwnerRackboot
	st.UpdateNode(ctx, n.ID, store.NodePatch{Owner: &owner})
	if _, _, err := m.Do(ctx, n.ID, Inspect, Params{}, "u"); err != nil {
		t.Errorf("inspect once rackboot's again: %v", err)
	}
}
