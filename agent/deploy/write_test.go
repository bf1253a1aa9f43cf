package deploy

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

func sum(b []byte) string { h := sha256.Sum256(b); return hex.EncodeToString(h[:]) }

// testImage is a raw image: a recognisable partition-table-like head,
// random middle and a tail, so a wrong offset shows.
func testImage(size int) []byte {
	b := make([]byte, size)
	r := rand.New(rand.NewPCG(1, 2))
	// Random where it matters for offsets, repetitive elsewhere (as
	// real images' empty space is), which keeps the compressors quick.
	for i := range b {
		if i < 256<<10 || i%(1<<20) < 4096 {
			b[i] = byte(r.Uint32())
		} else {
			b[i] = byte(i / 4096)
		}
	}
	copy(b, "EFI PART image head")
	return b
}

func compress(t *testing.T, format string, raw []byte) []byte {
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

func disk(t *testing.T, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	// A disk that held something before: the old contents must go.
	f.Write(bytes.Repeat([]byte("OLD!"), 1<<18))
	f.Truncate(size)
	f.Close()
	return p
}

// serve serves file with Range and ETag, as rackboot's image server does.
func serve(t *testing.T, file []byte) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("ETag", `"`+sum(file)[:16]+`"`)
		http.ServeContent(w, r, "image", time.Time{}, bytes.NewReader(file))
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestFormats(t *testing.T) {
	raw := testImage(9<<20 + 123) // not a multiple of the block size
	for _, format := range []string{"raw", "raw.gz", "raw.zst", "raw.xz"} {
		t.Run(format, func(t *testing.T) {
			file := compress(t, format, raw)
			srv := serve(t, file)
			dev := disk(t, 16<<20)
			var reports int
			res, err := Write(context.Background(), nil, Image{URL: srv.URL, Format: format, SHA256: sum(file), RawSHA256: sum(raw), RawSize: int64(len(raw))},
				dev, func(Progress) { reports++ })
			if err != nil {
				t.Fatal(err)
			}
			got, _ := os.ReadFile(dev)
			if !bytes.Equal(got[:len(raw)], raw) || !res.Verified || res.Written != int64(len(raw)) || res.Downloaded != int64(len(file)) || reports == 0 {
				t.Fatalf("result %+v, reports %d, image intact %v", res, reports, bytes.Equal(got[:len(raw)], raw))
			}
		})
	}
}

// flaky cuts the connection after cut bytes, the first n times.
func flaky(t *testing.T, file []byte, n int32, cut int) (*httptest.Server, *atomic.Int32) {
	var requests atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("ETag", `"v1"`)
		if requests.Add(1) <= n {
			hj := w.(http.Hijacker)
			conn, buf, _ := hj.Hijack()
			start := 0
			if rg := r.Header.Get("Range"); rg != "" {
				var s int
				if _, err := fmt.Sscanf(rg, "bytes=%d-", &s); err == nil {
					start = s
				}
				buf.WriteString("HTTP/1.1 206 Partial Content\r\nETag: \"v1\"\r\n")
				buf.WriteString("Content-Range: bytes " + strconv.Itoa(start) + "-" + strconv.Itoa(len(file)-1) + "/" + strconv.Itoa(len(file)) + "\r\n")
			} else {
				buf.WriteString("HTTP/1.1 200 OK\r\nETag: \"v1\"\r\n")
			}
			buf.WriteString("Content-Length: " + strconv.Itoa(len(file)-start) + "\r\n\r\n")
			end := min(start+cut, len(file))
			buf.Write(file[start:end])
			buf.Flush()
			conn.Close()
			return
		}
		http.ServeContent(w, r, "image", time.Time{}, bytes.NewReader(file))
	}))
	t.Cleanup(srv.Close)
	return srv, &requests
}

