//go:build integration

package ramdisk

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/images/ramdisk/payload"
	"github.com/rackboot/rackboot/lab"
)

// TestBootRamdisk builds the amd64 and arm64 ramdisks for real (Debian's
// kernel from the archive; u-root's init and shell and the test uinit
// cross-compiled by payload.Compile, as make build compiles the agent's
// payload), boots each under QEMU TCG with a 1 GiB virtio disk and two
// virtio NICs, and checks that the uinit, after loading modules with
// agent/kmod, saw the disk and both MACs: proof that the virtio modules
// were in the initrd, matched by alias, and loaded.
func TestBootRamdisk(t *testing.T) {
	lab.RequireRoot(t)
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	cache := filepath.Join(root, ".cache", "ramdisk")
	progs := t.TempDir()
	err = payload.Compile(context.Background(), payload.Options{SourceDir: root, Dir: progs,
		Packages: []string{"github.com/u-root/u-root/cmds/core/init", "github.com/u-root/u-root/cmds/core/gosh", "./images/ramdisk/testinit"}})
	if err != nil {
		t.Fatal(err)
	}
	for i, arch := range []boot.Arch{boot.ArchX86_64, boot.ArchAArch64} {
		t.Run(string(arch), func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
			defer cancel()
			data := t.TempDir()
			o := Options{Arch: arch, DataDir: data, CacheDir: cache, Payload: os.DirFS(progs), UInit: "testinit",
				Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))}
			res, err := Build(ctx, o)
			if err != nil {
				t.Fatal(err)
			}
			if res.UpToDate {
				t.Fatal("a first build into an empty data dir says it is up to date")
			}
			t.Logf("%s: built in %.1f s: kernel %s %s, vmlinuz %d bytes, initrd %d bytes, %d modules (%s), missing %v",
				arch, res.Took.Seconds(), res.Kernel.Package, res.Kernel.Version, res.Manifest.Vmlinuz.Size,
				res.Manifest.Initrd.Size, len(res.Manifest.Modules), strings.Join(res.Manifest.Modules, " "), res.Manifest.Missing)
			again, err := Build(ctx, o)
			if err != nil {
				t.Fatal(err)
			}
			if !again.UpToDate {
				// Not fatal: the boot below still says whether the
				// ramdisk works.
				t.Errorf("a second build with the same inputs rebuilt: %s", again.Reason)
			}
			t.Logf("%s: second build: up to date in %.1f s", arch, again.Took.Seconds())

			dir := t.TempDir()
			img := filepath.Join(dir, "disk.raw")
			if err := os.WriteFile(img, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(img, 1<<30); err != nil { // sparse
				t.Fatal(err)
			}
			// Two NICs on a bridge in a namespace of the test's own, with
			// no way out.
			n, err := lab.NewNet(ctx, fmt.Sprintf("rbramdisk%d", i), netip.MustParsePrefix(fmt.Sprintf("10.77.%d.0/24", i)))
			if err != nil {
				t.Fatal(err)
			}
			defer n.Close()
			macs := []net.HardwareAddr{{0x52, 0x54, 0x00, 0x77, byte(i), 0x01}, {0x52, 0x54, 0x00, 0x77, byte(i), 0x02}}
			taps := make([]string, 2)
			for j := range taps {
				if taps[j], err = n.AddTap(fmt.Sprintf("rbrd%d-%d", i, j)); err != nil {
					t.Fatal(err)
				}
			}
			console := map[boot.Arch]string{boot.ArchX86_64: "ttyS0", boot.ArchAArch64: "ttyAMA0"}[arch]
			vm := &lab.VM{Name: "ramdisk-" + string(arch), Arch: arch, Kernel: res.Vmlinuz, Initrd: res.Initrd,
				Append: "console=" + console, Disk: img, MAC: macs[0], Tap: taps[0],
				ExtraNICs: []lab.NIC{{MAC: macs[1], Tap: taps[1]}}}
			lab.Require(t, vm.Needs()...)
			start := time.Now()
			if err := vm.Start(ctx, n, dir); err != nil {
				t.Fatal(err)
			}
			defer vm.Stop()
			line, err := vm.WaitFor(ctx, regexp.MustCompile(`RACKBOOT-RAMDISK-OK \{.*\}`))
			if err != nil {
				t.Fatal(err)
			}
			took := time.Since(start)
			var rep struct {
				Arch string
				Kmod struct {
					Loaded  []string
					Already []string
					Failed  []struct{ Module, Reason string }
				}
				NICs  []struct{ Name, MAC string }
				Disks []struct {
					Name  string
					Bytes int64
				}
				Seconds   float64
				Inventory string
				Warnings  []string
			}
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "RACKBOOT-RAMDISK-OK ")), &rep); err != nil {
				t.Fatalf("marker: %v: %s", err, line)
			}
			t.Logf("%s: QEMU start to marker: %.1f s (uinit ran %.1f s); kmod loaded %v, failed %v; inventory %s, NICs %v, disks %v, warnings %q",
				arch, took.Seconds(), rep.Seconds, rep.Kmod.Loaded, rep.Kmod.Failed, rep.Inventory, rep.NICs, rep.Disks, rep.Warnings)
			if rep.Inventory != "ok" {
				t.Errorf("%s: inventory.Read failed in the ramdisk: %s", arch, rep.Inventory)
			}
			var seen []string
			for _, nic := range rep.NICs {
				seen = append(seen, nic.MAC)
			}
			for _, m := range macs {
				if !slices.Contains(seen, m.String()) {
					t.Errorf("%s: NIC %s not seen; NICs %v", arch, m, rep.NICs)
				}
			}
			found := false
			for _, d := range rep.Disks {
				found = found || d.Bytes == 1<<30
			}
			if !found {
				t.Errorf("%s: no 1 GiB disk; disks %v", arch, rep.Disks)
			}
			for _, m := range []string{"virtio_net", "virtio_blk"} {
				if !slices.Contains(rep.Kmod.Loaded, m) {
					t.Errorf("%s: %s not loaded by kmod: %v", arch, m, rep.Kmod.Loaded)
				}
			}
			if err := vm.Wait(ctx); err != nil {
				t.Errorf("%s: no power-off: %v", arch, err)
			}
		})
	}
}

// testWriter sends log lines to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
