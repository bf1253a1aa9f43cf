package appliance

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Health checks, for load balancers and systemd. Neither takes a
// credential and both answer a line of text.
const (
	// HealthPath answers 200 while the process serves HTTP at all.
	HealthPath = "/healthz"
	// ReadyPath answers 200 when the database answered a query within
	// ReadyTimeout and every server (DHCP, TFTP, HTTP) is serving, else
	// 503 with the reason.
	ReadyPath = "/readyz"
	// ReadyTimeout bounds the database query of a readiness check.
	ReadyTimeout = 2 * time.Second
	// readyCache is how long a readiness result is reused: a flood of
	// checks makes at most one query a second.
	readyCache = time.Second
)

// health tracks the servers of a run and answers the health checks.
type health struct {
	ping func(context.Context) error
	log  *slog.Logger

	mu      sync.Mutex // one database query at a time
	checked time.Time
	reason  string // "" when ready

	servers []*server
}

// server is one server the readiness check waits for.
type server struct {
	name    string
	serving atomic.Bool
}

// add registers a server; its serve is wrapped by run.
func (h *health) add(name string) *server {
	s := &server{name: name}
	h.servers = append(h.servers, s)
	return s
}

// run marks s serving while serve runs.
func (s *server) run(serve func() error) func() error {
	return func() error {
		s.serving.Store(true)
		defer s.serving.Store(false)
		return serve()
	}
}

func (h *health) healthz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Write([]byte("ok\n"))
}

func (h *health) readyz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if why := h.check(r.Context()); why != "" {
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte("not ready: " + why + "\n"))
		return
	}
	w.Write([]byte("ready\n"))
}

// check returns why the appliance is not ready, or "".
func (h *health) check(ctx context.Context) string {
	var down []string
	for _, s := range h.servers {
		if !s.serving.Load() {
			down = append(down, s.name)
		}
	}
	if len(down) > 0 {
		return "not serving: " + strings.Join(down, ", ")
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if time.Since(h.checked) < readyCache {
		return h.reason
	}
	ctx, cancel := context.WithTimeout(ctx, ReadyTimeout)
	defer cancel()
	h.reason = ""
	if err := h.ping(ctx); err != nil {
		// The reason says what, not the driver's words: the check
		// answers anyone on the boot network.
		h.reason = "the database does not answer"
		h.log.Warn("readiness check: the database does not answer", "err", err)
	}
	h.checked = time.Now()
	return h.reason
}
