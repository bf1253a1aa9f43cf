package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/rackboot/rackboot/agent/burnin"
	"github.com/rackboot/rackboot/api"
	"github.com/rackboot/rackboot/appliance"
	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/store"
	"github.com/rackboot/rackboot/store/sqlite"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// TestGPUCommands: gpu list (all, --below, --model) and node show's GPU
// lines against a server with five burned-in H100 nodes, one card slow.
func TestGPUCommands(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := sqlite.Open(ctx, filepath.Join(dir, "db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ended := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	for i := 0; i < 5; i++ {
		mac, _ := net.ParseMAC(fmt.Sprintf("52:54:00:cc:00:%02x", i))
		n, _, _ := st.EnrollClient(ctx, boot.Client{MAC: mac, Arch: boot.ClientX64UEFI}, ended)
		st.UpdateNode(ctx, n.ID, store.NodePatch{Name: ptrTo(fmt.Sprintf("hgx-%02d", i))})
		st.SetInventory(ctx, n.ID, json.RawMessage(`{}`), []string{"NVIDIA H100 80GB HBM3", "NVIDIA H100 80GB HBM3"})
		figs := map[string]float64{"gpus_seen": 2}
		for g := 0; g < 2; g++ {
			tf, bw := 50.0+float64(i)/10, 2900.0+float64(g)
			if i == 3 && g == 1 {
				bw = 2100
			}
			figs[fmt.Sprintf("gpu%d_tflops", g)], figs[fmt.Sprintf("gpu%d_memory_gbps", g)] = tf, bw
		}
		res, _ := json.Marshal(burnin.Result{Verdict: burnin.VerdictPassed, Passed: true,
			Tests: []burnin.Test{{Name: "gpu", Outcome: burnin.Passed, Reason: "2 GPUs loaded for 10m0s", Figures: figs}}})
		task, _ := st.CreateTask(ctx, store.Task{NodeID: n.ID, Kind: "burnin", Created: ended.Add(-time.Hour)})
		task.State, task.Result, task.Updated = store.TaskDone, res, ended
		if err := st.UpdateTask(ctx, task); err != nil {
			t.Fatal(err)
		}
	}
	if err := appliance.SetBootstrapToken(ctx, st, dir, "boot-tok"); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api.New(st).Handler())
	defer srv.Close()
	t.Setenv("HOME", dir)
	t.Setenv("RACKBOOT_CONFIG", "")
	t.Setenv("RACKBOOT_SERVER", srv.URL)
	t.Setenv("RACKBOOT_TOKEN", "boot-tok")
	cli := func(args ...string) string {
		t.Helper()
		var out, errb bytes.Buffer
		if err := run(ctx, args, &out, &errb); err != nil {
			t.Fatalf("rackboot %s: %v\n%s", strings.Join(args, " "), err, errb.String())
		}
		return out.String()
	}
	for _, tc := range []struct {
		golden string
		args   []string
	}{
		{"gpu-list.txt", []string{"gpu", "list"}},
		{"gpu-list-below.txt", []string{"gpu", "list", "--below"}},
		{"gpu-list-t4.txt", []string{"gpu", "list", "--model", "Tesla T4"}},
	} {
		t.Run(tc.golden, func(t *testing.T) {
			got := cli(tc.args...)
			path := filepath.Join("testdata", tc.golden)
			if *update {
				os.MkdirAll("testdata", 0o755)
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to write it)", err)
			}
			if d := cmp.Diff(string(want), got); d != "" {
				t.Errorf("rackboot %s (-want +got):\n%s", strings.Join(tc.args, " "), d)
			}
		})
	}
	show := cli("node", "show", "hgx-03")
	for _, want := range []string{"GPU burn-in:", "GPU 0:", "GPU 1:", "Below peers: memory bandwidth 2100 GB/s is 72% of its 9 peers' median 2900 GB/s", "BELOW"} {
		if !strings.Contains(show, want) {
			t.Errorf("node show hgx-03 lacks %q:\n%s", want, show)
		}
	}
	var l api.GPUList
	if err := json.Unmarshal([]byte(cli("gpu", "list", "--below", "--output", "json")), &l); err != nil || len(l.Items) != 1 || l.Items[0].NodeName != "hgx-03" {
		t.Errorf("gpu list --below --output json: %+v %v", l, err)
	}
}
