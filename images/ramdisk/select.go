package ramdisk

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/rackboot/rackboot/agent/kmod"
)

// DefaultModuleDirs select, by their path in the kernel package (under
// lib/modules/<release>/), the modules a ramdisk carries when
// Options.Modules is nil: every Ethernet, InfiniBand/Omni-Path host,
// SCSI/SAS/RAID, ATA, NVMe, MD/device-mapper, hardware RNG and TPM driver
// of the kernel, and virtio. A prefix ending in "/" takes a whole
// directory with its subdirectories; any other names one module file
// (its compression suffix, if any, left out). Selecting by path rather
// than by name is what makes a new Debian kernel bring its new drivers:
// a node whose NIC or disk controller is missing never comes up.
var DefaultModuleDirs = []string{
	"kernel/drivers/net/ethernet/",
	"kernel/drivers/infiniband/hw/",
	"kernel/drivers/scsi/",
	"kernel/drivers/ata/",
	"kernel/drivers/nvme/",
	"kernel/drivers/md/",
	"kernel/drivers/char/hw_random/", // virtio_rng among them: TLS needs entropy
	"kernel/drivers/char/tpm/",
	"kernel/drivers/virtio/",
	"kernel/drivers/block/virtio_blk.ko",
	"kernel/drivers/net/virtio_net.ko",
}

// selection says which modules a ramdisk carries: those under Dirs (see
// DefaultModuleDirs) and those Named, with what they need.
type selection struct {
	Dirs  []string
	Named []string // module names, '_' spelling
}

// matches reports whether the module file at path (under
// lib/modules/<release>/) is under one of the selection's dirs.
func (s selection) matches(path string) bool {
	for _, d := range s.Dirs {
		if strings.HasSuffix(d, "/") {
			if strings.HasPrefix(path, d) {
				return true
			}
		} else if path == d || (strings.HasPrefix(path, d) && isModule(path) && kmod.ModuleName(path) == kmod.ModuleName(d)) {
			return true
		}
	}
	return false
}

// key is the selection as one string, for cache keys.
func (s selection) key() string {
	return strings.Join(s.Dirs, ",") + ";" + strings.Join(s.Named, ",")
}

// selectModules is the module selection of a kernel package as a pure
// function of its module files (paths under lib/modules/<release>/) and
// their modules.dep lines (each module with everything it needs, as
// depmod writes them): the modules under s.Dirs, those s.Named, and all
// their dependencies, as sorted names. A name that is neither a module
// file nor built in (builtin, from modules.builtin) is returned as
// missing; a dependency without a module file is an error.
func selectModules(files []string, deps []kmod.Dep, builtin map[string]bool, s selection) (names, missing []string, err error) {
	byName := map[string]string{}
	for _, f := range files {
		if isModule(f) {
			byName[kmod.ModuleName(f)] = f
		}
	}
	depsOf := map[string][]string{}
	for _, d := range deps {
		depsOf[d.Path] = d.Deps
	}
	keep := map[string]bool{}
	add := func(path string) error {
		keep[kmod.ModuleName(path)] = true
		for _, d := range depsOf[path] {
			n := kmod.ModuleName(d)
			if byName[n] != d {
				return fmt.Errorf("select modules: %s needs %s, which the package lacks: %w", path, d, kmod.ErrNotFound)
			}
			keep[n] = true
		}
		return nil
	}
	for _, f := range files {
		if isModule(f) && s.matches(f) {
			if err := add(f); err != nil {
				return nil, nil, err
			}
		}
	}
	for _, n := range s.Named {
		switch p, ok := byName[n]; {
		case ok:
			if err := add(p); err != nil {
				return nil, nil, err
			}
		case !builtin[n] && !slices.Contains(missing, n):
			missing = append(missing, n)
		}
	}
	for n := range keep {
		names = append(names, n)
	}
	sort.Strings(names)
	sort.Strings(missing)
	return names, missing, nil
}
