package api

import (
	"fmt"
	"net/http"
	"sort"
	"sync"

	"github.com/rackboot/rackboot/store"
)

// requestCounter counts API answers by method and status code.
type requestCounter struct {
	mu sync.Mutex
	n  map[[2]string]uint64
}

func (c *requestCounter) add(method string, code int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[[2]string]uint64{}
	}
	c.n[[2]string{method, fmt.Sprint(code)}]++
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
// scrapers expect, and says nothing secret: counts only.
func (s *Server) metrics(w http.ResponseWriter, r *http.Request) {
	counts, err := s.Store.CountNodes(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	fmt.Fprintln(w, "# HELP rackboot_nodes Nodes by lifecycle state.")
	fmt.Fprintln(w, "# TYPE rackboot_nodes gauge")
	for _, st := range allStates {
		fmt.Fprintf(w, "rackboot_nodes{state=%q} %d\n", st, counts[st])
	}
	fmt.Fprintln(w, "# HELP rackboot_api_requests_total API answers by method and status code.")
	fmt.Fprintln(w, "# TYPE rackboot_api_requests_total counter")
	s.requests.mu.Lock()
	keys := make([][2]string, 0, len(s.requests.n))
	for k := range s.requests.n {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i][0]+keys[i][1] < keys[j][0]+keys[j][1] })
	for _, k := range keys {
		fmt.Fprintf(w, "rackboot_api_requests_total{method=%q,code=%q} %d\n", k[0], k[1], s.requests.n[k])
	}
	s.requests.mu.Unlock()
	if s.Metrics != nil {
		s.Metrics(w)
	}
}
