//go:build integration

package grub

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rackboot/rackboot/boot"
)

// TestDebianGRUBFollowsConfigs PXE-boots Debian's signed grubnetx64.efi
// under OVMF, served by QEMU's user-network TFTP (which reaches nothing
// beyond the guest), and checks that real GRUB reads the bootstrap and
// the node config as meant: it loads grub/MAC.cfg by ${net_default_mac},
// shows a quoted title literally, fetches the kernel over (tftp,HOST),
// and when that fails falls back to the entry that exits to the firmware.
func TestDebianGRUBFollowsConfigs(t *testing.T) {
	for _, p := range []string{"qemu-system-x86_64", "apt-get", "dpkg-deb"} {
		if _, err := exec.LookPath(p); err != nil {
			t.Fatalf("%s not found: apt-get install -y qemu-system-x86 ovmf", p)
		}
	}
	const code = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	const vars = "/usr/share/OVMF/OVMF_VARS_4M.fd"
	if _, err := os.Stat(code); err != nil {
		t.Fatal("OVMF not found: apt-get install -y ovmf")
	}
	work := t.TempDir()
	dl := exec.Command("apt-get", "download", "grub-efi-amd64-signed")
	dl.Dir = work
	if out, err := dl.CombinedOutput(); err != nil {
		t.Fatalf("apt-get download grub-efi-amd64-signed: %v\n%s", err, out)
	}
	debs, _ := filepath.Glob(filepath.Join(work, "grub-efi-amd64-signed_*.deb"))
	if len(debs) != 1 {
		t.Fatalf("downloaded %q, want one grub-efi-amd64-signed deb", debs)
	}
	if out, err := exec.Command("dpkg-deb", "-x", debs[0], filepath.Join(work, "x")).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb -x: %v\n%s", err, out)
	}
	root := filepath.Join(work, "tftp")
	write := func(name string, b []byte) {
		t.Helper()
		full := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	loader, err := os.ReadFile(filepath.Join(work, "x/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed"))
	if err != nil {
		t.Fatal(err)
	}
	write("grubx64.efi", loader)
	write("grub/grub.cfg", Bootstrap())
	cfg, err := Config(boot.Plan{
		Action: boot.ActionNetboot, Node: "n-1", Hostname: "it's ${x}",
		Kernel:  "http://10.0.2.2:8080/a/vmlinuz",
		Initrds: []string{"/a/one.cpio"},
		Cmdline: `console=ttyS0 msg="a b"`,
	})
	if err != nil {
		t.Fatal(err)
	}
	write("grub/52:54:00:12:34:56.cfg", cfg)
	write("a/vmlinuz", []byte("not a kernel\n"))
	write("a/one.cpio", []byte("initrd\n"))
	varsCopy := filepath.Join(work, "vars.fd")
	b, err := os.ReadFile(vars)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(varsCopy, b, 0o644); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64", "-accel", "tcg", "-M", "q35", "-m", "512", "-nographic", "-no-reboot",
		"-drive", "if=pflash,format=raw,readonly=on,file="+code,
		"-drive", "if=pflash,format=raw,file="+varsCopy,
		"-netdev", "user,id=n0,tftp="+root+",bootfile=grubx64.efi",
		"-device", "virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56,romfile=",
		"-boot", "n")
	logPath := filepath.Join(work, "console.log")
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
	want := []string{
		"rackboot: loading (tftp,10.0.2.2)/grub/52:54:00:12:34:56.cfg",
		"Booting `rackboot n-1 it's ${x}'",
		"rackboot: loading kernel",
		"(tftp,10.0.2.2)/a/vmlinuz",
		"Falling back to `rackboot: netboot failed'",
		"rackboot: netboot failed; returning to the firmware",
		// After GRUB exits, the firmware moves on to its next entry.
		"BdsDxe: loading Boot0000",
	}
	escapes := regexp.MustCompile(`\x1b\[[0-9;?=]*[a-zA-Z]`)
	var console string
	for ctx.Err() == nil {
		time.Sleep(2 * time.Second)
		b, _ := os.ReadFile(logPath)
		console = escapes.ReplaceAllString(string(b), "")
		if inOrder(console, want) {
			return
		}
	}
	t.Fatalf("console never showed, in order, %q:\n%s", want, console)
}

func inOrder(s string, parts []string) bool {
	for _, p := range parts {
		i := strings.Index(s, p)
		if i < 0 {
			return false
		}
		s = s[i+len(p):]
	}
	return true
}
