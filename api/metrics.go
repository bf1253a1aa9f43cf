package api

import (
	"bytes"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"sync"

	"github.com/rackboot/rackboot/store"
)

// requestCounter counts API answers by method and status code.
type requestCounter struct {
	mu sync.Mutex
	n  map[[2]string]uint64
}

// methods are the method labels counted by name; any other method an
// unauthenticated client makes up counts as "other", so the counters
// stay a few dozen entries whatever arrives.
var methods = map[string]bool{http.MethodGet: true, http.MethodHead: true, http.MethodPost: true, http.MethodPut: true,
	http.MethodPatch: true, http.MethodDelete: true, http.MethodOptions: true}

func (c *requestCounter) add(method string, code int) {
	if !methods[method] {
		method = "other"
	}
	status := "other"
	if code >= 100 && code <= 599 {
		status = strconv.Itoa(code)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[[2]string]uint64{}
	}
	c.n[[2]string{method, status}]++
}

// snapshot copies the counters, sorted, so nobody writes to a client
// while holding the lock every API call takes.
func (c *requestCounter) snapshot() (keys [][2]string, vals []uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	keys = make([][2]string, 0, len(c.n))
	for k := range c.n {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i][0]+keys[i][1] < keys[j][0]+keys[j][1] })
	vals = make([]uint64, len(keys))
	for i, k := range keys {
		vals[i] = c.n[k]
	}
	return keys, vals
}

func (s *Server) count(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(rec, r)
		s.requests.add(r.Method, rec.status)
	})
}

// Flush lets server-sent events through the recorder.
func (r *statusRecorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

var allStates = []store.State{store.StateDiscovered, store.StateInspecting, store.StateAvailable, store.StateDeploying,
	store.StateActive, store.StateCleaning, store.StateBurnin, store.StateFailed, store.StateMaintenance}

// metrics writes Prometheus's text format. It needs no token, as
// scrapers expect, and says nothing secret: counts only. The page is
// rendered first and written after: a scraper that never reads holds
// nothing but its own connection.
func (s *Server) metrics(rw http.ResponseWriter, r *http.Request) {
	counts, err := s.Store.CountNodes(r.Context())
	if err != nil {
		s.fail(rw, r, err)
		return
	}
	var w bytes.Buffer
	defer func() {
		rw.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		rw.Header().Set("Content-Length", strconv.Itoa(w.Len()))
		rw.Write(w.Bytes())
	}()
	fmt.Fprintln(&w, "# HELP rackboot_nodes Nodes by lifecycle state.")
	fmt.Fprintln(&w, "# TYPE rackboot_nodes gauge")
	for _, st := range allStates {
		fmt.Fprintf(&w, "rackboot_nodes{state=%q} %d\n", st, counts[st])
	}
	fmt.Fprintln(&w, "# HELP rackboot_api_requests_total API answers by method and status code.")
	fmt.Fprintln(&w, "# TYPE rackboot_api_requests_total counter")
	keys, vals := s.requests.snapshot()
	for i, k := range keys {
		fmt.Fprintf(&w, "rackboot_api_requests_total{method=%q,code=%q} %d\n", k[0], k[1], vals[i])
	}
	if s.Metrics != nil {
		s.Metrics(&w)
	}
}
