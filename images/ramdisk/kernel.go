package ramdisk

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/rackboot/rackboot/agent/kmod"
	"github.com/rackboot/rackboot/firmware"
	"github.com/rackboot/rackboot/internal/atomicfile"
	"github.com/ulikunitz/xz"
)

// Kernel is the Debian kernel package a ramdisk boots on.
type Kernel struct {
	Meta      string `json:"meta"`       // the metapackage asked for: linux-image-amd64
	Package   string `json:"package"`    // what it resolved to: linux-image-6.1.0-56-amd64
	Version   string `json:"version"`    // the package version: 6.1.192-2
	DebSHA256 string `json:"deb_sha256"` // of the .deb, as the archive's index lists it
	Filename  string `json:"filename"`   // pool path under the mirror
	Size      int64  `json:"size"`       // of the .deb
}

// Release is the kernel release the package installs (uname -r):
// linux-image-6.1.0-56-amd64 gives 6.1.0-56-amd64.
func (k Kernel) Release() string { return strings.TrimPrefix(k.Package, "linux-image-") }

// fetchKernel returns the kernel package for a Debian arch and its .deb,
// from dir when a verified copy is there (no network at all), else from
// the archive (checked against its index) into dir. update asks the
// archive for the newest version even when a copy is there.
func fetchKernel(ctx context.Context, o firmware.Options, meta, debArch, dir string, update bool) (Kernel, []byte, error) {
	rec := filepath.Join(dir, "kernel.json")
	if !update {
		if b, err := os.ReadFile(rec); err == nil {
			var k Kernel
			if json.Unmarshal(b, &k) == nil && k.Meta == meta {
				deb, err := os.ReadFile(filepath.Join(dir, debName(k)))
				if err == nil && sha(deb) == k.DebSHA256 {
					return k, deb, nil
				}
			}
		}
	}
	a, err := firmware.Open(ctx, o)
	if err != nil {
		return Kernel{}, nil, fmt.Errorf("kernel %s: %w", meta, err)
	}
	p, err := a.Resolve(ctx, debArch, meta, "linux-image-")
	if err != nil {
		return Kernel{}, nil, fmt.Errorf("kernel %s: %w", meta, err)
	}
	k := Kernel{Meta: meta, Package: p.Name, Version: p.Version, DebSHA256: p.Sum.SHA256, Filename: p.Filename, Size: p.Sum.Size}
	deb, err := os.ReadFile(filepath.Join(dir, debName(k)))
	if err != nil || sha(deb) != k.DebSHA256 {
		if deb, err = a.Download(ctx, p); err != nil { // checked against the index
			return Kernel{}, nil, fmt.Errorf("kernel %s: %w", meta, err)
		}
		if err := atomicfile.Write(filepath.Join(dir, debName(k)), deb); err != nil {
			return Kernel{}, nil, fmt.Errorf("kernel %s: cache: %w", meta, err)
		}
	}
	// Older kernels of this flavour are not needed any more.
	prune(dir, "linux-image-*.deb", debName(k))
	b, _ := json.MarshalIndent(k, "", "  ")
	if err := atomicfile.Write(rec, append(b, '\n')); err != nil {
		return Kernel{}, nil, fmt.Errorf("kernel %s: cache: %w", meta, err)
	}
	return k, deb, nil
}

// prune removes the files in dir matching pattern but keep.
func prune(dir, pattern, keep string) {
	old, _ := filepath.Glob(filepath.Join(dir, pattern))
	for _, f := range old {
		if filepath.Base(f) != keep {
			os.Remove(f)
		}
	}
}

