package appliance

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rackboot/rackboot/internal/syncbuf"
	"github.com/rackboot/rackboot/store"
)

// downStore is a store whose database stops answering while down is set:
// node listings (the reaper's first call) and pings fail.
type downStore struct {
	store.Store
	down  atomic.Bool
	lists atomic.Int64 // listings tried
}

var errDown = errors.New("database hiccup: connection refused")

func (s *downStore) ListNodes(ctx context.Context, f store.NodeFilter) ([]store.Node, error) {
	s.lists.Add(1)
	if s.down.Load() {
		return nil, errDown
	}
	return s.Store.ListNodes(ctx, f)
}

func (s *downStore) Prune(ctx context.Context, bootBefore, eventsBefore time.Time) (int64, int64, error) {
	if s.down.Load() {
		return 0, 0, errDown
	}
	return s.Store.Prune(ctx, bootBefore, eventsBefore)
}

func (s *downStore) Ping(ctx context.Context) error {
	if s.down.Load() {
		return errDown
	}
	return s.Store.Ping(ctx)
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, string(b)
}

// tftpAnswers sends a read request for a file that does not exist and
// reports whether an answer (an ERROR packet) comes back.
func tftpAnswers(t *testing.T, addr net.Addr) bool {
	t.Helper()
	// The answer comes from the transfer's own port: an unconnected socket.
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.WriteTo([]byte("\x00\x01no-such-file\x00octet\x00"), addr); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 600)
	n, _, err := c.ReadFrom(buf)
	return err == nil && n >= 4 && buf[1] == 5
}

// TestStoreDownKeepsServing: with the database gone, the reaper fails
// again and again and says so, /readyz answers 503 with the reason,
// /healthz 200, TFTP and HTTP keep answering, and the appliance does not
// stop; when the database answers again, /readyz is 200.
func TestStoreDownKeepsServing(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	httpAddr, tftpAddr := make(chan net.Addr, 1), make(chan net.Addr, 1)
	done := make(chan error, 1)
	var ds *downStore
	cfg := Config{DataDir: dir, ServerIP: "127.0.0.1", HTTPAddr: "127.0.0.1:0", TFTPAddr: "127.0.0.1:0", DHCP: DHCPConfig{Mode: DHCPOff}}
	h := hooks{
		serving:     func(a net.Addr) { httpAddr <- a },
		tftpServing: func(a net.Addr) { tftpAddr <- a },
		wrapStore:   func(st store.Store) store.Store { ds = &downStore{Store: st}; return ds },
		reapEvery:   40 * time.Millisecond,
		pruneEvery:  40 * time.Millisecond,
	}
	logs := &syncbuf.Buffer{}
	go func() { done <- run(ctx, cfg, slog.New(slog.NewTextHandler(logs, nil)), h) }()
	var base string
	select {
	case a := <-httpAddr:
		base = "http://" + a.String()
	case err := <-done:
		t.Fatalf("appliance: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the appliance did not start in 30s")
	}
	tftp := <-tftpAddr

	// Every server's goroutine may not have started the instant the
	// sockets are open: ready within a second.
	deadline := time.Now().Add(5 * time.Second)
	for {
		code, body := get(t, base+ReadyPath)
		if code == http.StatusOK && body == "ready\n" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s before the fault: %d %q", ReadyPath, code, body)
		}
		time.Sleep(20 * time.Millisecond)
	}

	ds.down.Store(true)
	before := ds.lists.Load()
	// Several reaps, each failing: the loop carries on. (How fast is a
	// figure, not a bound: a loaded machine is slower.)
	down := time.Now()
	for deadline := time.Now().Add(30 * time.Second); ds.lists.Load()-before < 3; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the reaper tried %d times in 30 s with the database down", ds.lists.Load()-before)
		}
	}
	t.Logf("the reaper tried 3 times in %v with the database down", time.Since(down).Round(time.Millisecond))
	select {
	case err := <-done:
		t.Fatalf("the appliance stopped on a store error: %v", err)
	default:
	}
	// Each loop says so in its own time: the retention loop's first
	// prune may come after the reaper's third try.
	for _, want := range []string{`msg="reaper: store error, trying again" err="reap: database hiccup`, `msg="retention: store error, trying again" err="database hiccup`} {
		for deadline := time.Now().Add(30 * time.Second); !strings.Contains(logs.String(), want); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Errorf("no %s in the log within 30 s:\n%s", want, logs.String())
				break
			}
		}
	}
	time.Sleep(readyCache) // past the last cached readiness result
	if code, body := get(t, base+ReadyPath); code != http.StatusServiceUnavailable || body != "not ready: the database does not answer\n" {
		t.Errorf("%s with the database down: %d %q", ReadyPath, code, body)
	}
	if code, body := get(t, base+HealthPath); code != http.StatusOK || body != "ok\n" {
		t.Errorf("%s with the database down: %d %q", HealthPath, code, body)
	}
	if code, _ := get(t, base+"/ui/"); code != http.StatusOK {
		t.Errorf("/ui/ with the database down: %d", code)
	}
	if !tftpAnswers(t, tftp) {
		t.Error("TFTP did not answer with the database down")
	}

	ds.down.Store(false)
	time.Sleep(readyCache)
	if code, body := get(t, base+ReadyPath); code != http.StatusOK || !strings.HasPrefix(body, "ready") {
		t.Errorf("%s after the database came back: %d %q", ReadyPath, code, body)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("appliance: %v", err)
	}
}

