//go:build integration

package httpboot

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestCurl fetches scripts and a kernel with the real curl client.
func TestCurl(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Fatal("curl not found: apt-get install -y curl")
	}
	dir := t.TempDir()
	kernel := make([]byte, 3<<20+17)
	rand.Read(kernel)
	if err := os.MkdirAll(filepath.Join(dir, "agent"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "agent", "vmlinuz"), kernel, 0o644); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rec := newEvents()
	s := scriptServer(&fakePlanner{})
	s.Artifacts, s.Recorder = dir, rec
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	defer func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve = %v", err)
			}
		case <-time.After(7 * time.Second):
			t.Error("Serve did not return")
		}
	}()
	base := "http://" + ln.Addr().String()

	run := func(t *testing.T, args ...string) []byte {
		t.Helper()
		cmd := exec.Command(curl, append([]string{"--silent", "--show-error", "--fail", "--max-time", "30"}, args...)...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("curl %v: %v: %s", args, err, stderr.String())
		}
		return out
	}

	t.Run("chain script", func(t *testing.T) {
		if got := string(run(t, base+"/boot.ipxe")); got != string(s.ChainScript) {
			t.Errorf("got %q, want %q", got, s.ChainScript)
		}
		rec.next(t)
	})
	t.Run("node script", func(t *testing.T) {
		got := string(run(t, base+"/ipxe/52-54-00-12-34-56?arch=x86_64"))
		if want := "ipxe netboot n-52:54:00:12:34:56 x86_64\n"; got != want {
			t.Errorf("got %q, want %q", got, want)
		}
		if e := rec.next(t); e.MAC.String() != "52:54:00:12:34:56" || !e.Complete {
			t.Errorf("event %+v", e)
		}
	})
	t.Run("ranged kernel", func(t *testing.T) {
		got := run(t, "-r", "0-99", base+"/artifacts/agent/vmlinuz")
		if !bytes.Equal(got, kernel[:100]) {
			t.Errorf("got %d bytes, not the first 100 of the kernel", len(got))
		}
		if e := rec.next(t); e.Bytes != 100 || e.Size != int64(len(kernel)) || !e.Complete || e.Options["range"] != "bytes=0-99" {
			t.Errorf("event %+v", e)
		}
	})
	t.Run("full kernel", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "vmlinuz")
		run(t, "-o", out, base+"/artifacts/agent/vmlinuz")
		got, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		if sha256.Sum256(got) != sha256.Sum256(kernel) {
			t.Errorf("sha256 of the download differs from the kernel (%d of %d bytes)", len(got), len(kernel))
		}
		if e := rec.next(t); e.Bytes != int64(len(kernel)) || !e.Complete {
			t.Errorf("event %+v", e)
		}
	})
	t.Run("refused", func(t *testing.T) {
		cmd := exec.Command(curl, "--silent", "--path-as-is", "-o", "/dev/null", "-w", "%{http_code}", base+"/artifacts/../../../../etc/passwd")
		out, _ := cmd.Output()
		if code := strings.TrimSpace(string(out)); code == "200" {
			t.Errorf("status %s for a path out of the root", code)
		}
	})
}
