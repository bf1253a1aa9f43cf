package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/rackboot/rackboot/agent/protocol"
)

func TestHypervisorFlags(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"--help"}, &stdout, &stderr); !errors.Is(err, flag.ErrHelp) || !strings.Contains(stdout.String(), "hypervisor") {
		t.Errorf("--help: %v, %q", err, stdout.String())
	}
	stdout.Reset()
	if err := run(context.Background(), []string{"hypervisor", "--help"}, &stdout, &stderr); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("hypervisor --help: %v", err)
	}
	for _, f := range []string{"-config", "-token-file", "-state-file", "-root", "-once", "-log-level"} {
		if !strings.Contains(stdout.String(), f) {
			t.Errorf("hypervisor --help does not describe %s:\n%s", f, stdout.String())
		}
	}
	if err := run(context.Background(), []string{"hypervisor", "--log-level", "loud"}, &stdout, &stderr); err == nil || !strings.Contains(err.Error(), "log-level") {
		t.Errorf("bad --log-level: %v", err)
	}
	if err := run(context.Background(), []string{"hypervisor", "extra"}, &stdout, &stderr); !errors.Is(err, errUsage) {
		t.Errorf("stray argument: %v", err)
	}
}

// TestHypervisorOnce: one round against a fake API, on a host with no
// GPU and no NVIDIA driver.
func TestHypervisorOnce(t *testing.T) {
	var mu sync.Mutex
	status := http.StatusOK
	var reports []protocol.HypervisorReport
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if r.URL.Path != "/api/v1/agent/hypervisors/hv1" || r.Header.Get("Authorization") != "Bearer s3cret" {
			t.Errorf("call %s with %q", r.URL.Path, r.Header.Get("Authorization"))
		}
		var rep protocol.HypervisorReport
		if err := json.NewDecoder(r.Body).Decode(&rep); err != nil {
			t.Error(err)
		}
		reports = append(reports, rep)
		w.WriteHeader(status)
		if status != http.StatusOK {
			w.Write([]byte(`{"error":{"code":"token_invalid","message":"revoked"}}`))
			return
		}
		w.Write([]byte(`{"gpu_mode":"passthrough","devices":[],"interval":"20s"}`))
	}))
	defer srv.Close()
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	write := func(p, s string, mode os.FileMode) {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(s), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(root, "proc/stat"), "btime 1772352000\n", 0o644)
	write(filepath.Join(root, "proc/sys/kernel/random/boot_id"), "5f3c1a2e-8d7b-4e6f-9a0c-1b2d3e4f5a6b\n", 0o444)
	if err := os.MkdirAll(filepath.Join(root, "sys/bus/pci/devices"), 0o755); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "hypervisor.conf")
	write(conf, "rackboot.api="+srv.URL+" rackboot.node=hv1\n", 0o644)
	tok := filepath.Join(dir, "hypervisor.token")
	write(tok, "s3cret\n", 0o600)
	args := []string{"hypervisor", "--once", "--config", conf, "--token-file", tok, "--state-file", filepath.Join(dir, "state/hv.json"),
		"--root", root, "--nvidia-smi", filepath.Join(dir, "no-driver/nvidia-smi"), "--log-level", "warn"}
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), args, &stdout, &stderr); err != nil {
		t.Fatal(err, stderr.String())
	}
	var work protocol.HypervisorWork
	if err := json.Unmarshal(stdout.Bytes(), &work); err != nil || work.GPUMode != "passthrough" || work.Interval != protocol.Duration(20e9) {
		t.Errorf("printed %q: %v", stdout.String(), err)
	}
	mu.Lock()
	if len(reports) != 2 || reports[0].Booted.Unix() != 1772352000 || reports[0].BootID != "5f3c1a2e-8d7b-4e6f-9a0c-1b2d3e4f5a6b" || reports[0].GPUs != nil || reports[1].Applied != "passthrough" {
		t.Errorf("reports %+v", reports)
	}

	status = http.StatusForbidden
	mu.Unlock()
	err := run(context.Background(), args, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "refused the hypervisor token") {
		t.Errorf("--once with a refused token = %v", err)
	}

	write(tok, "s3cret\n", 0o644)
	if err := run(context.Background(), args, &stdout, &stderr); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("--once with a token file others read = %v", err)
	}
}