// truncating announces the whole file and never sends past byte at.
func truncating(t *testing.T, file []byte, at int) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hj := w.(http.Hijacker)
		conn, buf, _ := hj.Hijack()
		start := 0
		if _, err := fmt.Sscanf(r.Header.Get("Range"), "bytes=%d-", &start); err == nil {
			buf.WriteString("HTTP/1.1 416 Range Not Satisfiable\r\nContent-Length: 0\r\n\r\n")
		} else {
			buf.WriteString("HTTP/1.1 200 OK\r\nContent-Length: " + strconv.Itoa(len(file)) + "\r\n\r\n")
			buf.Write(file[:at])
		}
		buf.Flush()
		conn.Close()
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestResumesBrokenDownloads(t *testing.T) {
	raw := testImage(6 << 20)
	file := compress(t, "raw.zst", raw)
	srv, requests := flaky(t, file, 3, len(file)/5)
	dev := disk(t, 8<<20)
	res, err := Write(context.Background(), nil, Image{URL: srv.URL, Format: "raw.zst", SHA256: sum(file)}, dev, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Resumes != 3 || requests.Load() != 4 || !res.Verified {
		t.Fatalf("resumes %d, requests %d, result %+v", res.Resumes, requests.Load(), res)
	}
	got, _ := os.ReadFile(dev)
	if !bytes.Equal(got[:len(raw)], raw) {
		t.Fatal("resumed image differs")
	}
}

func TestRefusals(t *testing.T) {
	raw := testImage(3 << 20)
	file := compress(t, "raw.gz", raw)
	good := Image{Format: "raw.gz", SHA256: sum(file), RawSHA256: sum(raw), RawSize: int64(len(raw))}
	for _, tc := range []struct {
		name   string
		im     func(url string) Image
		size   int64
		srv    func() *httptest.Server
		want   string
		spoilt bool // the disk was written, so its head must be zero
	}{
		{"checksum mismatch", func(u string) Image { im := good; im.URL, im.SHA256 = u, strings.Repeat("0", 64); return im }, 8 << 20, nil, "sha256 of the download", true},
		{"raw checksum mismatch", func(u string) Image { im := good; im.URL, im.RawSHA256 = u, strings.Repeat("1", 64); return im }, 8 << 20, nil, "decompressed image", true},
		{"larger than the disk, known", func(u string) Image { im := good; im.URL = u; return im }, 2 << 20, nil, "larger than the disk", false},
		{"larger than the disk, found writing", func(u string) Image { im := good; im.URL, im.RawSize = u, 0; return im }, 2 << 20, nil, "larger than the disk", true},
		{"no checksum", func(u string) Image { im := good; im.URL, im.SHA256 = u, ""; return im }, 8 << 20, nil, "no sha256", false},
		{"unknown format", func(u string) Image { im := good; im.URL, im.Format = u, "qcow2"; return im }, 8 << 20, nil, "qcow2", false},
		{"wrong format", func(u string) Image { im := good; im.URL, im.Format = u, "raw.zst"; return im }, 8 << 20, nil, "magic number", false},
		{"not found", func(u string) Image { im := good; im.URL = u + "/nope"; return im }, 8 << 20, func() *httptest.Server {
			return httptest.NewServer(http.NotFoundHandler())
		}, "404", false},
		{"truncated for good", func(u string) Image { im := good; im.URL, im.Retries = u, 2; return im }, 8 << 20, func() *httptest.Server {
			return truncating(t, file, len(file)/2)
		}, "416", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var srv *httptest.Server
			if tc.srv != nil {
				srv = tc.srv()
			} else {
				srv = serve(t, file)
			}
			dev := disk(t, tc.size)
			_, err := Write(context.Background(), nil, tc.im(srv.URL), dev, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			got, _ := os.ReadFile(dev)
			head := got[:512]
			if tc.spoilt != bytes.Equal(head, make([]byte, 512)) {
				t.Fatalf("disk head after failure: %q (spoilt wanted: %v)", head[:16], tc.spoilt)
			}
			if !tc.spoilt && !bytes.HasPrefix(got, []byte("OLD!")) {
				t.Fatalf("a refusal before writing changed the disk: %q", got[:16])
			}
			if tc.spoilt && !bytes.Equal(got[len(got)-512:], make([]byte, 512)) {
				t.Fatal("the backup partition table area survived a failed write")
			}
		})
	}
	if !errors.Is(ErrTooLarge, ErrTooLarge) {
		t.Fatal()
	}
}

func TestContentRange(t *testing.T) {
	for _, tc := range []struct {
		in           string
		start, total int64
		ok           bool
	}{{"bytes 10-99/100", 10, 100, true}, {"bytes */100", 0, 0, false}, {"items 1-2/3", 0, 0, false}, {"bytes 5-/9", 5, 9, true}, {"bytes -1-5/9", 0, 0, false}} {
		s, tot, ok := contentRange(tc.in)
		if ok != tc.ok || (ok && (s != tc.start || tot != tc.total)) {
			t.Errorf("%q: %d %d %v", tc.in, s, tot, ok)
		}
	}
}

// orderDisk records, at every write, whether the disk could be taken for
// deployed while it is not: a nonzero byte in its first or last MiB (the
// partition tables) before the rest of the image is on it and synced.
type orderDisk struct {
	*os.File
	raw      []byte
	size     int64
	dirty    bool // an image write outside the tables since the last Sync
	problems []string
	tables   int // writes into the tables' regions holding image bytes
}

func (d *orderDisk) inTables(off, n int64) bool {
	return off < 1<<20 || off+n > d.size-1<<20
}

func (d *orderDisk) WriteAt(p []byte, off int64) (int, error) {
	if d.inTables(off, int64(len(p))) && !bytes.Equal(p, make([]byte, len(p))) {
		d.tables++
		got, _ := os.ReadFile(d.Name())
		rest := min(int64(len(d.raw)), d.size-1<<20)
		switch {
		case d.dirty:
			d.problems = append(d.problems, fmt.Sprintf("tables written at %d before the image was synced", off))
		case rest > 1<<20 && !bytes.Equal(got[1<<20:rest], d.raw[1<<20:rest]):
			d.problems = append(d.problems, fmt.Sprintf("tables written at %d before the image was whole", off))
		}
		return d.File.WriteAt(p, off)
	}
	if off > 0 && off+int64(len(p)) < d.size-1<<20 && d.tables == 0 {
		// An image byte outside the tables: the old tables must be gone.
		head := make([]byte, 512)
		d.File.ReadAt(head, 0)
		tail := make([]byte, 512)
		d.File.ReadAt(tail, d.size-512)
		if !bytes.Equal(head, make([]byte, 512)) || !bytes.Equal(tail, make([]byte, 512)) {
			d.problems = append(d.problems, fmt.Sprintf("image written at %d while the old tables were there", off))
		}
	}
	d.dirty = true
	return d.File.WriteAt(p, off)
}

func (d *orderDisk) Sync() error {
	d.dirty = false
	return d.File.Sync()
}

// TestTablesLast: at no moment of a write does the disk hold partition
// tables over a partial image, so a write cut short (a kill, a power cut,
// which run no cleanup) never leaves a disk that boots as if deployed:
// the old tables go before the first byte of the image, the new ones
// (the first MiB, and the last when the image reaches the disk's end)
// come after the rest of the image is synced.
func TestTablesLast(t *testing.T) {
	for _, tc := range []struct {
		name       string
		raw, disk  int64
		wantTables int
	}{
		{"smaller than the disk", 9<<20 + 123, 16 << 20, 1},
		{"the whole disk", 16 << 20, 16 << 20, 2},
		{"within the disk's last MiB", 16<<20 - 4096, 16 << 20, 2},
		{"under a MiB", 300 << 10, 16 << 20, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw := testImage(int(tc.raw))
			copy(raw[len(raw)-512:], "EFI PART backup header")
			file := compress(t, "raw.zst", raw)
			srv := serve(t, file)
			path := disk(t, tc.disk)
			var od *orderDisk
			open := func(dev string) (device, error) {
				f, err := os.OpenFile(dev, os.O_RDWR, 0)
				od = &orderDisk{File: f, raw: raw, size: tc.disk}
				return od, err
			}
			res, err := write(context.Background(), nil, Image{URL: srv.URL, Format: "raw.zst", SHA256: sum(file), RawSHA256: sum(raw), RawSize: tc.raw}, path, nil, open)
			if err != nil || !res.Verified {
				t.Fatalf("%+v %v", res, err)
			}
			got, _ := os.ReadFile(path)
			if !bytes.Equal(got[:len(raw)], raw) {
				t.Fatal("the disk does not hold the image")
			}
			if od.tables != tc.wantTables || len(od.problems) > 0 {
				t.Fatalf("%d writes of tables (want %d); %v", od.tables, tc.wantTables, od.problems)
			}
		})
	}
}
