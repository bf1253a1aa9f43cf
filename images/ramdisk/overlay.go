package ramdisk

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"

	"github.com/rackboot/rackboot/agent/kmod"
	"github.com/rackboot/rackboot/internal/cpio"
)

// overlayTree is an operator's directory packed into the initrd after
// everything rackboot puts there: a driver rackboot does not ship (NVIDIA's
// kernel modules with nvidia-smi and its libraries, so the burn-in can
// test GPUs) or any file a site needs in its ramdisks.
type overlayTree struct {
	archive []byte
	// key is the SHA-256 of the tree as packed (names, modes, link
	// targets and contents): a changed overlay rebuilds the ramdisk.
	key   string
	files int
	// modules are the kernel modules it carries, by name: they join
	// modules.dep and modules.alias, so the agent loads them for the
	// devices they drive as it loads the kernel's own.
	modules []string
}

// readOverlay packs dir for a ramdisk whose kernel is release and whose
// modules archive is mods. reserved are the paths rackboot itself writes
// (the programs, init, the module indexes): an overlay may not replace
// them. A module for another kernel release, a device node, a FIFO or a
// socket is refused; so is a tree over maxOverlayTree.
func readOverlay(dir, release string, mods []byte, reserved map[string]bool) (overlayTree, error) {
	var o overlayTree
	st, err := os.Stat(dir)
	if err != nil {
		return o, fmt.Errorf("overlay: %w", err)
	}
	if !st.IsDir() {
		return o, fmt.Errorf("overlay %s: not a directory", dir)
	}
	var buf bytes.Buffer
	c := cpio.New(&buf)
	sum := sha256.New()
	var total int64
	type module struct {
		path string // under lib/modules/<release>/
		info kmod.ModInfo
	}
	var modules []module
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		if rel == "." {
			return nil
		}
		name := filepath.ToSlash(rel)
		if reserved[name] {
			return fmt.Errorf("%s is rackboot's own: an overlay may not replace it", name)
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if baseDirs[name] && !info.IsDir() {
			return fmt.Errorf("%s is a directory of the ramdisk: an overlay may add to it, not replace it", name)
		}
		perm := uint32(info.Mode().Perm())
		switch t := info.Mode().Type(); {
		case t == fs.ModeDir && baseDirs[name]:
			// The unpacker would give rackboot's directory the tree's
			// mode (a umask of 077 would shut users out of /usr).
		case t == fs.ModeDir:
			c.Dir(name, perm)
			fmt.Fprintf(sum, "d %s %o\n", name, perm)
		case t == fs.ModeSymlink:
			if _, mrel, ok := moduleDir(name); ok && isModule(mrel) {
				// A module is checked for its release and indexed: a
				// link would be neither.
				return fmt.Errorf("%s is a symlink: an overlay's modules are files", name)
			}
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			c.Symlink(name, target)
			fmt.Fprintf(sum, "l %s %s\n", name, target)
		case t.IsRegular():
			if total += info.Size(); total > maxOverlayTree {
				return fmt.Errorf("the overlay's files are more than %d bytes", maxOverlayTree)
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			h := sha256.Sum256(b)
			fmt.Fprintf(sum, "f %s %o %x\n", name, perm, h)
			c.File(name, perm, b)
			o.files++
			if r, mrel, ok := moduleDir(name); ok && isModule(mrel) {
				if r != release {
					return fmt.Errorf("%s is a module for kernel %s, and the ramdisk's kernel is %s: build the driver for %s", name, r, release, release)
				}
				raw, err := unpackModule(mrel, b)
				if err != nil {
					return fmt.Errorf("%s: %w", name, err)
				}
				mi, err := kmod.ParseModInfo(raw)
				if err != nil {
					return fmt.Errorf("%s: %w", name, err)
				}
				if mi.Name == "" {
					mi.Name = kmod.ModuleName(mrel)
				}
				modules = append(modules, module{mrel, mi})
			}
		default:
			return fmt.Errorf("%s is a %s: an overlay carries files, directories and symlinks", name, info.Mode().Type())
		}
		return nil
	})
	if err != nil {
		return o, fmt.Errorf("overlay %s: %w", dir, err)
	}
	if len(modules) > 0 {
		// The module indexes are written again for the kernel's modules
		// and the overlay's together: the later copy in the initrd is
		// the one the kernel's unpacker leaves.
		deps, aliases, builtin, err := moduleIndexes(mods, release)
		if err != nil {
			return o, fmt.Errorf("overlay %s: %w", dir, err)
		}
		paths := map[string]string{}
		depends := map[string][]string{}
		for _, d := range deps {
			n := kmod.ModuleName(d.Path)
			paths[n] = d.Path
			for _, x := range d.Deps {
				depends[n] = append(depends[n], kmod.ModuleName(x))
			}
		}
		mine := map[string]bool{}
		for _, m := range modules {
			// An overlay's module replaces the kernel's of its name (a
			// newer out-of-tree driver): its path, its needs, its aliases.
			paths[m.info.Name], depends[m.info.Name] = m.path, m.info.Depends
			mine[m.info.Name] = true
			o.modules = append(o.modules, m.info.Name)
		}
		all, err := kmod.Depmod(paths, depends, builtin)
		if err != nil {
			return o, fmt.Errorf("overlay %s: %w", dir, err)
		}
		var kept []kmod.Alias
		for _, a := range aliases {
			if !mine[a.Module] {
				kept = append(kept, a)
			}
		}
		for _, m := range modules {
			for _, a := range m.info.Aliases {
				kept = append(kept, kmod.Alias{Pattern: a, Module: m.info.Name})
			}
		}
		var dep, alias bytes.Buffer
		kmod.WriteDep(&dep, all)
		kmod.WriteAlias(&alias, kept)
		base := "lib/modules/" + release + "/"
		c.File(base+"modules.dep", 0o644, dep.Bytes())
		c.File(base+"modules.alias", 0o644, alias.Bytes())
		sort.Strings(o.modules)
	}
	if err := c.Close(); err != nil {
		return o, fmt.Errorf("overlay %s: %w", dir, err)
	}
	o.archive, o.key = buf.Bytes(), hex.EncodeToString(sum.Sum(nil))
	return o, nil
}

