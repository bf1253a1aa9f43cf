// Package atomicfile replaces files whole: a reader (a TFTP or HTTP
// server handing the file to a node) sees the old file or the new one,
// never half of either.
package atomicfile

import (
	"os"
	"path/filepath"
)

// Write writes b to path, mode 0644, through a synced temporary file in
// the same directory and a rename, creating the directory if needed.
func Write(path string, b []byte) error { return WriteMode(path, b, 0o644) }

// WriteMode is Write with the file's mode (0600 for a key: the temporary
// file is never readable by others either).
func WriteMode(path string, b []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
