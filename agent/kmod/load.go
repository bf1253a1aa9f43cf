package kmod

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// maxModule bounds one decompressed module; the largest in Debian's
// kernels (amdgpu, mlx5_core) are a few tens of megabytes.
const maxModule = 256 << 20

// Kernel is the system call behind loading: the real one by default,
// a recorder in tests.
type Kernel interface {
	// FinitModule loads the module in the open file f (finit_module(2)).
	FinitModule(f *os.File, params string) error
	// InitModule loads a module image from memory (init_module(2)).
	InitModule(image []byte, params string) error
}

// Loader loads modules from one modules directory. Its zero value loads
// from /lib/modules/$(uname -r) for the devices under /sys. A Loader
// remembers what it loaded, so asking twice costs nothing; it is safe for
// concurrent use.
type Loader struct {
	// Dir is the modules directory; "" means /lib/modules/<release>.
	Dir string
	// Sys is sysfs' mount point; "" means /sys.
	Sys string
	// Kernel makes the system calls; nil means the running kernel.
	Kernel Kernel
	// Logger receives a line per module; nil means discard.
	Logger *slog.Logger

	mu    sync.Mutex
	index *Index
	state map[string]outcome // by module name, once tried
}

type outcome struct {
	kind string // "loaded", "already", "builtin", "failed"
	err  error
}

// Result says what a call loaded. Every module appears in one list once.
type Result struct {
	Loaded  []string  `json:"loaded,omitempty"`  // inserted by this call, in load order
	Already []string  `json:"already,omitempty"` // the kernel had them already (EEXIST)
	Builtin []string  `json:"builtin,omitempty"` // built into the kernel: nothing to load
	Failed  []Failure `json:"failed,omitempty"`
}

// Failure is a module that did not load, and why.
type Failure struct {
	Module string `json:"module"`
	Reason string `json:"reason"`
	Err    error  `json:"-"`
}

func (r *Result) add(name string, o outcome) {
	switch o.kind {
	case "loaded":
		r.Loaded = append(r.Loaded, name)
	case "already":
		r.Already = append(r.Already, name)
	case "builtin":
		r.Builtin = append(r.Builtin, name)
	default:
		r.Failed = append(r.Failed, Failure{Module: name, Reason: o.err.Error(), Err: o.err})
	}
}

func (l *Loader) log() *slog.Logger {
	if l.Logger != nil {
		return l.Logger
	}
	return slog.New(slog.DiscardHandler)
}

// ModulesDir is /lib/modules/<release of the running kernel>.
func ModulesDir() (string, error) {
	var u syscall.Utsname
	if err := syscall.Uname(&u); err != nil {
		return "", fmt.Errorf("uname: %w", err)
	}
	var b []byte
	for _, c := range u.Release {
		if c == 0 {
			break
		}
		b = append(b, byte(c))
	}
	return "/lib/modules/" + string(b), nil
}

func (l *Loader) dir() (string, error) {
	if l.Dir != "" {
		return l.Dir, nil
	}
	return ModulesDir()
}

// ReadIndex reads modules.dep and modules.alias (and modules.builtin when
// present) from a modules directory.
func ReadIndex(dir string) (*Index, error) {
	parse := func(name string, optional bool, fn func(io.Reader) error) error {
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			if optional && errors.Is(err, os.ErrNotExist) {
				return nil
			}
			return err
		}
		defer f.Close()
		return fn(f)
	}
	var deps []Dep
	var aliases []Alias
	var builtin []string
	var err error
	if err := parse("modules.dep", false, func(r io.Reader) error { deps, err = ParseDep(r); return err }); err != nil {
		return nil, fmt.Errorf("read module index %s: %w", dir, err)
	}
	if err := parse("modules.alias", true, func(r io.Reader) error { aliases, err = ParseAlias(r); return err }); err != nil {
		return nil, fmt.Errorf("read module index %s: %w", dir, err)
	}
	if err := parse("modules.builtin", true, func(r io.Reader) error { builtin, err = ParseBuiltin(r); return err }); err != nil {
		return nil, fmt.Errorf("read module index %s: %w", dir, err)
	}
	return NewIndex(deps, aliases, builtin), nil
}

// Index returns the modules directory's index, read once.
func (l *Loader) Index() (*Index, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.indexLocked()
}

func (l *Loader) indexLocked() (*Index, error) {
	if l.index != nil {
		return l.index, nil
	}
	dir, err := l.dir()
	if err != nil {
		return nil, err
	}
	ix, err := ReadIndex(dir)
	if err != nil {
		return nil, err
	}
	l.index = ix
	return ix, nil
}

// Modaliases returns the modalias of every device on every bus under a
// sysfs root (/sys/bus/*/devices/*/modalias), sorted and each once.
// Devices without one are skipped.
func Modaliases(sys string) ([]string, error) {
	if sys == "" {
		sys = "/sys"
	}
	files, err := filepath.Glob(filepath.Join(sys, "bus", "*", "devices", "*", "modalias"))
	if err != nil {
		return nil, fmt.Errorf("modaliases: %w", err)
	}
	seen := map[string]bool{}
	var out []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // a device that went away, or a modalias it will not give
		}
		a := strings.TrimSpace(string(b))
		if a != "" && !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	sort.Strings(out)
	return out, nil
}

