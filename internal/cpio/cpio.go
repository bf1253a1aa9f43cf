// Package cpio writes newc ("070701") archives, the format the Linux
// kernel unpacks as an initramfs.
package cpio

import (
	"bytes"
	"fmt"
	"io"
	"strings"
)

// Writer writes one archive.
type Writer struct {
	w   io.Writer
	ino uint32
	err error
}

// New starts an archive on w.
func New(w io.Writer) *Writer { return &Writer{w: w, ino: 1} }

func (c *Writer) entry(name string, mode, major, minor uint32, data []byte) {
	if c.err != nil {
		return
	}
	c.ino++
	name = strings.TrimPrefix(name, "/")
	var b bytes.Buffer
	fmt.Fprintf(&b, "070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		c.ino, mode, 0, 0, 1, 0, len(data), 0, 0, major, minor, len(name)+1, 0)
	b.WriteString(name)
	b.WriteByte(0)
	for b.Len()%4 != 0 {
		b.WriteByte(0)
	}
	b.Write(data)
	for b.Len()%4 != 0 {
		b.WriteByte(0)
	}
	_, c.err = c.w.Write(b.Bytes())
}

// Dir adds a directory.
func (c *Writer) Dir(name string, perm uint32) { c.entry(name, 0o040000|perm, 0, 0, nil) }

// File adds a regular file.
func (c *Writer) File(name string, perm uint32, data []byte) {
	c.entry(name, 0o100000|perm, 0, 0, data)
}

// CharDev adds a character device node.
func (c *Writer) CharDev(name string, perm, major, minor uint32) {
	c.entry(name, 0o020000|perm, major, minor, nil)
}

// Symlink adds a symbolic link name pointing at target.
func (c *Writer) Symlink(name, target string) {
	c.entry(name, 0o120777, 0, 0, []byte(target))
}

// Close writes the trailer and returns the first error.
func (c *Writer) Close() error {
	c.entry("TRAILER!!!", 0, 0, 0, nil)
	return c.err
}
