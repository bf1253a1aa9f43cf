//go:build e2e

// Package e2e boots real firmware in QEMU through a real rackboot: OVMF,
// SeaBIOS and AAVMF PXE-boot on a bridge in a network namespace, fetch
// Debian's iPXE or signed GRUB from rackboot, then the node's script, then
// a Debian kernel and an initrd that prints a marker on the serial console.
// Each test then asks rackboot's API (through its CLI) whether the node was
// enrolled with the right architecture and fetched every file in full.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rackboot/rackboot/api"
	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/internal/syncbuf"
	"github.com/rackboot/rackboot/lab"
	"github.com/rackboot/rackboot/trace"
)

var (
	repoRoot  string
	binary    string
	cacheDir  string
	setupOnce sync.Once
	setupErr  error
)

func TestMain(m *testing.M) {
	wd, _ := os.Getwd()
	repoRoot = filepath.Dir(wd)
	binary = filepath.Join(repoRoot, "bin", "rackboot")
	cacheDir = filepath.Join(repoRoot, ".cache", "e2e")
	os.Exit(m.Run())
}

// setup fetches what every boot needs once: the loaders (through
// rackboot's own firmware fetch) and the payload kernels and initrds.
func setup(t *testing.T) {
	t.Helper()
	setupOnce.Do(func() {
		if _, err := os.Stat(binary); err != nil {
			setupErr = fmt.Errorf("%s missing: run make build first: %w", binary, err)
			return
		}
		cmd := exec.Command(binary, "firmware", "fetch", "--data-dir", cacheDir)
		if out, err := cmd.CombinedOutput(); err != nil {
			setupErr = fmt.Errorf("firmware fetch: %v\n%s", err, out)
		}
	})
	if setupErr != nil {
		t.Fatal(setupErr)
	}
}

// rig is one virtual rack: a namespace with a bridge, rackboot on it.
type rig struct {
	t       *testing.T
	net     *lab.Net
	dataDir string
	server  netip.Addr
	log     *syncbuf.Buffer
	cmd     *exec.Cmd
	args    []string
	// servingSeen counts the "serving" lines before the latest start.
	servingSeen int
}

type rigOptions struct {
	name   string
	prefix string // e.g. 10.77.1.0/24
	mode   string // authoritative or proxy
	extra  []string
	arches []boot.Arch
}

