// Package diskimage builds small bootable GPT disk images: an EFI system
// partition holding Debian's signed GRUB as the removable-media loader,
// its config, a kernel and an initrd, and an ext4 root partition. Tests
// and the lab deploy them; users wrap their own kernel and initrd with
// them. The default initrd prints a marker line on the serial console and
// powers off, so a test can tell the node booted from its own disk.
package diskimage

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/disk"
	"github.com/diskfs/go-diskfs/filesystem"
	"github.com/diskfs/go-diskfs/filesystem/ext4"
	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/firmware"
	"github.com/rackboot/rackboot/internal/cpio"
)

// Marker starts the line the default initrd prints once the image's
// kernel runs.
const Marker = "RACKBOOT-IMAGE-BOOTED"

// Options describe an image.
type Options struct {
	Name   string    // printed in the marker and kept in /etc/rackboot-image
	Arch   boot.Arch // x86_64 or aarch64
	Output string
	// Size of the whole image in bytes (default 256 MiB).
	Size int64
	// Loader is the EFI binary installed as \EFI\BOOT\BOOTX64.EFI or
	// BOOTAA64.EFI: Debian's signed disk GRUB.
	Loader []byte
	// Kernel and Initrd are the files GRUB boots.
	Kernel, Initrd []byte
	// Cmdline is the kernel command line (default: the serial console of
	// the architecture).
	Cmdline string
}

const (
	sector  = 512
	espSize = 96 << 20
)

// removable is the UEFI removable-media boot file per architecture: what
// firmware boots from a disk with no boot entries of its own.
var removable = map[boot.Arch]string{boot.ArchX86_64: "BOOTX64.EFI", boot.ArchAArch64: "BOOTAA64.EFI"}

// Console is the serial console of QEMU's machines and most servers.
var Console = map[boot.Arch]string{boot.ArchX86_64: "ttyS0", boot.ArchAArch64: "ttyAMA0"}

// grubConfig boots the ESP's kernel at once. GRUB's root is the device it
// was loaded from, the ESP; the search only makes sure.
func grubConfig(o Options) string {
	return fmt.Sprintf(`set timeout=0
set default=0
search --no-floppy --file --set=root /rackboot-esp
menuentry "%s" {
	linux /vmlinuz root=PARTLABEL=rackboot-root ro %s
	initrd /initrd
}
`, o.Name, o.Cmdline)
}

