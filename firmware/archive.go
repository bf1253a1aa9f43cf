package firmware

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// ErrChecksum is returned when downloaded bytes do not match the hash or
// size the archive's index promises.
var ErrChecksum = errors.New("checksum mismatch")

// ErrNoPackage is returned when the archive has no such package.
var ErrNoPackage = errors.New("package not in the archive")

// Stanza is one paragraph of a Debian control file (Release, Packages).
type Stanza map[string]string

// ParseStanzas parses RFC 822-style Debian control data. Continuation
// lines are joined to their field with newlines; a malformed line is an
// error, since these bytes come from the network.
func ParseStanzas(r io.Reader) ([]Stanza, error) {
	var out []Stanza
	cur := Stanza{}
	last := ""
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	n := 0
	for sc.Scan() {
		n++
		line := sc.Text()
		switch {
		case strings.TrimSpace(line) == "":
			if len(cur) > 0 {
				out = append(out, cur)
				cur, last = Stanza{}, ""
			}
		case line[0] == ' ' || line[0] == '\t':
			if last == "" {
				return nil, fmt.Errorf("control data line %d: continuation without a field", n)
			}
			cur[last] += "\n" + strings.TrimSpace(line)
		default:
			k, v, ok := strings.Cut(line, ":")
			if !ok || k == "" || strings.ContainsAny(k, " \t") {
				return nil, fmt.Errorf("control data line %d: not a field: %.40q", n, line)
			}
			last = k
			cur[k] = strings.TrimSpace(v)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("control data: %w", err)
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	return out, nil
}

// FileSum is a file's expected SHA256 and size.
type FileSum struct {
	SHA256 string
	Size   int64
}

// ReleaseSums returns the SHA256 section of a Release file, by path.
func ReleaseSums(release []byte) (map[string]FileSum, error) {
	st, err := ParseStanzas(bytes.NewReader(release))
	if err != nil {
		return nil, fmt.Errorf("release: %w", err)
	}
	if len(st) == 0 || st[0]["SHA256"] == "" {
		return nil, errors.New("release: no SHA256 section")
	}
	sums := map[string]FileSum{}
	for _, line := range strings.Split(st[0]["SHA256"], "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if len(f) != 3 || len(f[0]) != 64 {
			return nil, fmt.Errorf("release: bad SHA256 line %.80q", line)
		}
		size, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil || size < 0 {
			return nil, fmt.Errorf("release: bad size in %.80q", line)
		}
		sums[f[2]] = FileSum{SHA256: strings.ToLower(f[0]), Size: size}
	}
	return sums, nil
}

// Package is one package of a Packages index.
type Package struct {
	Name, Version, Arch, Filename string
	Depends                       string
	Sum                           FileSum
}

// ParsePackages reads a Packages index.
func ParsePackages(r io.Reader) ([]Package, error) {
	st, err := ParseStanzas(r)
	if err != nil {
		return nil, fmt.Errorf("packages index: %w", err)
	}
	out := make([]Package, 0, len(st))
	for _, s := range st {
		size, err := strconv.ParseInt(s["Size"], 10, 64)
		if err != nil || s["Package"] == "" || s["Filename"] == "" || len(s["SHA256"]) != 64 {
			continue // an entry rackboot could not verify is an entry it does not use
		}
		out = append(out, Package{Name: s["Package"], Version: s["Version"], Arch: s["Architecture"],
			Filename: s["Filename"], Depends: s["Depends"], Sum: FileSum{SHA256: strings.ToLower(s["SHA256"]), Size: size}})
	}
	return out, nil
}

// archive is one suite of one Debian mirror.
type archive struct {
	o       Options
	release map[string]FileSum
	indexes map[string][]Package // by Debian arch
}

func (a *archive) get(ctx context.Context, path string, want *FileSum) ([]byte, error) {
	url := strings.TrimRight(a.o.Mirror, "/") + "/" + path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", url, err)
	}
	resp, err := a.o.client().Do(req)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("get %s: %s", url, resp.Status)
	}
	limit := int64(1 << 30)
	if want != nil {
		limit = want.Size + 1
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit))
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", url, err)
	}
	if want != nil {
		sum := sha256.Sum256(b)
		if int64(len(b)) != want.Size || hex.EncodeToString(sum[:]) != want.SHA256 {
			return nil, fmt.Errorf("get %s: %d bytes with sha256 %x, the index says %d bytes with %s: %w",
				url, len(b), sum, want.Size, want.SHA256, ErrChecksum)
		}
	}
	return b, nil
}

func openArchive(ctx context.Context, o Options) (*archive, error) {
	a := &archive{o: o, indexes: map[string][]Package{}}
	rel, err := a.get(ctx, "dists/"+o.Suite+"/Release", nil)
	if err != nil {
		return nil, err
	}
	if a.release, err = ReleaseSums(rel); err != nil {
		return nil, fmt.Errorf("%s %s: %w", o.Mirror, o.Suite, err)
	}
	return a, nil
}

