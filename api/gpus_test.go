package api

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/rackboot/rackboot/agent/burnin"
	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/gpufleet"
	"github.com/rackboot/rackboot/store"
	"github.com/rackboot/rackboot/store/sqlite"
)

// burnedIn stores an ended burn-in of node id that ended at at, its GPU
// test's figures per card (TFLOP/s, GB/s), as the agent reports one.
func burnedIn(t *testing.T, st store.Store, id string, at time.Time, st8 store.TaskState, cards ...[2]float64) store.Task {
	t.Helper()
	ctx := context.Background()
	figs := map[string]float64{"gpus_seen": float64(len(cards))}
	for i, c := range cards {
		figs[fmt.Sprintf("gpu%d_tflops", i)] = c[0]
		figs[fmt.Sprintf("gpu%d_memory_gbps", i)] = c[1]
		figs[fmt.Sprintf("gpu%d_max_temperature_c", i)] = 70
	}
	res, _ := json.Marshal(burnin.Result{Verdict: burnin.VerdictPassed, Passed: true, Tests: []burnin.Test{
		{Name: "gpu", Outcome: burnin.Passed, Reason: fmt.Sprintf("%d GPUs loaded", len(cards)), Figures: figs}}})
	task, err := st.CreateTask(ctx, store.Task{NodeID: id, Kind: "burnin", Created: at.Add(-time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	task.State, task.Updated = st8, at
	if st8 != store.TaskRunning {
		task.Result = res
	}
	if err := st.UpdateTask(ctx, task); err != nil {
		t.Fatal(err)
	}
	return task
}

func TestGPUComparison(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	const model = "NVIDIA A100-SXM4-40GB"
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	var peers []string
	for i := 0; i < 4; i++ {
		mac, _ := net.ParseMAC(fmt.Sprintf("52:54:00:aa:00:%02x", i))
		n, _, err := f.st.EnrollClient(ctx, boot.Client{MAC: mac, Arch: boot.ClientX64UEFI}, now)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.st.SetInventory(ctx, n.ID, json.RawMessage(`{"version":1}`), []string{model}); err != nil {
			t.Fatal(err)
		}
		burnedIn(t, f.st, n.ID, now, store.TaskDone, [2]float64{100 + float64(i), 1500})
		peers = append(peers, n.ID)
	}
	// gpu-01 was fast once, is slow now, and burns in again.
	burnedIn(t, f.st, f.node.ID, now.Add(-48*time.Hour), store.TaskDone, [2]float64{101, 1500})
	slow := burnedIn(t, f.st, f.node.ID, now.Add(time.Hour), store.TaskFailed, [2]float64{70, 1490})
	burnedIn(t, f.st, f.node.ID, now.Add(3*time.Hour), store.TaskRunning)
	// A node with GPUs that was never burned in.
	mac, _ := net.ParseMAC("52:54:00:bb:00:01")
	fresh, _, _ := f.st.EnrollClient(ctx, boot.Client{MAC: mac, Arch: boot.ClientX64UEFI}, now)
	f.st.SetInventory(ctx, fresh.ID, json.RawMessage(`{"version":1}`), []string{model})

	ro := f.tokens[store.RoleReadonly]
	code, body := f.call(t, nil, "GET", "/api/v1/nodes/gpu-01/gpus", ro, "")
	if code != http.StatusOK {
		t.Fatalf("node gpus: %d %s", code, body)
	}
	var ng NodeGPUs
	if err := json.Unmarshal(body, &ng); err != nil {
		t.Fatal(err)
	}
	if ng.Node != f.node.ID || ng.Task != slow.ID || len(ng.Cards) != 1 || ng.Comparison != (gpufleet.Options{Threshold: 0.9, MinPeers: 3}) {
		t.Fatalf("node gpus: %s", body)
	}
	c := ng.Cards[0]
	// The peers are the four other nodes' cards: gpu-01's own older
	// burn-in is no peer of it.
	if c.Verdict != gpufleet.Below || c.Model != model || c.TFLOPS.Peers != 4 || c.TFLOPS.PeerMedian != 101.5 || *c.TFLOPS.Value != 70 || c.MemoryGBps.Below {
		t.Errorf("gpu-01's card: %s", body)
	}

	code, body = f.call(t, nil, "GET", "/api/v1/gpus?below=true", ro, "")
	var list GPUList
	if code != http.StatusOK || json.Unmarshal(body, &list) != nil {
		t.Fatalf("below: %d %s", code, body)
	}
	if len(list.Items) != 1 || list.Items[0].Node != f.node.ID || list.Items[0].NodeName != "gpu-01" || list.Burnins != 5 {
		t.Errorf("cards below their peers: %s", body)
	}
	code, body = f.call(t, nil, "GET", "/api/v1/gpus", ro, "")
	if json.Unmarshal(body, &list); code != http.StatusOK || len(list.Items) != 5 {
		t.Errorf("every card: %d %s", code, body)
	}
	for _, c := range list.Items {
		if c.Node != f.node.ID && c.Verdict != gpufleet.OK {
			t.Errorf("peer %s: %s (%s)", c.Node, c.Verdict, c.Reason)
		}
	}
	code, body = f.call(t, nil, "GET", "/api/v1/gpus?model=Tesla+T4", ro, "")
	if json.Unmarshal(body, &list); code != http.StatusOK || len(list.Items) != 0 {
		t.Errorf("no T4: %d %s", code, body)
	}
	if code, body = f.call(t, nil, "GET", "/api/v1/gpus?below=maybe", ro, ""); code != http.StatusBadRequest {
		t.Errorf("below=maybe: %d %s", code, body)
	}

	code, body = f.call(t, nil, "GET", "/api/v1/nodes/"+fresh.ID+"/gpus", ro, "")
	if json.Unmarshal(body, &ng); code != http.StatusOK || len(ng.Cards) != 0 || ng.Task != "" || ng.Reason != "no burn-in of this node has ended" {
		t.Errorf("never burned in: %d %s", code, body)
	}
	if code, _ = f.call(t, nil, "GET", "/api/v1/nodes/nope/gpus", ro, ""); code != http.StatusNotFound {
		t.Errorf("unknown node: %d", code)
	}

	// A stricter setting of the server's makes a peer below too.
	f.api.GPUPeers = gpufleet.Options{Threshold: 0.99}
	code, body = f.call(t, nil, "GET", "/api/v1/gpus?below=true", ro, "")
	if json.Unmarshal(body, &list); code != http.StatusOK || len(list.Items) != 2 || list.Comparison.Threshold != 0.99 {
		t.Errorf("at 99%%: %d %s", code, body)
	}
}

// BenchmarkGPUsBelow10k: the fleet view over 10,000 GPU nodes of eight
// H100s each, every node with its latest burn-in and an older one: one
// node in fifty has a card at 80% of its peers' TFLOP/s. The rows are
// written straight into the SQLite file, in one transaction: through the
// store, one commit each, seeding alone takes minutes.
func BenchmarkGPUsBelow10k(b *testing.B) {
	const nodes = 10000
	ctx := context.Background()
	path := filepath.Join(b.TempDir(), "db")
	st, err := sqlite.Open(ctx, path)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	secret, hash := NewSecret()
	if _, err := st.CreateToken(ctx, store.Token{Hash: hash, Kind: "api", Role: store.RoleReadonly}); err != nil {
		b.Fatal(err)
	}
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		b.Fatal(err)
	}
	models, _ := json.Marshal([]string{"NVIDIA H100 80GB HBM3", "NVIDIA H100 80GB HBM3", "NVIDIA H100 80GB HBM3", "NVIDIA H100 80GB HBM3",
		"NVIDIA H100 80GB HBM3", "NVIDIA H100 80GB HBM3", "NVIDIA H100 80GB HBM3", "NVIDIA H100 80GB HBM3"})
	result := func(slow bool) []byte {
		figs := map[string]float64{"gpus_seen": 8}
		for g := 0; g < 8; g++ {
			figs[fmt.Sprintf("gpu%d_tflops", g)] = 51 + float64(g)/10
			figs[fmt.Sprintf("gpu%d_memory_gbps", g)] = 2940
			figs[fmt.Sprintf("gpu%d_max_temperature_c", g)] = 74
			figs[fmt.Sprintf("gpu%d_min_sm_clock_mhz", g)] = 1755
			figs[fmt.Sprintf("gpu%d_throttle_reasons", g)] = 0
		}
		if slow {
			figs["gpu3_tflops"] = 41
		}
		r, _ := json.Marshal(burnin.Result{Verdict: burnin.VerdictPassed, Passed: true, Tests: []burnin.Test{
			{Name: "cpu", Outcome: burnin.Passed, Figures: map[string]float64{"cpus": 128, "mb_hashed_per_s": 51234}},
			{Name: "gpu", Outcome: burnin.Passed, Reason: "8 GPUs loaded for 7m30s: every result right, no ECC error", Figures: figs}}})
		return r
	}
	fast, slow := result(false), result(true)
	now := time.Now().UnixNano()
	for i := 0; i < nodes; i++ {
		id := fmt.Sprintf("node-%05d", i)
		if _, err := tx.ExecContext(ctx, `INSERT INTO nodes (id, name, state, first_seen, last_seen, kind, rack, tags, owner, gpu_models)
			VALUES (?, ?, 'available', ?, ?, 'metal', 'R1', '[]', 'rackboot', ?)`, id, fmt.Sprintf("hgx-%05d", i), now, now, string(models)); err != nil {
			b.Fatal(err)
		}
		latest := fast
		if i%50 == 7 {
			latest = slow
		}
		for j, res := range [][]byte{slow, latest} {
			if _, err := tx.ExecContext(ctx, `INSERT INTO tasks (id, node_id, kind, state, params, result, error, created, updated)
				VALUES (?, ?, 'burnin', 'done', NULL, ?, '', ?, ?)`, fmt.Sprintf("%s-t%d", id, j), id, res, now+int64(j), now+int64(j)); err != nil {
				b.Fatal(err)
			}
		}
	}
	if err := tx.Commit(); err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(New(st).Handler())
	defer srv.Close()
	b.Logf("seeded %d nodes", nodes)
	b.ResetTimer()
	for b.Loop() {
		req, _ := http.NewRequest("GET", srv.URL+"/api/v1/gpus?below=true", nil)
		req.Header.Set("Authorization", "Bearer "+secret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		var list GPUList
		err = json.NewDecoder(resp.Body).Decode(&list)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK || list.Burnins != nodes || len(list.Items) != nodes/50 {
			b.Fatalf("%d: %d burn-ins, %d below, %v", resp.StatusCode, list.Burnins, len(list.Items), err)
		}
	}
}
