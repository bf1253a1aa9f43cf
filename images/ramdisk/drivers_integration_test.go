//go:build integration

package ramdisk

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/rackboot/rackboot/agent/kmod"
	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/firmware"
	"github.com/rackboot/rackboot/images/ramdisk/payload"
)

// handList is the module list ramdisks carried before they took every
// driver under DefaultModuleDirs: the check below must reject it.
var handList = []string{"virtio_pci", "virtio_net", "virtio_blk", "virtio_scsi", "virtio_rng",
	"nvme", "ahci", "libahci", "sd_mod", "mpt3sas", "megaraid_sas",
	"mlx5_core", "ixgbe", "i40e", "ice", "e1000e", "igb", "bnxt_en", "efivarfs"}

// aliasDirs are where the PCI drivers a node needs to come up live: its
// NIC and its disk controller.
var aliasDirs = []string{"kernel/drivers/net/ethernet/", "kernel/drivers/scsi/", "kernel/drivers/ata/", "kernel/drivers/nvme/"}

// stubPayload is a payload whose programs are placeholders: this test
// builds the ramdisk and reads it, it does not boot it.
func stubPayload(t *testing.T) fstest.MapFS {
	t.Helper()
	fsys := fstest.MapFS{}
	for _, goarch := range []string{"amd64", "arm64"} {
		var tb bytes.Buffer
		tw := tar.NewWriter(&tb)
		for _, n := range []string{Init, Shell, "rackboot-agent"} {
			tw.WriteHeader(&tar.Header{Name: n, Mode: 0o755, Size: 4, Typeflag: tar.TypeReg})
			tw.Write([]byte("stub"))
		}
		tw.Close()
		zw, _ := zstd.NewWriter(nil)
		fsys[payload.File(goarch)] = &fstest.MapFile{Data: zw.EncodeAll(tb.Bytes(), nil)}
	}
	return fsys
}

// packageAliases is the kernel package's modules.alias as depmod writes
// it when the package is installed (the .deb ships none): every "alias="
// of every module's .modinfo, with the module's path.
func packageAliases(t *testing.T, deb []byte) (aliases []kmod.Alias, paths map[string]string) {
	t.Helper()
	open, err := firmware.DebData(deb)
	if err != nil {
		t.Fatal(err)
	}
	paths = map[string]string{}
	err = firmware.ScanTar(open, func(h *tar.Header, r io.Reader) error {
		_, rel, ok := moduleDir(firmware.MemberPath(h.Name))
		if !ok || h.Typeflag != tar.TypeReg || !isModule(rel) {
			return nil
		}
		b, err := io.ReadAll(r)
		if err != nil {
			return err
		}
		raw, err := unpackModule(rel, b)
		if err != nil {
			return err
		}
		info, err := kmod.ParseModInfo(raw)
		if err != nil {
			return err
		}
		n := kmod.ModuleName(rel)
		paths[n] = rel
		for _, a := range info.Aliases {
			aliases = append(aliases, kmod.Alias{Pattern: a, Module: n})
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return aliases, paths
}

// uncovered returns the modules with a pci: alias under aliasDirs that
// the list lacks.
func uncovered(aliases []kmod.Alias, paths map[string]string, list []string) []string {
	var out []string
	for _, a := range aliases {
		if !strings.HasPrefix(a.Pattern, "pci:") || slices.Contains(list, a.Module) || slices.Contains(out, a.Module) {
			continue
		}
		if slices.ContainsFunc(aliasDirs, func(d string) bool { return strings.HasPrefix(paths[a.Module], d) }) {
			out = append(out, a.Module)
		}
	}
	sort.Strings(out)
	return out
}

// TestRamdiskDrivers builds both ramdisks from Debian's real kernel and
// firmware packages (downloaded into .cache/ramdisk, like
// TestBootRamdisk) and checks against the kernel package's own aliases
// that every PCI NIC, SCSI/SAS/RAID, ATA and NVMe driver is in the
// manifest, and the old hand-written list fails the same check; that
// every module and firmware file the manifest names is in the initrd;
// and that the initrd fits MaxInitrd.
func TestRamdiskDrivers(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	cache := filepath.Join(root, ".cache", "ramdisk")
	progs := stubPayload(t)
	for _, arch := range []boot.Arch{boot.ArchX86_64, boot.ArchAArch64} {
		t.Run(string(arch), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
			defer cancel()
			o := Options{Arch: arch, DataDir: t.TempDir(), CacheDir: cache, Payload: progs,
				Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))}
			res, err := Build(ctx, o)
			if err != nil {
				t.Fatal(err)
			}
			m := res.Manifest
			t.Logf("%s: built in %.1f s: initrd %d bytes, %d modules, %d firmware files from %d packages, %d firmware files in no package: %v",
				arch, res.Took.Seconds(), m.Initrd.Size, len(m.Modules), len(m.Firmware), len(m.Inputs.Firmware), len(m.MissingFirmware), m.MissingFirmware)
			if m.Initrd.Size > MaxInitrd {
				t.Errorf("initrd %d bytes, over %d", m.Initrd.Size, MaxInitrd)
			}

			deb, err := os.ReadFile(filepath.Join(cache, arches[arch].debArch, debName(res.Kernel)))
			if err != nil {
				t.Fatal(err)
			}
			aliases, paths := packageAliases(t, deb)
			if miss := uncovered(aliases, paths, m.Modules); len(miss) > 0 {
				t.Errorf("%d PCI drivers under %v not in the ramdisk: %v", len(miss), aliasDirs, miss)
			}
			old := uncovered(aliases, paths, handList)
			if len(old) == 0 {
				t.Error("the old hand list passes the alias check: the check proves nothing")
			}
			t.Logf("%s: the old hand list lacks %d of those PCI drivers", arch, len(old))

			f, err := os.Open(res.Initrd)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			ents, err := List(f)
			if err != nil {
				t.Fatal(err)
			}
			in := map[string]int64{}
			for _, e := range ents {
				in[e.Name] = e.Size
			}
			for _, fw := range m.Firmware {
				if size, ok := in[FirmwareDir+"/"+fw]; !ok || size == 0 {
					t.Errorf("firmware %s: in the manifest, not in the initrd (or empty)", fw)
				}
			}
			for _, n := range m.Modules {
				if _, ok := in["lib/modules/"+m.Release+"/"+paths[n]]; !ok {
					t.Errorf("module %s (%s): in the manifest, not in the initrd", n, paths[n])
				}
			}
			if len(m.Firmware) == 0 {
				t.Error("no firmware file in the initrd")
			}
		})
	}
}
