package lab

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"

	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/firmware"
	"github.com/rackboot/rackboot/internal/cpio"
)

// kernelPackages are the Debian kernels the payload boots: amd64's is the
// signed generic kernel, so Secure Boot accepts it; arm64's the smaller
// cloud kernel.
var kernelPackages = map[boot.Arch][2]string{
	boot.ArchX86_64:  {"linux-image-amd64", "amd64"},
	boot.ArchAArch64: {"linux-image-cloud-arm64", "arm64"},
}

// Payload returns a kernel and an initrd for arch, cached in dir: a
// Debian kernel from the archive (verified against its index) and an
// initrd whose init prints "RACKBOOT-PAYLOAD arch=... cmdline=..." on
// the console and powers off.
func Payload(ctx context.Context, arch boot.Arch, dir string) (kernel, initrd string, err error) {
	pkg, ok := kernelPackages[arch]
	if !ok {
		return "", "", fmt.Errorf("payload: no kernel for %q", arch)
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return "", "", fmt.Errorf("payload: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", fmt.Errorf("payload: %w", err)
	}
	// Parallel tests share the cache: one fetches, the others wait.
	unlock, err := lockDir(dir)
	if err != nil {
		return "", "", fmt.Errorf("payload: %w", err)
	}
	defer unlock()
	kernel = filepath.Join(dir, "vmlinuz-"+string(arch))
	if _, err := os.Stat(kernel); err != nil {
		if _, err := firmware.FetchKernel(ctx, firmware.Options{}, pkg[0], pkg[1], kernel); err != nil {
			return "", "", fmt.Errorf("payload: %w", err)
		}
	}
	initrd = filepath.Join(dir, "initrd-"+string(arch))
	if err := buildInitrd(ctx, pkg[1], initrd); err != nil {
		return "", "", fmt.Errorf("payload: %w", err)
	}
	return kernel, initrd, nil
}

// lockDir takes an exclusive lock on dir, for processes as well as
// goroutines.
func lockDir(dir string) (func(), error) {
	f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	return func() { f.Close() }, nil
}

// AptKernels fetches the payload's kernels with apt instead, through
// scripts/fetch-test-kernels.sh, into dir, and returns them by
// architecture. It needs apt-get and dpkg-deb, and root the first time
// on a machine that does not know arm64 packages yet.
func AptKernels(ctx context.Context, dir string) (map[boot.Arch]string, error) {
	_, self, _, _ := runtime.Caller(0)
	script := filepath.Join(filepath.Dir(self), "..", "scripts", "fetch-test-kernels.sh")
	out, err := exec.CommandContext(ctx, "bash", script, dir).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("fetch kernels with apt: %w: %s", err, strings.TrimSpace(string(out)))
	}
	kernels := map[boot.Arch]string{}
	for arch := range kernelPackages {
		k := filepath.Join(dir, "vmlinuz-"+string(arch))
		if _, err := os.Stat(k); err != nil {
			return nil, fmt.Errorf("fetch kernels with apt: %w", err)
		}
		kernels[arch] = k
	}
	return kernels, nil
}

// buildInitrd compiles testinit for goarch and packs it as /init. The
// archive replaces out atomically: parallel tests may be booting the old
// one.
func buildInitrd(ctx context.Context, goarch, out string) error {
	_, self, _, _ := runtime.Caller(0)
	src := filepath.Join(filepath.Dir(self), "testinit")
	bin, err := os.CreateTemp(filepath.Dir(out), ".init-*")
	if err != nil {
		return fmt.Errorf("build test init: %w", err)
	}
	bin.Close()
	defer os.Remove(bin.Name())
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin.Name(), ".")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+goarch)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build test init for %s: %w: %s", goarch, err, b)
	}
	init, err := os.ReadFile(bin.Name())
	if err != nil {
		return fmt.Errorf("build test init: %w", err)
	}
	var buf bytes.Buffer
	if err := writeInitrd(&buf, init); err != nil {
		return fmt.Errorf("build initrd: %w", err)
	}
	if old, err := os.ReadFile(out); err == nil && bytes.Equal(old, buf.Bytes()) {
		return nil
	}
	tmp, err := os.CreateTemp(filepath.Dir(out), ".initrd-*")
	if err != nil {
		return fmt.Errorf("write initrd: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(buf.Bytes()); err != nil {
		tmp.Close()
		return fmt.Errorf("write initrd: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write initrd: %w", err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return fmt.Errorf("write initrd: %w", err)
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return fmt.Errorf("write initrd: %w", err)
	}
	return nil
}

// writeInitrd writes the payload's initramfs: /init and the two things
// it needs before anything is mounted, /dev/console and /proc.
func writeInitrd(w io.Writer, init []byte) error {
	c := NewCPIO(w)
	c.Dir("dev", 0o755)
	// The kernel opens /dev/console for init's standard streams before
	// init runs; without the node init starts with none.
	c.CharDev("dev/console", 0o600, 5, 1)
	c.Dir("proc", 0o555)
	c.File("init", 0o755, init)
	return c.Close()
}

// CPIO writes a newc archive, the format the kernel unpacks as an
// initramfs.
type CPIO = cpio.Writer

// NewCPIO starts an archive on w.
func NewCPIO(w io.Writer) *CPIO { return cpio.New(w) }
