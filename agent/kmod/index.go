// Package kmod loads Linux kernel modules for the agent ramdisk without
// modprobe: it reads the modules.dep and modules.alias files that depmod
// (or rackboot's ramdisk build) writes, matches the modalias of every
// device under /sys/bus against the aliases, and inserts each matching
// module after its dependencies with finit_module(2), or init_module(2)
// for modules compressed with xz, zstd or gzip, which it unpacks in
// memory. It also writes those index files, for the ramdisk build, from
// the .modinfo sections of the modules themselves.
package kmod

import (
	"bufio"
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"sort"
	"strings"
)

// ErrNotFound is returned for a module name that the index does not know.
var ErrNotFound = errors.New("no such module")

// maxLine bounds one line of an index file; modules.dep lines of the
// largest modules are a few kilobytes.
const maxLine = 1 << 20

// Dep is one line of modules.dep: a module's path relative to the
// modules directory and the paths of every module it needs, in the order
// depmod writes them (the last one is loaded first).
type Dep struct {
	Path string
	Deps []string
}

// Alias is one line of modules.alias: a glob over device modaliases and
// the name of the module that drives the devices it matches.
type Alias struct {
	Pattern string
	Module  string
}

// ModuleName is the name the kernel knows a module file by: its base name
// without ".ko" and a compression suffix, with '-' as '_'
// (kernel/drivers/nvme/host/nvme-core.ko → nvme_core).
func ModuleName(file string) string {
	b := path.Base(file)
	for _, ext := range []string{".xz", ".zst", ".gz"} {
		b = strings.TrimSuffix(b, ext)
	}
	b = strings.TrimSuffix(b, ".ko")
	return strings.ReplaceAll(b, "-", "_")
}

func lines(r io.Reader, fn func(n int, line string) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxLine)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		if err := fn(n, line); err != nil {
			return err
		}
	}
	return sc.Err()
}

// cleanPath reports whether p is a module path as the index files hold
// them: relative, clean, with no ".." and no NUL.
func cleanPath(p string) bool {
	return p != "" && !path.IsAbs(p) && path.Clean(p) == p && p != "." && !strings.HasPrefix(p, "../") &&
		p != ".." && !strings.ContainsAny(p, "\x00\\")
}