// packages returns the index for a Debian arch; arch "all" packages are in
// every architecture's index.
func (a *archive) packages(ctx context.Context, arch string) ([]Package, error) {
	if arch == debianArchAll {
		arch = "amd64"
	}
	if p, ok := a.indexes[arch]; ok {
		return p, nil
	}
	path := "main/binary-" + arch + "/Packages.xz"
	sum, ok := a.release[path]
	if !ok {
		return nil, fmt.Errorf("%s %s: Release lists no %s", a.o.Mirror, a.o.Suite, path)
	}
	b, err := a.get(ctx, "dists/"+a.o.Suite+"/"+path, &sum)
	if err != nil {
		return nil, err
	}
	xr, err := xz.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	p, err := ParsePackages(xr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	a.indexes[arch] = p
	return p, nil
}

// find returns the newest version of a package in an arch's index.
func (a *archive) find(ctx context.Context, name, arch string) (Package, error) {
	idx, err := a.packages(ctx, arch)
	if err != nil {
		return Package{}, err
	}
	var found []Package
	for _, p := range idx {
		if p.Name == name && (p.Arch == arch || p.Arch == debianArchAll) {
			found = append(found, p)
		}
	}
	if len(found) == 0 {
		return Package{}, fmt.Errorf("%s (%s) in %s %s: %w", name, arch, a.o.Mirror, a.o.Suite, ErrNoPackage)
	}
	// The index rarely holds two versions; when it does, the last is the
	// one apt would take from a single suite.
	return found[len(found)-1], nil
}

// ResolveMeta follows a metapackage (linux-image-amd64) to the package it
// depends on whose name starts with prefix (linux-image-6.1.0-NN-amd64).
func (a *archive) resolveMeta(ctx context.Context, name, arch, prefix string) (Package, error) {
	p, err := a.find(ctx, name, arch)
	if err != nil {
		return p, err
	}
	for _, dep := range strings.Split(p.Depends, ",") {
		dep = strings.TrimSpace(strings.Split(dep, "|")[0])
		dep = strings.TrimSpace(strings.SplitN(dep, " ", 2)[0])
		if strings.HasPrefix(dep, prefix) {
			return a.find(ctx, dep, arch)
		}
	}
	return p, fmt.Errorf("%s depends on no %s* package", name, prefix)
}

// debMembers extracts the wanted members (paths inside the package, no
// leading "./") from a .deb: an ar archive whose data.tar is compressed
// with xz, zstd or gzip.
func debMembers(deb []byte, want map[string]bool) (map[string][]byte, error) {
	data, name, err := arMember(deb, "data.tar")
	if err != nil {
		return nil, err
	}
	var r io.Reader
	switch {
	case strings.HasSuffix(name, ".xz"):
		if r, err = xz.NewReader(bytes.NewReader(data)); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
	case strings.HasSuffix(name, ".zst"):
		d, err := zstd.NewReader(bytes.NewReader(data))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		defer d.Close()
		r = d
	case strings.HasSuffix(name, ".gz"):
		if r, err = gzip.NewReader(bytes.NewReader(data)); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
	case name == "data.tar":
		r = bytes.NewReader(data)
	default:
		return nil, fmt.Errorf("deb: unsupported %s", name)
	}
	out := map[string][]byte{}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("deb %s: %w", name, err)
		}
		p := strings.TrimPrefix(h.Name, "./")
		if !want[p] || h.Typeflag != tar.TypeReg {
			continue
		}
		b, err := io.ReadAll(io.LimitReader(tr, 1<<30))
		if err != nil {
			return nil, fmt.Errorf("deb %s: %s: %w", name, p, err)
		}
		out[p] = b
	}
	var missing []string
	for p := range want {
		if _, ok := out[p]; !ok {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return nil, fmt.Errorf("deb: no %s inside", strings.Join(missing, ", "))
	}
	return out, nil
}

// arMember returns the first member of an ar archive whose name starts
// with prefix, and its full name.
func arMember(b []byte, prefix string) ([]byte, string, error) {
	const magic = "!<arch>\n"
	if !bytes.HasPrefix(b, []byte(magic)) {
		return nil, "", errors.New("deb: not an ar archive")
	}
	off := len(magic)
	for off+60 <= len(b) {
		hdr := b[off : off+60]
		name := strings.TrimRight(strings.TrimSpace(string(hdr[0:16])), "/")
		size, err := strconv.ParseInt(strings.TrimSpace(string(hdr[48:58])), 10, 64)
		if err != nil || size < 0 || string(hdr[58:60]) != "`\n" {
			return nil, "", fmt.Errorf("deb: bad ar header at %d", off)
		}
		start := off + 60
		if int64(len(b)-start) < size {
			return nil, "", fmt.Errorf("deb: member %s truncated", name)
		}
		if strings.HasPrefix(name, prefix) {
			return b[start : start+int(size)], name, nil
		}
		off = start + int(size) + int(size%2)
	}
	return nil, "", fmt.Errorf("deb: no %s* member", prefix)
}

// writeAtomic writes b to path through a temporary file and a rename, so a
// reader never sees half a loader.
func writeAtomic(path string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path))
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
