package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRun(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"--help"}, &stdout, &stderr); !errors.Is(err, flag.ErrHelp) || !strings.Contains(stdout.String(), "inventory") {
		t.Errorf("--help: %v, %q", err, stdout.String())
	}
	if err := run(context.Background(), []string{"bogus"}, &stdout, &stderr); !errors.Is(err, errUsage) {
		t.Errorf("unknown command: %v", err)
	}
	stdout.Reset()
	err := run(context.Background(), []string{"inventory", "--root", "../../agent/inventory/testdata/t4", "--pci-ids", "../../agent/inventory/testdata/pci.ids"}, &stdout, &stderr)
	if err != nil {
		t.Fatal(err, stderr.String())
	}
	var inv struct {
		Version int `json:"version"`
		GPUs    []struct {
			Model string `json:"model"`
		} `json:"gpus"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &inv); err != nil || inv.Version != 1 || len(inv.GPUs) != 1 || inv.GPUs[0].Model != "Tesla T4" {
		t.Errorf("inventory: %v %+v", err, inv)
	}
}

func TestReadCmdline(t *testing.T) {
	dir := t.TempDir()
	n := 0
	write := func(s string) string {
		n++
		p := filepath.Join(dir, fmt.Sprint("cmdline", n))
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name     string
		o        runOptions
		api, nid string
		err      string
	}{
		{"kernel", runOptions{cmdline: write("console=ttyS0 rackboot.api=http://10.0.0.1:8080 rackboot.node=n1\n")}, "http://10.0.0.1:8080/api/v1", "n1", ""},
		{"flags win", runOptions{cmdline: write("rackboot.api=http://a/ rackboot.node=n1"), api: "http://b:1", node: "n2"}, "http://b:1/api/v1", "n2", ""},
		{"no file, flags", runOptions{cmdline: filepath.Join(dir, "missing"), api: "http://b:1/api/v1"}, "http://b:1/api/v1", "", ""},
		{"no file", runOptions{cmdline: filepath.Join(dir, "missing")}, "", "", "read kernel command line"},
		{"no api", runOptions{cmdline: write("console=ttyS0 quiet")}, "", "", "no rackboot.api"},
		{"file url", runOptions{cmdline: write("rackboot.api=file:///etc/passwd")}, "", "", "not an http(s) URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := readCmdline(tt.o)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil || c.API != tt.api || c.Node != tt.nid {
				t.Errorf("got %+v %v, want %s %s", c, err, tt.api, tt.nid)
			}
		})
	}
}

func TestRunFlags(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"run", "--help"}, &stdout, &stderr); !errors.Is(err, flag.ErrHelp) || !strings.Contains(stdout.String(), "-api") {
		t.Errorf("run --help: %v, %q", err, stdout.String())
	}
	if err := run(context.Background(), []string{"run", "--log-level", "loud"}, &stdout, &stderr); err == nil || !strings.Contains(err.Error(), "log-level") {
		t.Errorf("bad --log-level: %v", err)
	}
	if err := run(context.Background(), []string{"run", "extra"}, &stdout, &stderr); !errors.Is(err, errUsage) {
		t.Errorf("stray argument: %v", err)
	}
}
