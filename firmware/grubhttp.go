package firmware

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"

	"github.com/rackboot/rackboot/internal/atomicfile"
)

// GRUBHTTPPackage is the Debian package whose GRUB modules BuildGRUBHTTP
// puts together: arm64-efi, unsigned.
const GRUBHTTPPackage = "grub-efi-arm64-bin"

// grubModuleDir is where the package keeps them.
const grubModuleDir = "usr/lib/grub/arm64-efi/"

// GRUBHTTPModules are what the HTTP network GRUB carries: the network
// stack with http (which Debian's signed image lacks) and tftp, Linux
// loading, the per-node config's scripting, and what its local-disk path
// needs to find and chainload a disk's loader.
var GRUBHTTPModules = []string{
	"normal", "configfile", "echo", "test", "sleep", "regexp", "cat", "ls", "minicmd", "halt", "reboot",
	"net", "efinet", "http", "tftp",
	"linux", "fdt", "gzio", "boot", "chain",
	"search", "search_fs_file", "search_fs_uuid", "search_label", "part_gpt", "part_msdos", "fat", "ext2", "iso9660",
	"efi_gop", "all_video",
}

// ErrNoGRUBMkimage is returned when grub-mkimage is not installed.
var ErrNoGRUBMkimage = errors.New("grub-mkimage not found (apt-get install grub-common)")

// grubHTTPMember names the built file in the manifest: it is no member of
// the package but made from its modules.
const grubHTTPMember = "grub-mkimage -O arm64-efi -p /grub " + grubModuleDir

// BuildGRUBHTTP makes GRUBHTTPAA64 in o.Dest: an unsigned AArch64 network
// GRUB with the http module, for UEFI HTTP boot without TFTP. Debian's
// signed GRUB has no http module, and its embedded config reads its
// config from its prefix, which after an HTTP boot is (http,SERVER)/grub:
// it ends at the grub> prompt. This one has the prefix /grub on the
// device it booted from, so it reads rackboot's grub/grub.cfg over HTTP.
//
// The modules come from Debian's grub-efi-arm64-bin, verified as every
// package is; grub-mkimage (package grub-common) assembles them. A file
// already built and intact is kept (o.Update asks the archive again and
// rebuilds when its package changed).
func BuildGRUBHTTP(ctx context.Context, o Options) (Entry, error) {
	mkimage, err := exec.LookPath("grub-mkimage")
	if err != nil {
		return Entry{}, fmt.Errorf("build %s: %w", GRUBHTTPAA64, ErrNoGRUBMkimage)
	}
	m, err := ReadManifest(o.Dest)
	if err != nil {
		m = Manifest{Files: map[string]Entry{}}
	}
	if e, ok := m.Files[GRUBHTTPAA64]; ok && !o.Update && e.Member == grubHTTPMember && checkFile(o.Dest, GRUBHTTPAA64, e) == nil {
		return e, nil
	}
	a, err := Open(ctx, o)
	if err != nil {
		return Entry{}, fmt.Errorf("build %s: %w", GRUBHTTPAA64, err)
	}
	p, err := a.Find(ctx, "arm64", GRUBHTTPPackage)
	if err != nil {
		return Entry{}, fmt.Errorf("build %s: %w", GRUBHTTPAA64, err)
	}
	if e, ok := m.Files[GRUBHTTPAA64]; ok && e.DebSHA256 == p.Sum.SHA256 && e.Member == grubHTTPMember && checkFile(o.Dest, GRUBHTTPAA64, e) == nil {
		return e, nil
	}
	deb, err := a.Download(ctx, p)
	if err != nil {
		return Entry{}, fmt.Errorf("build %s: %w", GRUBHTTPAA64, err)
	}
	work, err := os.MkdirTemp("", "rackboot-grub-")
	if err != nil {
		return Entry{}, fmt.Errorf("build %s: %w", GRUBHTTPAA64, err)
	}
	defer os.RemoveAll(work)
	mods := filepath.Join(work, "arm64-efi")
	if err := extractDir(deb, grubModuleDir, mods); err != nil {
		return Entry{}, fmt.Errorf("build %s: package %s %s: %w", GRUBHTTPAA64, p.Name, p.Version, err)
	}
	out := filepath.Join(work, "grub.efi")
	args := append([]string{"-O", "arm64-efi", "-d", mods, "-p", "/grub", "-o", out}, GRUBHTTPModules...)
	if b, err := exec.CommandContext(ctx, mkimage, args...).CombinedOutput(); err != nil {
		return Entry{}, fmt.Errorf("build %s: grub-mkimage: %w: %s", GRUBHTTPAA64, err, strings.TrimSpace(string(b)))
	}
	img, err := os.ReadFile(out)
	if err != nil {
		return Entry{}, fmt.Errorf("build %s: %w", GRUBHTTPAA64, err)
	}
	if err := atomicfile.Write(filepath.Join(o.Dest, filepath.FromSlash(GRUBHTTPAA64)), img); err != nil {
		return Entry{}, fmt.Errorf("build %s: %w", GRUBHTTPAA64, err)
	}
	s := sha256.Sum256(img)
	e := Entry{Package: p.Name, Version: p.Version, Arch: p.Arch, Member: grubHTTPMember, DebSHA256: p.Sum.SHA256,
		SHA256: hex.EncodeToString(s[:]), Size: int64(len(img))}
	m.Files[GRUBHTTPAA64] = e
	if m.Mirror == "" {
		m.Mirror, m.Suite = a.Mirror(), a.Suite()
	}
	if err := writeManifest(o.Dest, m); err != nil {
		return e, fmt.Errorf("build %s: %w", GRUBHTTPAA64, err)
	}
	o.log().Info("built", "file", GRUBHTTPAA64, "package", p.Name, "version", p.Version, "bytes", len(img))
	return e, nil
}

// extractDir writes the regular files of deb under prefix (a directory
// inside the package, ending in /) flat into dir.
func extractDir(deb []byte, prefix, dir string) error {
	open, err := DebData(deb)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	n := 0
	err = ScanTar(open, func(h *tar.Header, r io.Reader) error {
		name := MemberPath(h.Name)
		if h.Typeflag != tar.TypeReg || !strings.HasPrefix(name, prefix) {
			return nil
		}
		base := strings.TrimPrefix(name, prefix)
		if base == "" || strings.Contains(base, "/") || path.Clean(base) != base {
			return nil
		}
		var b bytes.Buffer
		if _, err := io.Copy(&b, r); err != nil {
			return err
		}
		n++
		return os.WriteFile(filepath.Join(dir, base), b.Bytes(), 0o644)
	})
	if err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("no files under %s", prefix)
	}
	return nil
}
