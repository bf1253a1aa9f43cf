package httpserve

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// The counting writer must not hide what the connection can do.
var (
	_ io.ReaderFrom = (*Writer)(nil)
	_ http.Flusher  = (*Writer)(nil)
)

func TestFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte("0123456789"), 0o644); err != nil {
		t.Fatal(err)
	}
	mod := time.Unix(1700000000, 0)
	for _, tc := range []struct {
		name, method string
		hdr          map[string]string
		want         Sent
		body         string
	}{
		{"whole", "GET", nil, Sent{Status: 200, Bytes: 10, Want: 10}, "0123456789"},
		{"range", "GET", map[string]string{"Range": "bytes=2-4"}, Sent{Status: 206, Bytes: 3, Want: 3}, "234"},
		{"head", "HEAD", nil, Sent{Status: 200, Want: 10}, ""},
		{"not modified", "GET", map[string]string{"If-None-Match": `"e"`}, Sent{Status: 304, Want: -1}, ""},
		{"unsatisfiable", "GET", map[string]string{"Range": "bytes=20-"}, Sent{Status: 416, Bytes: 33, Want: -1}, "invalid range: failed to overlap\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := os.Open(p)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			r := httptest.NewRequest(tc.method, "/f", nil)
			for k, v := range tc.hdr {
				r.Header.Set(k, v)
			}
			w := httptest.NewRecorder()
			got := File(w, r, f, mod, `"e"`)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("sent (-want +got):\n%s", diff)
			}
			if w.Body.String() != tc.body || w.Code != tc.want.Status {
				t.Errorf("answer %d %q, want %d %q", w.Code, w.Body.String(), tc.want.Status, tc.body)
			}
			if tc.want.Status < 300 && (w.Header().Get("ETag") != `"e"` || w.Header().Get("Content-Type") != "application/octet-stream") {
				t.Errorf("headers %v", w.Header())
			}
		})
	}
}

func TestServeEndsWithItsContext(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Serve(ctx, ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			// A long-lived request (an event stream) ends with the
			// server's context, not at the shutdown deadline.
			w.WriteHeader(http.StatusOK)
			http.NewResponseController(w).Flush()
			<-r.Context().Done()
		}), nil)
	}()
	resp, err := http.Get("http://" + ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	start := time.Now()
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Serve: %v, want nil", err)
	}
	if d := time.Since(start); d > ShutdownGrace/2 {
		t.Errorf("shutdown took %s: the request did not end with the context", d)
	}
}
