//go:build integration

package ipxe

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rackboot/rackboot/boot"
)

// TestIPXEFollowsScripts boots a QEMU guest whose NIC ROM is iPXE and
// checks that real iPXE reads the chain script and the node script as
// meant: it names itself by MAC and build architecture, fetches the kernel
// and both initrds (one by an absolute path), and when the boot fails (the
// "kernel" is a script that exits with an error) retries instead of
// stopping at a prompt. The guest reaches the host through QEMU's user
// networking, which connects to 127.0.0.1.
func TestIPXEFollowsScripts(t *testing.T) {
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Fatal("qemu-system-x86_64 not found: apt-get install -y qemu-system-x86 ipxe-qemu")
	}
	if _, err := os.Stat("/usr/share/qemu/pxe-virtio.rom"); err != nil {
		if _, err := os.Stat("/usr/lib/ipxe/qemu/efi-virtio.rom"); err != nil {
			t.Fatal("iPXE NIC ROMs not found: apt-get install -y ipxe-qemu")
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	guestBase := fmt.Sprintf("http://10.0.2.2:%d", ln.Addr().(*net.TCPAddr).Port)

	var mu sync.Mutex
	var requests []string
	kernelFetched := make(chan struct{}, 10)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /boot.ipxe", func(w http.ResponseWriter, r *http.Request) {
		w.Write(Chain(guestBase))
	})
	mux.HandleFunc("GET /ipxe/{mac}", func(w http.ResponseWriter, r *http.Request) {
		b, err := Script(boot.Plan{
			Action: boot.ActionNetboot, Node: "n-1", Hostname: "evil${x}\nshell",
			Kernel:  guestBase + "/a/vmlinuz",
			Initrds: []string{guestBase + "/a/one.cpio", "/a/two.cpio"},
			Cmdline: "console=ttyS0 quiet",
		})
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		w.Write(b)
	})
	mux.HandleFunc("GET /a/{name}", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("name") != "vmlinuz" {
			w.Write([]byte("initrd\n"))
			return
		}
		// A "kernel" that iPXE accepts and whose boot fails at once: a
		// script that exits with an error.
		w.Write([]byte("#!ipxe\nexit 1\n"))
		kernelFetched <- struct{}{}
	})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		requests = append(requests, r.URL.RequestURI())
		mu.Unlock()
		mux.ServeHTTP(w, r)
	})}
	go srv.Serve(ln)
	defer srv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, qemu, "-accel", "tcg", "-M", "pc", "-m", "256", "-nographic", "-no-reboot",
		"-netdev", "user,id=n0,bootfile="+guestBase+"/boot.ipxe",
		"-device", "virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56",
		"-boot", "n")
	logPath := filepath.Join(t.TempDir(), "console.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	for i := 0; i < 2; i++ {
		select {
		case <-kernelFetched:
		case <-ctx.Done():
			mu.Lock()
			defer mu.Unlock()
			t.Fatalf("iPXE fetched the kernel %d times, want 2 (a retry); requests %q; console:\n%s", i, requests, readTail(logPath))
		}
	}
	mu.Lock()
	defer mu.Unlock()
	want := []string{
		"/boot.ipxe",
		"/ipxe/52-54-00-12-34-56?arch=i386",
		"/a/vmlinuz", "/a/one.cpio", "/a/two.cpio",
		"/a/vmlinuz",
	}
	if len(requests) < len(want) || strings.Join(requests[:len(want)], " ") != strings.Join(want, " ") {
		t.Errorf("requests %q, want them to start %q", requests, want)
	}
	console := readTail(logPath)
	if !strings.Contains(console, "rackboot: node n-1 host evil__x__shell") {
		t.Errorf("console does not show the escaped node line:\n%s", console)
	}
}

func readTail(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if len(lines) > 60 {
		lines = lines[len(lines)-60:]
	}
	return strings.Join(lines, "\n")
}
