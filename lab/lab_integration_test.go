//go:build integration

package lab

import (
	"context"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rackboot/rackboot/boot"
)

// TestPayloadBoots boots each architecture's payload straight from QEMU
// (no network) and waits for its marker: the kernel and initrd the
// end-to-end tests hand out must work on their own.
func TestPayloadBoots(t *testing.T) {
	for _, tc := range []struct {
		arch    boot.Arch
		qemu    string
		args    []string
		console string
	}{
		{boot.ArchX86_64, "qemu-system-x86_64", []string{"-M", "q35"}, "ttyS0"},
		{boot.ArchAArch64, "qemu-system-aarch64", []string{"-M", "virt", "-cpu", "cortex-a57"}, "ttyAMA0"},
	} {
		t.Run(string(tc.arch), func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
			defer cancel()
			kernel, initrd, err := Payload(ctx, tc.arch, filepath.Join("..", ".cache", "e2e", "payload"))
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			args := append(tc.args, "-accel", "tcg", "-m", "512", "-display", "none", "-monitor", "none", "-serial", "stdio",
				"-no-reboot", "-kernel", kernel, "-initrd", initrd, "-append", "console="+tc.console+" rackboot.test=1")
			out, err := exec.CommandContext(ctx, tc.qemu, args...).CombinedOutput()
			m := regexp.MustCompile(`RACKBOOT-PAYLOAD arch=(\S+) cmdline=(.*)`).FindStringSubmatch(string(out))
			if m == nil {
				t.Fatalf("no marker (qemu: %v); console ends:\n%s", err, tail(string(out), 3000))
			}
			if want := map[boot.Arch]string{boot.ArchX86_64: "x86_64", boot.ArchAArch64: "aarch64"}[tc.arch]; m[1] != want || !strings.Contains(m[2], "rackboot.test=1") {
				t.Errorf("marker %q", m[0])
			}
			t.Logf("%s payload booted in %.1f s", tc.arch, time.Since(start).Seconds())
		})
	}
}