// ParseDep reads modules.dep: "kernel/a.ko: kernel/b.ko kernel/c.ko".
func ParseDep(r io.Reader) ([]Dep, error) {
	var out []Dep
	err := lines(r, func(n int, line string) error {
		mod, deps, ok := strings.Cut(line, ":")
		mod = strings.TrimSpace(mod)
		if !ok || !cleanPath(mod) {
			return fmt.Errorf("parse modules.dep line %d: %q is not \"module.ko: deps...\"", n, line)
		}
		d := Dep{Path: mod}
		for _, f := range strings.Fields(deps) {
			if !cleanPath(f) {
				return fmt.Errorf("parse modules.dep line %d: bad dependency path %q", n, f)
			}
			d.Deps = append(d.Deps, f)
		}
		out = append(out, d)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("parse modules.dep: %w", err)
	}
	return out, nil
}

// ParseAlias reads modules.alias: "alias PATTERN MODULE" lines.
func ParseAlias(r io.Reader) ([]Alias, error) {
	var out []Alias
	err := lines(r, func(n int, line string) error {
		f := strings.Fields(line)
		if len(f) != 3 || f[0] != "alias" {
			return fmt.Errorf("parse modules.alias line %d: %q is not \"alias PATTERN MODULE\"", n, line)
		}
		out = append(out, Alias{Pattern: f[1], Module: strings.ReplaceAll(f[2], "-", "_")})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("parse modules.alias: %w", err)
	}
	return out, nil
}

// ParseBuiltin reads modules.builtin, one module path a line, and returns
// the module names.
func ParseBuiltin(r io.Reader) ([]string, error) {
	var out []string
	err := lines(r, func(n int, line string) error {
		if !cleanPath(line) {
			return fmt.Errorf("parse modules.builtin line %d: bad path %q", n, line)
		}
		out = append(out, ModuleName(line))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("parse modules.builtin: %w", err)
	}
	return out, nil
}

// WriteDep writes deps in modules.dep format.
func WriteDep(w io.Writer, deps []Dep) error {
	var b bytes.Buffer
	for _, d := range deps {
		b.WriteString(d.Path)
		b.WriteByte(':')
		for _, p := range d.Deps {
			b.WriteByte(' ')
			b.WriteString(p)
		}
		b.WriteByte('\n')
	}
	_, err := w.Write(b.Bytes())
	return err
}

// WriteAlias writes aliases in modules.alias format.
func WriteAlias(w io.Writer, aliases []Alias) error {
	var b bytes.Buffer
	b.WriteString("# Aliases extracted from modules themselves.\n")
	for _, a := range aliases {
		fmt.Fprintf(&b, "alias %s %s\n", a.Pattern, a.Module)
	}
	_, err := w.Write(b.Bytes())
	return err
}

// Index is a modules directory's dependency, alias and built-in lists.
type Index struct {
	deps    map[string]Dep // by module name
	aliases []Alias
	builtin map[string]bool
}

// NewIndex builds an index from parsed files. A module listed twice keeps
// its first line, as modprobe does.
func NewIndex(deps []Dep, aliases []Alias, builtin []string) *Index {
	ix := &Index{deps: map[string]Dep{}, aliases: aliases, builtin: map[string]bool{}}
	for _, d := range deps {
		if _, ok := ix.deps[ModuleName(d.Path)]; !ok {
			ix.deps[ModuleName(d.Path)] = d
		}
	}
	for _, b := range builtin {
		ix.builtin[b] = true
	}
	return ix
}

// Modules returns the names of the loadable modules, sorted.
func (ix *Index) Modules() []string {
	out := make([]string, 0, len(ix.deps))
	for n := range ix.deps {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Lookup returns a module's modules.dep line; name may use '-' or '_'.
func (ix *Index) Lookup(name string) (Dep, bool) {
	d, ok := ix.deps[strings.ReplaceAll(name, "-", "_")]
	return d, ok
}

// Builtin reports whether a module is built into the kernel.
func (ix *Index) Builtin(name string) bool {
	return ix.builtin[strings.ReplaceAll(name, "-", "_")]
}

// Aliases returns the aliases, in file order.
func (ix *Index) Aliases() []Alias { return ix.aliases }

// Match returns the modules whose aliases match a device's modalias, in
// alias file order, each once.
func (ix *Index) Match(modalias string) []string {
	var out []string
	for _, a := range ix.aliases {
		if !slices.Contains(out, a.Module) && Match(a.Pattern, modalias) {
			out = append(out, a.Module)
		}
	}
	return out
}

// Resolve names the modules a name stands for: the module itself when the
// index has it, else the modules an alias matching the name points to
// (as "modprobe NAME" does). Built-in modules resolve to themselves.
func (ix *Index) Resolve(name string) []string {
	n := strings.ReplaceAll(name, "-", "_")
	if _, ok := ix.deps[n]; ok || ix.builtin[n] {
		return []string{n}
	}
	return ix.Match(name)
}

// Closure returns the modules.dep lines of the named modules and of
// everything they depend on, each once, dependencies before the modules
// that need them. Built-in modules are left out; a name the index does
// not know is an error wrapping ErrNotFound.
func (ix *Index) Closure(names ...string) ([]Dep, error) {
	var out []Dep
	seen := map[string]bool{}
	var visit func(name string, stack []string) error
	visit = func(name string, stack []string) error {
		if seen[name] {
			return nil
		}
		d, ok := ix.deps[name]
		if !ok {
			if ix.builtin[name] {
				seen[name] = true
				return nil
			}
			if len(stack) > 0 {
				return fmt.Errorf("module %s needs %s: %w", stack[len(stack)-1], name, ErrNotFound)
			}
			return fmt.Errorf("module %s: %w", name, ErrNotFound)
		}
		if slices.Contains(stack, name) {
			return fmt.Errorf("module %s: dependency loop %s", name, strings.Join(append(stack, name), " → "))
		}
		stack = append(stack, name)
		for i := len(d.Deps) - 1; i >= 0; i-- {
			if err := visit(ModuleName(d.Deps[i]), stack); err != nil {
				return err
			}
		}
		seen[name] = true
		out = append(out, d)
		return nil
	}
	for _, n := range names {
		if err := visit(strings.ReplaceAll(n, "-", "_"), nil); err != nil {
			return nil, fmt.Errorf("closure: %w", err)
		}
	}
	return out, nil
}

// ModInfo is what a module file says about itself in its .modinfo
// section.
type ModInfo struct {
	Name    string   // "name=", else derived from the file name
	Depends []string // "depends=", module names
	Aliases []string // "alias=" patterns
	SoftPre []string // "softdep=pre: ..." module names, loaded first when present
	// Firmware are the "firmware=" files the module may ask the kernel's
	// firmware loader for, relative to /lib/firmware (what modinfo -F
	// firmware prints); a few drivers name a glob ("qcom/*.mbn").
	Firmware []string
}

// ParseModInfo reads the .modinfo section of an uncompressed module image
// (an ELF relocatable object): NUL-separated key=value strings.
func ParseModInfo(image []byte) (ModInfo, error) {
	var mi ModInfo
	f, err := elf.NewFile(bytes.NewReader(image))
	if err != nil {
		return mi, fmt.Errorf("parse modinfo: %w", err)
	}
	defer f.Close()
	s := f.Section(".modinfo")
	if s == nil {
		return mi, errors.New("parse modinfo: no .modinfo section")
	}
	if s.Size > 1<<20 {
		return mi, fmt.Errorf("parse modinfo: .modinfo is %d bytes", s.Size)
	}
	data, err := s.Data()
	if err != nil {
		return mi, fmt.Errorf("parse modinfo: %w", err)
	}
	for _, kv := range bytes.Split(data, []byte{0}) {
		k, v, ok := strings.Cut(string(kv), "=")
		if !ok {
			continue
		}
		switch k {
		case "name":
			mi.Name = strings.ReplaceAll(v, "-", "_")
		case "depends":
			for _, d := range strings.Split(v, ",") {
				if d = strings.TrimSpace(d); d != "" {
					mi.Depends = append(mi.Depends, strings.ReplaceAll(d, "-", "_"))
				}
			}
		case "alias":
			if v != "" && !strings.ContainsAny(v, " \t\n") {
				mi.Aliases = append(mi.Aliases, v)
			}
		case "firmware":
			if v != "" && !strings.ContainsAny(v, " \t\n") {
				mi.Firmware = append(mi.Firmware, v)
			}
		case "softdep":
			// "pre: a b post: c"
			pre := false
			for _, w := range strings.Fields(v) {
				switch w {
				case "pre:":
					pre = true
				case "post:":
					pre = false
				default:
					if pre {
						mi.SoftPre = append(mi.SoftPre, strings.ReplaceAll(w, "-", "_"))
					}
				}
			}
		}
	}
	return mi, nil
}

// Depmod computes modules.dep lines from each module's direct
// dependencies, as depmod does: every module lists all it needs,
// transitively, the modules needed by others after them. paths maps a
// module name to its path; a dependency with no path is an error wrapping
// ErrNotFound, unless builtin says the kernel has it built in.
func Depmod(paths map[string]string, depends map[string][]string, builtin map[string]bool) ([]Dep, error) {
	names := make([]string, 0, len(paths))
	for n := range paths {
		names = append(names, n)
	}
	sort.Strings(names)
	var out []Dep
	for _, n := range names {
		// Post-order over the direct dependencies gives a load order;
		// modules.dep lists it reversed, the first to load last.
		var order []string
		seen := map[string]bool{n: true}
		var visit func(m string, stack []string) error
		visit = func(m string, stack []string) error {
			for _, d := range depends[m] {
				if builtin[d] {
					continue
				}
				if _, ok := paths[d]; !ok {
					return fmt.Errorf("depmod: %s needs %s: %w", m, d, ErrNotFound)
				}
				if slices.Contains(stack, d) {
					return fmt.Errorf("depmod: dependency loop %s → %s", strings.Join(stack, " → "), d)
				}
				if seen[d] {
					continue
				}
				seen[d] = true
				if err := visit(d, append(stack, d)); err != nil {
					return err
				}
				order = append(order, d)
			}
			return nil
		}
		if err := visit(n, []string{n}); err != nil {
			return nil, err
		}
		d := Dep{Path: paths[n]}
		for i := len(order) - 1; i >= 0; i-- {
			d.Deps = append(d.Deps, paths[order[i]])
		}
		out = append(out, d)
	}
	return out, nil
}
