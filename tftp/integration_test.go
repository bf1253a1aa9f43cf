//go:build integration

package tftp

import (
	"bytes"
	"crypto/sha256"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// need fails the test when a client program is missing.
func need(t *testing.T, prog, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(prog)
	if err != nil {
		t.Fatalf("%s not found: install the Debian package %s (apt-get install -y %s)", prog, pkg, pkg)
	}
	return p
}

// clientFixture serves a random 8 MiB file (big.bin) from a fresh root and
// returns the root, the file's hash and the server's port.
func clientFixture(t *testing.T, s *Server) (root string, sum [32]byte, port string) {
	t.Helper()
	big := randomBytes(8<<20, uint64(time.Now().UnixNano()))
	root = writeTree(t, map[string][]byte{"big.bin": big})
	files, err := NewDir(root)
	if err != nil {
		t.Fatal(err)
	}
	s.Files = files
	addr := startServer(t, s)
	return root, sha256.Sum256(big), strconv.Itoa(int(addr.Port()))
}

func run(t *testing.T, dir, prog string, args ...string) string {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), prog, args...)
	cmd.Dir = dir
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	t.Logf("%s %s: %v\n%s", prog, strings.Join(args, " "), err, out)
	return string(out)
}

func checkSum(t *testing.T, path string, want [32]byte) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := sha256.Sum256(b); !bytes.Equal(got[:], want[:]) {
		t.Errorf("%s: %d bytes, sha256 differs from the served file", path, len(b))
	}
}

// TestTFTPHPAClient fetches with tftp-hpa's client, which speaks plain
// RFC 1350: no options, 512-byte blocks, lock-step.
func TestTFTPHPAClient(t *testing.T) {
	tftp := need(t, "tftp", "tftp-hpa")
	rec := &eventLog{}
	s := &Server{Recorder: rec}
	_, sum, port := clientFixture(t, s)
	work := t.TempDir()

	run(t, work, tftp, "-m", "binary", "127.0.0.1", port, "-c", "get", "big.bin", "got.bin")
	checkSum(t, filepath.Join(work, "got.bin"), sum)
	ev := rec.wait(t, 1)[0]
	if !ev.Complete || ev.BlockSize != 512 || ev.WindowSize != 1 || ev.Bytes != 8<<20 {
		t.Errorf("event %+v", ev)
	}

	// tftp-hpa exits 0 even when refused: the message tells.
	if out := run(t, work, tftp, "-m", "binary", "127.0.0.1", port, "-c", "get", "../etc/passwd", "x"); !strings.Contains(out, "Error code 2: access violation: path outside root") {
		t.Errorf("../ not refused as expected: %q", out)
	}
	if err := os.WriteFile(filepath.Join(work, "up.bin"), []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out := run(t, work, tftp, "-m", "binary", "127.0.0.1", port, "-c", "put", "up.bin", "up.bin"); !strings.Contains(out, "Error code 2: access violation: read-only server") {
		t.Errorf("put not refused as expected: %q", out)
	}
	if out := run(t, work, tftp, "-m", "binary", "127.0.0.1", port, "-c", "get", "nothing.efi", "x"); !strings.Contains(out, "Error code 1: file not found") {
		t.Errorf("missing file not reported: %q", out)
	}
	if st := s.Stats(); st.Completed != 1 || st.Errors != 3 {
		t.Errorf("stats %+v, want 1 complete and 3 errors", st)
	}
}

// TestAtftpClient fetches with atftp, which negotiates blksize, tsize and
// windowsize.
func TestAtftpClient(t *testing.T) {
	atftp := need(t, "atftp", "atftp")
	for _, tc := range []struct{ blksize, window string }{{"1468", "1"}, {"1468", "16"}, {"8192", "4"}, {"512", "64"}} {
		t.Run("blksize "+tc.blksize+" windowsize "+tc.window, func(t *testing.T) {
			rec := &eventLog{}
			s := &Server{Recorder: rec}
			_, sum, port := clientFixture(t, s)
			work := t.TempDir()
			out := run(t, work, atftp, "--option", "blksize "+tc.blksize, "--option", "windowsize "+tc.window,
				"--option", "tsize 0", "-g", "-r", "big.bin", "-l", "got.bin", "127.0.0.1", port)
			checkSum(t, filepath.Join(work, "got.bin"), sum)
			if !strings.Contains(out, "Option windowsize = "+tc.window) {
				t.Errorf("windowsize not acknowledged: %q", out)
			}
			ev := rec.wait(t, 1)[0]
			if !ev.Complete || strconv.Itoa(ev.BlockSize) != tc.blksize || strconv.Itoa(ev.WindowSize) != tc.window {
				t.Errorf("event %+v", ev)
			}
		})
	}
	t.Run("refusals", func(t *testing.T) {
		s := &Server{}
		_, _, port := clientFixture(t, s)
		work := t.TempDir()
		if out := run(t, work, atftp, "-g", "-r", "../etc/passwd", "-l", "x", "127.0.0.1", port); !strings.Contains(out, "access violation: path outside root") {
			t.Errorf("../ not refused as expected: %q", out)
		}
		if err := os.WriteFile(filepath.Join(work, "up.bin"), []byte("data"), 0o644); err != nil {
			t.Fatal(err)
		}
		if out := run(t, work, atftp, "-p", "-l", "up.bin", "-r", "up.bin", "127.0.0.1", port); !strings.Contains(out, "access violation: read-only server") {
			t.Errorf("put not refused as expected: %q", out)
		}
		if st := s.Stats(); st.Completed != 0 || st.Errors != 2 {
			t.Errorf("stats %+v, want no transfer and 2 errors", st)
		}
	})
}
