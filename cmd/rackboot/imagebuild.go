package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/firmware"
	"github.com/rackboot/rackboot/images/diskimage"
)

func imageBuildCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("image build", flag.ContinueOnError)
	fs.SetOutput(stderr)
	arch := fs.String("arch", "", "x86_64 or aarch64 (required)")
	output := fs.String("output", "", "the image file to write (required)")
	name := fs.String("name", "", "the image's name, printed when it boots (default: the output's base name)")
	kernel := fs.String("kernel", "", "boot this kernel instead of Debian's")
	initrd := fs.String("initrd", "", "boot this initrd instead of the one that prints "+diskimage.Marker+" and powers off")
	cmdline := fs.String("cmdline", "", "kernel command line (default: console on the architecture's serial port)")
	sizeMiB := fs.Int64("size", 256, "image size in MiB")
	dataDir := fs.String("data-dir", envOr("RACKBOOT_DATA_DIR", "data"), "data dir whose cache/ keeps the downloaded Debian parts")
	mirror := fs.String("mirror", "", "Debian mirror (default: the host's apt configuration)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: rackboot image build --arch x86_64|aarch64 --output FILE [flags]\n\nWrites a bootable GPT disk image: an EFI system partition with Debian's signed GRUB as the\nremovable-media loader, a kernel and an initrd, and an ext4 root partition. By default the\nkernel is Debian's and the initrd prints a marker line on the serial console and powers off.\n\nFlags:")
		fs.PrintDefaults()
	}
	if _, err := parseArgs(fs, args); err != nil {
		return err
	}
	a := boot.Arch(*arch)
	if a != boot.ArchX86_64 && a != boot.ArchAArch64 {
		return usageError{"image build: --arch x86_64 or aarch64"}
	}
	if *output == "" {
		return usageError{"image build: --output FILE"}
	}
	if *name == "" {
		*name = filepath.Base(*output)
	}
	parts, err := diskimage.FetchParts(ctx, firmware.Options{Mirror: *mirror}, a, filepath.Join(*dataDir, "cache", "diskimage"))
	if err != nil {
		return err
	}
	read := func(p string) ([]byte, error) {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("image build: %w", err)
		}
		return b, nil
	}
	o := diskimage.Options{Name: *name, Arch: a, Output: *output, Size: *sizeMiB << 20, Cmdline: *cmdline}
	if o.Loader, err = read(parts.Loader); err != nil {
		return err
	}
	kpath := parts.Kernel
	if *kernel != "" {
		kpath = *kernel
	}
	if o.Kernel, err = read(kpath); err != nil {
		return err
	}
	if *initrd != "" {
		if o.Initrd, err = read(*initrd); err != nil {
			return err
		}
	} else {
		bb, err := read(parts.Busybox)
		if err != nil {
			return err
		}
		if o.Initrd, err = diskimage.MarkerInitrd(bb, *name, a); err != nil {
			return err
		}
	}
	if err := diskimage.Build(o); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s: %s image %q, %d MiB\n", *output, a, *name, *sizeMiB)
	return nil
}
