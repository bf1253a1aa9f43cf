package deploy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// answer is how a misbehaving server answers one request: it sends the
// headers (unless silent) and send bytes of the body, then stalls
// (holds the connection open and sends nothing) or closes it.
type answer struct {
	silent bool
	send   int
	stall  bool
}

// stallHold is how long a stalled answer keeps its connection before
// the server gives up on it: far longer than the tests' stall timeout,
// so only a client that noticed the stall ends it first.
const stallHold = 20 * time.Second

// misbehaving serves file with Range, answering request i as plan[i]
// says and every later one in full. It counts the requests and, of the
// stalled answers, those the client ended (by closing the connection)
// before the server's hold ran out.
type misbehaving struct {
	requests atomic.Int32
	// handlers is the handlers running: a hijacked connection's is not
	// waited for by the server's Close.
	handlers      sync.WaitGroup
	mu            sync.Mutex
	stalled       int
	endedByClient int
}

func serveMisbehaving(t *testing.T, file []byte, plan []answer) (*httptest.Server, *misbehaving) {
	m := &misbehaving{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.handlers.Add(1)
		defer m.handlers.Done()
		i := int(m.requests.Add(1)) - 1
		if i >= len(plan) {
			w.Header().Set("ETag", `"v1"`)
			http.ServeContent(w, r, "image", time.Time{}, bytes.NewReader(file))
			return
		}
		a := plan[i]
		conn, buf, _ := w.(http.Hijacker).Hijack()
		defer conn.Close()
		if !a.silent {
			writeHead(buf, r, file, a.send)
		}
		if !a.stall {
			return
		}
		m.mu.Lock()
		m.stalled++
		m.mu.Unlock()
		conn.SetReadDeadline(time.Now().Add(stallHold))
		_, err := conn.Read(make([]byte, 1))
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			m.mu.Lock()
			m.endedByClient++
			m.mu.Unlock()
		}
	}))
	t.Cleanup(srv.Close)
	return srv, m
}

// writeHead writes a 200 or, for a Range request, a 206 announcing the
// rest of file, and send bytes of it.
func writeHead(buf *bufio.ReadWriter, r *http.Request, file []byte, send int) {
	start := 0
	if _, err := fmt.Sscanf(r.Header.Get("Range"), "bytes=%d-", &start); err == nil {
		buf.WriteString("HTTP/1.1 206 Partial Content\r\nETag: \"v1\"\r\n")
		buf.WriteString("Content-Range: bytes " + strconv.Itoa(start) + "-" + strconv.Itoa(len(file)-1) + "/" + strconv.Itoa(len(file)) + "\r\n")
	} else {
		buf.WriteString("HTTP/1.1 200 OK\r\nETag: \"v1\"\r\n")
	}
	buf.WriteString("Content-Length: " + strconv.Itoa(len(file)-start) + "\r\n\r\n")
	buf.Write(file[start:min(start+send, len(file))])
	buf.Flush()
}

// TestStalledDownloads: a server that stops sending mid-answer, with
// its connection still open, is given up after the stall timeout and
// the download resumed with Range; one that never sends a byte again
// fails the write, within the retry budget, with ErrStalled, and so
// does one whose answers end before their first byte.
func TestStalledDownloads(t *testing.T) {
	// Raw, so the bytes of a stalled answer reach the disk and a
	// failure has a partial image to clear.
	raw := testImage(6 << 20)
	file := raw
	part := len(file) / 5
	for _, tc := range []struct {
		name         string
		plan         []answer
		retries      int
		fails        bool
		wantErr      error
		wantRequests int32
		wantResumes  int
	}{
		{"stalls mid-body twice", []answer{{send: part, stall: true}, {send: part, stall: true}}, 0, false, nil, 3, 2},
		{"stalls after its headers once", []answer{{send: part, stall: true}, {stall: true}}, 0, false, nil, 3, 2},
		{"a resume gets no headers", []answer{{send: part}, {silent: true, stall: true}}, 0, false, nil, 3, 1},
		{"stalls for good", []answer{{send: part, stall: true}, {stall: true}, {stall: true}, {stall: true}}, 2, true, ErrStalled, 4, 0},
		// Closed at once, they would be asked for again and again.
		{"ends its answers before a byte, for good", []answer{{send: part}, {}, {}, {}}, 2, true, nil, 4, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, m := serveMisbehaving(t, file, tc.plan)
			dev := disk(t, 8<<20)
			res, err := Write(context.Background(), nil, Image{URL: srv.URL, Format: "raw", SHA256: sum(file), RawSHA256: sum(raw), RawSize: int64(len(raw)),
				Retries: tc.retries, StallTimeout: 200 * time.Millisecond}, dev, nil)
			m.handlers.Wait()
			got, _ := os.ReadFile(dev)
			switch {
			case !tc.fails && err != nil:
				t.Fatal(err)
			case tc.fails && err == nil:
				t.Fatalf("done (%+v), want a failure", res)
			case tc.wantErr != nil && !errors.Is(err, tc.wantErr):
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			case !tc.fails && (!res.Verified || !bytes.Equal(got[:len(raw)], raw)):
				t.Fatalf("result %+v; the disk holds the image: %v", res, bytes.Equal(got[:len(raw)], raw))
			case tc.fails && !bytes.Equal(got[:512], make([]byte, 512)):
				t.Fatalf("a failed write left the disk's head: %q", got[:16])
			case tc.fails:
				t.Logf("failed as it should: %v", err)
			}
			if m.requests.Load() != tc.wantRequests || (err == nil && res.Resumes != tc.wantResumes) {
				t.Errorf("requests %d (want %d), resumes %d (want %d)", m.requests.Load(), tc.wantRequests, res.Resumes, tc.wantResumes)
			}
			if m.endedByClient != m.stalled {
				t.Errorf("of %d stalled answers the client gave up %d; the rest waited for the server to end them", m.stalled, m.endedByClient)
			}
		})
	}
}

// TestSlowDownloadNotCut: a server that sends a little at a time, each
// gap well under the stall timeout but the whole answer several times
// longer than it, is never cut: one request, no resume.
func TestSlowDownloadNotCut(t *testing.T) {
	raw := testImage(6 << 20)
	file := compress(t, "raw.zst", raw)
	const stall, gap, chunks = time.Second, 50 * time.Millisecond, 80
	var requests atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		w.Header().Set("Content-Length", strconv.Itoa(len(file)))
		step := (len(file) + chunks - 1) / chunks
		for off := 0; off < len(file); off += step {
			if _, err := w.Write(file[off:min(off+step, len(file))]); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			time.Sleep(gap)
		}
	}))
	t.Cleanup(srv.Close)
	dev := disk(t, 8<<20)
	start := time.Now()
	res, err := Write(context.Background(), nil, Image{URL: srv.URL, Format: "raw.zst", SHA256: sum(file), RawSHA256: sum(raw), RawSize: int64(len(raw)),
		StallTimeout: stall}, dev, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d bytes in %d pieces %s apart, stall timeout %s: %s in all", len(file), chunks, gap, stall, time.Since(start).Round(10*time.Millisecond))
	if requests.Load() != 1 || res.Resumes != 0 || !res.Verified {
		t.Fatalf("requests %d, result %+v", requests.Load(), res)
	}
}
