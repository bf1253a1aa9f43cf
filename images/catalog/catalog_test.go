package catalog

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
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
	c := &Catalog{Dir: t.TempDir()}
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
