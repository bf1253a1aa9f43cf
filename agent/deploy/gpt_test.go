package deploy

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/images/diskimage"
)

// imageOnDisk builds a 256 MiB test image for arch and writes it at the
// start of a 1 GiB disk file, as a deploy would; it returns the disk's
// path and the disk opened for writing (closed when the test ends).
func imageOnDisk(t *testing.T, arch boot.Arch) (string, *os.File) {
	t.Helper()
	dir := t.TempDir()
	img := filepath.Join(dir, "img")
	if err := diskimage.Build(diskimage.Options{Name: "t", Arch: arch, Output: img, Loader: []byte("l"), Kernel: []byte("k"), Initrd: []byte("i")}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	disk := filepath.Join(dir, "disk")
	if err := os.WriteFile(disk, b, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(disk, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if err := f.Truncate(1 << 30); err != nil {
		t.Fatal(err)
	}
	return disk, f
}

// TestGrowLast writes a 256 MiB image onto a 1 GiB disk and grows it; an
// independent GPT reader must accept the result.
func TestGrowLast(t *testing.T) {
	disk, dst := imageOnDisk(t, boot.ArchX86_64)
	grown, err := GrowLast(dst, 512)
	if err != nil || !grown {
		t.Fatalf("grow: %v %v", grown, err)
	}
	again, err := GrowLast(dst, 512)
	if err != nil || again {
		t.Fatalf("second grow: %v %v", again, err)
	}
	d, err := diskfs.Open(disk, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	tab, err := d.GetPartitionTable()
	if err != nil {
		t.Fatalf("the grown table does not read back: %v", err)
	}
	parts := tab.(*gpt.Table).Partitions
	last := parts[len(parts)-1]
	if want := uint64(1<<30/512 - 34); last.End != want {
		t.Errorf("last partition ends at %d, want %d", last.End, want)
	}
	if parts[0].End != 2048+96*2048-1 {
		t.Errorf("the first partition moved: %+v", parts[0])
	}
	// A disk without a GPT is an error, not a silent no-op.
	plain := filepath.Join(t.TempDir(), "plain")
	os.WriteFile(plain, make([]byte, 1<<20), 0o644)
	f, _ := os.OpenFile(plain, os.O_RDWR, 0)
	defer f.Close()
	if _, err := GrowLast(f, 512); err == nil {
		t.Error("no GPT: no error")
	}
}

// TestRelocateBackup: a 256 MiB image on a 1 GiB disk gets its backup GPT
// at the disk's end, its partitions untouched, and no stale backup left
// at the image's end; an MBR image is left alone with ErrNoGPT.
func TestRelocateBackup(t *testing.T) {
	disk, dst := imageOnDisk(t, boot.ArchAArch64)
	before, _ := readTable(dst, 512)
	_, lastBefore := before.last()
	moved, err := RelocateBackup(dst, 512)
	if err != nil || !moved {
		t.Fatalf("relocate: %v %v", moved, err)
	}
	if again, err := RelocateBackup(dst, 512); err != nil || again {
		t.Fatalf("second relocate: %v %v", again, err)
	}
	oldBackup := make([]byte, 8)
	dst.ReadAt(oldBackup, 256<<20-512)
	if string(oldBackup) == "EFI PART" {
		t.Error("a stale backup header is left at the image's end")
	}
	newBackup := make([]byte, 8)
	dst.ReadAt(newBackup, 1<<30-512)
	if string(newBackup) != "EFI PART" {
		t.Error("no backup header at the disk's end")
	}
	d, err := diskfs.Open(disk, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	tab, err := d.GetPartitionTable()
	if err != nil {
		t.Fatalf("the relocated table does not read back: %v", err)
	}
	parts := tab.(*gpt.Table).Partitions
	if got := parts[len(parts)-1].End; got != lastBefore {
		t.Errorf("the last partition ends at %d, was %d", got, lastBefore)
	}
	mbr := filepath.Join(t.TempDir(), "mbr")
	b := make([]byte, 1<<20)
	b[510], b[511] = 0x55, 0xaa
	os.WriteFile(mbr, b, 0o644)
	f, _ := os.OpenFile(mbr, os.O_RDWR, 0)
	defer f.Close()
	if _, err := RelocateBackup(f, 512); !errors.Is(err, ErrNoGPT) {
		t.Errorf("MBR image: %v, want ErrNoGPT", err)
	}
}
