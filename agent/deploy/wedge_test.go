package deploy

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// stuckDisk is a disk file whose writes of bytes from at up to until, its
// flush or its reads hang in the "kernel" until the test ends, as a
// wedged disk's do.
type stuckDisk struct {
	*os.File
	at, until   int64
	sync, reads bool
	release     chan struct{}
	syncs       int
}

func (d *stuckDisk) WriteAt(p []byte, off int64) (int, error) {
	if d.at >= 0 && off+int64(len(p)) > d.at && off < d.until {
		<-d.release
	}
	return d.File.WriteAt(p, off)
}

// Sync hangs from the second call on: the first makes the clearing of
// the old tables durable, before the image.
func (d *stuckDisk) Sync() error {
	if d.syncs++; d.sync && d.syncs > 1 {
		<-d.release
	}
	return d.File.Sync()
}

func (d *stuckDisk) ReadAt(p []byte, off int64) (int, error) {
	if d.reads {
		<-d.release
	}
	return d.File.ReadAt(p, off)
}

// TestWedgedDisk: a disk that stops answering fails the write within the
// disk timeout, whichever step it stops in, though the goroutine doing
// the I/O stays stuck; a download slower than the timeout is no wedge.
func TestWedgedDisk(t *testing.T) {
	raw := testImage(8 << 20)
	file := compress(t, "raw.zst", raw)
	srv := serve(t, file)
	im := Image{URL: srv.URL, Format: "raw.zst", SHA256: sum(file), RawSize: int64(len(raw)), DiskTimeout: 300 * time.Millisecond}
	for _, tc := range []struct {
		name string
		disk func(*os.File) *stuckDisk
		want string
	}{
		// Within the image: the disk's last MiB, which the write
		// clears first, answers.
		{"a write", func(f *os.File) *stuckDisk { return &stuckDisk{File: f, at: 3 << 20, until: 8 << 20} }, "a write of"},
		// The first write clears the old partition tables.
		{"the first write", func(f *os.File) *stuckDisk { return &stuckDisk{File: f, at: 0, until: 8 << 20} }, "clearing the old partition tables of"},
		{"the flush", func(f *os.File) *stuckDisk { return &stuckDisk{File: f, at: -1, sync: true} }, "the flush of"},
		{"the verification", func(f *os.File) *stuckDisk { return &stuckDisk{File: f, at: -1, reads: true} }, "a read of the verification of"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := disk(t, 16<<20)
			release := make(chan struct{})
			var once sync.Once
			unstick := func() { once.Do(func() { close(release) }) }
			defer unstick()
			open := func(dev string) (device, error) {
				f, err := os.OpenFile(dev, os.O_RDWR, 0)
				if err != nil {
					return nil, err
				}
				d := tc.disk(f)
				d.release = release
				return d, nil
			}
			start := time.Now()
			res, err := write(context.Background(), http.DefaultClient, im, path, nil, open)
			took := time.Since(start)
			if !errors.Is(err, ErrWedged) || !strings.Contains(err.Error(), tc.want) || res.Verified {
				t.Fatalf("wedged at %s: %+v, %v", tc.name, res, err)
			}
			// Bounded: the timeout and the watchdog's tick, with room
			// for a loaded machine, never the hang's length.
			if took > 10*time.Second {
				t.Errorf("the write gave up after %s", took)
			}
			t.Logf("%s: failed after %s: %v", tc.name, took.Round(time.Millisecond), err)
			if tc.name != "the first write" {
				return
			}
			// The disk answers again: the stuck write lands, and
			// nothing written after it does.
			unstick()
			time.Sleep(300 * time.Millisecond)
			got, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got[BlockSize:2*BlockSize], make([]byte, BlockSize)) {
				t.Error("the writer went on writing once the disk answered again")
			}
		})
	}

	// A server that trickles: each chunk comes slower than the disk
	// timeout, and the disk is fine.
	trickle := serveTrickle(t, file, 64<<10, 400*time.Millisecond)
	im.URL = trickle.URL
	path := disk(t, 16<<20)
	res, err := Write(context.Background(), http.DefaultClient, im, path, nil)
	if err != nil || !res.Verified {
		t.Fatalf("a slow download on a good disk: %+v %v", res, err)
	}
}

// serveTrickle serves file a chunk at a time, pausing between chunks.
func serveTrickle(t *testing.T, file []byte, chunk int, pause time.Duration) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(file)))
		rc := http.NewResponseController(w)
		for off := 0; off < len(file); off += chunk {
			w.Write(file[off:min(off+chunk, len(file))])
			rc.Flush()
			time.Sleep(pause)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}
