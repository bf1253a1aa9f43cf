package inventory

import (
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"testing"
)

// copyTree copies a recorded machine tree, links as links.
func copyTree(tb testing.TB, src, dst string) []string {
	tb.Helper()
	var files []string
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		out := filepath.Join(dst, rel)
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(l, out)
		case d.IsDir():
			return os.MkdirAll(out, 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		files = append(files, rel)
		return os.WriteFile(out, b, 0o644)
	})
	if err != nil {
		tb.Fatal(err)
	}
	sort.Strings(files)
	return files
}

// FuzzRead puts arbitrary bytes in one file of a recorded machine (an
// H100 host's tree: PCI, NUMA, DMI, NVMe, NICs) and reads the inventory:
// hostile or broken sysfs contents may give errors or odd values, never
// a panic or a hang.
func FuzzRead(f *testing.F) {
	root := f.TempDir()
	files := copyTree(f, filepath.Join("testdata", "h100-real"), root)
	if len(files) == 0 {
		f.Fatal("empty tree")
	}
	for i := range files {
		if i%17 == 0 {
			f.Add(uint16(i), []byte("0x10de\n"))
		}
	}
	f.Add(uint16(0), []byte{})
	f.Add(uint16(1), []byte("-1\n"))
	f.Add(uint16(2), []byte("99999999999999999999999\n"))
	f.Fuzz(func(t *testing.T, which uint16, data []byte) {
		name := filepath.Join(root, files[int(which)%len(files)])
		orig, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		defer os.WriteFile(name, orig, 0o644)
		if err := os.WriteFile(name, data, 0o644); err != nil {
			t.Fatal(err)
		}
		Reader{Root: root, PCIIDs: filepath.Join("testdata", "pci.ids")}.Read()
	})
}
