//go:build integration

package catalog

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rackboot/rackboot/boot"
)

func qemuImg(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("qemu-img", args...).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// TestQcow2 converts real qcow2 images made by qemu-img, and refuses the
// ones that would make qemu-img read files beside them.
func TestQcow2(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Fatal("qemu-img is missing: install qemu-utils (make deps)")
	}
	dir := t.TempDir()
	raw := filepath.Join(dir, "disk.raw")
	// Disks come in sectors: qemu-img rounds up to 512 bytes.
	disk := append(append([]byte{}, rawImage...), make([]byte, (512-len(rawImage)%512)%512)...)
	os.WriteFile(raw, disk, 0o644)
	good := filepath.Join(dir, "good.qcow2")
	qemuImg(t, "convert", "-f", "raw", "-O", "qcow2", raw, good)
	backed := filepath.Join(dir, "backed.qcow2")
	qemuImg(t, "create", "-f", "qcow2", "-b", good, "-F", "qcow2", backed)
	external := filepath.Join(dir, "external.qcow2")
	qemuImg(t, "create", "-f", "qcow2", "-o", "data_file="+filepath.Join(dir, "data.raw")+",data_file_raw=on", external, "1M")

	c := &Catalog{Dir: filepath.Join(dir, "store")}
	f, _ := os.ReadFile(good)
	im, err := c.Import(context.Background(), "conv", boot.ArchX86_64, "qcow2", bytes.NewReader(f), "", "upload:good.qcow2")
	if err != nil {
		t.Fatal(err)
	}
	if im.Format != "raw.zst" || im.RawSize != int64(len(disk)) || im.RawSHA256 != sum(disk) {
		t.Fatalf("converted: %+v", im)
	}
	if left, _ := filepath.Glob(filepath.Join(c.Dir, ".upload-*")); len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
	// A qcow2 of a few hundred KiB that claims 5 TiB: refused before
	// qemu-img would write it out.
	huge := filepath.Join(dir, "huge.qcow2")
	qemuImg(t, "create", "-f", "qcow2", huge, "5T")
	for name, want := range map[string]string{backed: "backing file", external: "external data file", huge: "virtual size is 5120 GiB"} {
		f, _ := os.ReadFile(name)
		_, err := c.Import(context.Background(), "bad", boot.ArchX86_64, "qcow2", bytes.NewReader(f), "", "upload")
		if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", filepath.Base(name), err, want)
		}
	}
	// A conversion that runs past its time is stopped, and refused.
	slow := &Catalog{Dir: filepath.Join(dir, "slow"), ConvertTime: time.Nanosecond}
	if _, err := slow.Import(context.Background(), "slow", boot.ArchX86_64, "qcow2", bytes.NewReader(f), "", "upload"); err == nil {
		t.Error("a conversion past its time limit succeeded")
	}
	// And one past its memory limit fails rather than eating the appliance.
	small := &Catalog{Dir: filepath.Join(dir, "small"), ConvertMemory: 1 << 20}
	if _, err := small.Import(context.Background(), "small", boot.ArchX86_64, "qcow2", bytes.NewReader(f), "", "upload"); err == nil {
		t.Error("qemu-img in 1 MiB of address space succeeded")
	}
}
