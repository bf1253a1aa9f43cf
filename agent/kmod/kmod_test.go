package kmod

import (
	"bytes"
	"errors"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const testModules = "testdata/machine/lib/modules/6.1.0-test"

func TestMatch(t *testing.T) {
	for _, c := range []struct {
		pattern, s string
		want       bool
	}{
		{"pci:v00001AF4d*sv*sd*bc*sc*i*", "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00", true},
		{"pci:v00001AF4d*sv*sd*bc*sc*i*", "pci:v00008086d00001000sv00001AF4sd00000001bc02sc00i00", false},
		{"pci:v*d*sv*sd*bc01sc08i02*", "pci:v0000144Dd0000A808sv0000144Dsd0000A801bc01sc08i02", true},
		{"virtio:d00000001v*", "virtio:d00000001v00001AF4", true},
		{"virtio:d00000001v*", "virtio:d00000002v00001AF4", false},
		// '*' crosses '/', unlike path.Match: DMI dates.
		{"dmi*:bd*/2014:*", "dmi:bvnSeaBIOS:bvr1.16:bd04/01/2014:br0.0:svnQEMU:", true},
		{"a?c", "abc", true},
		{"a?c", "ac", false},
		{"[abc]x", "bx", true},
		{"[!abc]x", "bx", false},
		{"[^abc]x", "dx", true},
		{"[0-9A-F]", "C", true},
		{"[0-9A-F]", "c", false},
		{"[]]", "]", true},
		{"[!]]", "a", true},
		{"[a-]", "-", true},
		{`\*`, "*", true},
		{`\*`, "a", false},
		{"[abc", "[abc", true}, // no closing bracket: literal
		{"[abc", "a", false},
		{"", "", true},
		{"*", "", true},
		{"**a**", "xxaxx", true},
		{"*a*b*c*", "aXbXc", true},
		{"*a*b*c*", "aXcXb", false},
	} {
		if got := Match(c.pattern, c.s); got != c.want {
			t.Errorf("Match(%q, %q) = %v, want %v", c.pattern, c.s, got, c.want)
		}
	}
}

func TestModuleName(t *testing.T) {
	for in, want := range map[string]string{
		"kernel/drivers/nvme/host/nvme-core.ko":     "nvme_core",
		"kernel/drivers/block/virtio_blk.ko.xz":     "virtio_blk",
		"kernel/drivers/net/ethernet/x/mlx5.ko.zst": "mlx5",
		"a/b/c.ko.gz": "c",
	} {
		if got := ModuleName(in); got != want {
			t.Errorf("ModuleName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParseErrors(t *testing.T) {
	for _, in := range []string{"no colon here", "/abs.ko: x.ko", "a.ko: ../../etc/passwd", "../x.ko:"} {
		if _, err := ParseDep(strings.NewReader(in)); err == nil {
			t.Errorf("ParseDep(%q): no error", in)
		}
	}
	for _, in := range []string{"alias onlyone", "options x y z", "alias a b c"} {
		if _, err := ParseAlias(strings.NewReader(in)); err == nil {
			t.Errorf("ParseAlias(%q): no error", in)
		}
	}
}

func TestDepRoundTrip(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(testModules, "modules.dep"))
	if err != nil {
		t.Fatal(err)
	}
	deps, err := ParseDep(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := WriteDep(&out, deps); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(b), out.String()); diff != "" {
		t.Errorf("modules.dep round trip (-in +out):\n%s", diff)
	}
	aliases := []Alias{{"pci:v*d*", "a"}, {"virtio:d00000001v*", "virtio_net"}}
	out.Reset()
	WriteAlias(&out, aliases)
	back, err := ParseAlias(&out)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(aliases, back); diff != "" {
		t.Errorf("modules.alias round trip:\n%s", diff)
	}
}

func TestClosure(t *testing.T) {
	ix, err := ReadIndex(testModules)
	if err != nil {
		t.Fatal(err)
	}
	deps, err := ix.Closure("virtio_net", "nvme", "scsi_mod", "virtio-pci")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range deps {
		got = append(got, ModuleName(d.Path))
	}
	want := []string{"failover", "net_failover", "virtio_net", "nvme_core", "nvme",
		"virtio_pci_legacy_dev", "virtio_pci_modern_dev", "virtio_pci"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("closure (-want +got):\n%s", diff)
	}
	if _, err := ix.Closure("nosuch"); !errors.Is(err, ErrNotFound) {
		t.Errorf("closure of an unknown module: %v, want ErrNotFound", err)
	}
	if got := ix.Resolve("virtio:d00000002v00001AF4"); !cmp.Equal(got, []string{"virtio_blk"}) {
		t.Errorf("Resolve(alias) = %v", got)
	}
}

func TestDepmod(t *testing.T) {
	paths := map[string]string{
		"a": "kernel/a.ko", "b": "kernel/b.ko", "c": "kernel/c.ko", "d": "kernel/d.ko",
	}
	depends := map[string][]string{"a": {"b", "scsi_mod"}, "b": {"c", "d"}, "c": {"d"}}
	deps, err := Depmod(paths, depends, map[string]bool{"scsi_mod": true})
	if err != nil {
		t.Fatal(err)
	}
	want := []Dep{
		{Path: "kernel/a.ko", Deps: []string{"kernel/b.ko", "kernel/c.ko", "kernel/d.ko"}},
		{Path: "kernel/b.ko", Deps: []string{"kernel/c.ko", "kernel/d.ko"}},
		{Path: "kernel/c.ko", Deps: []string{"kernel/d.ko"}},
		{Path: "kernel/d.ko"},
	}
	if diff := cmp.Diff(want, deps); diff != "" {
		t.Errorf("depmod (-want +got):\n%s", diff)
	}
	// Loading by the lines depmod wrote puts every module after its
	// dependencies.
	got, err := NewIndex(deps, nil, nil).Closure("a")
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	for _, d := range got {
		order = append(order, ModuleName(d.Path))
	}
	if diff := cmp.Diff([]string{"d", "c", "b", "a"}, order); diff != "" {
		t.Errorf("load order (-want +got):\n%s", diff)
	}
	if _, err := Depmod(paths, map[string][]string{"a": {"zz"}}, nil); !errors.Is(err, ErrNotFound) {
		t.Errorf("depmod with a missing dependency: %v", err)
	}
	if _, err := Depmod(paths, map[string][]string{"a": {"b"}, "b": {"a"}}, nil); err == nil {
		t.Error("depmod with a loop: no error")
	}
}

// fakeKernel records what would have been loaded. Test module files hold
// "MODULE name", compressed or not.
type fakeKernel struct {
	loaded []string
	exist  map[string]bool  // modules the kernel already has
	fail   map[string]error // modules that fail to load
	onLoad func(name string)
	finit  int
}

func (k *fakeKernel) load(image []byte) error {
	name, ok := strings.CutPrefix(strings.TrimSpace(string(image)), "MODULE ")
	if !ok {
		return syscall.ENOEXEC
	}
	if k.exist[name] {
		return syscall.EEXIST
	}
	if err := k.fail[name]; err != nil {
		return err
	}
	k.loaded = append(k.loaded, name)
	if k.onLoad != nil {
		k.onLoad(name)
	}
	return nil
}

func (k *fakeKernel) FinitModule(f *os.File, params string) error {
	k.finit++
	b, err := os.ReadFile(f.Name())
	if err != nil {
		return err
	}
	return k.load(b)
}

func (k *fakeKernel) InitModule(image []byte, params string) error { return k.load(image) }

// copyTree copies the test machine's sysfs, so a test can add devices.
func copyTree(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	err := filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if fi.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

func TestHardware(t *testing.T) {
	sys := copyTree(t, "testdata/machine/sys")
	k := &fakeKernel{
		exist: map[string]bool{"virtio_pci_legacy_dev": true},
		// The virtio devices appear once their PCI transport is bound.
		onLoad: func(name string) {
			if name != "virtio_pci" {
				return
			}
			for i, a := range []string{"virtio:d00000001v00001AF4", "virtio:d00000002v00001AF4"} {
				d := filepath.Join(sys, "bus", "virtio", "devices", "virtio"+string(rune('0'+i)))
				os.MkdirAll(d, 0o755)
				os.WriteFile(filepath.Join(d, "modalias"), []byte(a+"\n"), 0o644)
			}
		},
	}
	l := &Loader{Dir: testModules, Sys: sys, Kernel: k}
	res, err := l.Hardware()
	if err != nil {
		t.Fatal(err)
	}
	want := Result{
		Loaded:  []string{"nvme_core", "nvme", "virtio_pci_modern_dev", "virtio_pci", "failover", "net_failover", "virtio_net", "virtio_blk"},
		Already: []string{"virtio_pci_legacy_dev"},
	}
	want.Failed = []Failure{{Module: "missing"}, {Module: "broken"}}
	ignoreReason := cmp.Comparer(func(a, b Failure) bool { return a.Module == b.Module })
	if diff := cmp.Diff(want, res, ignoreReason); diff != "" {
		t.Errorf("Hardware (-want +got):\n%s", diff)
	}
	if !strings.Contains(res.Failed[0].Reason, "no such file") || !strings.Contains(res.Failed[1].Reason, "dependency missing") {
		t.Errorf("failure reasons: %+v", res.Failed)
	}
	if diff := cmp.Diff(want.Loaded, k.loaded); diff != "" {
		t.Errorf("kernel saw (-want +got):\n%s", diff)
	}
	if k.finit == 0 {
		t.Error("uncompressed modules were not loaded by file descriptor")
	}

	// Asking again loads nothing twice.
	res, err = l.Load("virtio_net", "ahci", "scsi_mod", "no_such_module")
	if err != nil {
		t.Fatal(err)
	}
	want = Result{Loaded: []string{"ahci"}, Already: []string{"virtio_net"},
		Builtin: []string{"scsi_mod"}, Failed: []Failure{{Module: "no_such_module"}}}
	if diff := cmp.Diff(want, res, ignoreReason); diff != "" {
		t.Errorf("Load (-want +got):\n%s", diff)
	}
	if !errors.Is(res.Failed[0].Err, ErrNotFound) {
		t.Errorf("unknown module: %v, want ErrNotFound", res.Failed[0].Err)
	}
}

func TestLoadFailure(t *testing.T) {
	k := &fakeKernel{fail: map[string]error{"failover": syscall.ENOEXEC}}
	l := &Loader{Dir: testModules, Sys: t.TempDir(), Kernel: k}
	res, err := l.Load("virtio_net")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range res.Failed {
		names = append(names, f.Module)
	}
	// virtio_net needs failover and net_failover; failover, loaded first,
	// fails, and net_failover is not tried.
	if diff := cmp.Diff([]string{"failover", "virtio_net"}, names); diff != "" {
		t.Fatalf("failed (-want +got):\n%s", diff)
	}
	if len(res.Loaded) != 0 || len(k.loaded) != 0 {
		t.Errorf("loaded %v after a dependency failed", res.Loaded)
	}
	if !errors.Is(res.Failed[1].Err, syscall.ENOEXEC) {
		t.Errorf("the failure does not carry its cause: %v", res.Failed[2].Err)
	}
}

func TestModaliases(t *testing.T) {
	got, err := Modaliases("testdata/machine/sys")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 6 || got[len(got)-1] != "platform:serial8250" {
		t.Errorf("modaliases: %q", got)
	}
}

func FuzzParseDep(f *testing.F) {
	b, _ := os.ReadFile(filepath.Join(testModules, "modules.dep"))
	f.Add(b)
	f.Add([]byte("a.ko:\n# comment\n\nb.ko: a.ko\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		deps, err := ParseDep(bytes.NewReader(b))
		if err != nil {
			return
		}
		// What parses writes back and parses the same.
		var out bytes.Buffer
		WriteDep(&out, deps)
		again, err := ParseDep(&out)
		if err != nil {
			t.Fatalf("written modules.dep does not parse: %v\n%s", err, out.String())
		}
		if !cmp.Equal(deps, again) {
			t.Fatalf("round trip differs:\n%s", cmp.Diff(deps, again))
		}
		ix := NewIndex(deps, nil, nil)
		for _, m := range ix.Modules() {
			ix.Closure(m) // must not hang or panic, loops included
		}
	})
}

func FuzzParseAlias(f *testing.F) {
	b, _ := os.ReadFile(filepath.Join(testModules, "modules.alias"))
	f.Add(b, "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00")
	f.Add([]byte("alias [!a-]*\\x m\n"), "b\\x")
	f.Fuzz(func(t *testing.T, b []byte, modalias string) {
		aliases, err := ParseAlias(bytes.NewReader(b))
		if err != nil {
			return
		}
		NewIndex(nil, aliases, nil).Match(modalias)
	})
}

// FuzzMatch checks Match against path.Match where the two agree: ASCII
// (Match works on bytes, as modaliases are), no '/' in the name, no sets
// or escapes in the pattern.
func FuzzMatch(f *testing.F) {
	f.Add("pci:v*d*sv*sd*bc01sc08i02*", "pci:v0000144Dd0000A808sv0000144Dsd0000A801bc01sc08i02")
	f.Add("*a?b*", "xxaybzz")
	f.Fuzz(func(t *testing.T, pattern, s string) {
		got := Match(pattern, s)
		if strings.ContainsAny(pattern, `[\/`) || strings.Contains(s, "/") || !ascii(pattern+s) {
			return
		}
		want, err := path.Match(pattern, s)
		if err == nil && got != want {
			t.Fatalf("Match(%q, %q) = %v, path.Match says %v", pattern, s, got, want)
		}
	})
}

func ascii(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
