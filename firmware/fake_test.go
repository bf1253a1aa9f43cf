package firmware

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// tarFile is one entry of a test package's data.tar.
type tarFile struct {
	name string // as dpkg-deb writes it, "./usr/..."; a directory ends in "/"
	body string
	link string // symlink target when set
}

func buildTar(t testing.TB, files []tarFile) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, f := range files {
		h := &tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.body)), Typeflag: tar.TypeReg}
		switch {
		case f.link != "":
			h = &tar.Header{Name: f.name, Mode: 0o777, Linkname: f.link, Typeflag: tar.TypeSymlink}
		case strings.HasSuffix(f.name, "/"):
			h = &tar.Header{Name: f.name, Mode: 0o755, Typeflag: tar.TypeDir}
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write([]byte(f.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func compress(t testing.TB, ext string, raw []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	switch ext {
	case "":
		return raw
	case ".xz":
		// A small dictionary keeps building many fake packages cheap.
		w, err := xz.WriterConfig{DictCap: 64 << 10}.NewWriter(&b)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(raw)
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	case ".gz":
		w := gzip.NewWriter(&b)
		w.Write(raw)
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	case ".zst":
		w, err := zstd.NewWriter(&b)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(raw)
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	default:
		t.Fatalf("no compressor %q", ext)
	}
	return b.Bytes()
}

// buildAr writes a common-format ar archive, as dpkg-deb does.
func buildAr(members ...arEntry) []byte {
	var b bytes.Buffer
	b.WriteString("!<arch>\n")
	for _, m := range members {
		fmt.Fprintf(&b, "%-16s%-12d%-6d%-6d%-8s%-10d`\n", m.Name, 0, 0, 0, "100644", len(m.Data))
		b.Write(m.Data)
		if len(m.Data)%2 == 1 {
			b.WriteByte('\n')
		}
	}
	return b.Bytes()
}

// buildDeb builds a .deb whose data.tar is compressed with ext.
func buildDeb(t testing.TB, ext string, files []tarFile) []byte {
	t.Helper()
	return buildAr(
		arEntry{"debian-binary", []byte("2.0\n")},
		arEntry{"control.tar.xz", compress(t, ".xz", buildTar(t, []tarFile{{name: "./control", body: "Package: x\n"}}))},
		arEntry{"data.tar" + ext, compress(t, ext, buildTar(t, files))},
	)
}

// fakePackage is one package of the fake archive.
type fakePackage struct {
	name, version, arch string
	depends             string
	files               []tarFile
	component           string // "" means main
}

func (p fakePackage) comp() string {
	if p.component == "" {
		return Main
	}
	return p.component
}

func (p fakePackage) filename() string {
	return fmt.Sprintf("pool/%s/%c/%s/%s_%s_%s.deb", p.comp(), p.name[0], p.name, p.name, p.version, p.arch)
}

// fakeArchive is a Debian mirror served by httptest: one suite, the
// components its packages name, Packages and Contents indexes built from
// its packages.
type fakeArchive struct {
	t     testing.TB
	suite string
	// allInArch lists arch:all packages in the arch indexes, as bookworm
	// does, instead of only in binary-all.
	allInArch bool
	files     map[string][]byte // by URL path without the leading slash
	// serve, when set, replaces the bytes served for a path.
	serve map[string][]byte

	mu       sync.Mutex
	requests []string
	srv      *httptest.Server
}

func newFakeArchive(t testing.TB, suite string, allInArch bool, pkgs []fakePackage) *fakeArchive {
	t.Helper()
	a := &fakeArchive{t: t, suite: suite, allInArch: allInArch, files: map[string][]byte{}, serve: map[string][]byte{}}
	index := map[string]*strings.Builder{}
	contents := map[string]*strings.Builder{}
	comps := []string{Main}
	for _, p := range pkgs {
		if !slices.Contains(comps, p.comp()) {
			comps = append(comps, p.comp())
		}
	}
	for _, c := range comps {
		for _, ix := range []string{"amd64", "arm64", "all"} {
			index[c+"/"+ix], contents[c+"/"+ix] = &strings.Builder{}, &strings.Builder{}
		}
	}
	for _, p := range pkgs {
		for _, f := range p.files {
			if !strings.HasSuffix(f.name, "/") {
				fmt.Fprintf(contents[p.comp()+"/"+p.arch], "%-60s misc/%s\n", strings.TrimPrefix(f.name, "./"), p.name)
			}
		}
		deb := buildDeb(t, ".xz", p.files)
		a.files[p.filename()] = deb
		sum := sha256.Sum256(deb)
		stanza := fmt.Sprintf("Package: %s\nVersion: %s\nArchitecture: %s\nMaintainer: Someone <a@b>\n", p.name, p.version, p.arch)
		if p.depends != "" {
			stanza += "Depends: " + p.depends + "\n"
		}
		stanza += fmt.Sprintf("Description: test package\n more text\n .\n and more\nFilename: %s\nSize: %d\nSHA256: %x\n\n", p.filename(), len(deb), sum)
		targets := []string{p.arch}
		if p.arch == "all" && allInArch {
			targets = []string{"amd64", "arm64", "all"}
		}
		for _, ix := range targets {
			index[p.comp()+"/"+ix].WriteString(stanza)
		}
	}
	var rel strings.Builder
	fmt.Fprintf(&rel, "Origin: Debian\nSuite: stable\nCodename: %s\nArchitectures: all amd64 arm64\nComponents: %s\n", suite, strings.Join(comps, " "))
	if allInArch {
		rel.WriteString("No-Support-for-Architecture-all: Packages\n")
	}
	rel.WriteString("SHA256:\n")
	for _, c := range comps {
		for _, ix := range []string{"all", "amd64", "arm64"} {
			for _, ext := range []string{"", ".xz"} {
				b := compress(t, ext, []byte(index[c+"/"+ix].String()))
				p := c + "/binary-" + ix + "/Packages" + ext
				a.files["dists/"+suite+"/"+p] = b
				fmt.Fprintf(&rel, " %x %8d %s\n", sha256.Sum256(b), len(b), p)
			}
			b := compress(t, ".gz", []byte(contents[c+"/"+ix].String()))
			p := c + "/Contents-" + ix + ".gz"
			a.files["dists/"+suite+"/"+p] = b
			fmt.Fprintf(&rel, " %x %8d %s\n", sha256.Sum256(b), len(b), p)
		}
	}
	a.files["dists/"+suite+"/Release"] = []byte(rel.String())
	a.srv = httptest.NewServer(http.HandlerFunc(a.handle))
	t.Cleanup(a.srv.Close)
	return a
}

func (a *fakeArchive) handle(w http.ResponseWriter, r *http.Request) {
	p := strings.TrimPrefix(r.URL.Path, "/")
	a.mu.Lock()
	a.requests = append(a.requests, p)
	b, ok := a.serve[p]
	if !ok {
		b, ok = a.files[p]
	}
	a.mu.Unlock()
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Write(b)
}

func (a *fakeArchive) url() string { return a.srv.URL + "/" }

// takeRequests returns the paths requested since the last call, sorted.
func (a *fakeArchive) takeRequests() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	r := a.requests
	a.requests = nil
	sort.Strings(r)
	return r
}

// debRequests are the .deb downloads among paths.
func debRequests(paths []string) []string {
	var out []string
	for _, p := range paths {
		if strings.HasSuffix(p, ".deb") {
			out = append(out, p)
		}
	}
	return out
}

// loaderPackages are fake versions of the packages Loaders() takes files
// from, with the real member paths and recognisable bodies.
func loaderPackages() []fakePackage {
	return []fakePackage{
		{name: "ipxe", version: "1.0.0+git-20190125.36a4c85-5.1", arch: "all", files: []tarFile{
			{name: "./boot/ipxe.efi", body: "MZ ipxe.efi"},
			{name: "./usr/lib/ipxe/snponly.efi", body: "MZ snponly.efi"},
			{name: "./usr/lib/ipxe/undionly.kpxe", body: "undionly.kpxe"},
			{name: "./usr/lib/ipxe/ipxe.efi", link: "/boot/ipxe.efi"},
		}},
		{name: "shim-signed", version: "1.51~1+deb12u1+16.1-2~deb12u1", arch: "amd64", files: []tarFile{
			{name: "./usr/lib/shim/shimx64.efi.signed", body: "MZ shimx64"},
		}},
		{name: "shim-signed", version: "1.51~1+deb12u1+16.1-2~deb12u1", arch: "arm64", files: []tarFile{
			{name: "./usr/lib/shim/shimaa64.efi.signed", body: "MZ shimaa64"},
		}},
		// An older version listed after the newer one: the newer must win.
		{name: "grub-efi-amd64-signed", version: "1+2.06+13+deb12u2", arch: "amd64", files: []tarFile{
			{name: "./usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed", body: "MZ grubnetx64 u2"},
			{name: "./usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed", body: "MZ grubx64 (not the network one)"},
		}},
		{name: "grub-efi-amd64-signed", version: "1+2.06+13+deb12u1", arch: "amd64", files: []tarFile{
			{name: "./usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed", body: "MZ grubnetx64 u1"},
		}},
		{name: "grub-efi-arm64-signed", version: "1+2.06+13+deb12u2", arch: "arm64", files: []tarFile{
			{name: "./usr/lib/grub/arm64-efi-signed/grubnetaa64.efi.signed", body: "MZ grubnetaa64"},
		}},
		{name: "linux-image-cloud-amd64", version: "6.1.140-1", arch: "amd64", depends: "linux-image-6.1.0-37-cloud-amd64 (= 6.1.140-1)"},
		{name: "linux-image-6.1.0-37-cloud-amd64", version: "6.1.140-1", arch: "amd64", depends: "kmod, linux-base (>= 4.3~), initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool", files: []tarFile{
			{name: "./boot/vmlinuz-6.1.0-37-cloud-amd64", body: "kernel bzImage"},
			{name: "./boot/System.map-6.1.0-37-cloud-amd64", body: "map"},
		}},
	}
}

// wantLoaderFiles is what Loaders() should install from loaderPackages.
var wantLoaderFiles = map[string]string{
	IPXEBIOS:     "undionly.kpxe",
	IPXESNP:      "MZ snponly.efi",
	IPXEEFI:      "MZ ipxe.efi",
	ShimX64:      "MZ shimx64",
	GRUBX64:      "MZ grubnetx64 u2",
	GRUBNetAA64:  "MZ grubnetaa64",
	ShimAA64:     "MZ shimaa64",
	GRUBShimAA64: "MZ grubnetaa64",
}
