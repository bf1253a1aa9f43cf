package httpboot

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/rackboot/rackboot/boot"
)

// fakePlanner boots every node from a fixed plan, or fails for one MAC.
type fakePlanner struct {
	mu      sync.Mutex
	calls   []string // "mac arch"
	fail    net.HardwareAddr
	local   net.HardwareAddr
	unknown net.HardwareAddr
	from    []netip.Addr // who asked, per call
}

func (f *fakePlanner) Plan(ctx context.Context, mac net.HardwareAddr, arch boot.Arch, from netip.Addr) (boot.Plan, error) {
	f.mu.Lock()
	f.calls = append(f.calls, mac.String()+" "+string(arch))
	f.from = append(f.from, from)
	f.mu.Unlock()
	switch mac.String() {
	case f.fail.String():
		return boot.Plan{}, errors.New("store unavailable")
	case f.unknown.String():
		return boot.Plan{}, fmt.Errorf("plan: %w", boot.ErrUnknownNode)
	case f.local.String():
		return boot.Plan{Action: boot.ActionLocal, Node: "n-local"}, nil
	}
	return boot.Plan{Action: boot.ActionNetboot, Node: "n-" + mac.String(), Arch: arch, Kernel: "http://k"}, nil
}

// fakeScript writes a plan so that a test can see what reached the
// generator.
func fakeScript(kind string) func(boot.Plan) ([]byte, error) {
	return func(p boot.Plan) ([]byte, error) {
		if p.Kernel == "" && p.Action == boot.ActionNetboot {
			return nil, errors.New("no kernel")
		}
		return []byte(fmt.Sprintf("%s %s %s %s\n", kind, p.Action, p.Node, p.Arch)), nil
	}
}

// events collects recorded events.
type events struct {
	mu sync.Mutex
	ch chan boot.Event
}

func newEvents() *events { return &events{ch: make(chan boot.Event, 100)} }

func (e *events) Record(ctx context.Context, ev boot.Event) {
	if ctx.Err() != nil {
		panic("recorder got a cancelled context")
	}
	e.ch <- ev
}

func (e *events) next(t *testing.T) boot.Event {
	t.Helper()
	select {
	case ev := <-e.ch:
		return ev
	case <-time.After(20 * time.Second):
		t.Fatal("no event recorded")
	}
	return boot.Event{}
}

func scriptServer(p *fakePlanner) *Server {
	return &Server{
		Planner:       p,
		IPXEScript:    fakeScript("ipxe"),
		GRUBConfig:    fakeScript("grub"),
		ChainScript:   []byte("#!ipxe\nchain\n"),
		GRUBBootstrap: []byte("configfile\n"),
	}
}

