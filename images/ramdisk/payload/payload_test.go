package payload

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/google/go-cmp/cmp"
)

// archive packs programs as Compile does.
func archive(t *testing.T, progs map[string]string) []byte {
	t.Helper()
	dir := t.TempDir()
	var names []string
	for n, data := range progs {
		os.WriteFile(filepath.Join(dir, n), []byte(data), 0o755)
		names = append(names, n)
	}
	b, err := pack(dir, names)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestLoad(t *testing.T) {
	fsys := fstest.MapFS{
		"README.md":     {Data: []byte("nothing built")},
		"amd64.tar.zst": {Data: archive(t, map[string]string{"init": "init amd64", "gosh": "gosh amd64"})},
		"arm64.tar.zst": {Data: archive(t, map[string]string{"init": "init arm64"})},
	}
	got, err := Load(fsys, "amd64")
	if err != nil {
		t.Fatal(err)
	}
	want := []Program{{"gosh", []byte("gosh amd64")}, {"init", []byte("init amd64")}}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("amd64 programs (-want +got):\n%s", d)
	}
	if got[1].SHA256() != "b3ab8854cd3503bc07f136402fb61f79f24a3094ca0f06611dd086e20315b179" {
		t.Errorf("sha256 %q", got[1].SHA256())
	}
	// The same programs pack to the same bytes.
	if a, b := archive(t, map[string]string{"a": "1", "b": "2"}), archive(t, map[string]string{"b": "2", "a": "1"}); !bytes.Equal(a, b) {
		t.Error("packing the same programs twice gave different archives")
	}
	// Nothing built for an architecture (a fresh clone's binary): the
	// error says how to get the programs.
	for _, fsys := range []fstest.MapFS{fsys, {"README.md": {Data: []byte("x")}}} {
		_, err := Load(fsys, "riscv64")
		if !errors.Is(err, ErrMissing) || !strings.Contains(err.Error(), "make build") {
			t.Errorf("no programs: err = %v, want ErrMissing", err)
		}
	}
	if _, err := Load(fstest.MapFS{"amd64.tar.zst": {Data: []byte("not zstd")}}, "amd64"); err == nil {
		t.Error("damaged archive: no error")
	}
}

// The binary of a fresh clone embeds the README alone and still builds.
func TestEmbedded(t *testing.T) {
	if _, err := Embedded().Open("README.md"); err != nil {
		t.Fatal(err)
	}
}

// TestCompile cross-compiles a small command for both architectures,
// reads it back, and leaves an unchanged archive untouched.
func TestCompile(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the go command")
	}
	dir := t.TempDir()
	o := Options{Dir: dir, Packages: []string{"./testdata/hello"}}
	if err := Compile(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	for _, arch := range Arches {
		progs, err := Load(os.DirFS(dir), arch)
		if err != nil {
			t.Fatal(err)
		}
		if len(progs) != 1 || progs[0].Name != "hello" || !bytes.HasPrefix(progs[0].Data, []byte("\x7fELF")) {
			t.Fatalf("%s: %d programs, first %q", arch, len(progs), progs[0].Name)
		}
		// e_machine: 62 x86-64, 183 AArch64.
		if m := map[string]byte{"amd64": 62, "arm64": 183}[arch]; progs[0].Data[18] != m {
			t.Errorf("%s: e_machine %d, want %d", arch, progs[0].Data[18], m)
		}
	}
	file := filepath.Join(dir, "amd64.tar.zst")
	before, _ := os.Stat(file)
	if err := Compile(context.Background(), Options{Dir: dir, Packages: o.Packages, Arches: []string{"amd64"}}); err != nil {
		t.Fatal(err)
	}
	after, _ := os.Stat(file)
	if !after.ModTime().Equal(before.ModTime()) {
		t.Error("an unchanged program was rewritten")
	}
	if err := Compile(context.Background(), Options{Dir: dir, Packages: []string{"./testdata/hello", "./testdata/hello/"}}); err == nil {
		t.Error("two packages of one name: no error")
	}
}
