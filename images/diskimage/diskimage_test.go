package diskimage

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/rackboot/rackboot/boot"
)

func readFile(t *testing.T, path string, part int, name string) []byte {
	t.Helper()
	d, err := diskfs.Open(path, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	fs, err := d.GetFilesystem(part)
	if err != nil {
		t.Fatalf("filesystem %d: %v", part, err)
	}
	f, err := fs.OpenFile(name, os.O_RDONLY)
	if err != nil {
		t.Fatalf("open %s on partition %d: %v", name, part, err)
	}
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestBuild(t *testing.T) {
	for _, arch := range []boot.Arch{boot.ArchX86_64, boot.ArchAArch64} {
		t.Run(string(arch), func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "img.raw")
			o := Options{Name: "test-1", Arch: arch, Output: out, Loader: []byte("MZ loader"), Kernel: bytes.Repeat([]byte("K"), 3<<20), Initrd: []byte("initrd")}
			if err := Build(o); err != nil {
				t.Fatal(err)
			}
			st, err := os.Stat(out)
			if err != nil || st.Size() != 256<<20 {
				t.Fatalf("image: %v %v", st, err)
			}
			d, err := diskfs.Open(out, diskfs.WithOpenMode(diskfs.ReadOnly))
			if err != nil {
				t.Fatal(err)
			}
			tab, err := d.GetPartitionTable()
			d.Close()
			if err != nil {
				t.Fatal(err)
			}
			parts := tab.(*gpt.Table).Partitions
			if len(parts) != 2 || parts[0].Type != gpt.EFISystemPartition || parts[1].Name != "rackboot-root" {
				t.Fatalf("partitions: %+v", parts)
			}
			loader := "/EFI/BOOT/BOOTX64.EFI"
			if arch == boot.ArchAArch64 {
				loader = "/EFI/BOOT/BOOTAA64.EFI"
			}
			if got := readFile(t, out, 1, loader); string(got) != "MZ loader" {
				t.Errorf("loader: %q", got)
			}
			cfg := string(readFile(t, out, 1, "/EFI/debian/grub.cfg"))
			if !strings.Contains(cfg, "linux /vmlinuz root=PARTLABEL=rackboot-root ro console="+Console[arch]) || !strings.Contains(cfg, "initrd /initrd") {
				t.Errorf("grub.cfg:\n%s", cfg)
			}
			if got := readFile(t, out, 1, "/vmlinuz"); len(got) != 3<<20 {
				t.Errorf("kernel: %d bytes", len(got))
			}
			if got := string(readFile(t, out, 2, "etc/rackboot-image")); !strings.Contains(got, "name=test-1") {
				t.Errorf("/etc/rackboot-image: %q", got)
			}
		})
	}
}

func TestBuildRefuses(t *testing.T) {
	dir := t.TempDir()
	good := Options{Name: "x", Arch: boot.ArchX86_64, Output: filepath.Join(dir, "x"), Loader: []byte("l"), Kernel: []byte("k"), Initrd: []byte("i")}
	for _, tc := range []struct {
		name string
		mod  func(*Options)
		want string
	}{
		{"arch", func(o *Options) { o.Arch = "riscv64" }, "architecture"},
		{"no kernel", func(o *Options) { o.Kernel = nil }, "a kernel"},
		{"quote in name", func(o *Options) { o.Name = `a"b` }, "name"},
		{"too small", func(o *Options) { o.Size = 100 << 20 }, "too small"},
		{"kernel too big", func(o *Options) { o.Kernel = make([]byte, 95<<20) }, "do not fit"},
	} {
		o := good
		tc.mod(&o)
		if err := Build(o); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}

func TestMarkerInitrd(t *testing.T) {
	b, err := MarkerInitrd([]byte("BUSYBOX"), "img-7", boot.ArchAArch64)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"init\x00", "bin/busybox\x00", "dev/console\x00", Marker + " name=img-7 arch=aarch64", "poweroff -f"} {
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("initrd lacks %q", want)
		}
	}
}
