// Package ramdisk builds the agent ramdisks: for each architecture a
// Debian kernel and an initramfs laid out as u-root's builder lays one
// out, holding u-root's init, a shell, a few debugging commands and the
// agent (compiled by make build and carried by the binary: see package
// payload; no go command runs here), with every network and storage
// controller driver of the kernel (DefaultModuleDirs) appended under
// /lib/modules/<release>/ along with the modules.dep and modules.alias
// that agent/kmod reads, and under /lib/firmware/ the firmware files
// those drivers ask for, from Debian's non-free-firmware component. The
// results land where the boot core serves them,
// DATA_DIR/artifacts/<arch>/{vmlinuz,initrd}, beside a manifest of their
// inputs, so a build whose inputs did not change does nothing.
package ramdisk

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/firmware"
	"github.com/rackboot/rackboot/images/ramdisk/payload"
	"github.com/rackboot/rackboot/internal/atomicfile"
)

// DefaultModules are the modules a ramdisk carries by name (with
// everything they depend on) when Options.Modules is nil, besides every
// module under DefaultModuleDirs: virtual machines' devices, and the
// storage and network controllers of common servers (all of them also
// under DefaultModuleDirs, named so that the list says what must be
// there), UEFI variables and the BMC's in-band interface.
var DefaultModules = []string{
	// QEMU and other hypervisors.
	"virtio_pci", "virtio_net", "virtio_blk", "virtio_scsi", "virtio_rng",
	// Storage: NVMe, SATA, SAS HBAs and RAID controllers.
	"nvme", "ahci", "libahci", "sd_mod", "mpt3sas", "megaraid_sas",
	// NICs: Mellanox ConnectX, Intel, Broadcom NetXtreme.
	"mlx5_core", "ixgbe", "i40e", "ice", "e1000e", "igb", "bnxt_en",
	// UEFI variables, for the Secure Boot state in the inventory.
	"efivarfs",
	// The BMC's in-band interface (/dev/ipmi0), through which the agent
	// reads the BMC's LAN address and enrolls rackboot's user: no PCI
	// or ACPI alias loads ipmi_devintf, so they are carried by name.
	"ipmi_msghandler", "ipmi_devintf", "ipmi_si",
}

// MaxInitrd bounds the compressed initrd: a node's firmware loads it
// into memory over TFTP or HTTP before the kernel runs, and some UEFI
// network stacks fail well below the gigabytes a kernel could take.
const MaxInitrd = 64 << 20

// MaxOverlayInitrd bounds the compressed initrd of a build with an
// overlay: a GPU driver with its firmware and libraries is hundreds of
// megabytes unpacked. iPXE loads such initrds over HTTP; some firmware
// HTTP and TFTP clients do not, which the operator who adds the overlay
// checks on the nodes it is for.
const MaxOverlayInitrd = 512 << 20

// maxOverlayTree bounds the overlay as read: the node unpacks it to RAM.
const maxOverlayTree = 2 << 30

// DefaultUInit is the command line init runs: the agent's.
const DefaultUInit = "rackboot-agent run"

// ManifestFile is the manifest's name in the artifacts directory. Its name
// does not start with "initrd": the boot core serves every initrd* there.
const ManifestFile = "ramdisk.json"

// format changes whenever the build would produce different output from
// the same inputs; it is an input itself.
const format = 3

// archInfo is what differs between architectures.
type archInfo struct {
	goarch, debArch, kernel string
}

// arches: amd64 boots Debian's generic kernel, which Debian signs (Secure
// Boot nodes get it through shim and GRUB) and which has the drivers of
// real servers; arm64 the generic kernel too, for the same drivers on
// Ampere servers (the cloud flavour lacks most of them).
var arches = map[boot.Arch]archInfo{
	boot.ArchX86_64:  {"amd64", "amd64", "linux-image-amd64"},
	boot.ArchAArch64: {"arm64", "arm64", "linux-image-arm64"},
}

