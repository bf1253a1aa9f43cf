package burnin

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func fakeRoot(t *testing.T, availKB int) string {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "proc"), 0o755)
	os.WriteFile(filepath.Join(root, "proc", "meminfo"), []byte("MemTotal:       16000000 kB\nMemFree:  100 kB\nMemAvailable:   "+strconv.Itoa(availKB)+" kB\n"), 0o644)
	return root
}

func TestRun(t *testing.T) {
	disk := filepath.Join(t.TempDir(), "disk")
	os.WriteFile(disk, make([]byte, 80<<20), 0o644)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(bytes.Repeat([]byte("x"), 1<<20))
	}))
	defer srv.Close()
	t.Setenv("PATH", t.TempDir()) // no nvidia-smi here
	res, err := Run(context.Background(), Params{Duration: 400 * time.Millisecond, Disks: []string{disk}, NetURL: srv.URL,
		Root: fakeRoot(t, 64<<10), MemoryFraction: 0.5})
	if err != nil || !res.Passed {
		t.Fatalf("%v %+v", err, res)
	}
	got := map[string]Test{}
	for _, tt := range res.Tests {
		got[strings.Fields(tt.Name)[0]] = tt
	}
	if got["cpu"].Outcome != Passed || got["cpu"].Figures["mb_hashed_per_s"] <= 0 {
		t.Errorf("cpu: %+v", got["cpu"])
	}
	if m := got["memory"]; m.Outcome != Passed || m.Figures["bytes_tested"] != 32<<20 || m.Figures["passes"] < 1 {
		t.Errorf("memory: %+v", m)
	}
	if d := got["disk"]; d.Outcome != Passed || d.Figures["bytes"] < 64<<20 || d.Figures["read_mb_per_s"] <= 0 {
		t.Errorf("disk: %+v", d)
	}
	if n := got["network"]; n.Outcome != Passed || n.Figures["bytes"] < 1<<20 {
		t.Errorf("network: %+v", n)
	}
	// No nvidia-smi: the GPU test did not run, and did not pass.
	if g := got["gpu"]; g.Outcome != NotRun || !strings.Contains(g.Reason, "nvidia-smi") {
		t.Errorf("gpu: %+v", g)
	}
}

func TestFailures(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	defer srv.Close()
	res, err := Run(context.Background(), Params{Duration: 100 * time.Millisecond, Disks: []string{"/nonexistent/disk"}, NetURL: srv.URL,
		Root: fakeRoot(t, 1<<10)})
	if err == nil || res.Passed {
		t.Fatalf("a burn-in with a missing disk and a failing network passed: %+v", res)
	}
	if !strings.Contains(err.Error(), "disk /nonexistent/disk") || !strings.Contains(err.Error(), "network") {
		t.Errorf("err = %v", err)
	}
	if _, err := Memory(context.Background(), t.TempDir(), 0.5, 0); err == nil {
		t.Error("memory test without /proc/meminfo: no error")
	}
}
