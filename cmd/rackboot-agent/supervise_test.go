package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rackboot/rackboot/agent/protocol"
	"github.com/rackboot/rackboot/internal/syncbuf"
)

// The supervisor starts this test binary as its agent; with this set it
// is rackboot-agent.
const asMain = "RACKBOOT_AGENT_TEST_AS_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(asMain) == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestSupervise: the agent killed (SIGKILL, as the OOM killer does) is
// started again by its supervisor, and the new one carries on with the
// token the first one kept: one lookup, heartbeats with that token from
// both lives. The supervisor's end ends the agent too.
func TestSupervise(t *testing.T) {
	t.Setenv(asMain, "1")
	var lookups atomic.Int32
	beats := make(chan string, 1000)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasSuffix(r.URL.Path, "/lookup"):
			lookups.Add(1)
			json.NewEncoder(w).Encode(protocol.LookupResult{NodeID: "n1", Token: "t1", Heartbeat: protocol.Duration(20 * time.Millisecond)})
		case strings.HasSuffix(r.URL.Path, "/heartbeat"):
			beats <- r.Header.Get("Authorization")
			json.NewEncoder(w).Encode(protocol.HeartbeatResult{State: "available"})
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	dir := t.TempDir()
	cmdline := filepath.Join(dir, "cmdline")
	os.WriteFile(cmdline, []byte("rackboot.api="+srv.URL+"/api/v1 rackboot.node=n1 rackboot.boot=s3cret"), 0o644)
	var out syncbuf.Buffer
	children := make(chan *os.Process, 10)
	o := runOptions{supervise: true, keep: filepath.Join(dir, "keep", "token"), proc: filepath.Join(dir, "proc"),
		args:    []string{"--cmdline", cmdline, "--keep", filepath.Join(dir, "keep", "token"), "--reboot=false"},
		started: func(p *os.Process) { children <- p }}
	ctx, cancel := context.WithCancel(context.Background())
	ended := make(chan error, 1)
	go func() { ended <- supervise(ctx, o, slog.New(slog.DiscardHandler), &out, &out) }()
	defer func() {
		cancel()
		<-ended
	}()
	beat := func(life string) {
		t.Helper()
		select {
		case tok := <-beats:
			if tok != "Bearer t1" {
				t.Fatalf("%s agent's heartbeat with %q, want the token t1", life, tok)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("no heartbeat from the %s agent; output:\n%s", life, out.String())
		}
	}
	first := <-children
	beat("first")
	first.Signal(syscall.SIGKILL)
	select {
	case <-children:
	case <-time.After(10 * time.Second):
		t.Fatalf("the killed agent was not started again; output:\n%s", out.String())
	}
	for len(beats) > 0 {
		<-beats // the first one's, sent before the kill
	}
	beat("second")
	if n := lookups.Load(); n != 1 {
		t.Fatalf("%d lookups: the agent started again looked the node up instead of carrying on with the kept token", n)
	}
	if !strings.Contains(out.String(), "the agent ended (signal: killed)") {
		t.Errorf("the supervisor did not say the agent was killed; output:\n%s", out.String())
	}
	cancel()
	select {
	case err := <-ended:
		if err != nil {
			t.Errorf("supervise: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the supervisor did not end with its context")
	}
	ended <- nil // for the deferred end
}