// ParseArch accepts an architecture as rackboot names it (x86_64,
// aarch64) or as Go and Debian do (amd64, arm64).
func ParseArch(s string) (boot.Arch, error) {
	switch s {
	case "x86_64", "amd64":
		return boot.ArchX86_64, nil
	case "aarch64", "arm64":
		return boot.ArchAArch64, nil
	}
	return boot.ArchUnknown, fmt.Errorf("architecture %q: want amd64 (x86_64) or arm64 (aarch64)", s)
}

// Options says what to build. Zero values are defaults.
type Options struct {
	// Arch is boot.ArchX86_64 or boot.ArchAArch64.
	Arch boot.Arch
	// DataDir is rackboot's data dir: the ramdisk goes to
	// DataDir/artifacts/<arch>/.
	DataDir string
	// CacheDir keeps downloaded kernel packages and the extracted
	// modules; "" means DataDir/cache/ramdisk.
	CacheDir string
	// Payload holds the programs to pack, one <goarch>.tar.zst per
	// architecture (see package payload); nil means those this binary
	// carries (payload.Embedded). Every program goes to /bin.
	Payload fs.FS
	// UInit is the command line init runs (/bin/uinit): a program of the
	// payload and its arguments; "" means DefaultUInit.
	UInit string
	// Modules are the kernel modules to carry, by name, with what they
	// need; nil means every module under DefaultModuleDirs and the
	// DefaultModules.
	Modules []string
	// OmitNonfreeFirmware leaves out the firmware files the modules ask
	// for (config ramdisk.nonfree_firmware: false). By default they come
	// from Debian's non-free-firmware component and go to /lib/firmware;
	// files no package provides are listed in the manifest.
	OmitNonfreeFirmware bool
	// Kernel is the Debian kernel metapackage; "" means linux-image-amd64
	// or linux-image-arm64.
	Kernel string
	// Firmware says which Debian mirror and suite to fetch the kernel
	// and the firmware packages from (Mirror, Suite, AptDir, Client);
	// the rest is ignored.
	Firmware firmware.Options
	// Update asks the archive for a newer kernel even when one is cached.
	Update bool
	// Overlay is a directory packed into the initrd after everything
	// else: an operator's driver (its kernel modules under
	// lib/modules/<release>/, which join the module indexes, and its
	// tools and libraries), or any file a site needs. "" for none.
	Overlay string
	// Force rebuilds even when the inputs did not change.
	Force bool
	// Logger receives progress; nil means discard.
	Logger *slog.Logger
}

// Inputs is everything a ramdisk is built from; a build whose inputs equal
// the manifest's, with the outputs intact, does nothing.
type Inputs struct {
	Format   int               `json:"format"`
	Arch     string            `json:"arch"`
	Kernel   Kernel            `json:"kernel"`
	Programs map[string]string `json:"programs"` // name → sha256 of each program packed, agent included
	URoot    string            `json:"uroot"`    // u-root version init was built from
	UInit    string            `json:"uinit"`
	Modules  []string          `json:"modules"`               // asked for by name, sorted
	Dirs     []string          `json:"module_dirs,omitempty"` // every module under these paths was asked for too
	PCIIDs   PCIIDs            `json:"pci_ids"`
	// Nonfree says whether firmware files were asked for; Firmware are the
	// packages they came from.
	Nonfree  bool              `json:"nonfree_firmware"`
	Firmware []FirmwarePackage `json:"firmware_packages,omitempty"`
	// Overlay is the SHA-256 of the operator's overlay tree as packed;
	// "" for none.
	Overlay string `json:"overlay,omitempty"`
}

// Output is one file a build wrote.
type Output struct {
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
}

// Manifest is DataDir/artifacts/<arch>/ramdisk.json.
type Manifest struct {
	Inputs  Inputs   `json:"inputs"`
	Release string   `json:"release"` // uname -r of the kernel
	Modules []string `json:"modules"` // the modules in the initrd, dependencies included
	// Missing are modules asked for by name that the kernel has neither
	// as a module nor built in.
	Missing []string `json:"missing,omitempty"`
	// Firmware are the firmware files in the initrd, by path under
	// /lib/firmware; MissingFirmware those the modules ask for that no
	// package of non-free-firmware provides (drivers usually work
	// without most: they name every version of a file they can load).
	Firmware        []string `json:"firmware,omitempty"`
	MissingFirmware []string `json:"missing_firmware,omitempty"`
	// OverlayFiles and OverlayModules are what the overlay added: its
	// files, and the kernel modules among them by name.
	OverlayFiles   int       `json:"overlay_files,omitempty"`
	OverlayModules []string  `json:"overlay_modules,omitempty"`
	Vmlinuz        Output    `json:"vmlinuz"`
	Initrd         Output    `json:"initrd"`
	Built          time.Time `json:"built"`
}

