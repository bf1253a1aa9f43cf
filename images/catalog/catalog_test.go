package catalog

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"

	"github.com/rackboot/rackboot/boot"
)

func sum(b []byte) string { h := sha256.Sum256(b); return hex.EncodeToString(h[:]) }

func packed(t *testing.T, format string, raw []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	switch format {
	case "raw":
		return raw
	case "raw.gz":
		w := gzip.NewWriter(&buf)
		w.Write(raw)
		w.Close()
	case "raw.zst":
		w, _ := zstd.NewWriter(&buf)
		w.Write(raw)
		w.Close()
	case "raw.xz":
		w, _ := xz.NewWriter(&buf)
		w.Write(raw)
		w.Close()
	}
	return buf.Bytes()
}

var rawImage = bytes.Repeat([]byte("rackboot disk image block "), 40000)

func TestImportFormats(t *testing.T) {
	c := &Catalog{Dir: t.TempDir()}
	for _, format := range Formats {
		file := packed(t, format, rawImage)
		im, err := c.Import(context.Background(), "img-"+strings.ReplaceAll(format, ".", "-"), boot.ArchX86_64, format, bytes.NewReader(file), sum(file), "upload:x")
		if err != nil {
			t.Fatalf("%s: %v", format, err)
		}
		if im.SHA256 != sum(file) || im.RawSHA256 != sum(rawImage) || im.RawSize != int64(len(rawImage)) || im.Size != int64(len(file)) || im.Format != format {
			t.Errorf("%s: %+v", format, im)
		}
		got, err := os.ReadFile(im.Path)
		if err != nil || !bytes.Equal(got, file) {
			t.Errorf("%s: stored file differs (%v)", format, err)
		}
	}
}

func TestRefusals(t *testing.T) {
	gz := packed(t, "raw.gz", rawImage)
	qcowHead := append([]byte{'Q', 'F', 'I', 0xfb}, make([]byte, 100)...)
	for _, tc := range []struct {
		name, image, format, sha string
		arch                     boot.Arch
		body                     []byte
		want                     string
	}{
		{"checksum mismatch", "a", "raw.gz", sum([]byte("other")), boot.ArchX86_64, gz, "sha256 of what arrived"},
		{"bad checksum text", "a", "raw.gz", "xyz", boot.ArchX86_64, gz, "64 hex digits"},
		{"qcow2 named raw", "a", "raw", "", boot.ArchX86_64, qcowHead, "content is qcow2"},
		{"raw named zst", "a", "raw.zst", "", boot.ArchX86_64, rawImage, "not raw.zst"},
		{"corrupt gzip", "a", "raw.gz", "", boot.ArchX86_64, append(gz[:len(gz)/2:len(gz)/2], 0, 0), "raw.gz"},
		{"empty", "a", "raw", "", boot.ArchX86_64, nil, "empty"},
		{"hostile name", "../etc/passwd", "raw", "", boot.ArchX86_64, rawImage, "image name"},
		{"dot name", ".hidden", "raw", "", boot.ArchX86_64, rawImage, "image name"},
		{"wrong arch", "a", "raw", "", "riscv64", rawImage, "architecture"},
		{"unknown format", "a", "vmdk", "", boot.ArchX86_64, rawImage, "format"},
	} {
		c := &Catalog{Dir: t.TempDir()}
		_, err := c.Import(context.Background(), tc.image, tc.arch, tc.format, bytes.NewReader(tc.body), tc.sha, "upload")
		if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want a refusal with %q", tc.name, err, tc.want)
		}
		left, _ := os.ReadDir(c.Dir)
		if len(left) != 0 {
			t.Errorf("%s: a refused import left %v", tc.name, left)
		}
	}
	c := &Catalog{Dir: t.TempDir(), MaxSize: 1000}
	if _, err := c.Import(context.Background(), "big", boot.ArchX86_64, "raw", bytes.NewReader(rawImage), "", "upload"); !errors.Is(err, ErrRefused) {
		t.Errorf("over the size limit: %v", err)
	}
	c = &Catalog{Dir: t.TempDir()}
	if _, err := c.Import(context.Background(), "dup", boot.ArchX86_64, "raw", bytes.NewReader(rawImage), "", "upload"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Import(context.Background(), "dup", boot.ArchX86_64, "raw.gz", bytes.NewReader(gz), "", "upload"); !errors.Is(err, os.ErrExist) {
		t.Errorf("second image of one name: %v", err)
	}
}

