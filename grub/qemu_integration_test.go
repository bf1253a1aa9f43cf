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
	"github.com/rackboot/rackboot/firmware"
)

// TestDebianGRUBFollowsConfigs PXE-boots Debian's signed grubnetx64.efi
// under OVMF, served by QEMU's user-network TFTP (which reaches nothing
// beyond the guest), and checks that real GRUB reads the bootstrap and
// the node config as meant: it loads grub/MAC.cfg by ${net_default_mac},
// shows a quoted title literally, fetches the kernel over (tftp,HOST),
// and when that fails falls back to the entry that exits to the firmware.
func TestDebianGRUBFollowsConfigs(t *testing.T) {
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Fatal("qemu-system-x86_64 not found: apt-get install -y qemu-system-x86 ovmf")
	}
	const code = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	const vars = "/usr/share/OVMF/OVMF_VARS_4M.fd"
	if _, err := os.Stat(code); err != nil {
		t.Fatal("OVMF not found: apt-get install -y ovmf")
	}
	work := t.TempDir()
	// The same verified fetch rackboot uses, for the same signed GRUB.
	member := "usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed"
	if _, err := firmware.Fetch(context.Background(), firmware.Options{Dest: filepath.Join(work, "x"),
		Files: []firmware.Wanted{{Package: "grub-efi-amd64-signed", Arch: "amd64", Member: member, Dest: member}}}); err != nil {
		t.Fatalf("fetch Debian's signed GRUB: %v", err)
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