// Result says what a build did.
type Result struct {
	Arch     boot.Arch
	Dir      string // the artifacts directory
	Kernel   Kernel
	Release  string
	Vmlinuz  string // paths
	Initrd   string
	Manifest Manifest
	// UpToDate is true when nothing was built: the inputs had not
	// changed and the outputs were intact.
	UpToDate bool
	// Reason says why it built: "no earlier build", "kernel changed: ...".
	Reason string
	Took   time.Duration
}

func (o Options) log() *slog.Logger {
	if o.Logger != nil {
		return o.Logger
	}
	return slog.New(slog.DiscardHandler)
}

// ReadManifest reads the manifest in an artifacts directory.
func ReadManifest(dir string) (Manifest, error) {
	var m Manifest
	b, err := os.ReadFile(filepath.Join(dir, ManifestFile))
	if err != nil {
		return m, fmt.Errorf("read ramdisk manifest: %w", err)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("read ramdisk manifest %s: %w", dir, err)
	}
	return m, nil
}

// checkOutput reports whether file holds exactly what out records.
func checkOutput(file string, out Output) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	if int64(len(b)) != out.Size || sha(b) != out.SHA256 {
		return fmt.Errorf("%s: %d bytes with sha256 %s, the manifest says %d bytes with %s", file, len(b), sha(b), out.Size, out.SHA256)
	}
	return nil
}

// upToDate says why a build in dir with these inputs has work to do, or
// "" when it has none.
func upToDate(dir string, in Inputs) string {
	m, err := ReadManifest(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "no earlier build"
		}
		return err.Error()
	}
	if d := diffInputs(m.Inputs, in); d != "" {
		return d
	}
	if err := checkOutput(filepath.Join(dir, "vmlinuz"), m.Vmlinuz); err != nil {
		return "kernel changed: " + err.Error()
	}
	if err := checkOutput(filepath.Join(dir, "initrd"), m.Initrd); err != nil {
		return "initrd changed: " + err.Error()
	}
	return ""
}

// diffInputs names the first input that differs, or "" when none does.
func diffInputs(old, new Inputs) string {
	switch {
	case old.Format != new.Format:
		return "new build format"
	case old.Arch != new.Arch:
		return "architecture changed"
	case old.Kernel != new.Kernel:
		return fmt.Sprintf("kernel changed: %s %s → %s %s", old.Kernel.Package, old.Kernel.Version, new.Kernel.Package, new.Kernel.Version)
	case !slices.Equal(slices.Sorted(maps.Keys(old.Programs)), slices.Sorted(maps.Keys(new.Programs))):
		return "commands changed"
	case !maps.Equal(old.Programs, new.Programs):
		for _, n := range slices.Sorted(maps.Keys(new.Programs)) {
			if old.Programs[n] != new.Programs[n] {
				return "program " + n + " changed"
			}
		}
	case old.URoot != new.URoot:
		return fmt.Sprintf("u-root changed: %s → %s", old.URoot, new.URoot)
	case old.UInit != new.UInit:
		return "uinit changed"
	case !slices.Equal(old.Modules, new.Modules) || !slices.Equal(old.Dirs, new.Dirs):
		return "module list changed"
	case old.Nonfree != new.Nonfree:
		return "non-free firmware switched"
	case !slices.Equal(old.Firmware, new.Firmware):
		return "firmware packages changed"
	case old.PCIIDs != new.PCIIDs:
		return fmt.Sprintf("pci.ids changed: %s → %s", old.PCIIDs.Version, new.PCIIDs.Version)
	case old.Overlay != new.Overlay:
		return "overlay changed"
	}
	return ""
}

