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

	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/firmware"
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

// buildInitrd compiles testinit for goarch and packs it as /init.
func buildInitrd(ctx context.Context, goarch, out string) error {
	_, self, _, _ := runtime.Caller(0)
	src := filepath.Join(filepath.Dir(self), "testinit")
	bin := out + ".init"
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, ".")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+goarch)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build test init for %s: %v: %s", goarch, err, b)
	}
	defer os.Remove(bin)
	init, err := os.ReadFile(bin)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	w := NewCPIO(&buf)
	w.Dir("dev", 0o755)
	w.CharDev("dev/console", 0o600, 5, 1)
	w.Dir("proc", 0o555)
	w.File("init", 0o755, init)
	if err := w.Close(); err != nil {
		return err
	}
	return os.WriteFile(out, buf.Bytes(), 0o644)
}

// CPIO writes a newc ("070701") archive, the format the kernel unpacks
// as an initramfs.
type CPIO struct {
	w   io.Writer
	ino uint32
	err error
}

// NewCPIO starts an archive on w.
func NewCPIO(w io.Writer) *CPIO { return &CPIO{w: w, ino: 1} }

func (c *CPIO) entry(name string, mode uint32, rdevMajor, rdevMinor uint32, data []byte) {
	if c.err != nil {
		return
	}
	c.ino++
	name = strings.TrimPrefix(name, "/")
	hdr := fmt.Sprintf("070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		c.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdevMajor, rdevMinor, len(name)+1, 0)
	var b bytes.Buffer
	b.WriteString(hdr)
	b.WriteString(name)
	b.WriteByte(0)
	for b.Len()%4 != 0 {
		b.WriteByte(0)
	}
	b.Write(data)
	for b.Len()%4 != 0 {
		b.WriteByte(0)
	}
	_, c.err = c.w.Write(b.Bytes())
}

// Dir adds a directory.
func (c *CPIO) Dir(name string, perm uint32) { c.entry(name, 0o040000|perm, 0, 0, nil) }

// File adds a regular file.
func (c *CPIO) File(name string, perm uint32, data []byte) { c.entry(name, 0o100000|perm, 0, 0, data) }

// CharDev adds a character device node.
func (c *CPIO) CharDev(name string, perm, major, minor uint32) {
	c.entry(name, 0o020000|perm, major, minor, nil)
}

// Close writes the trailer.
func (c *CPIO) Close() error {
	c.entry("TRAILER!!!", 0, 0, 0, nil)
	return c.err
}