func TestFormatOf(t *testing.T) {
	for in, want := range map[string]string{"debian.raw": "raw", "x.IMG": "raw", "a.raw.gz": "raw.gz", "b.img.zst": "raw.zst", "c.raw.xz": "raw.xz", "d.qcow2": "qcow2", "e.iso": "", "f": ""} {
		got, err := FormatOf(in)
		if got != want || (want == "") != (err != nil) {
			t.Errorf("FormatOf(%q) = %q, %v", in, got, err)
		}
	}
}

func TestImportURL(t *testing.T) {
	file := packed(t, "raw.zst", rawImage)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/img.raw.zst":
			w.Write(file)
		case "/short.raw.zst":
			w.Header().Set("Content-Length", strconv.Itoa(len(file)))
			w.Write(file[:len(file)/2])
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	c := &Catalog{Dir: t.TempDir(), permit: servedBy(srv)}
	im, err := c.ImportURL(context.Background(), "web", boot.ArchAArch64, "", srv.URL+"/img.raw.zst", sum(file))
	if err != nil || im.Format != "raw.zst" || im.RawSHA256 != sum(rawImage) || im.Source != srv.URL+"/img.raw.zst" {
		t.Fatalf("%+v %v", im, err)
	}
	for _, tc := range []struct{ url, want string }{
		{srv.URL + "/short.raw.zst", "unexpected EOF"},
		{srv.URL + "/missing.raw", "404"},
		{"file:///etc/shadow.raw", "only http and https"},
		{"/dev/sda.raw", "only http and https"},
		{"ftp://x/y.raw", "only http and https"},
		{"http:///y.raw", "no host"},
		{srv.URL + "/img.iso", "must end in"},
	} {
		if _, err := c.ImportURL(context.Background(), "u", boot.ArchX86_64, "", tc.url, ""); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.url, err, tc.want)
		}
	}
}

// servedBy permits the loopback address and port of one test server, as
// if it were a source outside the appliance.
func servedBy(srv *httptest.Server) func(netip.AddrPort) bool {
	ap := netip.MustParseAddrPort(srv.Listener.Addr().String())
	return func(a netip.AddrPort) bool { return a == ap }
}