// Build writes the image to o.Output.
func Build(o Options) error {
	if _, ok := removable[o.Arch]; !ok {
		return fmt.Errorf("build image: architecture %q: want x86_64 or aarch64", o.Arch)
	}
	if len(o.Loader) == 0 || len(o.Kernel) == 0 || len(o.Initrd) == 0 {
		return fmt.Errorf("build image: a loader, a kernel and an initrd are needed")
	}
	if strings.ContainsAny(o.Name, "\"\n\\$") || o.Name == "" {
		return fmt.Errorf("build image: name %q: no quotes, backslashes, dollars or newlines", o.Name)
	}
	if o.Size == 0 {
		o.Size = 256 << 20
	}
	if o.Cmdline == "" {
		o.Cmdline = "console=" + Console[o.Arch]
	}
	need := int64(len(o.Kernel)+len(o.Initrd)+len(o.Loader)) + 4<<20
	if need > espSize {
		return fmt.Errorf("build image: kernel, initrd and loader (%d MiB) do not fit the %d MiB EFI partition", need>>20, espSize>>20)
	}
	if o.Size < espSize+64<<20 {
		return fmt.Errorf("build image: %d MiB is too small: the EFI partition takes %d MiB and the root at least 64", o.Size>>20, espSize>>20)
	}
	// A name of its own: two builds of one output must not share a file.
	tf, err := os.CreateTemp(filepath.Dir(o.Output), ".tmp-"+filepath.Base(o.Output)+"-*")
	if err != nil {
		return fmt.Errorf("build image: %w", err)
	}
	tmp := tf.Name()
	tf.Close()
	os.Remove(tmp) // diskfs.Create refuses a file that exists
	d, err := diskfs.Create(tmp, o.Size, diskfs.SectorSizeDefault)
	if err != nil {
		return fmt.Errorf("build image: %w", err)
	}
	defer os.Remove(tmp)
	espStart := uint64(2048)
	espEnd := espStart + espSize/sector - 1
	rootStart := espEnd + 1
	// The backup GPT takes the last 33 sectors.
	rootEnd := uint64(o.Size/sector) - 34
	table := &gpt.Table{LogicalSectorSize: sector, PhysicalSectorSize: sector, ProtectiveMBR: true, Partitions: []*gpt.Partition{
		{Index: 1, Start: espStart, End: espEnd, Type: gpt.EFISystemPartition, Name: "EFI system"},
		{Index: 2, Start: rootStart, End: rootEnd, Type: gpt.LinuxFilesystem, Name: "rackboot-root"},
	}}
	if err := d.Partition(table); err != nil {
		return fmt.Errorf("build image: partition: %w", err)
	}
	esp, err := d.CreateFilesystem(disk.FilesystemSpec{Partition: 1, FSType: filesystem.TypeFat32, VolumeLabel: "EFI"})
	if err != nil {
		return fmt.Errorf("build image: EFI filesystem: %w", err)
	}
	cfg := []byte(grubConfig(o))
	for _, dir := range []string{"/EFI", "/EFI/BOOT", "/EFI/debian"} {
		if err := esp.Mkdir(dir); err != nil {
			return fmt.Errorf("build image: %s: %w", dir, err)
		}
	}
	for _, f := range []struct {
		path string
		data []byte
	}{
		{"/EFI/BOOT/" + removable[o.Arch], o.Loader},
		// Debian's signed GRUB reads $prefix/grub.cfg (prefix
		// /EFI/debian), else the one beside itself.
		{"/EFI/debian/grub.cfg", cfg},
		{"/EFI/BOOT/grub.cfg", cfg},
		{"/rackboot-esp", []byte(o.Name + "\n")},
		{"/vmlinuz", o.Kernel},
		{"/initrd", o.Initrd},
	} {
		if err := writeFile(esp, f.path, f.data); err != nil {
			return fmt.Errorf("build image: %w", err)
		}
	}
	// Without a resize inode: go-diskfs writes one e2fsck does not accept,
	// and an image's root is grown by rewriting, not online.
	rootPart := table.Partitions[1]
	root, err := ext4.Create(d.Backend, int64(rootPart.Size), int64(rootPart.Start)*sector, sector, &ext4.Params{
		VolumeName: "rackboot-root", Features: []ext4.FeatureOpt{ext4.WithFeatureReservedGDTBlocksForExpansion(false)}})
	if err != nil {
		return fmt.Errorf("build image: root filesystem: %w", err)
	}
	// go-diskfs's ext4 takes io/fs paths: no leading slash.
	if err := root.Mkdir("etc"); err != nil {
		return fmt.Errorf("build image: /etc: %w", err)
	}
	info := fmt.Sprintf("name=%s\narch=%s\nbuilt=%s\n", o.Name, o.Arch, time.Now().UTC().Format(time.RFC3339))
	if err := writeFile(root, "etc/rackboot-image", []byte(info)); err != nil {
		return fmt.Errorf("build image: %w", err)
	}
	if err := d.Close(); err != nil {
		return fmt.Errorf("build image: %w", err)
	}
	return os.Rename(tmp, o.Output)
}

func writeFile(fs filesystem.FileSystem, path string, data []byte) error {
	f, err := fs.OpenFile(path, os.O_CREATE|os.O_RDWR)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	if _, err := io.Copy(f, bytes.NewReader(data)); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}