func TestScripts(t *testing.T) {
	p := &fakePlanner{
		fail:    net.HardwareAddr{0xde, 0xad, 0, 0, 0, 1},
		local:   net.HardwareAddr{0x52, 0x54, 0, 0, 0, 9},
		unknown: net.HardwareAddr{0x52, 0x54, 0, 0, 0, 0xee},
	}
	h := scriptServer(p).Handler()
	tests := []struct {
		path      string
		code      int
		body      string // the whole body, or for errors a part of it
		planCalls []string
	}{
		{"/boot.ipxe", 200, "#!ipxe\nchain\n", nil},
		{"/ipxe/52-54-00-12-34-56?arch=x86_64", 200, "ipxe netboot n-52:54:00:12:34:56 x86_64\n", []string{"52:54:00:12:34:56 x86_64"}},
		{"/ipxe/525400ABCDEF?arch=i386", 200, "ipxe netboot n-52:54:00:ab:cd:ef x86_64\n", []string{"52:54:00:ab:cd:ef x86_64"}},
		{"/ipxe/52:54:00:12:34:56?arch=arm64", 200, "ipxe netboot n-52:54:00:12:34:56 aarch64\n", []string{"52:54:00:12:34:56 aarch64"}},
		{"/ipxe/52-54-00-12-34-56", 200, "ipxe netboot n-52:54:00:12:34:56 \n", []string{"52:54:00:12:34:56 "}},
		{"/ipxe/52-54-00-00-00-09?arch=x86_64", 200, "ipxe local n-local \n", []string{"52:54:00:00:00:09 x86_64"}},
		{"/ipxe/52-54-00-12-34-56?arch=riscv64", 400, "riscv64", nil},
		{"/ipxe/zz", 400, "parse mac", nil},
		{"/ipxe/52-54-00-12-34", 400, "parse mac", nil},
		{"/ipxe/de-ad-00-00-00-01", 500, "store unavailable", []string{"de:ad:00:00:00:01 "}},
		{"/ipxe/52-54-00-00-00-ee", 404, "no node has this MAC", []string{"52:54:00:00:00:ee "}},
		{"/grub/52:54:00:00:00:ee.cfg", 404, "no node has this MAC", []string{"52:54:00:00:00:ee "}},
		{"/grub/grub.cfg", 200, "configfile\n", nil},
		{"/grub/52:54:00:12:34:56.cfg", 200, "grub netboot n-52:54:00:12:34:56 \n", []string{"52:54:00:12:34:56 "}},
		{"/grub/52:54:00:12:34:56.cfg?arch=arm64", 200, "grub netboot n-52:54:00:12:34:56 aarch64\n", []string{"52:54:00:12:34:56 aarch64"}},
		{"/grub/52:54:00:12:34:56.txt", 404, "want /grub/MAC.cfg", nil},
		{"/grub/x.cfg", 400, "parse mac", nil},
		{"/other", 404, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			p.mu.Lock()
			p.calls, p.from = nil, nil
			p.mu.Unlock()
			w := httptest.NewRecorder()
			req := httptest.NewRequest("GET", tt.path, nil)
			req.RemoteAddr = "10.0.0.42:50000"
			h.ServeHTTP(w, req)
			if w.Code != tt.code {
				t.Errorf("status %d, want %d; body %q", w.Code, tt.code, w.Body)
			}
			if tt.code == 200 {
				if diff := cmp.Diff(tt.body, w.Body.String()); diff != "" {
					t.Errorf("body (-want +got):\n%s", diff)
				}
				if got := w.Header().Get("Cache-Control"); got != "no-store" {
					t.Errorf("Cache-Control %q", got)
				}
			} else if !strings.Contains(w.Body.String(), tt.body) {
				t.Errorf("body %q does not mention %q", w.Body, tt.body)
			}
			if ct := w.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
				t.Errorf("Content-Type %q", ct)
			}
			p.mu.Lock()
			defer p.mu.Unlock()
			if diff := cmp.Diff(tt.planCalls, p.calls); diff != "" {
				t.Errorf("planner calls (-want +got):\n%s", diff)
			}
			// The planner hears who asked: the boot secret depends on it.
			for _, a := range p.from {
				if a != netip.MustParseAddr("10.0.0.42") {
					t.Errorf("planner told the request came from %v", a)
				}
			}
		})
	}
}

func TestGeneratorError(t *testing.T) {
	s := scriptServer(&fakePlanner{})
	s.IPXEScript = func(boot.Plan) ([]byte, error) { return nil, errors.New("unsafe kernel URL") }
	w := httptest.NewRecorder()
	s.Handler().ServeHTTP(w, httptest.NewRequest("GET", "/ipxe/525400123456", nil))
	if w.Code != 500 || !strings.Contains(w.Body.String(), "unsafe kernel URL") {
		t.Errorf("got %d %q, want 500 naming the error", w.Code, w.Body)
	}
}

func TestZeroServer(t *testing.T) {
	h := (&Server{}).Handler()
	for _, path := range []string{"/boot.ipxe", "/ipxe/525400123456", "/grub/grub.cfg", "/grub/525400123456.cfg", "/firmware/x", "/artifacts/x"} {
		t.Run(path, func(t *testing.T) {
			w := httptest.NewRecorder()
			h.ServeHTTP(w, httptest.NewRequest("GET", path, nil))
			if w.Code != 404 {
				t.Errorf("status %d, want 404", w.Code)
			}
		})
	}
}

