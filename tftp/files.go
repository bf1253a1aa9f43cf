// Package tftp is rackboot's read-only TFTP server: it serves boot
// loaders from a directory and generated files (per-client GRUB configs)
// with the blksize, tsize, timeout (RFC 2347-2349) and windowsize
// (RFC 7440) options, since 512-byte lock-step transfers are what make
// PXE slow. It refuses every write and every path that leaves its root.
package tftp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"strings"
)

// ErrOutsideRoot is returned for a path that would leave the served root.
var ErrOutsideRoot = errors.New("path outside the served root")

// File is an open file to serve.
type File interface {
	ReadAt(p []byte, off int64) (int, error)
	Size() int64
	Close() error
}

// Files opens what a client asks for. client is who asks, so generated
// files can depend on the client.
type Files interface {
	Open(ctx context.Context, client netip.AddrPort, path string) (File, error)
}

// Bytes is a File held in memory.
type Bytes struct{ *bytes.Reader }

// NewBytes returns b as a File.
func NewBytes(b []byte) Bytes { return Bytes{bytes.NewReader(b)} }

// Close implements File.
func (Bytes) Close() error { return nil }

// CleanPath turns a requested name into a path relative to the root, or
// refuses it. Leading slashes are dropped (firmware and GRUB send both
// forms) and backslashes read as slashes (Windows-minded PXE clients).
func CleanPath(name string) (string, error) {
	if strings.ContainsRune(name, 0) {
		return "", fmt.Errorf("path %q: %w", name, ErrOutsideRoot)
	}
	p := strings.TrimLeft(strings.ReplaceAll(name, `\`, "/"), "/")
	if p == "" {
		return "", fmt.Errorf("path %q: empty", name)
	}
	for _, el := range strings.Split(p, "/") {
		if el == ".." {
			return "", fmt.Errorf("path %q: %w", name, ErrOutsideRoot)
		}
	}
	if !fs.ValidPath(strings.TrimSuffix(strings.ReplaceAll(p, "//", "/"), "/")) {
		return "", fmt.Errorf("path %q: %w", name, ErrOutsideRoot)
	}
	return p, nil
}

// Dir serves the files under a directory. Symlinks are followed only
// while they stay inside it.
type Dir struct{ root *os.Root }

// NewDir opens root for serving.
func NewDir(root string) (*Dir, error) {
	r, err := os.OpenRoot(root)
	if err != nil {
		return nil, fmt.Errorf("tftp root: %w", err)
	}
	return &Dir{root: r}, nil
}

type osFile struct {
	*os.File
	size int64
}

func (f osFile) Size() int64 { return f.size }

// Open implements Files.
func (d *Dir) Open(ctx context.Context, client netip.AddrPort, name string) (File, error) {
	p, err := CleanPath(name)
	if err != nil {
		return nil, err
	}
	f, err := d.root.Open(strings.ReplaceAll(p, "//", "/"))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("open %s: %w", p, fs.ErrNotExist)
		}
		return nil, fmt.Errorf("open %s: %w", p, ErrOutsideRoot)
	}
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("open %s: not a regular file: %w", p, fs.ErrNotExist)
	}
	return osFile{f, st.Size()}, nil
}

// Close releases the root.
func (d *Dir) Close() error { return d.root.Close() }