// TestReadyz: a server that is not serving and a database that hangs
// each make /readyz 503 with the reason, the hang within ReadyTimeout;
// checks made meanwhile reuse the last answer instead of asking the
// database again.
func TestReadyz(t *testing.T) {
	var pings atomic.Int64
	hang := atomic.Bool{}
	h := &health{log: slog.New(slog.DiscardHandler), ping: func(ctx context.Context) error {
		pings.Add(1)
		if hang.Load() {
			<-ctx.Done()
			return ctx.Err()
		}
		return nil
	}}
	tftp := h.add("tftp")
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+ReadyPath, h.readyz)
	ask := func() (int, string) {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest("GET", ReadyPath, nil))
		return rec.Code, rec.Body.String()
	}
	if code, body := ask(); code != http.StatusServiceUnavailable || body != "not ready: not serving: tftp\n" {
		t.Errorf("before tftp serves: %d %q", code, body)
	}
	stop := make(chan struct{})
	go tftp.run(func() error { <-stop; return nil })()
	for !tftp.serving.Load() {
		time.Sleep(time.Millisecond)
	}
	checks := time.Now()
	for range 100 {
		if code, body := ask(); code != http.StatusOK || body != "ready\n" {
			t.Fatalf("serving: %d %q", code, body)
		}
	}
	// One query a second at most, however long a loaded machine took.
	if n, most := pings.Load(), 1+int64(time.Since(checks)/time.Second); n > most {
		t.Errorf("100 checks in %v made %d queries, want at most %d", time.Since(checks), n, most)
	}
	hang.Store(true)
	h.checked = time.Time{}
	start := time.Now()
	code, body := ask()
	if took := time.Since(start); code != http.StatusServiceUnavailable || body != "not ready: the database does not answer\n" || took > ReadyTimeout+20*time.Second {
		t.Errorf("database hangs: %d %q after %v", code, body, took)
	}
	close(stop)
	for tftp.serving.Load() {
		time.Sleep(time.Millisecond)
	}
	if code, body := ask(); code != http.StatusServiceUnavailable || !strings.Contains(body, "tftp") {
		t.Errorf("after tftp stopped: %d %q", code, body)
	}
}

// TestOneServerPerDataDir: a second server on a SQLite data dir is
// refused at start, naming the lock, while the first runs.
func TestOneServerPerDataDir(t *testing.T) {
	dir := t.TempDir()
	unlock, err := lockDataDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{DataDir: dir, ServerIP: "127.0.0.1", HTTPAddr: "127.0.0.1:0", TFTPAddr: "127.0.0.1:0", DHCP: DHCPConfig{Mode: DHCPOff}}
	err = run(context.Background(), cfg, nil, hooks{})
	if !errors.Is(err, ErrServing) || !strings.Contains(err.Error(), LockFile) {
		t.Fatalf("second server: %v, want ErrServing naming %s", err, LockFile)
	}
	unlock()
	if again, err := lockDataDir(dir); err != nil {
		t.Fatalf("after unlock: %v", err)
	} else {
		again()
	}
}