func TestParseMAC(t *testing.T) {
	want := net.HardwareAddr{0x52, 0x54, 0, 0xab, 0xcd, 0xef}
	for _, in := range []string{"52:54:00:ab:cd:ef", "52-54-00-AB-CD-EF", "525400abcdef", "525400ABCDEF", "5254.00ab.cdef"} {
		t.Run(in, func(t *testing.T) {
			got, err := ParseMAC(in)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
	for _, in := range []string{"", "52:54:00:ab:cd", "525400abcdeg", "52540abcdef", "00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01", "52:54:00:ab:cd:ef:"} {
		t.Run("bad "+in, func(t *testing.T) {
			if got, err := ParseMAC(in); err == nil {
				t.Errorf("ParseMAC(%q) = %v, want an error", in, got)
			}
		})
	}
}

func FuzzParseMAC(f *testing.F) {
	for _, s := range []string{"52:54:00:ab:cd:ef", "52-54-00-AB-CD-EF", "525400abcdef", "5254.00ab.cdef", "::::::", "zz", "52:54:00:ab:cd:ef:01:02"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseMAC(s)
		if err != nil {
			return
		}
		if len(m) != 6 {
			t.Fatalf("ParseMAC(%q) = %v: %d bytes", s, m, len(m))
		}
		for _, form := range []string{m.String(), strings.ReplaceAll(m.String(), ":", "-"), strings.ReplaceAll(m.String(), ":", "")} {
			again, err := ParseMAC(form)
			if err != nil || !bytes.Equal(again, m) {
				t.Fatalf("ParseMAC(%q) = %v, %v; want %v", form, again, err, m)
			}
		}
	})
}

// tree makes an artifacts directory with a kernel, a subdirectory, and
// symlinks that lead out of it, beside a secret file.
func tree(t *testing.T) (dir string, kernel []byte) {
	t.Helper()
	top := t.TempDir()
	dir = filepath.Join(top, "artifacts")
	kernel = make([]byte, 100_000)
	rand.Read(kernel)
	for path, data := range map[string][]byte{
		"artifacts/agent/x86_64/vmlinuz": kernel,
		"secret":                         []byte("SECRET-CONTENT"),
	} {
		full := filepath.Join(top, path)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for link, target := range map[string]string{
		"passwd":            "/etc/passwd",
		"escape":            "../secret",
		"agent/deep-escape": "../../secret",
		"agent/kernel":      "x86_64/vmlinuz", // inside the root: served
	} {
		if err := os.Symlink(target, filepath.Join(dir, link)); err != nil {
			t.Fatal(err)
		}
	}
	return dir, kernel
}

func TestFiles(t *testing.T) {
	dir, kernel := tree(t)
	h := (&Server{Artifacts: dir, Firmware: dir}).Handler()
	get := func(t *testing.T, method, path string, hdr map[string]string) *httptest.ResponseRecorder {
		t.Helper()
		r := httptest.NewRequest(method, path, nil)
		for k, v := range hdr {
			r.Header.Set(k, v)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}

	t.Run("full", func(t *testing.T) {
		w := get(t, "GET", "/artifacts/agent/x86_64/vmlinuz", nil)
		if w.Code != 200 || !bytes.Equal(w.Body.Bytes(), kernel) {
			t.Fatalf("status %d, %d bytes; want 200, %d bytes", w.Code, w.Body.Len(), len(kernel))
		}
		if w.Header().Get("ETag") == "" || w.Header().Get("Accept-Ranges") != "bytes" {
			t.Errorf("headers %v: want ETag and Accept-Ranges", w.Header())
		}
	})
	t.Run("firmware and symlink inside", func(t *testing.T) {
		w := get(t, "GET", "/firmware/agent/kernel", nil)
		if w.Code != 200 || !bytes.Equal(w.Body.Bytes(), kernel) {
			t.Fatalf("status %d, %d bytes", w.Code, w.Body.Len())
		}
	})
	t.Run("range", func(t *testing.T) {
		w := get(t, "GET", "/artifacts/agent/x86_64/vmlinuz", map[string]string{"Range": "bytes=100-199"})
		if w.Code != 206 || !bytes.Equal(w.Body.Bytes(), kernel[100:200]) {
			t.Fatalf("status %d, %d bytes; want 206 and bytes 100-199", w.Code, w.Body.Len())
		}
		if got, want := w.Header().Get("Content-Range"), fmt.Sprintf("bytes 100-199/%d", len(kernel)); got != want {
			t.Errorf("Content-Range %q, want %q", got, want)
		}
	})
	t.Run("multi-range", func(t *testing.T) {
		w := get(t, "GET", "/artifacts/agent/x86_64/vmlinuz", map[string]string{"Range": "bytes=0-9,-10"})
		if w.Code != 206 {
			t.Fatalf("status %d, want 206", w.Code)
		}
		mt, params, err := mime.ParseMediaType(w.Header().Get("Content-Type"))
		if err != nil || mt != "multipart/byteranges" {
			t.Fatalf("Content-Type %q, %v", w.Header().Get("Content-Type"), err)
		}
		mr := multipart.NewReader(w.Body, params["boundary"])
		var got [][]byte
		for {
			part, err := mr.NextPart()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(part)
			got = append(got, b)
		}
		if diff := cmp.Diff([][]byte{kernel[:10], kernel[len(kernel)-10:]}, got); diff != "" {
			t.Errorf("parts (-want +got):\n%s", diff)
		}
	})
	t.Run("unsatisfiable range", func(t *testing.T) {
		w := get(t, "GET", "/artifacts/agent/x86_64/vmlinuz", map[string]string{"Range": "bytes=200000-"})
		if w.Code != 416 {
			t.Errorf("status %d, want 416", w.Code)
		}
	})
	t.Run("if-none-match", func(t *testing.T) {
		tag := get(t, "GET", "/artifacts/agent/x86_64/vmlinuz", nil).Header().Get("ETag")
		if !strings.HasPrefix(tag, `"`) {
			t.Fatalf("ETag %q is not a strong validator", tag)
		}
		w := get(t, "GET", "/artifacts/agent/x86_64/vmlinuz", map[string]string{"If-None-Match": tag})
		if w.Code != 304 || w.Body.Len() != 0 {
			t.Errorf("status %d, %d bytes; want 304, empty", w.Code, w.Body.Len())
		}
		w = get(t, "GET", "/artifacts/agent/x86_64/vmlinuz", map[string]string{"If-None-Match": `"other"`})
		if w.Code != 200 {
			t.Errorf("other tag: status %d, want 200", w.Code)
		}
		// If-Range with the tag keeps the range; with another, the whole file.
		w = get(t, "GET", "/artifacts/agent/x86_64/vmlinuz", map[string]string{"Range": "bytes=0-0", "If-Range": tag})
		if w.Code != 206 {
			t.Errorf("If-Range current: status %d, want 206", w.Code)
		}
	})
	t.Run("etag changes when the file is replaced", func(t *testing.T) {
		path := filepath.Join(dir, "agent/x86_64/vmlinuz")
		before := get(t, "GET", "/artifacts/agent/x86_64/vmlinuz", nil).Header().Get("ETag")
		st, _ := os.Stat(path)
		tmp := path + ".new"
		if err := os.WriteFile(tmp, kernel, 0o644); err != nil {
			t.Fatal(err)
		}
		os.Chtimes(tmp, st.ModTime(), st.ModTime())
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
		if after := get(t, "GET", "/artifacts/agent/x86_64/vmlinuz", nil).Header().Get("ETag"); after == before {
			t.Errorf("ETag %q unchanged after the file was replaced with one of the same size and time", after)
		}
	})
	t.Run("head", func(t *testing.T) {
		w := get(t, "HEAD", "/artifacts/agent/x86_64/vmlinuz", nil)
		if w.Code != 200 || w.Body.Len() != 0 || w.Header().Get("Content-Length") != fmt.Sprint(len(kernel)) {
			t.Errorf("status %d, body %d bytes, Content-Length %q", w.Code, w.Body.Len(), w.Header().Get("Content-Length"))
		}
		w = get(t, "HEAD", "/boot.ipxe", nil)
		if w.Code != 404 {
			t.Errorf("HEAD /boot.ipxe on a server without a chain script: %d", w.Code)
		}
	})

	for _, path := range []string{
		"/artifacts/../secret",
		"/artifacts/%2e%2e/secret",
		"/artifacts/%2E%2E%2Fsecret",
		"/artifacts/agent/%2e%2e/%2e%2e/secret",
		"/artifacts/agent/..%2f..%2fsecret",
		"/artifacts//etc/passwd",
		"/artifacts/passwd",
		"/artifacts/escape",
		"/artifacts/agent/deep-escape",
		"/artifacts/..%5csecret",
		"/artifacts/",
		"/artifacts/agent",
		"/artifacts/agent/",
		"/firmware/escape",
		"/firmware/%2e%2e/secret",
	} {
		t.Run("refused "+path, func(t *testing.T) {
			w := get(t, "GET", path, nil)
			t.Logf("status %d, Location %q", w.Code, w.Header().Get("Location"))
			if w.Code == 200 || w.Code == 206 {
				t.Errorf("status %d, want a refusal", w.Code)
			}
			if b := w.Body.String(); strings.Contains(b, "SECRET") || strings.Contains(b, "root:") {
				t.Errorf("body %q leaks a file outside the root", b)
			}
			if loc := w.Header().Get("Location"); loc != "" {
				// The mux cleans a path by redirecting; what it points at
				// must not serve the file either.
				w2 := get(t, "GET", loc, nil)
				if b := w2.Body.String(); w2.Code == 200 && (strings.Contains(b, "SECRET") || strings.Contains(b, "root:")) {
					t.Errorf("redirect to %q leaks a file outside the root", loc)
				}
			}
		})
	}
}

// ignoreTime leaves the wall clock out of event comparisons.
var ignoreTime = cmp.Options{cmpopts.IgnoreFields(boot.Event{}, "Time"), cmpopts.EquateComparable(netip.Addr{})}

func TestEvents(t *testing.T) {
	dir, kernel := tree(t)
	// A file large enough that the socket buffers cannot hold it, so a
	// client that goes away is seen as one.
	big := filepath.Join(dir, "big.img")
	if err := os.WriteFile(big, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(big, 256<<20); err != nil {
		t.Fatal(err)
	}
	rec := newEvents()
	s := scriptServer(&fakePlanner{})
	s.Artifacts, s.Recorder = dir, rec
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	lo := netip.MustParseAddr("127.0.0.1")
	size := int64(len(kernel))
	scriptLen := int64(len("ipxe netboot n-52:54:00:12:34:56 aarch64\n"))

	fetch := func(t *testing.T, path string, hdr map[string]string) {
		t.Helper()
		req, _ := http.NewRequest("GET", srv.URL+path, nil)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}

	tests := []struct {
		name string
		path string
		hdr  map[string]string
		want boot.Event
	}{
		{"full", "/artifacts/agent/x86_64/vmlinuz", nil,
			boot.Event{IP: lo, Proto: "http", Kind: "file", File: "/artifacts/agent/x86_64/vmlinuz", Bytes: size, Size: size, Complete: true}},
		{"range", "/artifacts/agent/x86_64/vmlinuz", map[string]string{"Range": "bytes=0-99"},
			boot.Event{IP: lo, Proto: "http", Kind: "file", File: "/artifacts/agent/x86_64/vmlinuz", Bytes: 100, Size: size, Complete: true, Options: map[string]string{"range": "bytes=0-99"}}},
		{"script", "/ipxe/52-54-00-12-34-56?arch=arm64", nil,
			boot.Event{IP: lo, MAC: net.HardwareAddr{0x52, 0x54, 0, 0x12, 0x34, 0x56}, Proto: "http", Kind: "file", File: "/ipxe/52-54-00-12-34-56", Bytes: scriptLen, Size: scriptLen, Complete: true}},
		{"missing", "/artifacts/nope", nil,
			boot.Event{IP: lo, Proto: "http", Kind: "file", File: "/artifacts/nope", Size: -1, Error: "404 not found"}},
		{"bad mac", "/ipxe/nope", nil,
			boot.Event{IP: lo, Proto: "http", Kind: "file", File: "/ipxe/nope", Size: -1, Error: `400 parse mac "nope": address nope: invalid MAC address`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fetch(t, tt.path, tt.hdr)
			got := rec.next(t)
			if got.Time.IsZero() {
				t.Error("event has no time")
			}
			if diff := cmp.Diff(tt.want, got, ignoreTime); diff != "" {
				t.Errorf("event (-want +got):\n%s", diff)
			}
		})
	}

	t.Run("client goes away", func(t *testing.T) {
		conn, err := net.Dial("tcp", srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(conn, "GET /artifacts/big.img HTTP/1.1\r\nHost: x\r\n\r\n")
		buf := make([]byte, 1<<20)
		if _, err := io.ReadFull(conn, buf); err != nil {
			t.Fatal(err)
		}
		// Reset rather than close, so the server's next write fails at once.
		conn.(*net.TCPConn).SetLinger(0)
		conn.Close()
		got := rec.next(t)
		if got.Complete || got.Error == "" || got.Bytes >= 256<<20 || got.Bytes < 1<<20 || got.Size != 256<<20 {
			t.Errorf("event %+v: want incomplete, with an error, 1 MiB <= Bytes < Size", got)
		}
	})
}

func TestServe(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := scriptServer(&fakePlanner{})
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	resp, err := http.Get("http://" + ln.Addr().String() + "/boot.ipxe")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "#!ipxe\nchain\n" {
		t.Errorf("body %q", body)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve = %v, want nil", err)
		}
	case <-time.After(7 * time.Second):
		t.Fatal("Serve did not return after its context ended")
	}
	if _, err := http.Get("http://" + ln.Addr().String() + "/boot.ipxe"); err == nil {
		t.Error("still serving after Serve returned")
	}
}

// TestTrees: another system's tree (Ironic's http_root) is served under
// its prefix, read again on every request and never with a validator, so
// a file rewritten in place with the same size and time is never stale.
func TestTrees(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "1234"), 0o755)
	cfg := filepath.Join(dir, "1234", "config")
	s := &Server{Trees: []Tree{{Prefix: "ironic/c1", Dir: dir}}}
	h := s.Handler()
	mtime := time.Unix(1700000000, 0)
	for _, body := range []string{"#!ipxe deploy", "#!ipxe rescue"} {
		os.WriteFile(cfg, []byte(body), 0o644)
		os.Chtimes(cfg, mtime, mtime)
		w := httptest.NewRecorder()
		r := httptest.NewRequest("GET", "/ironic/c1/1234/config", nil)
		r.Header.Set("If-None-Match", "*")
		r.Header.Set("If-Modified-Since", mtime.Add(time.Hour).UTC().Format(http.TimeFormat))
		h.ServeHTTP(w, r)
		if w.Code != 200 || w.Body.String() != body {
			t.Errorf("got %d %q, want 200 %q", w.Code, w.Body.String(), body)
		}
		if w.Header().Get("Cache-Control") != "no-store" || w.Header().Get("ETag") != "" || w.Header().Get("Last-Modified") != "" {
			t.Errorf("headers %v: want no-store and no validators", w.Header())
		}
	}
	// A FIFO in the tree is refused at once, never waited on.
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/ironic/c1/", "/ironic/c1/1234", "/ironic/c2/1234/config", "/ironic/c1/../c1/1234/config", "/ironic/c1/fifo"} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", path, nil))
		if w.Code == 200 {
			t.Errorf("%s: 200 %q", path, w.Body.String())
		}
	}
}
