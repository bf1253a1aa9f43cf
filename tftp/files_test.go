package tftp

import (
	"errors"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestCleanPath(t *testing.T) {
	tests := []struct {
		in, want string
		wantErr  error
	}{
		{in: "grub/grub.cfg", want: "grub/grub.cfg"},
		{in: "/grub/grub.cfg", want: "grub/grub.cfg"},
		{in: "///grub/grub.cfg", want: "grub/grub.cfg"},
		{in: "./grub//./grub.cfg", want: "grub/grub.cfg"},
		{in: `\boot\x64\wdsnbp.com`, want: "boot/x64/wdsnbp.com"},
		{in: "grub/", want: "grub"},
		{in: "..", wantErr: ErrOutsideRoot},
		{in: "../x", wantErr: ErrOutsideRoot},
		{in: "/../x", wantErr: ErrOutsideRoot},
		{in: "a/../../x", wantErr: ErrOutsideRoot},
		{in: "a/../x", wantErr: ErrOutsideRoot},
		{in: `..\x`, wantErr: ErrOutsideRoot},
		{in: `a\..\..\x`, wantErr: ErrOutsideRoot},
		{in: "a\x00b", wantErr: ErrOutsideRoot},
		{in: "", wantErr: fs.ErrNotExist},
		{in: "/", wantErr: fs.ErrNotExist},
		{in: "./", wantErr: fs.ErrNotExist},
		{in: "...", want: "..."},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := CleanPath(tc.in)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("CleanPath(%q) = %q, %v; want %v", tc.in, got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("CleanPath(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
			}
		})
	}
}

// FuzzCleanPath checks that whatever CleanPath accepts is a path that
// stays inside a root, and that cleaning is idempotent.
func FuzzCleanPath(f *testing.F) {
	for _, s := range []string{"grub/grub.cfg", "/../x", `..\..\x`, "a/./b//c", "a\x00b", "", "/", "...", ". ./.."} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		got, err := CleanPath(p)
		if err != nil {
			if !errors.Is(err, ErrOutsideRoot) && !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("CleanPath(%q): unexpected error %v", p, err)
			}
			return
		}
		if !fs.ValidPath(got) || got == "." || strings.ContainsAny(got, "\\\x00") || strings.HasPrefix(got, "/") {
			t.Fatalf("CleanPath(%q) = %q, not a clean relative path", p, got)
		}
		for el := range strings.SplitSeq(got, "/") {
			if el == ".." {
				t.Fatalf("CleanPath(%q) = %q holds ..", p, got)
			}
		}
		again, err := CleanPath(got)
		if err != nil || again != got {
			t.Fatalf("CleanPath(%q) = %q, %v; want %q again", got, again, err, got)
		}
	})
}

func TestDirOpen(t *testing.T) {
	root := writeTree(t, map[string][]byte{"a/file": []byte("content")})
	outside := writeTree(t, map[string][]byte{"secret": []byte("secret")})
	for name, target := range map[string]string{
		"in":       "a/file",
		"out":      filepath.Join(outside, "secret"),
		"out-rel":  "../" + filepath.Base(outside) + "/secret",
		"dangling": filepath.Join(outside, "missing"),
		"a/up":     "../a/file",
	} {
		if err := os.Symlink(target, filepath.Join(root, name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := syscall.Mkfifo(filepath.Join(root, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	d, err := NewDir(root)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		path    string
		want    string
		wantErr error
	}{
		{path: "a/file", want: "content"},
		{path: "/a/file", want: "content"},
		{path: "in", want: "content"},
		{path: "a/up", want: "content"},
		{path: "out", wantErr: ErrOutsideRoot},
		{path: "out-rel", wantErr: ErrOutsideRoot},
		{path: "dangling", wantErr: ErrOutsideRoot},
		{path: "../" + filepath.Base(outside) + "/secret", wantErr: ErrOutsideRoot},
		{path: "missing", wantErr: fs.ErrNotExist},
		{path: "a/missing/deeper", wantErr: fs.ErrNotExist},
		{path: "a", wantErr: ErrNotRegular},
		{path: "fifo", wantErr: ErrNotRegular},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			f, err := d.Open(t.Context(), netip.AddrPort{}, tc.path)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("Open(%q) error %v, want %v", tc.path, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			b, err := io.ReadAll(io.NewSectionReader(f, 0, f.Size()))
			if err != nil || string(b) != tc.want {
				t.Errorf("read %q, %v; want %q", b, err, tc.want)
			}
		})
	}
}

func TestNewDirNeedsDirectory(t *testing.T) {
	root := writeTree(t, map[string][]byte{"file": nil})
	for _, p := range []string{filepath.Join(root, "file"), filepath.Join(root, "missing")} {
		if _, err := NewDir(p); err == nil {
			t.Errorf("NewDir(%q): no error", p)
		}
	}
}

func TestBytes(t *testing.T) {
	b := NewBytes([]byte("hello"))
	p := make([]byte, 3)
	for _, tc := range []struct {
		off     int64
		want    string
		wantErr error
	}{
		{0, "hel", nil},
		{3, "lo", io.EOF},
		{5, "", io.EOF},
	} {
		n, err := b.ReadAt(p, tc.off)
		if string(p[:n]) != tc.want || err != tc.wantErr {
			t.Errorf("ReadAt(%d) = %q, %v; want %q, %v", tc.off, p[:n], err, tc.want, tc.wantErr)
		}
	}
	if _, err := b.ReadAt(p, -1); err == nil {
		t.Error("ReadAt(-1): no error")
	}
}
