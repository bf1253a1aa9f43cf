package deploy

import (
	"io"
	"os"
	"path/filepath"
	"testing"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/images/diskimage"
)

// TestGrowLast writes a 256 MiB image onto a 1 GiB disk and grows it; an
// independent GPT reader must accept the result.
func TestGrowLast(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "img")
	if err := diskimage.Build(diskimage.Options{Name: "g", Arch: boot.ArchX86_64, Output: img, Loader: []byte("l"), Kernel: []byte("k"), Initrd: []byte("i")}); err != nil {
		t.Fatal(err)
	}
	disk := filepath.Join(dir, "disk")
	src, _ := os.Open(img)
	dst, _ := os.Create(disk)
	io.Copy(dst, src)
	src.Close()
	dst.Truncate(1 << 30)
	grown, err := GrowLast(dst, 512)
	if err != nil || !grown {
		t.Fatalf("grow: %v %v", grown, err)
	}
	again, err := GrowLast(dst, 512)
	if err != nil || again {
		t.Fatalf("second grow: %v %v", again, err)
	}
	dst.Close()
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
	plain := filepath.Join(dir, "plain")
	os.WriteFile(plain, make([]byte, 1<<20), 0o644)
	f, _ := os.OpenFile(plain, os.O_RDWR, 0)
	defer f.Close()
	if _, err := GrowLast(f, 512); err == nil {
		t.Error("no GPT: no error")
	}
}
