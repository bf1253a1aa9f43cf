package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestUsage(t *testing.T) {
	tests := []struct {
		args    []string
		usage   bool // a usage error (exit 2)
		help    bool
		stdout  string
		errText string
	}{
		{args: nil, usage: true, errText: "no command"},
		{args: []string{"frobnicate"}, usage: true, errText: `unknown command "frobnicate"`},
		{args: []string{"help"}, stdout: "rackboot serve"},
		{args: []string{"version"}, stdout: "rackboot dev"},
		{args: []string{"serve", "-h"}, help: true},
		{args: []string{"serve", "extra"}, usage: true, errText: "unexpected argument"},
		{args: []string{"serve", "--log-level", "loud", "--server-ip", "10.0.0.1", "--dhcp-mode", "off"}, usage: true, errText: "--log-level"},
		{args: []string{"serve", "--dhcp-mode", "rogue", "--server-ip", "10.0.0.1"}, errText: "want authoritative, proxy or off"},
		{args: []string{"firmware"}, usage: true, errText: "want fetch or verify"},
		{args: []string{"backup"}, usage: true, errText: "backup FILE"},
		{args: []string{"restore", "a", "b"}, usage: true, errText: "restore FILE"},
		{args: []string{"node"}, usage: true, errText: "want list, add, show, inventory, trace, events, set, delete"},
		{args: []string{"node", "show"}, usage: true, errText: "which node?"},
		{args: []string{"node", "set", "n1"}, usage: true, errText: "nothing to set"},
		{args: []string{"node", "wobble", "n1", "--server", "http://127.0.0.1:1"}, usage: true, errText: "unknown command"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), tt.args, &stdout, &stderr)
			var u usageError
			switch {
			case tt.help:
				if !errors.Is(err, flag.ErrHelp) || !strings.Contains(stderr.String(), "Usage: rackboot serve") {
					t.Errorf("err %v, stderr %q", err, stderr.String())
				}
				return
			case tt.errText == "":
				if err != nil {
					t.Fatalf("err %v", err)
				}
			case err == nil || !strings.Contains(err.Error(), tt.errText):
				t.Fatalf("err %v, want %q", err, tt.errText)
			}
			if errors.As(err, &u) != tt.usage {
				t.Errorf("usage error = %v, want %v (%v)", errors.As(err, &u), tt.usage, err)
			}
			if !strings.Contains(stdout.String(), tt.stdout) {
				t.Errorf("stdout %q, want %q", stdout.String(), tt.stdout)
			}
		})
	}
}

// TestClientToken checks the CLI sends the admin token from the data dir
// and reports the API's error text.
func TestClientToken(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "admin.token"), []byte("tok123\n"), 0o600)
	var got string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Header.Get("Authorization")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		w.Write([]byte(`{"error":{"code":"not_found","message":"node \"x\": not found"}}`))
	}))
	defer srv.Close()
	t.Setenv("RACKBOOT_TOKEN", "")
	t.Setenv("RACKBOOT_SERVER", "")
	t.Setenv("RACKBOOT_CONFIG", filepath.Join(dir, "none.yaml"))
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"node", "show", "x", "--server", srv.URL, "--data-dir", dir}, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), `client config`) {
		t.Errorf("a missing RACKBOOT_CONFIG file: err %v", err)
	}
	t.Setenv("RACKBOOT_CONFIG", "")
	t.Setenv("HOME", dir)
	err = run(context.Background(), []string{"node", "show", "x", "--server", srv.URL, "--data-dir", dir}, &stdout, &stderr)
	if got != "Bearer tok123" {
		t.Errorf("Authorization %q", got)
	}
	if err == nil || !strings.Contains(err.Error(), `node "x": not found (404 not_found)`) {
		t.Errorf("err %v", err)
	}
}