// lockFile takes an exclusive lock on the file dir/name, between
// processes as well as goroutines; parallel builds of one architecture
// wait for each other.
func lockFile(dir, name string) (func(), error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() { f.Close() }, nil
}

// kernelCache is the extracted part of a kernel package for one module
// selection: the kernel image and the modules archive, and the firmware
// files the modules ask for.
type kernelCache struct {
	Release  string              `json:"release"`
	Modules  []string            `json:"modules"`
	Missing  []string            `json:"missing"`
	Firmware map[string][]string `json:"firmware"` // module → its "firmware=" entries
	Vmlinuz  string              `json:"vmlinuz_sha256"`
	Archive  string              `json:"archive_sha256"`
}

// kernelParts returns the kernel image and the modules archive for k and
// the wanted modules, from the cache or extracted from the package.
func kernelParts(deb []byte, k Kernel, sel selection, dir string, log *slog.Logger) (kc kernelCache, vmlinuz, archive []byte, err error) {
	key := sha([]byte(fmt.Sprintf("%d %s %s", format, k.DebSHA256, sel.key())))[:16]
	rec := filepath.Join(dir, "parts-"+key+".json")
	if b, err := os.ReadFile(rec); err == nil && json.Unmarshal(b, &kc) == nil {
		v, err1 := os.ReadFile(filepath.Join(dir, "parts-"+key+".vmlinuz"))
		a, err2 := os.ReadFile(filepath.Join(dir, "parts-"+key+".cpio"))
		if err1 == nil && err2 == nil && sha(v) == kc.Vmlinuz && sha(a) == kc.Archive {
			return kc, v, a, nil
		}
	}
	start := time.Now()
	kf, missing, err := readKernel(deb, sel)
	if err != nil {
		return kc, nil, nil, fmt.Errorf("kernel %s %s: %w", k.Package, k.Version, err)
	}
	var buf bytes.Buffer
	names, err := modulesArchive(&buf, kf)
	if err != nil {
		return kc, nil, nil, fmt.Errorf("kernel %s %s: modules: %w", k.Package, k.Version, err)
	}
	log.Info("extracted kernel and modules", "package", k.Package, "modules", len(names), "seconds", time.Since(start).Round(time.Millisecond).Seconds())
	fw := map[string][]string{}
	for n, m := range kf.Modules {
		if len(m.Info.Firmware) > 0 {
			fw[n] = m.Info.Firmware
		}
	}
	kc = kernelCache{Release: kf.Release, Modules: names, Missing: missing, Firmware: fw, Vmlinuz: sha(kf.Vmlinuz), Archive: sha(buf.Bytes())}
	// Drop parts of other kernels or module lists.
	old, _ := filepath.Glob(filepath.Join(dir, "parts-*"))
	for _, f := range old {
		os.Remove(f)
	}
	b, _ := json.MarshalIndent(kc, "", "  ")
	for name, data := range map[string][]byte{".vmlinuz": kf.Vmlinuz, ".cpio": buf.Bytes(), ".json": append(b, '\n')} {
		if err := atomicfile.Write(filepath.Join(dir, "parts-"+key+name), data); err != nil {
			return kc, nil, nil, fmt.Errorf("cache kernel parts: %w", err)
		}
	}
	return kc, kf.Vmlinuz, buf.Bytes(), nil
}