// Hardware loads the modules for every device in sysfs whose modalias an
// alias matches. A new device may appear once its bus driver loads (a
// virtio device behind virtio_pci), so it looks again until a round loads
// nothing new, at most five rounds.
func (l *Loader) Hardware() (Result, error) {
	var res Result
	l.mu.Lock()
	defer l.mu.Unlock()
	ix, err := l.indexLocked()
	if err != nil {
		return res, err
	}
	tried := map[string]bool{}
	for round := 0; round < 5; round++ {
		aliases, err := Modaliases(l.Sys)
		if err != nil {
			return res, err
		}
		var want []string
		for _, a := range aliases {
			for _, m := range ix.Match(a) {
				if !tried[m] {
					tried[m] = true
					want = append(want, m)
				}
			}
		}
		if len(want) == 0 {
			break
		}
		before := len(res.Loaded)
		for _, m := range want {
			l.loadLocked(ix, m, &res, nil)
		}
		if len(res.Loaded) == before {
			break
		}
	}
	return res, nil
}

// Load loads modules by name (or by alias, as modprobe does), each after
// the modules it depends on.
func (l *Loader) Load(names ...string) (Result, error) {
	var res Result
	l.mu.Lock()
	defer l.mu.Unlock()
	ix, err := l.indexLocked()
	if err != nil {
		return res, err
	}
	for _, n := range names {
		mods := ix.Resolve(n)
		if len(mods) == 0 {
			res.add(n, outcome{kind: "failed", err: fmt.Errorf("load %s: %w", n, ErrNotFound)})
			continue
		}
		for _, m := range mods {
			l.loadLocked(ix, m, &res, nil)
		}
	}
	return res, nil
}

// reported tracks which modules a Result already lists.
func listed(res *Result, name string) bool {
	for _, l := range [][]string{res.Loaded, res.Already, res.Builtin} {
		for _, n := range l {
			if n == name {
				return true
			}
		}
	}
	for _, f := range res.Failed {
		if f.Module == name {
			return true
		}
	}
	return false
}

// loadLocked loads one module after its dependencies and records the
// outcome in res (once) and in the loader's state.
func (l *Loader) loadLocked(ix *Index, name string, res *Result, stack []string) outcome {
	if l.state == nil {
		l.state = map[string]outcome{}
	}
	o, done := l.state[name]
	if !done {
		o = l.try(ix, name, res, stack)
		l.state[name] = o
	}
	if !listed(res, name) {
		if done && o.kind == "loaded" {
			// Loaded by an earlier call: for this one it was already there.
			res.add(name, outcome{kind: "already"})
		} else {
			res.add(name, o)
		}
	}
	return o
}

func (l *Loader) try(ix *Index, name string, res *Result, stack []string) outcome {
	for _, s := range stack {
		if s == name {
			return outcome{kind: "failed", err: fmt.Errorf("dependency loop through %s", name)}
		}
	}
	d, ok := ix.Lookup(name)
	if !ok {
		if ix.Builtin(name) {
			return outcome{kind: "builtin"}
		}
		return outcome{kind: "failed", err: ErrNotFound}
	}
	stack = append(stack, name)
	for i := len(d.Deps) - 1; i >= 0; i-- {
		dep := ModuleName(d.Deps[i])
		if o := l.loadLocked(ix, dep, res, stack); o.kind == "failed" {
			return outcome{kind: "failed", err: fmt.Errorf("dependency %s: %w", dep, o.err)}
		}
	}
	dir, err := l.dir()
	if err != nil {
		return outcome{kind: "failed", err: err}
	}
	err = l.insert(filepath.Join(dir, filepath.FromSlash(d.Path)))
	switch {
	case err == nil:
		l.log().Info("module loaded", "module", name)
		return outcome{kind: "loaded"}
	case errors.Is(err, syscall.EEXIST):
		return outcome{kind: "already"}
	}
	l.log().Warn("module not loaded", "module", name, "err", err)
	return outcome{kind: "failed", err: err}
}

func (l *Loader) kernel() Kernel {
	if l.Kernel != nil {
		return l.Kernel
	}
	return sysKernel{}
}

// insert loads one module file: an uncompressed one by file descriptor,
// so the kernel reads (and checks the signature of) the file itself; a
// compressed one unpacked in memory.
func (l *Loader) insert(file string) error {
	k := l.kernel()
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	var r io.Reader
	switch {
	case strings.HasSuffix(file, ".ko"):
		err := k.FinitModule(f, "")
		if !errors.Is(err, syscall.ENOSYS) {
			return err
		}
		r = f // a kernel without finit_module: fall back to init_module
	case strings.HasSuffix(file, ".ko.xz"):
		xr, err := xz.NewReader(f)
		if err != nil {
			return fmt.Errorf("unpack %s: %w", filepath.Base(file), err)
		}
		r = xr
	case strings.HasSuffix(file, ".ko.zst"):
		zr, err := zstd.NewReader(f, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return fmt.Errorf("unpack %s: %w", filepath.Base(file), err)
		}
		defer zr.Close()
		r = zr
	case strings.HasSuffix(file, ".ko.gz"):
		gr, err := gzip.NewReader(f)
		if err != nil {
			return fmt.Errorf("unpack %s: %w", filepath.Base(file), err)
		}
		r = gr
	default:
		return fmt.Errorf("%s: not a module file (.ko, .ko.xz, .ko.zst, .ko.gz)", filepath.Base(file))
	}
	var b bytes.Buffer
	n, err := io.Copy(&b, io.LimitReader(r, maxModule+1))
	if err != nil {
		return fmt.Errorf("unpack %s: %w", filepath.Base(file), err)
	}
	if n > maxModule {
		return fmt.Errorf("unpack %s: more than %d bytes", filepath.Base(file), maxModule)
	}
	return k.InitModule(b.Bytes(), "")
}