func newRig(t *testing.T, o rigOptions) *rig {
	t.Helper()
	setup(t)
	ctx := context.Background()
	pfx := netip.MustParsePrefix(o.prefix)
	n, err := lab.NewNet(ctx, o.name, pfx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	r := &rig{t: t, net: n, dataDir: t.TempDir(), server: n.ServerIP(), log: &syncbuf.Buffer{}}
	if err := copyDir(filepath.Join(cacheDir, "firmware"), filepath.Join(r.dataDir, "firmware")); err != nil {
		t.Fatal(err)
	}
	for _, a := range o.arches {
		kernel, initrd, err := lab.Payload(ctx, a, filepath.Join(cacheDir, "payload"))
		if err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join(r.dataDir, "artifacts", string(a))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for src, dst := range map[string]string{kernel: "vmlinuz", initrd: "initrd"} {
			if err := lab.CopyFile(src, filepath.Join(dir, dst)); err != nil {
				t.Fatal(err)
			}
		}
	}
	args := []string{"serve", "--data-dir", r.dataDir, "--interface", n.Bridge(), "--dhcp-mode", o.mode, "--log-level", "debug"}
	if o.mode == "authoritative" {
		first, last := pfx.Addr().Next().Next().Next().Next(), pfx.Addr()
		for i := 0; i < 40; i++ {
			last = last.Next()
		}
		args = append(args, "--dhcp-range", first.String()+"-"+last.String())
	}
	args = append(args, o.extra...)
	r.args = args
	r.start()
	t.Cleanup(func() {
		r.stop()
		if t.Failed() {
			logLines(t, "rackboot log:\n%s", lab.Tail(r.Log(), 12000))
		}
	})
	return r
}

// start runs rackboot in the namespace and waits until it serves.
func (r *rig) start() {
	r.t.Helper()
	r.cmd = r.net.Command(context.Background(), binary, r.args...)
	r.cmd.Stdout, r.cmd.Stderr = r.log, r.log
	if err := r.cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	r.servingSeen = strings.Count(r.Log(), "rackboot serving")
	r.waitServing(30 * time.Second)
}

// stop stops rackboot as an operator would (SIGINT), killing it if it
// does not stop within ten seconds.
func (r *rig) stop() {
	r.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { r.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		r.cmd.Process.Kill()
		<-done
	}
}

func (r *rig) waitServing(d time.Duration) {
	r.t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if strings.Count(r.Log(), "rackboot serving") > r.servingSeen {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	r.t.Fatalf("rackboot did not start serving:\n%s", r.Log())
}

func (r *rig) Log() string { return r.log.String() }

// cli runs the rackboot CLI inside the namespace against the rig's server.
func (r *rig) cli(out any, args ...string) {
	r.t.Helper()
	args = append(args, "--server", "http://"+r.server.String()+":8080", "--data-dir", r.dataDir, "--output", "json")
	cmd := r.net.Command(context.Background(), binary, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		r.t.Fatalf("rackboot %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	if err := json.Unmarshal(stdout.Bytes(), out); err != nil {
		r.t.Fatalf("rackboot %s: %v\n%s", strings.Join(args, " "), err, stdout.String())
	}
}

// cliErr runs the CLI as cli does and returns its standard error and
// exit error, for calls that are meant to be refused.
func (r *rig) cliErr(args ...string) (string, error) {
	r.t.Helper()
	args = append(args, "--server", "http://"+r.server.String()+":8080", "--data-dir", r.dataDir, "--output", "json")
	cmd := r.net.Command(context.Background(), binary, args...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

var payloadRE = regexp.MustCompile(`RACKBOOT-PAYLOAD arch=(\S+) cmdline=(.*)`)

// bootVM powers on a VM, on a tap of its own unless it names one, and
// waits for the payload's marker on its console.
func (r *rig) bootVM(vm *lab.VM, within time.Duration) string {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	if vm.Tap == "" {
		tap, err := r.net.AddTap("tap-" + vm.MAC.String()[12:14] + vm.MAC.String()[15:])
		if err != nil {
			r.t.Fatal(err)
		}
		vm.Tap = tap
	}
	start := time.Now()
	if err := vm.Start(ctx, r.net, r.t.TempDir()); err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(vm.Stop)
	line, err := vm.WaitFor(ctx, payloadRE)
	if err != nil {
		r.t.Fatalf("%s never booted the payload: %v\nrackboot log:\n%s", vm.Name, err, r.Log())
	}
	r.t.Logf("%s: payload up %.0f s after power-on: %s", vm.Name, time.Since(start).Seconds(), strings.TrimSpace(line))
	return line
}

// checkNode asserts the node was enrolled with arch and its last boot
// fetched every file it was given, in full, ending at want.
func (r *rig) checkNode(mac net.HardwareAddr, arch boot.Arch, files []string, want trace.Stage) api.Trace {
	r.t.Helper()
	var n api.Node
	r.cli(&n, "node", "show", mac.String())
	if n.Arch != string(arch) {
		r.t.Errorf("node %s enrolled as arch %q, want %q", mac, n.Arch, arch)
	}
	var tr api.Trace
	r.cli(&tr, "node", "trace", mac.String())
	if len(tr.Boots) == 0 {
		r.t.Fatalf("no boots in the trace of %s", mac)
	}
	last := tr.Boots[len(tr.Boots)-1]
	if last.Stage != want {
		r.t.Errorf("last boot of %s: stage %d (%s), want %d", mac, last.Stage, last.Verdict, want)
	}
	for _, f := range files {
		found := false
		for _, e := range tr.Events {
			if e.Kind == "file" && strings.HasSuffix(e.File, f) && e.Complete && e.Bytes == e.Size && e.Size > 0 {
				found = true
			}
		}
		if !found {
			r.t.Errorf("trace of %s has no complete transfer of %s", mac, f)
		}
	}
	if r.t.Failed() {
		b, _ := json.MarshalIndent(tr, "", "  ")
		r.t.Logf("trace:\n%s", b)
	}
	return tr
}

func copyDir(src, dst string) error {
	return filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if fi.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dst, rel)), 0o755); err != nil {
			return err
		}
		return lab.CopyFile(p, filepath.Join(dst, rel))
	})
}

func mustMAC(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

// failLines reports a failure whose text spans lines (a console, a log)
// a line at a time, so that every line carries the test's file and line:
// make e2e shows only such lines, and a CI log must say why a boot
// failed, not only that it did.
func failLines(t *testing.T, format string, args ...any) {
	t.Helper()
	lines := strings.Split(strings.TrimRight(fmt.Sprintf(format, args...), "\n"), "\n")
	t.Error(lines[0])
	for _, l := range lines[1:] {
		t.Log("| " + l)
	}
}

// logLines is failLines for a log shown beside a failure.
func logLines(t *testing.T, format string, args ...any) {
	t.Helper()
	for _, l := range strings.Split(strings.TrimRight(fmt.Sprintf(format, args...), "\n"), "\n") {
		t.Log("| " + l)
	}
}

// mentioning is the last n lines of text that contain any of words: a
// node's part of the server's log.
func mentioning(text string, n int, words ...string) string {
	var keep []string
	for _, l := range strings.Split(text, "\n") {
		for _, w := range words {
			if w != "" && strings.Contains(l, w) {
				keep = append(keep, l)
				break
			}
		}
	}
	if len(keep) > n {
		keep = keep[len(keep)-n:]
	}
	return strings.Join(keep, "\n")
}
