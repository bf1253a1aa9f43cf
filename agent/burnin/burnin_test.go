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
	// No GPUs, no nvidia-smi: nothing to test there, and a pass.
	if g := got["gpu"]; g.Outcome != NotRun || res.Verdict != VerdictPassed {
		t.Errorf("gpu: %+v, verdict %s", g, res.Verdict)
	}
}

// fakeSMI puts an nvidia-smi on PATH that prints out for the GPU query.
func fakeSMI(t *testing.T, out string) {
	dir := t.TempDir()
	script := "#!/bin/sh\ncase \"$*\" in *--query-gpu=*) printf '%s' \"" + out + "\" ;; *) exit 2 ;; esac\n"
	if err := os.WriteFile(filepath.Join(dir, "nvidia-smi"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir)
}

// TestGPUVerdicts: a GPU node is never passed without its GPUs tested;
// a driver that reports ECC errors, pages to retire or fewer GPUs than
// the node has fails it.
func TestGPUVerdicts(t *testing.T) {
	root := fakeRoot(t, 64<<10)
	healthy := "0, 00000000:19:00.0, 41, 1980, 2619, 16, 16, 0x0000000000000001, 0, No, No\n1, 00000000:9B:00.0, 43, 1980, 2619, 16, 16, 0x0000000000000001, 0, No, No\n"
	for _, c := range []struct {
		name, smi string // smi "" for none on PATH
		gpus      int
		verdict   string
		reason    string
	}{
		{"driverless GPU node", "", 2, VerdictIncomplete, "no NVIDIA driver"},
		{"healthy but not loaded", healthy, 2, VerdictIncomplete, "not loaded: no rackboot-gpuburn on PATH or beside"},
		{"ECC errors", "0, 00000000:19:00.0, 41, 1980, 2619, 16, 16, 0x0, 3, No, No\n1, 00000000:9B:00.0, 43, 1980, 2619, 16, 16, 0x0, 0, No, No\n", 2, VerdictFailed, "GPU 0 (00000000:19:00.0): 3 uncorrected ECC errors"},
		{"pages to retire", "0, 00000000:19:00.0, 41, 1980, 2619, 16, 16, 0x0, 0, Yes, No\n1, 00000000:9B:00.0, 43, 1980, 2619, 16, 16, 0x0, 0, No, No\n", 2, VerdictFailed, "retirement"},
		{"a GPU gone", "0, 00000000:19:00.0, 41, 1980, 2619, 16, 16, 0x0, 0, No, No\n", 2, VerdictFailed, "sees 1 of the node's 2 GPUs"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.smi == "" {
				t.Setenv("PATH", t.TempDir())
			} else {
				fakeSMI(t, c.smi)
			}
			res, err := Run(context.Background(), Params{Duration: 40 * time.Millisecond, Root: root, MemoryFraction: 0.5, GPUs: c.gpus})
			if res.Verdict != c.verdict || res.Passed || (c.verdict == VerdictFailed) != (err != nil) {
				t.Fatalf("verdict %s passed %v err %v, want %s: %+v", res.Verdict, res.Passed, err, c.verdict, res)
			}
			why := strings.Join(res.Untested, "; ")
			if err != nil {
				why = err.Error()
			}
			if !strings.Contains(why, c.reason) {
				t.Errorf("reason %q, want %q", why, c.reason)
			}
		})
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
