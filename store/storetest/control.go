package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/store"
)

func enroll(t *testing.T, s store.Store, i int, arch boot.ClientArch) store.Node {
	t.Helper()
	n, _, err := s.EnrollClient(context.Background(), boot.Client{MAC: mac(i), Arch: arch}, time.Date(2026, 1, 1, 0, 0, i, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func ptr[T any](v T) *T { return &v }

func ids(nodes []store.Node) []string {
	var out []string
	for _, n := range nodes {
		out = append(out, n.ID)
	}
	return out
}

func testListNodes(t *testing.T, open Opener) {
	ctx := context.Background()
	s, _ := open(t)
	a := enroll(t, s, 1, boot.ClientX64UEFI)
	b := enroll(t, s, 2, boot.ClientARM64UEFI)
	c := enroll(t, s, 3, boot.ClientX86BIOS)
	if _, err := s.UpdateNode(ctx, a.ID, store.NodePatch{Name: ptr("gpu-01"), Rack: ptr("R1"), Position: ptr(10), Tags: ptr([]string{"gpu", "hv"})}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateNode(ctx, b.ID, store.NodePatch{Rack: ptr("R2"), Tags: ptr([]string{"gpux"})}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetInventory(ctx, a.ID, json.RawMessage(`{"version":1}`), []string{"NVIDIA A100-SXM4-40GB"}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetInventory(ctx, b.ID, json.RawMessage(`{"version":1}`), []string{"NVIDIA T4"}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetState(ctx, c.ID, store.StateAvailable); err != nil {
		t.Fatal(err)
	}
	all, err := s.ListNodes(ctx, store.NodeFilter{})
	if err != nil || len(all) != 3 {
		t.Fatalf("list all: %d nodes, %v", len(all), err)
	}
	for i := 1; i < len(all); i++ {
		if all[i-1].ID >= all[i].ID {
			t.Fatalf("list not ordered by id: %v", ids(all))
		}
	}
	for _, tc := range []struct {
		name string
		f    store.NodeFilter
		want []string
	}{
		{"state", store.NodeFilter{State: store.StateAvailable}, []string{c.ID}},
		{"arch", store.NodeFilter{Arch: boot.ArchAArch64}, []string{b.ID}},
		{"rack", store.NodeFilter{Rack: "R1"}, []string{a.ID}},
		{"tag is exact", store.NodeFilter{Tag: "gpu"}, []string{a.ID}},
		{"gpu substring, any case", store.NodeFilter{GPU: "a100"}, []string{a.ID}},
		{"gpu t4", store.NodeFilter{GPU: "T4"}, []string{b.ID}},
		{"query name", store.NodeFilter{Query: "GPU-01"}, []string{a.ID}},
		{"query mac", store.NodeFilter{Query: "52:54:00:00:00:03"}, []string{c.ID}},
		{"query rack", store.NodeFilter{Query: "r2"}, []string{b.ID}},
		{"nothing", store.NodeFilter{State: store.StateActive}, nil},
		{"two filters", store.NodeFilter{Rack: "R1", Arch: boot.ArchAArch64}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.ListNodes(ctx, tc.f)
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tc.want, ids(got)); d != "" {
				t.Errorf("ids (-want +got):\n%s", d)
			}
		})
	}
	// Pages of two, following the cursor, give every node once.
	var paged []string
	after := ""
	for i := 0; i < 5; i++ {
		page, err := s.ListNodes(ctx, store.NodeFilter{After: after, Limit: 2})
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		paged = append(paged, ids(page)...)
		after = page[len(page)-1].ID
	}
	if d := cmp.Diff(ids(all), paged); d != "" {
		t.Errorf("pages (-all +paged):\n%s", d)
	}
	got, err := s.Node(ctx, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if string(got.Inventory) != `{"version":1}` || !cmp.Equal(got.GPUModels, []string{"NVIDIA A100-SXM4-40GB"}) || got.Rack != "R1" || got.Position != 10 {
		t.Errorf("node after patch and inventory: %+v", got)
	}
	if got.Kind != "metal" || got.Owner != "rackboot" {
		t.Errorf("defaults: kind %q owner %q, want metal, rackboot", got.Kind, got.Owner)
	}
	counts, err := s.CountNodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(map[store.State]int{store.StateDiscovered: 2, store.StateAvailable: 1}, counts); d != "" {
		t.Errorf("counts (-want +got):\n%s", d)
	}
	heard := time.Date(2026, 5, 5, 5, 5, 5, 0, time.UTC)
	if err := s.TouchNode(ctx, c.ID, heard); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Node(ctx, c.ID); !got.LastSeen.Equal(heard) {
		t.Errorf("last seen after touch: %v", got.LastSeen)
	}
	if err := s.TouchNode(ctx, "nope", heard); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("touch of unknown node: %v", err)
	}
	if err := s.SetInventory(ctx, "nope", nil, nil); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("inventory of unknown node: %v, want ErrNotFound", err)
	}
}

func testUpdateNode(t *testing.T, open Opener) {
	ctx := context.Background()
	s, reopen := open(t)
	a := enroll(t, s, 1, boot.ClientX64UEFI)
	b := enroll(t, s, 2, boot.ClientX64UEFI)
	if _, err := s.UpdateNode(ctx, a.ID, store.NodePatch{Name: ptr("n1"), Owner: ptr("ironic")}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateNode(ctx, b.ID, store.NodePatch{Name: ptr("n1")}); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("second node named n1: %v, want ErrConflict", err)
	}
	// Renaming a node to its own name is no conflict.
	if _, err := s.UpdateNode(ctx, a.ID, store.NodePatch{Name: ptr("n1")}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateNode(ctx, "nope", store.NodePatch{Rack: ptr("R")}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown node: %v, want ErrNotFound", err)
	}
	n, err := s.UpdateNode(ctx, a.ID, store.NodePatch{Tags: ptr([]string{})})
	if err != nil || len(n.Tags) != 0 || n.Name != "n1" || n.Owner != "ironic" {
		t.Fatalf("empty tags patch: %+v, %v", n, err)
	}
	if reopen != nil {
		s = reopen()
	}
	n, err = s.Node(ctx, "n1")
	if err != nil || n.ID != a.ID || n.Owner != "ironic" {
		t.Fatalf("after reopen: %+v %v", n, err)
	}
}

func testTransition(t *testing.T, open Opener) {
	ctx := context.Background()
	s, _ := open(t)
	a := enroll(t, s, 1, boot.ClientX64UEFI)
	tok, err := s.CreateToken(ctx, store.Token{Hash: "agenthash", Kind: "agent", Role: store.RoleAgent, NodeID: a.ID, NodeState: store.StateDiscovered})
	if err != nil {
		t.Fatal(err)
	}
	when := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	n, e, err := s.Transition(ctx, a.ID, store.StateDiscovered, store.StateInspecting, "", store.Event{Time: when, Actor: "user:ann", Reason: "new node"})
	if err != nil {
		t.Fatal(err)
	}
	if n.State != store.StateInspecting || !n.StateChanged.Equal(when) {
		t.Errorf("node after transition: state %s changed %v", n.State, n.StateChanged)
	}
	if e.Seq == 0 || e.NodeID != a.ID || e.From != store.StateDiscovered || e.To != store.StateInspecting || e.Kind != "transition" {
		t.Errorf("event = %+v", e)
	}
	if _, err := s.TokenByHash(ctx, tok.Hash); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("agent token after its node moved: %v, want ErrNotFound", err)
	}
	// A transition from a state the node has left changes nothing.
	if _, _, err := s.Transition(ctx, a.ID, store.StateDiscovered, store.StateAvailable, "", store.Event{Actor: "x"}); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("stale transition: %v, want ErrConflict", err)
	}
	if _, _, err := s.Transition(ctx, "nope", store.StateDiscovered, store.StateAvailable, "", store.Event{}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown node: %v, want ErrNotFound", err)
	}
	n, _, err = s.Transition(ctx, a.ID, store.StateInspecting, store.StateFailed, "agent vanished", store.Event{Actor: "system"})
	if err != nil || n.LastError != "agent vanished" {
		t.Fatalf("to failed: %+v %v", n, err)
	}
	evs, err := s.Events(ctx, store.EventFilter{NodeID: a.ID})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 2 || evs[0].Reason != "new node" || evs[0].Actor != "user:ann" || !evs[0].Time.Equal(when) || evs[1].To != store.StateFailed {
		t.Errorf("events = %+v", evs)
	}
}

// testConcurrentTransition shows a transition is a compare-and-swap: of
// many callers moving one node out of one state, exactly one wins.
func testConcurrentTransition(t *testing.T, open Opener) {
	ctx := context.Background()
	s, _ := open(t)
	a := enroll(t, s, 1, boot.ClientX64UEFI)
	var wg sync.WaitGroup
	var mu sync.Mutex
	won, lost := 0, 0
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			_, _, err := s.Transition(ctx, a.ID, store.StateDiscovered, store.StateInspecting, "", store.Event{Actor: fmt.Sprint("caller ", i)})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				won++
			case errors.Is(err, store.ErrConflict):
				lost++
			default:
				t.Errorf("caller %d: %v", i, err)
			}
		}(i)
	}
	wg.Wait()
	if won != 1 || lost != 15 {
		t.Fatalf("won %d, lost %d; want 1 and 15", won, lost)
	}
	evs, _ := s.Events(ctx, store.EventFilter{NodeID: a.ID})
	if len(evs) != 1 {
		t.Fatalf("%d events, want 1", len(evs))
	}
}