func debName(k Kernel) string {
	return k.Package + "_" + strings.ReplaceAll(k.Version, ":", "%3a") + ".deb"
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// module is one module file of the kernel package.
type module struct {
	Path string // under lib/modules/<release>/: kernel/drivers/...ko
	Info kmod.ModInfo
	Data []byte // the file as packaged; nil when not kept
}

// kernelFiles is what a ramdisk needs from a kernel package.
type kernelFiles struct {
	Release string
	Vmlinuz []byte
	Builtin []byte // modules.builtin
	Modules map[string]*module
}

// maxFile bounds one file read from the package.
const maxFile = 256 << 20

// moduleDir returns the release and the path under lib/modules/<release>/
// of a package member, or ok false for files elsewhere. Newer Debian
// kernels ship their modules under usr/lib/modules.
func moduleDir(member string) (release, rel string, ok bool) {
	p := strings.TrimPrefix(firmware.MemberPath(member), "usr/")
	rest, ok := strings.CutPrefix(p, "lib/modules/")
	if !ok {
		return "", "", false
	}
	release, rel, ok = strings.Cut(rest, "/")
	return release, rel, ok && release != "" && rel != ""
}

// unpackModule decompresses a module file for reading its .modinfo.
func unpackModule(name string, b []byte) ([]byte, error) {
	var r io.Reader
	switch {
	case strings.HasSuffix(name, ".ko"):
		return b, nil
	case strings.HasSuffix(name, ".ko.xz"):
		xr, err := xz.NewReader(bytes.NewReader(b))
		if err != nil {
			return nil, err
		}
		r = xr
	case strings.HasSuffix(name, ".ko.zst"):
		zr, err := zstd.NewReader(bytes.NewReader(b), zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, err
		}
		defer zr.Close()
		r = zr
	case strings.HasSuffix(name, ".ko.gz"):
		gr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			return nil, err
		}
		r = gr
	default:
		return nil, fmt.Errorf("%s: not a module", name)
	}
	return io.ReadAll(io.LimitReader(r, maxFile))
}

func isModule(name string) bool {
	for _, ext := range []string{".ko", ".ko.xz", ".ko.zst", ".ko.gz"} {
		if strings.HasSuffix(name, ext) {
			return true
		}
	}
	return false
}

// readKernel reads the kernel image, modules.builtin and the .modinfo of
// every module from a kernel package, and keeps the bytes of the modules
// that sel selects (selectModules) with everything they need. The
// package is read once, or twice when a needed module came before the
// module that needs it.
func readKernel(deb []byte, sel selection) (*kernelFiles, []string, error) {
	open, err := firmware.DebData(deb)
	if err != nil {
		return nil, nil, err
	}
	kf := &kernelFiles{Modules: map[string]*module{}}
	// keep guesses, during the first pass, what the selection will hold,
	// so that most modules need no second pass.
	keep := map[string]bool{}
	for _, w := range sel.Named {
		keep[w] = true
	}
	pass := func(first bool) error {
		return firmware.ScanTar(open, func(h *tar.Header, tr io.Reader) (err error) {
			if h.Typeflag != tar.TypeReg || h.Size > maxFile {
				return nil
			}
			name := firmware.MemberPath(h.Name)
			if first && strings.HasPrefix(name, "boot/vmlinuz-") {
				if kf.Vmlinuz, err = io.ReadAll(tr); err != nil {
					return fmt.Errorf("read deb %s: %w", name, err)
				}
				return nil
			}
			release, rel, ok := moduleDir(name)
			if !ok {
				return nil
			}
			if kf.Release != "" && release != kf.Release {
				return fmt.Errorf("read deb: modules of two releases, %s and %s", kf.Release, release)
			}
			kf.Release = release
			if rel == "modules.builtin" && first {
				if kf.Builtin, err = io.ReadAll(tr); err != nil {
					return fmt.Errorf("read deb %s: %w", name, err)
				}
				return nil
			}
			if !isModule(rel) {
				return nil
			}
			mn := kmod.ModuleName(rel)
			if !first && (!keep[mn] || kf.Modules[mn] == nil || kf.Modules[mn].Data != nil) {
				return nil
			}
			b, err := io.ReadAll(tr)
			if err != nil {
				return fmt.Errorf("read deb %s: %w", name, err)
			}
			if first {
				raw, err := unpackModule(rel, b)
				if err != nil {
					return fmt.Errorf("read deb %s: %w", name, err)
				}
				info, err := kmod.ParseModInfo(raw)
				if err != nil {
					return fmt.Errorf("read deb %s: %w", name, err)
				}
				if info.Name == "" {
					info.Name = mn
				}
				kf.Modules[mn] = &module{Path: rel, Info: info}
				if sel.matches(rel) {
					keep[mn] = true
				}
				if keep[mn] {
					for _, d := range info.Depends {
						keep[d] = true
					}
				}
			}
			if keep[mn] {
				kf.Modules[mn].Data = b
			}
			return nil
		})
	}
	if err := pass(true); err != nil {
		return nil, nil, err
	}
	if kf.Vmlinuz == nil {
		return nil, nil, errors.New("read deb: no boot/vmlinuz-* inside")
	}
	if kf.Release == "" {
		return nil, nil, errors.New("read deb: no lib/modules/<release> inside")
	}
	builtin := map[string]bool{}
	if kf.Builtin != nil {
		names, err := kmod.ParseBuiltin(bytes.NewReader(kf.Builtin))
		if err != nil {
			return nil, nil, fmt.Errorf("read deb: %w", err)
		}
		for _, n := range names {
			builtin[n] = true
		}
	}
	// modules.dep as depmod would write it for the whole package (Debian
	// ships none: depmod runs when the package is installed).
	paths := map[string]string{}
	depends := map[string][]string{}
	files := make([]string, 0, len(kf.Modules))
	for n, m := range kf.Modules {
		paths[n], depends[n] = m.Path, m.Info.Depends
		files = append(files, m.Path)
	}
	sort.Strings(files)
	deps, err := kmod.Depmod(paths, depends, builtin)
	if err != nil {
		return nil, nil, fmt.Errorf("read deb: a module needs one the package lacks: %w", err)
	}
	names, missing, err := selectModules(files, deps, builtin, sel)
	if err != nil {
		return nil, nil, fmt.Errorf("read deb: %w", err)
	}
	keep = map[string]bool{}
	again := false
	for _, n := range names {
		keep[n] = true
		again = again || kf.Modules[n].Data == nil
	}
	if again {
		if err := pass(false); err != nil {
			return nil, nil, err
		}
	}
	// Only the selection stays.
	for n, m := range kf.Modules {
		if !keep[n] {
			delete(kf.Modules, n)
		} else if m.Data == nil {
			return nil, nil, fmt.Errorf("read deb: %s not found on the second pass", n)
		}
	}
	return kf, missing, nil
}

