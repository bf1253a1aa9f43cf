package appliance

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/store"
)

// syscw is how many write system calls this process has made (sendfile
// counts as one write a call, whatever it sends).
func syscw(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		t.Fatalf("per-process I/O accounting: %v", err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "syscw: "); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				t.Fatalf("/proc/self/io: %q: %v", l, err)
			}
			return n
		}
	}
	t.Fatalf("/proc/self/io has no syscw:\n%s", b)
	return 0
}

// TestBigFilesGoOutBySendfile: kernels, initrds and images leave the
// wired appliance (its mux, its boot-HTTP counters, its HTTP server) by
// sendfile. Copied through user space, a 64 MiB file takes at least one
// write(2) per 32 KiB buffer, 2048 of them; sent by sendfile, a few
// dozen calls of up to 4 MiB each. Client and server share the process,
// and the client only reads.
func TestBigFilesGoOutBySendfile(t *testing.T) {
	const size = 64 << 20
	dir := t.TempDir()
	for _, d := range []string{filepath.Join(dir, ArtifactsDir, "x86_64"), filepath.Join(dir, ImagesDir)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{filepath.Join(dir, ArtifactsDir, "x86_64", "big"), filepath.Join(dir, ImagesDir, "big.raw")} {
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Truncate(size); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := OpenStore(ctx, "", dir)
	if err != nil {
		t.Fatal(err)
	}
	err = st.CreateImage(ctx, store.Image{Name: "big", Arch: boot.ArchX86_64, Format: "raw", SHA256: "00", Size: size})
	st.Close()
	if err != nil {
		t.Fatal(err)
	}

	addr := make(chan net.Addr, 1)
	done := make(chan error, 1)
	cfg := Config{DataDir: dir, ServerIP: "127.0.0.1", HTTPAddr: "127.0.0.1:0", TFTPAddr: "127.0.0.1:0", DHCP: DHCPConfig{Mode: DHCPOff}}
	go func() { done <- run(ctx, cfg, nil, hooks{serving: func(a net.Addr) { addr <- a }}) }()
	var base string
	select {
	case a := <-addr:
		base = "http://" + a.String()
	case err := <-done:
		t.Fatalf("appliance: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the appliance did not start in 30s")
	}

	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	for _, path := range []string{"/artifacts/x86_64/big", "/images/big"} {
		t.Run(strings.TrimPrefix(path, "/"), func(t *testing.T) {
			// Image files take a credential; the admin token will do.
			tok, err := os.ReadFile(filepath.Join(dir, TokenFile))
			if err != nil {
				t.Fatal(err)
			}
			req, _ := http.NewRequest("GET", base+path, nil)
			req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
			before := syscw(t)
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			n, err := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			writes := syscw(t) - before
			if err != nil || resp.StatusCode != http.StatusOK || n != size {
				t.Fatalf("GET %s: %s, %d bytes, %v; want 200 and %d bytes", path, resp.Status, n, err, size)
			}
			if limit := int64(size / (128 << 10)); writes > limit {
				t.Errorf("GET %s: %d write system calls for %d MiB, more than %d: the file was copied through user space, not sent by sendfile",
					path, writes, size>>20, limit)
			} else {
				t.Logf("GET %s: %d write system calls for %d MiB", path, writes, size>>20)
			}
		})
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("appliance: %v", err)
	}
}