// Build builds the ramdisk for o.Arch, or finds it up to date.
func Build(ctx context.Context, o Options) (Result, error) {
	start := time.Now()
	res := Result{Arch: o.Arch}
	ai, ok := arches[o.Arch]
	if !ok {
		return res, fmt.Errorf("build ramdisk: architecture %q: want %s or %s", o.Arch, boot.ArchX86_64, boot.ArchAArch64)
	}
	if o.DataDir == "" {
		return res, errors.New("build ramdisk: no data dir")
	}
	if o.CacheDir == "" {
		o.CacheDir = filepath.Join(o.DataDir, "cache", "ramdisk")
	}
	if o.Payload == nil {
		o.Payload = payload.Embedded()
	}
	if o.UInit == "" {
		o.UInit = DefaultUInit
	}
	if o.Kernel == "" {
		o.Kernel = ai.kernel
	}
	want := o.Modules
	var dirs []string
	if want == nil {
		want, dirs = DefaultModules, DefaultModuleDirs
	}
	mods := make([]string, 0, len(want))
	for _, m := range want {
		m = strings.ReplaceAll(m, "-", "_")
		if !slices.Contains(mods, m) {
			mods = append(mods, m)
		}
	}
	sort.Strings(mods)
	// The programs come first: a binary that carries none fails at once.
	progs, err := payload.Load(o.Payload, ai.goarch)
	if err != nil {
		return res, fmt.Errorf("build ramdisk: %w", err)
	}
	hashes := make(map[string]string, len(progs))
	for _, p := range progs {
		hashes[p.Name] = p.SHA256()
	}
	log := o.log().With("arch", string(o.Arch))
	res.Dir = filepath.Join(o.DataDir, "artifacts", string(o.Arch))
	res.Vmlinuz = filepath.Join(res.Dir, "vmlinuz")
	res.Initrd = filepath.Join(res.Dir, "initrd")

	cache := filepath.Join(o.CacheDir, ai.debArch)
	unlock, err := lockFile(cache, ".lock")
	if err != nil {
		return res, fmt.Errorf("build ramdisk: %w", err)
	}
	defer unlock()
	// The output's lock is not in the artifacts dir, which is served.
	unlockOut, err := lockFile(filepath.Join(o.DataDir, "cache"), "ramdisk-"+string(o.Arch)+".lock")
	if err != nil {
		return res, fmt.Errorf("build ramdisk: %w", err)
	}
	defer unlockOut()

	fo := o.Firmware
	fo.Logger = log
	k, deb, err := fetchKernel(ctx, fo, o.Kernel, ai.debArch, cache, o.Update)
	if err != nil {
		return res, fmt.Errorf("build ramdisk: %w", err)
	}
	res.Kernel = k
	// pci.ids is shared by every architecture: builds of two arches take
	// turns at its cache, which prunes old versions.
	allCache := filepath.Join(o.CacheDir, "all")
	unlockAll, err := lockFile(allCache, ".lock")
	if err != nil {
		return res, fmt.Errorf("build ramdisk: %w", err)
	}
	pids, ids, err := fetchPCIIDs(ctx, fo, allCache, o.Update)
	unlockAll()
	if err != nil {
		return res, fmt.Errorf("build ramdisk: %w", err)
	}
	// The module selection comes first: the firmware the modules ask for
	// is an input too. Its parts are cached, so an up-to-date build reads
	// them back without unpacking the kernel package.
	sel := selection{Dirs: dirs, Named: mods}
	kc, vmlinuz, modArchive, err := kernelParts(deb, k, sel, cache, log)
	if err != nil {
		return res, fmt.Errorf("build ramdisk: %w", err)
	}
	deb = nil
	var fw firmwareSet
	if !o.OmitNonfreeFirmware {
		fwCache := filepath.Join(o.CacheDir, "firmware")
		unlockFW, err := lockFile(fwCache, ".lock")
		if err != nil {
			return res, fmt.Errorf("build ramdisk: %w", err)
		}
		fw, err = fetchFirmware(ctx, fo, ai.debArch, kc.Firmware, fwCache, o.Update, log)
		unlockFW()
		if err != nil {
			return res, fmt.Errorf("build ramdisk: %w", err)
		}
	}
	var ov overlayTree
	if o.Overlay != "" {
		names := make([]string, 0, len(progs))
		for _, p := range progs {
			names = append(names, p.Name)
		}
		if ov, err = readOverlay(o.Overlay, kc.Release, modArchive, reservedPaths(names, kc.Release)); err != nil {
			return res, fmt.Errorf("build ramdisk: %w", err)
		}
		log.Info("overlay read", "dir", o.Overlay, "files", ov.files, "modules", strings.Join(ov.modules, ","))
	}
	in := Inputs{Format: format, Arch: string(o.Arch), Kernel: k, Programs: hashes, URoot: urootVersion(progs), UInit: o.UInit,
		Modules: mods, Dirs: dirs, PCIIDs: pids, Nonfree: !o.OmitNonfreeFirmware, Firmware: fw.Packages, Overlay: ov.key}
	why := upToDate(res.Dir, in)
	if why == "" && !o.Force {
		m, _ := ReadManifest(res.Dir)
		res.Manifest, res.Release, res.UpToDate = m, m.Release, true
		res.Took = time.Since(start)
		log.Info("ramdisk up to date", "dir", res.Dir)
		return res, nil
	}
	if o.Force && why == "" {
		why = "forced"
	}
	res.Reason = why
	log.Info("building ramdisk", "why", why, "kernel", k.Package+" "+k.Version)
	if len(kc.Missing) > 0 {
		log.Warn("modules neither in the kernel package nor built in", "modules", strings.Join(kc.Missing, ","))
	}
	if len(fw.Missing) > 0 {
		log.Info("firmware files no non-free-firmware package provides", "files", len(fw.Missing))
	}
	base, err := baseArchive(progs, o.UInit)
	if err != nil {
		return res, fmt.Errorf("build ramdisk: %w", err)
	}
	log.Info("base archive packed", "programs", len(progs), "bytes", len(base))
	idsArchive, err := pciIDsArchive(ids)
	if err != nil {
		return res, fmt.Errorf("build ramdisk: %w", err)
	}
	initrd, err := compress(base, modArchive, idsArchive, fw.Archive, ov.archive)
	if err != nil {
		return res, fmt.Errorf("build ramdisk: %w", err)
	}
	limit := MaxInitrd
	if o.Overlay != "" {
		limit = MaxOverlayInitrd
	}
	if len(initrd) > limit {
		return res, fmt.Errorf("build ramdisk: the initrd is %d bytes, more than %d", len(initrd), limit)
	}
	m := Manifest{Inputs: in, Release: kc.Release, Modules: kc.Modules, Missing: kc.Missing, Firmware: fw.Files, MissingFirmware: fw.Missing,
		OverlayFiles: ov.files, OverlayModules: ov.modules,
		Vmlinuz: Output{sha(vmlinuz), int64(len(vmlinuz))}, Initrd: Output{sha(initrd), int64(len(initrd))}, Built: time.Now().UTC()}
	// The manifest goes last: a build cut short leaves one that does not
	// match, so the next build redoes it.
	os.Remove(filepath.Join(res.Dir, ManifestFile))
	if err := atomicfile.Write(res.Vmlinuz, vmlinuz); err != nil {
		return res, fmt.Errorf("build ramdisk: %w", err)
	}
	if err := atomicfile.Write(res.Initrd, initrd); err != nil {
		return res, fmt.Errorf("build ramdisk: %w", err)
	}
	b, _ := json.MarshalIndent(m, "", "  ")
	if err := atomicfile.Write(filepath.Join(res.Dir, ManifestFile), append(b, '\n')); err != nil {
		return res, fmt.Errorf("build ramdisk: %w", err)
	}
	res.Manifest, res.Release = m, kc.Release
	res.Took = time.Since(start)
	log.Info("ramdisk built", "dir", res.Dir, "vmlinuz_bytes", len(vmlinuz), "initrd_bytes", len(initrd),
		"modules", len(kc.Modules), "firmware_files", len(fw.Files), "seconds", res.Took.Round(time.Millisecond).Seconds())
	return res, nil
}

// initrdWindow is the initrd's compression window: wide enough to span
// every program of the base archive (about 28 MB), so that what they share
// (Go's runtime and standard library) is stored about once. The kernel
// takes windows up to 128 MB and needs about as much memory as the window
// while it unpacks.
const initrdWindow = 32 << 20

// compress joins newc archives into one zstd-compressed initramfs; every
// Debian kernel unpacks zstd (CONFIG_RD_ZSTD) and concatenated archives.
func compress(archives ...[]byte) ([]byte, error) {
	var buf bytes.Buffer
	zw, err := zstd.NewWriter(&buf, zstd.WithEncoderLevel(zstd.SpeedBestCompression), zstd.WithWindowSize(initrdWindow))
	if err != nil {
		return nil, err
	}
	for _, a := range archives {
		if _, err := zw.Write(a); err != nil {
			return nil, err
		}
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
