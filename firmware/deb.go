package firmware

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// ErrNotDeb is returned for bytes that are not a Debian binary package.
var ErrNotDeb = errors.New("not a Debian binary package")

// maxMember bounds one extracted file: a kernel is tens of megabytes, a
// loader a few; a tar header claiming more is not one of those.
const maxMember = 1 << 30

// arEntry is one member of an ar archive.
type arEntry struct {
	Name string
	Data []byte
}

// readAr splits an ar archive (the common format dpkg writes: 16-byte
// names, optionally ending in "/") into its members.
func readAr(b []byte) ([]arEntry, error) {
	const magic = "!<arch>\n"
	if !bytes.HasPrefix(b, []byte(magic)) {
		return nil, fmt.Errorf("read ar: no ar magic: %w", ErrNotDeb)
	}
	var out []arEntry
	off := len(magic)
	for off < len(b) {
		if b[off] == '\n' && off == len(b)-1 {
			break // padding of the last odd-sized member, written by some tools
		}
		if len(b)-off < 60 {
			return nil, fmt.Errorf("read ar: header at %d truncated", off)
		}
		hdr := b[off : off+60]
		if string(hdr[58:60]) != "`\n" {
			return nil, fmt.Errorf("read ar: bad header at %d", off)
		}
		name := strings.TrimSuffix(strings.TrimRight(string(hdr[0:16]), " "), "/")
		size, err := strconv.ParseInt(strings.TrimSpace(string(hdr[48:58])), 10, 64)
		if err != nil || size < 0 {
			return nil, fmt.Errorf("read ar: bad size in header at %d", off)
		}
		start := off + 60
		if int64(len(b)-start) < size {
			return nil, fmt.Errorf("read ar: member %q truncated: %d of %d bytes", name, len(b)-start, size)
		}
		out = append(out, arEntry{Name: name, Data: b[start : start+int(size)]})
		off = start + int(size) + int(size%2)
	}
	return out, nil
}

// DebData returns the data.tar member of a .deb, decompressed on the fly;
// open may be called again for another pass over it.
func DebData(deb []byte) (open func() (io.ReadCloser, error), err error) {
	members, err := readAr(deb)
	if err != nil {
		return nil, err
	}
	if len(members) == 0 || members[0].Name != "debian-binary" || !bytes.HasPrefix(members[0].Data, []byte("2.")) {
		return nil, fmt.Errorf("read deb: no debian-binary 2.x member first: %w", ErrNotDeb)
	}
	for _, m := range members[1:] {
		if !strings.HasPrefix(m.Name, "data.tar") {
			continue
		}
		data := m.Data
		switch m.Name {
		case "data.tar":
			return func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil }, nil
		case "data.tar.xz":
			return func() (io.ReadCloser, error) {
				r, err := xz.NewReader(bytes.NewReader(data))
				if err != nil {
					return nil, fmt.Errorf("read deb data.tar.xz: %w", err)
				}
				return io.NopCloser(r), nil
			}, nil
		case "data.tar.zst":
			return func() (io.ReadCloser, error) {
				r, err := zstd.NewReader(bytes.NewReader(data), zstd.WithDecoderConcurrency(1))
				if err != nil {
					return nil, fmt.Errorf("read deb data.tar.zst: %w", err)
				}
				return r.IOReadCloser(), nil
			}, nil
		case "data.tar.gz":
			return func() (io.ReadCloser, error) {
				r, err := gzip.NewReader(bytes.NewReader(data))
				if err != nil {
					return nil, fmt.Errorf("read deb data.tar.gz: %w", err)
				}
				return r, nil
			}, nil
		}
		return nil, fmt.Errorf("read deb: unsupported member %q", m.Name)
	}
	return nil, fmt.Errorf("read deb: no data.tar member: %w", ErrNotDeb)
}

// MemberPath is a tar entry's name as rackboot names package members:
// relative, cleaned, without the leading "./" dpkg-deb writes.
func MemberPath(name string) string {
	return strings.TrimPrefix(path.Clean("/"+name), "/")
}

// debFiles extracts the regular files at the wanted member paths from a
// .deb. A wanted path that is a symbolic or hard link inside the package
// (ipxe's usr/lib/ipxe/ipxe.efi → /boot/ipxe.efi) yields its target's
// bytes. A wanted path the package lacks is an error.
func debFiles(deb []byte, want []string) (map[string][]byte, error) {
	out, missing, err := DebFiles(deb, want)
	if err != nil {
		return nil, err
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("read deb: no file %s inside", strings.Join(missing, ", "))
	}
	return out, nil
}

// DebFiles is debFiles for callers that expect some files to be absent
// (a link to another package's file): it returns the wanted paths it
// did not find, sorted, instead of failing.
func DebFiles(deb []byte, want []string) (files map[string][]byte, missing []string, err error) {
	open, err := DebData(deb)
	if err != nil {
		return nil, nil, err
	}
	// alias maps a path still to be found to the wanted paths it serves.
	alias := map[string][]string{}
	for _, w := range want {
		alias[MemberPath(w)] = append(alias[MemberPath(w)], w)
	}
	out := map[string][]byte{}
	for hop := 0; len(alias) > 0; hop++ {
		if hop == 8 {
			break // a link loop, or a chain no package needs
		}
		next := map[string][]string{}
		if err := ScanTar(open, func(h *tar.Header, r io.Reader) error {
			p := MemberPath(h.Name)
			ws, ok := alias[p]
			if !ok {
				return nil
			}
			delete(alias, p)
			switch h.Typeflag {
			case tar.TypeReg:
				if h.Size > maxMember {
					return fmt.Errorf("read deb: %s is %d bytes", p, h.Size)
				}
				b, err := io.ReadAll(r)
				if err != nil {
					return fmt.Errorf("read deb %s: %w", p, err)
				}
				for _, w := range ws {
					out[w] = b
				}
			case tar.TypeSymlink:
				t := h.Linkname
				if !path.IsAbs(t) {
					t = path.Join(path.Dir(p), t)
				}
				next[MemberPath(t)] = append(next[MemberPath(t)], ws...)
			case tar.TypeLink:
				next[MemberPath(h.Linkname)] = append(next[MemberPath(h.Linkname)], ws...)
			default:
				return fmt.Errorf("read deb: %s is not a file", p)
			}
			return nil
		}); err != nil {
			return nil, nil, err
		}
		for p, ws := range next {
			alias[p] = append(alias[p], ws...)
		}
		if len(next) == 0 {
			break
		}
	}
	for _, w := range want {
		if _, ok := out[w]; !ok && !slices.Contains(missing, w) {
			missing = append(missing, w)
		}
	}
	sort.Strings(missing)
	return out, missing, nil
}

// ScanTar makes one pass over the tar that open returns (DebData's),
// calling fn for every entry; an error from fn ends the pass with it.
func ScanTar(open func() (io.ReadCloser, error), fn func(*tar.Header, io.Reader) error) error {
	rc, err := open()
	if err != nil {
		return err
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read deb data.tar: %w", err)
		}
		if err := fn(h, tr); err != nil {
			return err
		}
	}
}