// modulesArchive writes lib/modules/<release>/ for the kept modules: the
// files as packaged, and modules.dep, modules.alias and modules.builtin
// for them, as depmod would write them.
func modulesArchive(w io.Writer, kf *kernelFiles) ([]string, error) {
	paths := map[string]string{}
	depends := map[string][]string{}
	names := make([]string, 0, len(kf.Modules))
	for n, m := range kf.Modules {
		paths[n] = m.Path
		depends[n] = m.Info.Depends
		names = append(names, n)
	}
	sort.Strings(names)
	builtin := map[string]bool{}
	if kf.Builtin != nil {
		bn, err := kmod.ParseBuiltin(bytes.NewReader(kf.Builtin))
		if err != nil {
			return nil, err
		}
		for _, n := range bn {
			builtin[n] = true
		}
	}
	deps, err := kmod.Depmod(paths, depends, builtin)
	if err != nil {
		return nil, err
	}
	var aliases []kmod.Alias
	for _, n := range names {
		for _, a := range kf.Modules[n].Info.Aliases {
			aliases = append(aliases, kmod.Alias{Pattern: a, Module: n})
		}
	}
	var dep, alias bytes.Buffer
	kmod.WriteDep(&dep, deps)
	kmod.WriteAlias(&alias, aliases)
	base := "lib/modules/" + kf.Release + "/"
	files := []file{{base + "modules.dep", dep.Bytes()}, {base + "modules.alias", alias.Bytes()}}
	if kf.Builtin != nil {
		files = append(files, file{base + "modules.builtin", kf.Builtin})
	}
	byPath := make([]string, 0, len(names))
	for _, n := range names {
		byPath = append(byPath, n)
	}
	sort.Slice(byPath, func(i, j int) bool { return kf.Modules[byPath[i]].Path < kf.Modules[byPath[j]].Path })
	for _, n := range byPath {
		files = append(files, file{base + kf.Modules[n].Path, kf.Modules[n].Data})
	}
	if err := writeTree(w, files); err != nil {
		return nil, err
	}
	return names, nil
}
