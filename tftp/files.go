package tftp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path"
	"strings"
	"syscall"
)

// File is one file to send. The server reads it with ReadAt, block by block
// and again on retransmits, and closes it when the transfer ends.
type File interface {
	io.ReaderAt
	io.Closer
	// Size is the length in bytes; it is sent as tsize and decides where
	// the last (short) block falls, so it must not change while serving.
	Size() int64
}

// Files answers read requests. path is already cleaned by CleanPath:
// relative, slash-separated, without "." or ".." elements. client is the
// requester's address, so implementations can generate per-client content
// (a GRUB config for the node at that address). Errors that wrap
// fs.ErrNotExist become "file not found", ErrOutsideRoot, ErrNotRegular and
// fs.ErrPermission become "access violation"; others are sent as code 0
// without their text.
type Files interface {
	Open(ctx context.Context, client netip.AddrPort, path string) (File, error)
}

// FilesFunc adapts a function to Files.
type FilesFunc func(ctx context.Context, client netip.AddrPort, path string) (File, error)

// Open calls f.
func (f FilesFunc) Open(ctx context.Context, client netip.AddrPort, path string) (File, error) {
	return f(ctx, client, path)
}

// Bytes is an in-memory File, for generated content.
type Bytes []byte

// NewBytes returns b as a File.
func NewBytes(b []byte) Bytes { return Bytes(b) }

// ReadAt implements io.ReaderAt.
func (b Bytes) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("read bytes: negative offset")
	}
	if off >= int64(len(b)) {
		return 0, io.EOF
	}
	n := copy(p, b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// Size returns len(b).
func (b Bytes) Size() int64 { return int64(len(b)) }

// Close does nothing.
func (b Bytes) Close() error { return nil }

// ErrOutsideRoot is returned for a path that names something outside the
// served root: ".." elements, NUL bytes, or a symlink that leads out.
var ErrOutsideRoot = errors.New("path outside root")

// ErrNotRegular is returned for a path that names a directory, device,
// socket or FIFO: only regular files are served.
var ErrNotRegular = errors.New("not a regular file")

// CleanPath turns a requested file name into a path relative to the served
// root. Backslashes are taken as separators (clients of Windows lineage send
// "boot\x64\file"), and leading slashes are stripped, since firmware and
// GRUB ask for both "/grub/grub.cfg" and "grub/grub.cfg". Any ".." element
// or NUL byte is refused with ErrOutsideRoot, even where it would stay
// inside the root: no boot client needs one, and refusing is simpler to
// trust than resolving. An empty path names no file (fs.ErrNotExist).
func CleanPath(p string) (string, error) {
	if strings.IndexByte(p, 0) >= 0 {
		return "", fmt.Errorf("clean path %q: NUL byte: %w", p, ErrOutsideRoot)
	}
	q := strings.TrimLeft(strings.ReplaceAll(p, `\`, "/"), "/")
	for el := range strings.SplitSeq(q, "/") {
		if el == ".." {
			return "", fmt.Errorf("clean path %q: %w", p, ErrOutsideRoot)
		}
	}
	q = path.Clean(q)
	if q == "." {
		return "", fmt.Errorf("clean path %q: empty: %w", p, fs.ErrNotExist)
	}
	if !fs.ValidPath(q) {
		return "", fmt.Errorf("clean path %q: %w", p, ErrOutsideRoot)
	}
	return q, nil
}

// Dir serves the regular files under a directory. Paths go through
// CleanPath and are opened with os.Root, so a symlink that resolves outside
// the directory is refused with ErrOutsideRoot; symlinks that stay inside
// are followed. The directory is opened per request, not held, so it may be
// replaced (a firmware refresh) while the server runs.
type Dir struct{ root string }

// NewDir returns the files under root, which must be a directory.
func NewDir(root string) (*Dir, error) {
	fi, err := os.Stat(root)
	if err != nil {
		return nil, fmt.Errorf("open tftp root: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("open tftp root %s: not a directory", root)
	}
	return &Dir{root: root}, nil
}

// Open implements Files.
func (d *Dir) Open(_ context.Context, _ netip.AddrPort, name string) (File, error) {
	clean, err := CleanPath(name)
	if err != nil {
		return nil, err
	}
	root, err := os.OpenRoot(d.root)
	if err != nil {
		return nil, fmt.Errorf("open tftp root: %w", err)
	}
	defer root.Close()
	// O_NONBLOCK keeps a FIFO planted in the root from hanging the open;
	// it is refused below as not regular.
	f, err := root.OpenFile(clean, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		if escapes(err) {
			return nil, fmt.Errorf("open %s: %w", clean, ErrOutsideRoot)
		}
		return nil, fmt.Errorf("open %s: %w", clean, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open %s: %w", clean, err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("open %s: %s: %w", clean, fi.Mode().Type(), ErrNotRegular)
	}
	return osFile{File: f, size: fi.Size()}, nil
}

// escapes reports whether err is os.Root refusing a path that leads out of
// the root. The standard library keeps that sentinel unexported, so its text
// is compared; should the text change, such paths are still refused, only
// with a less precise error code.
func escapes(err error) bool {
	var pe *fs.PathError
	return errors.As(err, &pe) && pe.Err != nil && pe.Err.Error() == "path escapes from parent"
}

type osFile struct {
	*os.File
	size int64
}

func (f osFile) Size() int64 { return f.size }
