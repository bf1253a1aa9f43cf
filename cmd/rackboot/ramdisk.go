package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/rackboot/rackboot/appliance"
	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/firmware"
	"github.com/rackboot/rackboot/images/ramdisk"
)

const ramdiskUsage = `Usage: rackboot ramdisk build [--arch amd64|arm64|all] [--data-dir DIR] [--mirror URL] [flags]

Builds the agent ramdisk for each architecture: Debian's kernel (linux-image-amd64,
linux-image-arm64) fetched from the archive and checked against its index, and an initrd
laid out as u-root lays one out, with u-root's init, a shell (gosh), ls, cat, dmesg, ip,
ps and the agent, plus every Ethernet, InfiniBand/Omni-Path, SCSI/SAS/RAID, ATA, NVMe,
MD/device-mapper, hardware RNG, TPM and virtio module of the kernel (selected by their path
in the package, so a newer kernel brings its new drivers) and the IPMI and efivarfs modules,
with their dependencies, modules.dep and modules.alias, and the firmware files those
modules ask for from Debian's non-free-firmware component (--nonfree-firmware=false, or
ramdisk.nonfree_firmware: false in the --config file, leaves them out). They go to
DATA_DIR/artifacts/<x86_64|aarch64>/vmlinuz and initrd, where rackboot serve boots them
from, with ramdisk.json listing what they were built from, the modules and firmware files
inside, and the firmware files no package provides. When none of that changed, the build
does nothing and says so. An initrd may not exceed 64 MiB.

--overlay DIR packs an operator's tree into the initrd after all that: a driver rackboot
does not ship, such as NVIDIA's (its modules under lib/modules/<release>/, built for the
ramdisk's kernel, which join modules.dep and modules.alias so the agent loads them for
their devices; nvidia-smi and its libraries, with the C library they need, so the burn-in
can test GPUs), or any file a site needs. It may add to the ramdisk's directories, not
replace rackboot's programs, init or module indexes; device nodes and FIFOs are refused.
With an overlay the initrd may reach 512 MiB, which iPXE loads over HTTP and some firmware
does not. On Secure Boot nodes its modules must be signed with a key the node trusts
(enrolled in its MOK or db), or the kernel refuses them.

The programs for both architectures are inside this binary (make build compiles them):
the build needs no Go toolchain and no source tree, only Debian's archive.

Flags:
`

func ramdiskCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "build" {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
			fmt.Fprint(stdout, ramdiskUsage[:strings.Index(ramdiskUsage, "\nFlags:")+1])
			fmt.Fprintln(stdout, `Run "rackboot ramdisk build -h" for its flags.`)
			return nil
		}
		return usageError{"ramdisk: usage: rackboot ramdisk build [--arch amd64|arm64|all] [--data-dir DIR] [--mirror URL]"}
	}
	fs := flag.NewFlagSet("ramdisk build", flag.ContinueOnError)
	fs.SetOutput(stderr)
	arch := fs.String("arch", "all", "amd64 (x86_64), arm64 (aarch64) or all")
	dataDir := fs.String("data-dir", envOr("RACKBOOT_DATA_DIR", "data"), "data dir: the ramdisks go to DATA_DIR/artifacts/<arch>/, downloads to DATA_DIR/cache/ramdisk")
	cacheDir := fs.String("cache-dir", "", "where kernel packages and extracted modules are kept (default DATA_DIR/cache/ramdisk)")
	mirror := fs.String("mirror", "", "Debian mirror URL (default: the host's apt configuration)")
	suite := fs.String("suite", "", "Debian suite, e.g. bookworm (default: the host's apt configuration)")
	uinit := fs.String("uinit", "", "the command line init starts (default: \""+ramdisk.DefaultUInit+"\")")
	update := fs.Bool("update", false, "ask the archive for a newer kernel even when one is cached")
	force := fs.Bool("force", false, "rebuild even when nothing changed")
	overlay := fs.String("overlay", "", "a directory packed into the initrd last: a driver's modules (lib/modules/RELEASE/), tools and libraries")
	configPath := fs.String("config", "", "the appliance's YAML config file; ramdisk build reads its ramdisk section")
	nonfree := fs.Bool("nonfree-firmware", true, "carry the firmware files the modules ask for, from Debian's non-free-firmware component (ramdisk.nonfree_firmware)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), ramdiskUsage)
		fs.PrintDefaults()
	}
	if _, err := parseArgs(fs, args[1:]); err != nil {
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var flagFirmware *bool
	if set["nonfree-firmware"] {
		flagFirmware = nonfree
	}
	withFirmware, err := nonfreeFirmware(*configPath, flagFirmware)
	if err != nil {
		return err
	}
	var archs []boot.Arch
	if *arch == "all" {
		archs = []boot.Arch{boot.ArchX86_64, boot.ArchAArch64}
	} else {
		a, err := ramdisk.ParseArch(*arch)
		if err != nil {
			return usageError{"ramdisk build: --arch amd64, arm64 or all"}
		}
		archs = []boot.Arch{a}
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	for _, a := range archs {
		res, err := ramdisk.Build(ctx, ramdisk.Options{
			Arch: a, DataDir: *dataDir, CacheDir: *cacheDir, UInit: *uinit, OmitNonfreeFirmware: !withFirmware,
			Firmware: firmware.Options{Mirror: *mirror, Suite: *suite},
			Update:   *update, Force: *force, Overlay: *overlay, Logger: log,
		})
		if err != nil {
			return err
		}
		state := fmt.Sprintf("built in %.1f s", res.Took.Seconds())
		if res.UpToDate {
			state = "up to date, nothing built"
		}
		m := res.Manifest
		fmt.Fprintf(stdout, "%s: %s\n  kernel  %s %s (%s), vmlinuz %s\n  initrd  %s, %d modules, %d firmware files from %d packages (%d asked for are in none)\n  in      %s\n",
			a, state, res.Kernel.Package, res.Kernel.Version, res.Release, mib(m.Vmlinuz.Size), mib(m.Initrd.Size), len(m.Modules),
			len(m.Firmware), len(m.Inputs.Firmware), len(m.MissingFirmware), res.Dir)
		if len(m.Missing) > 0 {
			fmt.Fprintf(stdout, "  missing %s (neither in the kernel package nor built in)\n", strings.Join(m.Missing, " "))
		}
		if m.Inputs.Overlay != "" {
			fmt.Fprintf(stdout, "  overlay %d files, modules %s\n", m.OverlayFiles, orDash(strings.Join(m.OverlayModules, " ")))
		}
	}
	return nil
}

// nonfreeFirmware says whether the ramdisks carry non-free firmware: the
// flag when given (non-nil), else the config file's
// ramdisk.nonfree_firmware when set, else true.
func nonfreeFirmware(configPath string, flag *bool) (bool, error) {
	if flag != nil {
		return *flag, nil
	}
	if configPath == "" {
		return true, nil
	}
	cfg, err := appliance.LoadConfig(configPath)
	if err != nil {
		return false, err
	}
	if cfg.Ramdisk.NonfreeFirmware != nil {
		return *cfg.Ramdisk.NonfreeFirmware, nil
	}
	return true, nil
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