func testDeleteNode(t *testing.T, open Opener) {
	ctx := context.Background()
	s, _ := open(t)
	a := enroll(t, s, 1, boot.ClientX64UEFI)
	if _, _, err := s.Transition(ctx, a.ID, store.StateDiscovered, store.StateInspecting, "", store.Event{Actor: "system"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateTask(ctx, store.Task{NodeID: a.ID, Kind: "inspect"}); err != nil {
		t.Fatal(err)
	}
	if err := s.AddTrace(ctx, a.ID, boot.Event{Time: time.Now(), Proto: "dhcp", Kind: "discover"}); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteNode(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Node(ctx, a.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("deleted node: %v", err)
	}
	if _, err := s.NodeByMAC(ctx, mac(1)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("deleted node's MAC: %v", err)
	}
	if ts, _ := s.Tasks(ctx, store.TaskFilter{NodeID: a.ID}); len(ts) != 0 {
		t.Fatalf("deleted node's tasks: %v", ts)
	}
	if evs, _ := s.Events(ctx, store.EventFilter{NodeID: a.ID}); len(evs) != 1 {
		t.Fatalf("audit log lost the deleted node's events: %v", evs)
	}
	if err := s.DeleteNode(ctx, a.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	// The MAC enrolls afresh.
	if n, created, err := s.EnrollClient(ctx, boot.Client{MAC: mac(1)}, time.Now()); err != nil || !created || n.ID == a.ID {
		t.Fatalf("re-enroll: %+v %v %v", n, created, err)
	}
}

func testEvents(t *testing.T, open Opener) {
	ctx := context.Background()
	s, _ := open(t)
	var seqs []int64
	for i := 0; i < 5; i++ {
		node := "n1"
		if i%2 == 1 {
			node = "n2"
		}
		e, err := s.AddEvent(ctx, store.Event{NodeID: node, Actor: "user:a", Kind: "audit", Message: fmt.Sprint("m", i)})
		if err != nil {
			t.Fatal(err)
		}
		if e.Time.IsZero() {
			t.Fatal("event time not filled in")
		}
		if len(seqs) > 0 && e.Seq <= seqs[len(seqs)-1] {
			t.Fatalf("seq %d after %d", e.Seq, seqs[len(seqs)-1])
		}
		seqs = append(seqs, e.Seq)
	}
	all, _ := s.Events(ctx, store.EventFilter{})
	if len(all) != 5 || all[0].Message != "m0" || all[4].Message != "m4" {
		t.Fatalf("all events: %+v", all)
	}
	n2, _ := s.Events(ctx, store.EventFilter{NodeID: "n2"})
	if len(n2) != 2 || n2[0].Message != "m1" || n2[1].Message != "m3" {
		t.Fatalf("n2 events: %+v", n2)
	}
	after, _ := s.Events(ctx, store.EventFilter{After: seqs[2], Limit: 1})
	if len(after) != 1 || after[0].Message != "m3" {
		t.Fatalf("after %d limit 1: %+v", seqs[2], after)
	}
	newest, _ := s.Events(ctx, store.EventFilter{Newest: true, Limit: 2})
	if len(newest) != 2 || newest[0].Message != "m4" || newest[1].Message != "m3" {
		t.Fatalf("newest 2: %+v", newest)
	}
	back, _ := s.Events(ctx, store.EventFilter{Newest: true, Before: newest[1].Seq, NodeID: "n1"})
	if len(back) != 2 || back[0].Message != "m2" || back[1].Message != "m0" {
		t.Fatalf("n1 before %d, newest first: %+v", newest[1].Seq, back)
	}
}

func testImages(t *testing.T, open Opener) {
	ctx := context.Background()
	s, reopen := open(t)
	im := store.Image{Name: "debian-13", Arch: boot.ArchAArch64, Format: "raw.zst", Size: 1 << 30, SHA256: "ab12", RawSize: 4 << 30, RawSHA256: "cd34",
		Source:  "https://example.invalid/d.raw.zst",
		Created: time.Date(2026, 2, 2, 0, 0, 0, 0, time.UTC)}
	if err := s.CreateImage(ctx, im); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateImage(ctx, im); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("same name twice: %v, want ErrConflict", err)
	}
	if reopen != nil {
		s = reopen()
	}
	got, err := s.Image(ctx, "debian-13")
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(im, got); d != "" {
		t.Errorf("image (-want +got):\n%s", d)
	}
	if list, _ := s.Images(ctx); len(list) != 1 {
		t.Errorf("images: %v", list)
	}
	if err := s.DeleteImage(ctx, "debian-13"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Image(ctx, "debian-13"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("deleted image: %v", err)
	}
	if err := s.DeleteImage(ctx, "debian-13"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("deleted twice: %v", err)
	}
}

func testTasks(t *testing.T, open Opener) {
	ctx := context.Background()
	s, _ := open(t)
	a := enroll(t, s, 1, boot.ClientX64UEFI)
	t1, err := s.CreateTask(ctx, store.Task{NodeID: a.ID, Kind: "deploy", Params: json.RawMessage(`{"image":"x"}`)})
	if err != nil {
		t.Fatal(err)
	}
	if t1.ID == "" || t1.State != store.TaskPending {
		t.Fatalf("created task: %+v", t1)
	}
	t1.State, t1.Result = store.TaskDone, json.RawMessage(`{"bytes":10}`)
	if err := s.UpdateTask(ctx, t1); err != nil {
		t.Fatal(err)
	}
	got, err := s.Task(ctx, t1.ID)
	if err != nil || got.State != store.TaskDone || string(got.Result) != `{"bytes":10}` || string(got.Params) != `{"image":"x"}` {
		t.Fatalf("task after update: %+v %v", got, err)
	}
	if _, err := s.CreateTask(ctx, store.Task{NodeID: a.ID, Kind: "wipe"}); err != nil {
		t.Fatal(err)
	}
	pending, _ := s.Tasks(ctx, store.TaskFilter{NodeID: a.ID, State: store.TaskPending})
	if len(pending) != 1 || pending[0].Kind != "wipe" {
		t.Fatalf("pending tasks: %+v", pending)
	}
	if err := s.UpdateTask(ctx, store.Task{ID: "nope", State: store.TaskDone}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown task: %v", err)
	}
	now := time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC)
	claimed, err := s.ClaimTask(ctx, a.ID, now)
	if err != nil || claimed.Kind != "wipe" || claimed.State != store.TaskRunning || !claimed.Updated.Equal(now) {
		t.Fatalf("claim: %+v %v", claimed, err)
	}
	if _, err := s.ClaimTask(ctx, a.ID, now); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second claim: %v, want ErrNotFound", err)
	}
	// Progress lands on a running task as its result, and never on one
	// that has ended.
	later := now.Add(time.Minute)
	if err := s.TaskProgress(ctx, claimed.ID, json.RawMessage(`{"done":5}`), later); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Task(ctx, claimed.ID); got.State != store.TaskRunning || string(got.Result) != `{"done":5}` || !got.Updated.Equal(later) {
		t.Fatalf("after progress: %+v", got)
	}
	claimed.State, claimed.Result = store.TaskDone, json.RawMessage(`{"written":10}`)
	if err := s.UpdateTask(ctx, claimed); err != nil {
		t.Fatal(err)
	}
	if err := s.TaskProgress(ctx, claimed.ID, json.RawMessage(`{"done":6}`), later); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("progress on an ended task: %v, want ErrConflict", err)
	}
	if got, _ := s.Task(ctx, claimed.ID); got.State != store.TaskDone || string(got.Result) != `{"written":10}` {
		t.Fatalf("a late progress changed an ended task: %+v", got)
	}
	if err := s.TaskProgress(ctx, "nope", nil, later); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("progress of an unknown task: %v", err)
	}
	// Of many agents claiming at once, one gets each task.
	b := enroll(t, s, 2, boot.ClientX64UEFI)
	for i := 0; i < 3; i++ {
		if _, err := s.CreateTask(ctx, store.Task{NodeID: b.ID, Kind: fmt.Sprint("k", i), Created: now.Add(time.Duration(i) * time.Second)}); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	claims := map[string]int{}
	var wg sync.WaitGroup
	for i := 0; i < 12; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			task, err := s.ClaimTask(ctx, b.ID, now)
			if errors.Is(err, store.ErrNotFound) {
				return
			}
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			claims[task.ID]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	if len(claims) != 3 {
		t.Fatalf("claimed %d distinct tasks, want 3", len(claims))
	}
	for id, n := range claims {
		if n != 1 {
			t.Errorf("task %s handed out %d times", id, n)
		}
	}
}

func testUsersAndTokens(t *testing.T, open Opener) {
	ctx := context.Background()
	s, _ := open(t)
	if err := s.CreateUser(ctx, store.User{Name: "ann", Role: store.RoleTech, PasswordHash: "h1"}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateUser(ctx, store.User{Name: "ann", Role: store.RoleAdmin, PasswordHash: "h0"}); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("second create of one user: %v, want ErrConflict", err)
	}
	if u, _ := s.User(ctx, "ann"); u.PasswordHash != "h1" {
		t.Fatalf("a refused create changed the user: %+v", u)
	}
	if err := s.PutUser(ctx, store.User{Name: "ann", Role: store.RoleAdmin, PasswordHash: "h2"}); err != nil {
		t.Fatal(err)
	}
	u, err := s.User(ctx, "ann")
	if err != nil || u.Role != store.RoleAdmin || u.PasswordHash != "h2" {
		t.Fatalf("user: %+v %v", u, err)
	}
	exp := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	api, err := s.CreateToken(ctx, store.Token{Hash: "h-api", Kind: "api", Name: "ci", Role: store.RoleReadonly, User: "ann"})
	if err != nil {
		t.Fatal(err)
	}
	sess, err := s.CreateToken(ctx, store.Token{Hash: "h-sess", Kind: "session", Role: store.RoleAdmin, User: "ann", Expires: exp})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateToken(ctx, store.Token{Hash: "h-api", Kind: "api"}); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("duplicate hash: %v, want ErrConflict", err)
	}
	if _, err := s.CreateToken(ctx, store.Token{ID: api.ID, Hash: "h-other", Kind: "api"}); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("duplicate id: %v, want ErrConflict", err)
	}
	got, err := s.TokenByHash(ctx, "h-sess")
	if err != nil || got.ID != sess.ID || !got.Expires.Equal(exp) || got.User != "ann" || got.Kind != "session" {
		t.Fatalf("session by hash: %+v %v", got, err)
	}
	list, _ := s.Tokens(ctx)
	if len(list) != 1 || list[0].ID != api.ID || !list[0].Expires.IsZero() {
		t.Fatalf("tokens list (api only): %+v", list)
	}
	// A new password ends the user's sessions, not their API tokens.
	if err := s.ReplaceUser(ctx, store.User{Name: "ann", Role: store.RoleAdmin, PasswordHash: "h3"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.TokenByHash(ctx, "h-sess"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("session after a new password: %v, want ErrNotFound", err)
	}
	if _, err := s.TokenByHash(ctx, "h-api"); err != nil {
		t.Errorf("API token after a new password: %v", err)
	}
	if _, err := s.CreateToken(ctx, store.Token{Hash: "h-sess", Kind: "session", Role: store.RoleAdmin, User: "ann", Expires: exp}); err != nil {
		t.Fatal(err)
	}
	// A boot secret is marked used once: of many callers, one wins.
	boot, err := s.CreateToken(ctx, store.Token{ID: store.BootTokenID("n1"), Hash: "h-boot", Kind: store.TokenBoot, Role: store.RoleAgent, NodeID: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var won, lost atomic.Int32
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			switch err := s.SetTokenKind(ctx, boot.ID, "h-boot", store.TokenBoot, store.TokenBootUsed); {
			case err == nil:
				won.Add(1)
			case errors.Is(err, store.ErrConflict):
				lost.Add(1)
			default:
				t.Errorf("set token kind: %v", err)
			}
		}()
	}
	wg.Wait()
	if won.Load() != 1 || lost.Load() != 7 {
		t.Errorf("set token kind: %d won, %d lost; want 1 and 7", won.Load(), lost.Load())
	}
	if got, err := s.TokenByHash(ctx, "h-boot"); err != nil || got.Kind != store.TokenBootUsed || got.NodeID != "n1" {
		t.Errorf("boot token after use: %+v %v", got, err)
	}
	// A secret replaced since it was read (the node's next boot) is left
	// unused: the mark was for the old one.
	next, err := s.CreateToken(ctx, store.Token{ID: store.BootTokenID("n2"), Hash: "h-next", Kind: store.TokenBoot, Role: store.RoleAgent, NodeID: "n2"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetTokenKind(ctx, next.ID, "h-replaced", store.TokenBoot, store.TokenBootUsed); !errors.Is(err, store.ErrConflict) {
		t.Errorf("mark a replaced secret used: %v, want ErrConflict", err)
	}
	if got, _ := s.TokenByHash(ctx, "h-next"); got.Kind != store.TokenBoot {
		t.Errorf("the newer secret was marked %s", got.Kind)
	}
	if err := s.SetTokenKind(ctx, "no-such-token", "h", store.TokenBoot, store.TokenBootUsed); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("set kind of a missing token: %v, want ErrNotFound", err)
	}
	if err := s.DeleteTokens(ctx, "session", "", "ann"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.TokenByHash(ctx, "h-sess"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("session after logout: %v", err)
	}
	if err := s.DeleteUser(ctx, "ann"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.TokenByHash(ctx, "h-api"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("token of deleted user: %v", err)
	}
	if _, err := s.User(ctx, "ann"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("deleted user: %v", err)
	}
	if err := s.DeleteToken(ctx, api.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("delete gone token: %v", err)
	}
}

// testApply shows a lifecycle step is all or nothing: the move, its
// events and its tasks are stored together, and when any part fails
// (here a task to end that does not exist) the node has not moved, no
// task was queued and no event was written.
func testApply(t *testing.T, open Opener) {
	ctx := context.Background()
	s, _ := open(t)
	a := enroll(t, s, 1, boot.ClientX64UEFI)
	tok, err := s.CreateToken(ctx, store.Token{Hash: "agenthash", Kind: "agent", Role: store.RoleAgent, NodeID: a.ID, NodeState: store.StateDiscovered})
	if err != nil {
		t.Fatal(err)
	}

	// A part fails: nothing of the change is stored.
	_, _, _, err = s.Apply(ctx, store.Change{NodeID: a.ID, From: store.StateDiscovered, To: store.StateInspecting,
		Event:  store.Event{Actor: "user:ann", Kind: "action", Message: "inspect"},
		Also:   []store.Event{{Actor: "user:ann", Kind: "task", Message: "before"}},
		Create: []store.Task{{Kind: "inspect"}},
		Update: []store.Task{{ID: "no-such-task", State: store.TaskFailed}}})
	if !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("change with an unknown task: %v, want ErrNotFound", err)
	}
	if n, _ := s.Node(ctx, a.ID); n.State != store.StateDiscovered {
		t.Errorf("node after a failed change: %s, want discovered", n.State)
	}
	if ts, _ := s.Tasks(ctx, store.TaskFilter{NodeID: a.ID}); len(ts) != 0 {
		t.Errorf("tasks after a failed change: %+v", ts)
	}
	if evs, _ := s.Events(ctx, store.EventFilter{NodeID: a.ID}); len(evs) != 0 {
		t.Errorf("events after a failed change: %+v", evs)
	}
	if _, err := s.TokenByHash(ctx, tok.Hash); err != nil {
		t.Errorf("agent token after a failed change: %v", err)
	}

	// The whole change.
	n, e, created, err := s.Apply(ctx, store.Change{NodeID: a.ID, From: store.StateDiscovered, To: store.StateInspecting,
		Event:  store.Event{Actor: "user:ann", Kind: "action", Message: "inspect"},
		Also:   []store.Event{{Actor: "user:ann", Kind: "task", Message: "before"}},
		Create: []store.Task{{Kind: "inspect", Params: []byte(`{"x":1}`)}}})
	if err != nil {
		t.Fatal(err)
	}
	if n.State != store.StateInspecting || e.To != store.StateInspecting || e.From != store.StateDiscovered || e.Seq == 0 {
		t.Errorf("node %s, event %+v", n.State, e)
	}
	if len(created) != 1 || created[0].ID == "" || created[0].NodeID != a.ID || created[0].State != store.TaskPending {
		t.Fatalf("created = %+v", created)
	}
	if got, err := s.Task(ctx, created[0].ID); err != nil || string(got.Params) != `{"x":1}` {
		t.Errorf("queued task = %+v, %v", got, err)
	}
	evs, _ := s.Events(ctx, store.EventFilter{NodeID: a.ID})
	if len(evs) != 2 || evs[0].Message != "before" || evs[1].Message != "inspect" {
		t.Errorf("events = %+v", evs)
	}
	if _, err := s.TokenByHash(ctx, tok.Hash); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("agent token after its node moved: %v, want ErrNotFound", err)
	}

	// A step that moves nothing keeps the node and its agent's token.
	tok, err = s.CreateToken(ctx, store.Token{Hash: "agenthash2", Kind: "agent", Role: store.RoleAgent, NodeID: a.ID, NodeState: store.StateInspecting})
	if err != nil {
		t.Fatal(err)
	}
	n, e, _, err = s.Apply(ctx, store.Change{NodeID: a.ID, From: store.StateInspecting,
		Event: store.Event{Actor: "user:ann", Kind: "action", Message: "reboot"}, Create: []store.Task{{Kind: "reboot"}}})
	if err != nil || n.State != store.StateInspecting || e.From != store.StateInspecting || e.To != store.StateInspecting {
		t.Fatalf("stay: node %s, event %+v, %v", n.State, e, err)
	}
	if _, err := s.TokenByHash(ctx, tok.Hash); err != nil {
		t.Errorf("agent token after a step that moved nothing: %v", err)
	}

	// Ending a task with the move.
	n, _, _, err = s.Apply(ctx, store.Change{NodeID: a.ID, From: store.StateInspecting, To: store.StateFailed, LastError: "gone",
		Event: store.Event{Actor: "system"}, Update: []store.Task{{ID: created[0].ID, State: store.TaskFailed, Error: "gone"}}})
	if err != nil || n.State != store.StateFailed || n.LastError != "gone" {
		t.Fatalf("to failed: %+v %v", n, err)
	}
	if got, _ := s.Task(ctx, created[0].ID); got.State != store.TaskFailed || got.Error != "gone" {
		t.Errorf("ended task = %+v", got)
	}
	// From a state the node has left: ErrConflict, nothing stored.
	if _, _, _, err := s.Apply(ctx, store.Change{NodeID: a.ID, From: store.StateInspecting, Create: []store.Task{{Kind: "reboot"}}}); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("stale change: %v, want ErrConflict", err)
	}
	if ts, _ := s.Tasks(ctx, store.TaskFilter{NodeID: a.ID}); len(ts) != 2 {
		t.Errorf("%d tasks, want 2 (the stale change queued one?)", len(ts))
	}
}

// testPrune: boot events and audit events older than their cutoffs go,
// across more than one batch; newer ones stay, and so do the events that
// put a node into maintenance. Sequence numbers are never reused.
func testPrune(t *testing.T, open Opener) {
	ctx := context.Background()
	s, _ := open(t)
	a := enroll(t, s, 1, boot.ClientX64UEFI)
	now := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	const old, fresh = 1100, 5
	for i := range old + fresh {
		when := now.Add(-48 * time.Hour).Add(time.Duration(i) * time.Second)
		if i >= old {
			when = now.Add(time.Duration(i) * time.Second)
		}
		if err := s.AddTrace(ctx, a.ID, boot.Event{Time: when, Proto: "tftp", Kind: "file", File: fmt.Sprint("f", i)}); err != nil {
			t.Fatal(err)
		}
		e := store.Event{Time: when, NodeID: a.ID, Actor: "test", Kind: "audit", Message: fmt.Sprint("e", i)}
		if i == 10 {
			e.Kind, e.From, e.To = "action", store.StateAvailable, store.StateMaintenance
		}
		if _, err := s.AddEvent(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	nb, ne, err := s.Prune(ctx, now.Add(-24*time.Hour), now.Add(-24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if nb != old || ne != old-1 {
		t.Errorf("pruned %d boot events and %d events, want %d and %d", nb, ne, old, old-1)
	}
	trace, err := s.Trace(ctx, a.ID, 100000)
	if err != nil || len(trace) != fresh || trace[0].File != fmt.Sprint("f", old) {
		t.Errorf("trace after pruning: %d events (%v), want the %d newest", len(trace), err, fresh)
	}
	evs, err := s.Events(ctx, store.EventFilter{NodeID: a.ID})
	if err != nil || len(evs) != fresh+1 || evs[0].To != store.StateMaintenance || evs[1].Message != fmt.Sprint("e", old) {
		t.Errorf("events after pruning: %d (%v), want the maintenance entry and the %d newest", len(evs), err, fresh)
	}
	// Nothing more to prune, and a zero time prunes nothing.
	if nb, ne, err := s.Prune(ctx, now.Add(-24*time.Hour), time.Time{}); err != nil || nb != 0 || ne != 0 {
		t.Errorf("second prune: %d %d %v", nb, ne, err)
	}
	e, err := s.AddEvent(ctx, store.Event{NodeID: a.ID, Actor: "test", Kind: "audit", Message: "after"})
	if err != nil || e.Seq <= evs[len(evs)-1].Seq {
		t.Errorf("event after pruning: seq %d (%v), want more than %d", e.Seq, err, evs[len(evs)-1].Seq)
	}
}

// testSetOwner: an owner moves only from the owner and the states asked
// for, so two servers handing one node over, or a handover racing an
// action, cannot both win.
func testSetOwner(t *testing.T, open Opener) {
	ctx := context.Background()
	s, _ := open(t)
	n := enroll(t, s, 1, boot.ClientX64UEFI)
	idle := []store.State{store.StateDiscovered, store.StateAvailable, store.StateFailed}
	got, err := s.SetOwner(ctx, n.ID, store.OwnerRackboot, store.OwnerIronic, idle...)
	if err != nil || got.Owner != store.OwnerIronic {
		t.Fatalf("set owner: %+v, %v", got, err)
	}
	// The second of two servers finds it moved.
	if got, err := s.SetOwner(ctx, n.ID, store.OwnerRackboot, store.OwnerIronic, idle...); !errors.Is(err, store.ErrConflict) || got.Owner != store.OwnerIronic {
		t.Errorf("second move: %+v, %v; want ErrConflict", got.Owner, err)
	}
	if _, err := s.SetOwner(ctx, n.ID, store.OwnerIronic, store.OwnerRackboot); err != nil {
		t.Fatal(err)
	}
	// A node an action took meanwhile keeps its owner.
	if err := s.SetState(ctx, n.ID, store.StateDeploying); err != nil {
		t.Fatal(err)
	}
	if got, err := s.SetOwner(ctx, n.ID, store.OwnerRackboot, store.OwnerIronic, idle...); !errors.Is(err, store.ErrConflict) || got.Owner != store.OwnerRackboot {
		t.Errorf("move of a deploying node: %+v, %v; want ErrConflict", got.Owner, err)
	}
	if _, err := s.SetOwner(ctx, "nope", store.OwnerRackboot, store.OwnerIronic); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("unknown node: %v", err)
	}
}

// testLatestTasks: each node's newest ended task of a kind, whatever
// runs or waits after it and whatever other kinds it has, with the
// node's GPU models.
func testLatestTasks(t *testing.T, open Opener) {
	ctx := context.Background()
	s, _ := open(t)
	now := time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC)
	a := enroll(t, s, 1, boot.ClientX64UEFI)
	b := enroll(t, s, 2, boot.ClientX64UEFI)
	c := enroll(t, s, 3, boot.ClientX64UEFI)
	if err := s.SetInventory(ctx, a.ID, json.RawMessage(`{"version":1}`), []string{"NVIDIA H200", "NVIDIA H200"}); err != nil {
		t.Fatal(err)
	}
	add := func(node, kind string, st store.TaskState, at int, result string) store.Task {
		t.Helper()
		task, err := s.CreateTask(ctx, store.Task{NodeID: node, Kind: kind, Created: now.Add(time.Duration(at) * time.Minute)})
		if err != nil {
			t.Fatal(err)
		}
		if st != store.TaskPending {
			task.State, task.Result = st, json.RawMessage(result)
			if err := s.UpdateTask(ctx, task); err != nil {
				t.Fatal(err)
			}
		}
		return task
	}
	add(a.ID, "burnin", store.TaskDone, 0, `{"old":true}`)
	newest := add(a.ID, "burnin", store.TaskFailed, 10, `{"new":true}`)
	add(a.ID, "burnin", store.TaskRunning, 20, `{"progress":1}`)
	add(a.ID, "wipe", store.TaskDone, 30, `{}`)
	onlyB := add(b.ID, "burnin", store.TaskDone, 5, `{"b":1}`)
	add(b.ID, "burnin", store.TaskPending, 50, ``)
	add(c.ID, "inspect", store.TaskDone, 5, `{}`)

	d := enroll(t, s, 4, boot.ClientX64UEFI)
	dReported := add(d.ID, "burnin", store.TaskDone, 0, `{"tests":[{"name":"gpu"}]}`)
	dReaped := add(d.ID, "burnin", store.TaskFailed, 10, `{"phase":"gpu","done":1}`)

	got, err := s.LatestTasks(ctx, "burnin", "")
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, nt := range got {
		ids = append(ids, nt.Node.ID+"="+nt.Task.ID)
	}
	want := []string{a.ID + "=" + newest.ID, b.ID + "=" + onlyB.ID, d.ID + "=" + dReaped.ID}
	slices.Sort(want)
	if !cmp.Equal(ids, want) {
		t.Fatalf("latest burn-ins %v, want %v", ids, want)
	}
	for _, nt := range got {
		if nt.Node.ID != a.ID {
			continue
		}
		if string(nt.Task.Result) != `{"new":true}` || nt.Task.State != store.TaskFailed || nt.Task.Kind != "burnin" ||
			!cmp.Equal(nt.Node.GPUModels, []string{"NVIDIA H200", "NVIDIA H200"}) || nt.Node.State != a.State || !nt.Task.Created.Equal(now.Add(10*time.Minute)) {
			t.Errorf("node a's latest burn-in: %+v", nt)
		}
	}
	// A run failed before it reported (its progress its only result)
	// does not hide the one before it when a result key is asked for.
	keyed, err := s.LatestTasks(ctx, "burnin", "tests")
	if err != nil {
		t.Fatal(err)
	}
	if len(keyed) != 1 || keyed[0].Task.ID != dReported.ID {
		t.Errorf("latest burn-ins with tests: %+v, want only node d's reported run %s", keyed, dReported.ID)
	}
	if none, err := s.LatestTasks(ctx, "deploy", ""); err != nil || len(none) != 0 {
		t.Errorf("no deploy ever: %v %v", none, err)
	}
}