// A URL import is a request the appliance makes for its caller: it must
// not reach the appliance itself, loopback, link-local metadata or
// private networks not listed, neither directly nor through a redirect,
// and its errors must not tell a refused port from a silent one.
func TestImportURLSources(t *testing.T) {
	file := packed(t, "raw.zst", rawImage)
	// The appliance's own API on loopback, which the import must not reach.
	victim := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("the import reached a loopback service: %s", r.URL)
		w.Write(file)
	}))
	defer victim.Close()
	source := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/img.raw.zst":
			w.Write(file)
		case "/to-loopback.raw.zst":
			http.Redirect(w, r, victim.URL+"/img.raw.zst", http.StatusFound)
		case "/to-metadata.raw.zst":
			http.Redirect(w, r, "http://169.254.169.254/latest/img.raw.zst", http.StatusFound)
		case "/to-file.raw.zst":
			http.Redirect(w, r, "file:///etc/shadow", http.StatusFound)
		case "/loop.raw.zst":
			http.Redirect(w, r, "/loop.raw.zst", http.StatusFound)
		}
	}))
	defer source.Close()
	ctx := context.Background()
	c := &Catalog{Dir: t.TempDir(), permit: servedBy(source)}
	if _, err := c.ImportURL(ctx, "ok", boot.ArchX86_64, "", source.URL+"/img.raw.zst", ""); err != nil {
		t.Fatalf("import from a permitted source: %v", err)
	}
	closed := httptest.NewServer(http.NotFoundHandler())
	closedURL := closed.URL
	closed.Close()
	for _, tc := range []struct{ url, want string }{
		{victim.URL + "/img.raw.zst", "is a loopback address"},
		{"http://localhost:1/img.raw.zst", "is a loopback address"},
		{"http://[::1]:1/img.raw.zst", "is a loopback address"},
		{source.URL + "/to-loopback.raw.zst", "(or a redirect) is a loopback address"},
		{source.URL + "/to-metadata.raw.zst", "is a link-local address"},
		{source.URL + "/to-file.raw.zst", "only http and https"},
		{source.URL + "/loop.raw.zst", "more than 5 redirects"},
		{"http://169.254.169.254/img.raw.zst", "is a link-local address"},
		{"http://0.0.0.0:1/img.raw.zst", "is the unspecified address"},
		{"http://224.0.0.1/img.raw.zst", "is a multicast address"},
		{"http://10.255.0.1:9/img.raw.zst", "is a private address: list its network in images.allow_networks"},
		{"http://[fd00::1]:9/img.raw.zst", "is a private address"},
		{"http://[64:ff9b::a9fe:a9fe]:9/img.raw.zst", "an IPv6 translation of 169.254.169.254 is a link-local address"},
		{"http://[2002:7f00:1::1]:9/img.raw.zst", "an IPv6 translation of 127.0.0.1 is a loopback address"},
		{"http://0.1.2.3:9/img.raw.zst", "is a reserved address"},
		{"http://240.0.0.1:9/img.raw.zst", "is a reserved address"},
		{"http://192.168.77.1:9/img.raw.zst", "is a private address"},
		{"http://100.64.0.1:9/img.raw.zst", "is a private address"},
	} {
		_, err := c.ImportURL(ctx, "u", boot.ArchX86_64, "", tc.url, "")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.url, err, tc.want)
		}
		if err != nil && !errors.Is(err, ErrRefused) {
			t.Errorf("%s: %v is not a refusal", tc.url, err)
		}
	}
	// A permitted source whose port is closed: the error says it was not
	// reached, never "connection refused".
	c.permit = func(netip.AddrPort) bool { return true }
	_, err := c.ImportURL(ctx, "u", boot.ArchX86_64, "", closedURL+"/img.raw.zst", "")
	if err == nil || strings.Contains(err.Error(), "refused") || !strings.Contains(err.Error(), "could not be reached") {
		t.Errorf("closed port: %v", err)
	}
	// A listed private network passes the rules (checked without
	// connecting: the test sends nothing to addresses it does not own).
	c.permit = nil
	c.AllowNetworks = []netip.Prefix{netip.MustParsePrefix("10.255.0.0/16")}
	if err := c.checkSource(netip.MustParseAddrPort("10.255.0.1:9")); err != nil {
		t.Errorf("an allowed private network was refused: %v", err)
	}
	if err := c.checkSource(netip.MustParseAddrPort("10.254.0.1:9")); err == nil {
		t.Error("a private network outside the allowed one passed")
	}
	// The appliance's own addresses are refused even when their network
	// is allowed.
	if addrs, _ := net.InterfaceAddrs(); len(addrs) > 0 {
		for _, ia := range addrs {
			p, err := netip.ParsePrefix(ia.String())
			if err != nil || p.Addr().IsLoopback() || !p.Addr().Is4() || p.Addr().IsLinkLocalUnicast() {
				continue
			}
			c.AllowNetworks = []netip.Prefix{p.Masked()}
			_, err = c.ImportURL(ctx, "u", boot.ArchX86_64, "", "http://"+p.Addr().String()+":9/img.raw.zst", "")
			if err == nil || !strings.Contains(err.Error(), "one of this appliance's own addresses") {
				t.Errorf("own address %s: %v", p.Addr(), err)
			}
			break
		}
	}
}

