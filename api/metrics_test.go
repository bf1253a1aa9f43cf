package api

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// Made-up methods count as "other": 50 requests with 500 KiB method names
// once kept 26 MiB of labels.
func TestMetricsLabelsBounded(t *testing.T) {
	f := newFixture(t)
	u, _ := url.Parse(f.srv.URL)
	for i := range 50 {
		c, err := net.Dial("tcp", u.Host)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "%s%d /api/v1/nodes HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", strings.Repeat("M", 4096), i)
		bufio.NewReader(c).ReadString('\n')
		c.Close()
	}
	_, body := f.call(t, nil, "GET", "/metrics", "", "")
	if len(body) > 16<<10 {
		t.Errorf("/metrics is %d bytes after 50 made-up methods", len(body))
	}
	if strings.Contains(string(body), "MMMM") {
		t.Error("a made-up method became a label")
	}
	if !strings.Contains(string(body), `rackboot_api_requests_total{method="other",`) {
		t.Errorf("made-up methods not counted as other:\n%s", body)
	}
}

// A /metrics client that never reads must not stall the API: the page is
// written with no lock held.
func TestSlowMetricsClient(t *testing.T) {
	f := newFixture(t)
	// A page larger than any socket buffer, as many counters make it.
	f.api.requests.mu.Lock()
	if f.api.requests.n == nil {
		f.api.requests.n = map[[2]string]uint64{}
	}
	for i := range 200_000 {
		f.api.requests.n[[2]string{fmt.Sprintf("X%07d", i), "200"}] = 1
	}
	f.api.requests.mu.Unlock()
	u, _ := url.Parse(f.srv.URL)
	for range 3 {
		c, err := net.Dial("tcp", u.Host)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.(*net.TCPConn).SetReadBuffer(4096)
		fmt.Fprintf(c, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
	}
	time.Sleep(300 * time.Millisecond) // the scrapers are stuck writing
	done := make(chan int, 1)
	go func() {
		code, _ := f.call(t, nil, "GET", "/api/v1/nodes", f.tokens["readonly"], "")
		done <- code
	}()
	select {
	case code := <-done:
		if code != http.StatusOK {
			t.Errorf("GET /api/v1/nodes = %d while /metrics clients hang", code)
		}
	// A stall lasts as long as the scrapers do not read: forever. The
	// bound only has to outlast a loaded machine's slowest answer.
	case <-time.After(60 * time.Second):
		t.Fatal("the API did not answer in 60 s while /metrics clients did not read")
	}
}
