package httpserve

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/rackboot/rackboot/internal/tlspin"
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

// startLimited serves h with small limits on loopback.
func startLimited(t *testing.T, h http.Handler, l Limits) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeLimits(ctx, ln, h, nil, l) }()
	t.Cleanup(func() { cancel(); <-done })
	return ln.Addr().String()
}

// A client that sends its body slowly, or holds a connection, is cut off
// by the server's limits; a request that is long on purpose (Long) is
// not; connections over MaxConns wait for a free one.
func TestLimits(t *testing.T) {
	l := Limits{ReadHeader: 200 * time.Millisecond, Read: 300 * time.Millisecond, Write: 300 * time.Millisecond, Idle: 10 * time.Second, MaxConns: 2}
	mux := http.NewServeMux()
	mux.HandleFunc("/slow-body", func(w http.ResponseWriter, r *http.Request) {
		_, err := io.ReadAll(r.Body)
		if err == nil {
			t.Error("a body sent too slowly was read whole")
		}
	})
	mux.HandleFunc("/stream", func(w http.ResponseWriter, r *http.Request) {
		Long(w)
		for range 5 {
			fmt.Fprintln(w, "tick")
			http.NewResponseController(w).Flush()
			time.Sleep(150 * time.Millisecond)
		}
	})
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") })
	addr := startLimited(t, mux, l)

	// Headers that never end.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(c, "GET /ok HTTP/1.1\r\nHost: x\r\n")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(c); err != nil {
		t.Errorf("a client that never ends its headers was not cut off: %v", err)
	}
	c.Close()

	// A body that trickles.
	c, _ = net.Dial("tcp", addr)
	fmt.Fprint(c, "POST /slow-body HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	start := time.Now()
	io.ReadAll(c)
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("a trickling body held its connection %s", took)
	}
	c.Close()

	// A long answer on purpose outlives Write.
	tr := &http.Transport{DisableKeepAlives: true}
	resp, err := (&http.Client{Transport: tr}).Get("http://" + addr + "/stream")
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	tr.CloseIdleConnections()
	if err != nil || strings.Count(string(b), "tick") != 5 {
		t.Errorf("a Long answer was cut: %q %v", b, err)
	}

	// Two connections held open: a third waits until one closes.
	held := []net.Conn{}
	for range 2 {
		c, _ := net.Dial("tcp", addr)
		fmt.Fprint(c, "GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
		buf := make([]byte, 512)
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Read(buf); err != nil {
			t.Fatalf("held connection: %v", err)
		}
		held = append(held, c)
	}
	third := make(chan error, 1)
	go func() {
		cl := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := cl.Get("http://" + addr + "/ok")
		if err == nil {
			resp.Body.Close()
		}
		third <- err
	}()
	select {
	case err := <-third:
		t.Fatalf("a third connection was served while two were held: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	held[0].Close()
	if err := <-third; err != nil {
		t.Errorf("the third connection after one closed: %v", err)
	}
	held[1].Close()
}

// Over TLS the handler sees r.TLS, and a client that opens a connection
// but never finishes its handshake is cut off by the header read time.
func TestServeTLS(t *testing.T) {
	b, err := tlspin.Generated(t.TempDir(), []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	l := Limits{ReadHeader: 200 * time.Millisecond, Read: time.Second, Write: time.Second, Idle: time.Second, MaxConns: 4}
	go func() {
		done <- ServeTLS(ctx, ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprint(w, r.TLS != nil)
		}), nil, l, b.ServerConfig())
	}()
	t.Cleanup(func() { cancel(); <-done })

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	start := time.Now()
	io.ReadAll(c)
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("a silent TLS client held its connection %s", took)
	}
	c.Close()

	cl := &http.Client{Transport: &http.Transport{TLSClientConfig: tlspin.ClientConfig(b.Pins)}}
	resp, err := cl.Get("https://" + ln.Addr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "true" {
		t.Errorf("handler saw r.TLS set: %s", body)
	}
}

// One source holding its share of connections cannot take more: its next
// one is closed at once, while another source is still served.
func TestPerSourceCap(t *testing.T) {
	addr := startLimited(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") }),
		Limits{ReadHeader: 5 * time.Second, Read: 5 * time.Second, Write: 5 * time.Second, Idle: 10 * time.Second, MaxConns: 8, MaxPerSource: 2})
	dialFrom := func(src string) net.Conn {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	ask := func(c net.Conn) error {
		fmt.Fprint(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		buf := make([]byte, 512)
		n, err := c.Read(buf)
		if err == nil && !strings.Contains(string(buf[:n]), "ok") {
			err = fmt.Errorf("answer %q", buf[:n])
		}
		return err
	}
	var held []net.Conn
	for range 2 {
		c := dialFrom("127.0.0.1")
		if err := ask(c); err != nil {
			t.Fatalf("a connection within the cap: %v", err)
		}
		held = append(held, c)
	}
	over := dialFrom("127.0.0.1")
	if err := ask(over); err == nil {
		t.Error("a third connection from one source was served")
	}
	over.Close()
	other := dialFrom("127.0.0.2")
	if err := ask(other); err != nil {
		t.Errorf("another source while the first is at its cap: %v", err)
	}
	other.Close()
	held[0].Close()
	// The server sees the close when it next reads that connection.
	var err error
	for range 50 {
		again := dialFrom("127.0.0.1")
		err = ask(again)
		again.Close()
		if err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Errorf("after one of its connections closed: %v", err)
	}
	held[1].Close()
}