// FuzzImport feeds arbitrary bytes, under every format name, to an
// import: it never panics, a refusal leaves nothing in the catalog, and
// what it keeps reads back to the size and hash it reports.
func FuzzImport(f *testing.F) {
	f.Add([]byte("QFI\xfb\x00\x00\x00\x03"), uint8(0))
	f.Add([]byte{0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0}, uint8(2))
	f.Add([]byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3}, uint8(1))
	f.Add([]byte("\xfd7zXZ\x00\x00"), uint8(3))
	f.Add(bytes.Repeat([]byte{0}, 4096), uint8(0))
	f.Fuzz(func(t *testing.T, b []byte, fi uint8) {
		format := Formats[int(fi)%len(Formats)]
		dir := t.TempDir()
		c := &Catalog{Dir: dir, MaxSize: 1 << 20}
		im, err := c.Import(context.Background(), "fz", boot.ArchX86_64, format, bytes.NewReader(b), "", "fuzz")
		left, _ := os.ReadDir(dir)
		if err != nil {
			if len(left) > 0 {
				t.Fatalf("a failed import left %d files: %v", len(left), err)
			}
			return
		}
		data, rerr := os.ReadFile(im.Path)
		if rerr != nil || int64(len(data)) != im.Size || sum(data) != im.SHA256 {
			t.Fatalf("kept %s: %d bytes, %v; says %d bytes, %s", im.Path, len(data), rerr, im.Size, im.SHA256)
		}
	})
}

// TestReserve: an import that would leave less than images.reserve free
// is refused, at the start and as it fills the disk, and leaves nothing.
func TestReserve(t *testing.T) {
	big := bytes.Repeat([]byte("x"), 40<<20)
	for _, tc := range []struct {
		name    string
		free    func(calls int) int64
		reserve int64
		refused bool
	}{
		{"too little free at the start", func(int) int64 { return 1 << 30 }, 0, true},
		{"fills up as it arrives", func(calls int) int64 { return map[bool]int64{true: 3 << 30, false: 1 << 30}[calls < 2] }, 0, true},
		{"room enough", func(int) int64 { return 100 << 30 }, 0, false},
		{"no reserve", func(int) int64 { return 0 }, -1, false},
	} {
		calls := 0
		c := &Catalog{Dir: t.TempDir(), Reserve: tc.reserve, free: func(string) (int64, error) { calls++; return tc.free(calls), nil }}
		_, err := c.Import(context.Background(), "img", boot.ArchX86_64, "raw", bytes.NewReader(big), "", "upload")
		if tc.refused != errors.Is(err, ErrRefused) || tc.refused && !strings.Contains(err.Error(), "images.reserve") {
			t.Errorf("%s: %v (free asked %d times)", tc.name, err, calls)
		}
		left, _ := os.ReadDir(c.Dir)
		if tc.refused && len(left) != 0 {
			t.Errorf("%s: a refused import left %v", tc.name, left)
		}
	}
}

// TestMaxImports: one import more than MaxImports is refused at once,
// with ErrBusy; once one ends the next is taken.
func TestMaxImports(t *testing.T) {
	c := &Catalog{Dir: t.TempDir(), MaxImports: 1, free: func(string) (int64, error) { return 100 << 30, nil }}
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		_, err := c.Import(context.Background(), "slow", boot.ArchX86_64, "raw", pr, "", "upload")
		done <- err
	}()
	pw.Write([]byte("first bytes of a slow upload"))
	if _, err := c.Import(context.Background(), "second", boot.ArchX86_64, "raw", bytes.NewReader(rawImage), "", "upload"); !errors.Is(err, ErrBusy) {
		t.Errorf("second import while one runs: %v, want ErrBusy", err)
	}
	pw.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := c.Import(context.Background(), "third", boot.ArchX86_64, "raw", bytes.NewReader(rawImage), "", "upload"); err != nil {
		t.Errorf("import after the first ended: %v", err)
	}
}
