package ramdisk

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"path"
	"strconv"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/rackboot/rackboot/internal/cpio"
)

// Entry is one member of an initramfs as List reads it.
type Entry struct {
	Name string
	Mode uint32 // type and permission bits, as stat(2) has them
	Size int64
	Link string // a symlink's target
}

// IsDir reports whether the entry is a directory.
func (e Entry) IsDir() bool { return e.Mode&0o170000 == 0o040000 }

// maxInitrd bounds what List unpacks: agent ramdisks are tens of
// megabytes.
const maxInitrd = 1 << 30

// List reads an initramfs: newc archives, one after another as the kernel
// accepts them, the whole optionally compressed with zstd or gzip. Every
// archive's trailer is left out.
func List(r io.Reader) ([]Entry, error) {
	br := bufio.NewReader(r)
	magic, _ := br.Peek(4)
	var in io.Reader = br
	switch {
	case bytes.Equal(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, fmt.Errorf("list initramfs: %w", err)
		}
		defer zr.Close()
		in = zr
	case len(magic) >= 2 && magic[0] == 0x1f && magic[1] == 0x8b:
		gr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("list initramfs: %w", err)
		}
		in = gr
	}
	b, err := io.ReadAll(io.LimitReader(in, maxInitrd))
	if err != nil {
		return nil, fmt.Errorf("list initramfs: %w", err)
	}
	var out []Entry
	if err := walkNewc(b, func(e Entry, _ []byte) { out = append(out, e) }); err != nil {
		return nil, fmt.Errorf("list initramfs: %w", err)
	}
	return out, nil
}

// walkNewc calls fn for every member of newc archives laid one after
// another in b, trailers left out, with each member's data.
func walkNewc(b []byte, fn func(e Entry, data []byte)) error {
	for off := 0; off < len(b); {
		if b[off] == 0 { // padding between archives
			off++
			continue
		}
		if len(b)-off < 110 || string(b[off:off+6]) != "070701" {
			return fmt.Errorf("no newc header at %d", off)
		}
		h := b[off : off+110]
		field := func(i int) (int64, error) {
			return strconv.ParseInt(string(h[6+8*i:14+8*i]), 16, 64)
		}
		mode, err1 := field(1)
		size, err2 := field(6)
		nsize, err3 := field(11)
		if err1 != nil || err2 != nil || err3 != nil || nsize < 1 || size < 0 || size > int64(len(b)) || nsize > int64(len(b)) {
			return fmt.Errorf("bad header at %d", off)
		}
		nameEnd := off + 110 + int(nsize)
		dataStart := (nameEnd + 3) &^ 3
		dataEnd := dataStart + int(size)
		if nameEnd > len(b) || dataEnd > len(b) || dataEnd < dataStart {
			return fmt.Errorf("entry at %d truncated", off)
		}
		name := string(b[off+110 : nameEnd-1])
		off = (dataEnd + 3) &^ 3
		if name == "TRAILER!!!" {
			continue
		}
		e := Entry{Name: path.Clean(strings.TrimPrefix(name, "/")), Mode: uint32(mode), Size: size}
		if mode&0o170000 == 0o120000 {
			e.Link = string(b[dataStart:dataEnd])
		}
		fn(e, b[dataStart:dataEnd])
	}
	return nil
}

// file is one file for the modules archive.
type file struct {
	name string
	data []byte
}

// writeTree writes files as a newc archive, every parent directory first
// (the kernel's unpacker creates no missing directories).
func writeTree(w io.Writer, files []file) error {
	c := cpio.New(w)
	dirs := map[string]bool{}
	var mkdirs func(d string)
	mkdirs = func(d string) {
		if d == "." || d == "/" || dirs[d] {
			return
		}
		mkdirs(path.Dir(d))
		dirs[d] = true
		c.Dir(d, 0o755)
	}
	for _, f := range files {
		mkdirs(path.Dir(f.name))
		c.File(f.name, 0o644, f.data)
	}
	return c.Close()
}