// debianArch is Debian's name for an architecture.
var debianArch = map[boot.Arch]string{boot.ArchX86_64: "amd64", boot.ArchAArch64: "arm64"}

// Parts are the Debian files an image is made of.
type Parts struct {
	Loader, Kernel, Busybox string // paths
}

// FetchParts downloads (once, into cache) Debian's signed disk GRUB, a
// kernel and a static busybox for arch, verified against the archive.
func FetchParts(ctx context.Context, o firmware.Options, arch boot.Arch, cache string) (Parts, error) {
	da, ok := debianArch[arch]
	if !ok {
		return Parts{}, fmt.Errorf("fetch image parts: architecture %q: want x86_64 or aarch64", arch)
	}
	dir := filepath.Join(cache, string(arch))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Parts{}, fmt.Errorf("fetch image parts: %w", err)
	}
	o.Dest = dir
	grub := map[boot.Arch][2]string{
		boot.ArchX86_64:  {"grub-efi-amd64-signed", "usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed"},
		boot.ArchAArch64: {"grub-efi-arm64-signed", "usr/lib/grub/arm64-efi-signed/grubaa64.efi.signed"},
	}[arch]
	if _, err := firmware.FetchPackage(ctx, o, da, grub[0], map[string]string{grub[1]: "grub.efi"}); err != nil {
		return Parts{}, fmt.Errorf("fetch image parts: %w", err)
	}
	if _, err := firmware.FetchPackage(ctx, o, da, "busybox-static", map[string]string{"bin/busybox": "busybox"}); err != nil {
		return Parts{}, fmt.Errorf("fetch image parts: %w", err)
	}
	kernel := map[boot.Arch]string{boot.ArchX86_64: "linux-image-amd64", boot.ArchAArch64: "linux-image-cloud-arm64"}[arch]
	if _, err := firmware.FetchKernel(ctx, o, kernel, da, filepath.Join(dir, "vmlinuz")); err != nil {
		return Parts{}, fmt.Errorf("fetch image parts: %w", err)
	}
	return Parts{Loader: filepath.Join(dir, "grub.efi"), Kernel: filepath.Join(dir, "vmlinuz"), Busybox: filepath.Join(dir, "busybox")}, nil
}

// MarkerInitrd is an initramfs whose init, a busybox shell script, prints
// "RACKBOOT-IMAGE-BOOTED name=NAME arch=ARCH root=yes|no" (whether the
// root partition's /etc/rackboot-image was readable) and powers off.
func MarkerInitrd(busybox []byte, name string, arch boot.Arch) ([]byte, error) {
	script := fmt.Sprintf(`#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /mnt
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sys /sys
/bin/busybox mount -t devtmpfs dev /dev
root=no
for i in 1 2 3 4 5 6 7 8 9 10; do
	dev=$(/bin/busybox findfs PARTLABEL=rackboot-root 2>/dev/null)
	[ -n "$dev" ] && break
	/bin/busybox modprobe virtio_blk 2>/dev/null
	/bin/busybox sleep 1
done
if [ -n "$dev" ] && /bin/busybox mount -o ro -t ext4 "$dev" /mnt 2>/dev/null && /bin/busybox grep -q "name=%[1]s" /mnt/etc/rackboot-image; then
	root=yes
fi
echo "%[2]s name=%[1]s arch=%[3]s root=$root" > /dev/console
/bin/busybox sync
/bin/busybox poweroff -f
`, name, Marker, arch)
	var buf bytes.Buffer
	c := cpio.New(&buf)
	for _, d := range []string{"bin", "dev", "proc", "sys", "mnt"} {
		c.Dir(d, 0o755)
	}
	c.CharDev("dev/console", 0o600, 5, 1)
	c.File("bin/busybox", 0o755, busybox)
	c.File("init", 0o755, []byte(script))
	if err := c.Close(); err != nil {
		return nil, fmt.Errorf("marker initrd: %w", err)
	}
	return buf.Bytes(), nil
}