// moduleIndexes reads modules.dep, modules.alias and modules.builtin
// back from a modules archive (an uncompressed newc archive, as
// modulesArchive writes it).
func moduleIndexes(archive []byte, release string) ([]kmod.Dep, []kmod.Alias, map[string]bool, error) {
	base := "lib/modules/" + release + "/"
	var dep, alias, builtin []byte
	err := walkNewc(archive, func(e Entry, data []byte) {
		switch e.Name {
		case base + "modules.dep":
			dep = data
		case base + "modules.alias":
			alias = data
		case base + "modules.builtin":
			builtin = data
		}
	})
	if err != nil {
		return nil, nil, nil, err
	}
	if dep == nil || alias == nil {
		return nil, nil, nil, errors.New("the kernel's modules archive has no modules.dep or modules.alias")
	}
	deps, err := kmod.ParseDep(bytes.NewReader(dep))
	if err != nil {
		return nil, nil, nil, err
	}
	aliases, err := kmod.ParseAlias(bytes.NewReader(alias))
	if err != nil {
		return nil, nil, nil, err
	}
	names, err := kmod.ParseBuiltin(bytes.NewReader(builtin))
	in := map[string]bool{}
	for _, n := range names {
		in[n] = true
	}
	return deps, aliases, in, err
}

// baseDirs are the directories every ramdisk has (baseArchive's, the
// modules archive's and pci.ids'): lib/firmware is not one, as a build
// without firmware has none.
var baseDirs = map[string]bool{}

func init() {
	for _, d := range append(baseDirList, "lib", "lib/modules", "usr/share", "usr/share/misc") {
		baseDirs[d] = true
	}
}

// reservedPaths are the paths of a ramdisk that rackboot writes itself.
func reservedPaths(programs []string, release string) map[string]bool {
	r := map[string]bool{"init": true, "bin/uinit": true, "bin/sh": true, "bin/defaultsh": true, "etc/uinit.flags": true,
		"etc/resolv.conf": true, "etc/localtime": true, PCIIDsPath: true}
	for _, d := range baseDevices {
		r[d] = true
	}
	for _, p := range programs {
		r[path.Join("bin", p)] = true
	}
	for _, f := range []string{"modules.dep", "modules.alias", "modules.builtin"} {
		r["lib/modules/"+release+"/"+f] = true
	}
	return r
}
