// Package api is rackboot's JSON HTTP API under /api/v1: nodes, their
// actions, boot traces and audit events (also live, as server-sent
// events), images, tasks, users and tokens, with role-based access for
// tokens and web sessions, an OpenAPI document generated from the same
// route table that serves the requests, and Prometheus metrics.
package api

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/rackboot/rackboot/images/catalog"
	"github.com/rackboot/rackboot/lifecycle"
	"github.com/rackboot/rackboot/store"
)

// Server serves the API. Set the fields, then call Handler once.
type Server struct {
	Store store.Store
	// BootstrapToken is an admin token that needs no database row (the
	// one in the data dir), so a fresh install can be reached at all.
	BootstrapToken string
	Logger         *slog.Logger
	// SecureCookies marks the session cookie Secure, for servers behind
	// TLS.
	SecureCookies bool
	// SessionTTL is how long a web session lives (default 12 hours).
	SessionTTL time.Duration
	// Metrics, when set, writes more Prometheus metrics (DHCP, TFTP,
	// HTTP counters) after the API's own.
	Metrics func(w io.Writer)
	// Version is reported by /api/v1/version.
	Version string
	// Catalog keeps the image files; nil refuses imports.
	Catalog *catalog.Catalog
	// AgentHeartbeat is how often agents are asked to call in (default
	// DefaultAgentHeartbeat).
	AgentHeartbeat time.Duration

	once     sync.Once
	machine  *lifecycle.Machine
	broker   *Broker
	handler  http.Handler
	routes   []route
	requests requestCounter
}

// Machine returns the lifecycle the API applies actions with, so other
// parts of the appliance (the agent endpoints) share its notifications.
func (s *Server) Machine() *lifecycle.Machine {
	s.init()
	return s.machine
}

// Broker returns the wake-up channel of the live event streams.
func (s *Server) Broker() *Broker {
	s.init()
	return s.broker
}

func (s *Server) log() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}

// Handler returns the API's routes and /metrics.
func (s *Server) Handler() http.Handler {
	s.init()
	return s.handler
}

func (s *Server) init() {
	s.once.Do(func() {
		if s.SessionTTL == 0 {
			s.SessionTTL = 12 * time.Hour
		}
		s.broker = NewBroker()
		s.machine = &lifecycle.Machine{Store: s.Store, Notify: func(store.Event) { s.broker.Publish() }}
		s.routes = s.table()
		r := chi.NewRouter()
		r.Use(s.count)
		for _, rt := range s.routes {
			r.Method(rt.method, rt.pattern, s.wrap(rt))
		}
		r.Get("/metrics", s.metrics)
		r.NotFound(func(w http.ResponseWriter, r *http.Request) {
			writeError(w, http.StatusNotFound, "not_found", "no such route: "+r.URL.Path)
		})
		r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
			writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", r.Method+" is not allowed on "+r.URL.Path)
		})
		s.handler = r
	})
}

// ErrorBody is the shape of every error response.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail says what went wrong: Code is stable for programs, Message
// is for people.
type ErrorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, ErrorBody{Error: ErrorDetail{Code: code, Message: msg}})
}

// fail answers an error from the store or the lifecycle with its status.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	var refused *lifecycle.RefusedError
	var invalid *lifecycle.InvalidError
	switch {
	case errors.Is(err, store.ErrNotFound):
		writeError(w, http.StatusNotFound, "not_found", err.Error())
	case errors.As(err, &refused):
		writeError(w, http.StatusConflict, "conflict", refused.Error())
	case errors.As(err, &invalid):
		writeError(w, http.StatusBadRequest, "bad_request", invalid.Error())
	case errors.Is(err, store.ErrConflict):
		writeError(w, http.StatusConflict, "conflict", err.Error())
	default:
		s.log().Error("api", "method", r.Method, "path", r.URL.Path, "err", err)
		writeError(w, http.StatusInternalServerError, "internal", err.Error())
	}
}

// decode reads a JSON body of at most 1 MiB into v, refusing unknown
// fields, so a typo is an error and not a silent no-op.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			writeError(w, http.StatusBadRequest, "bad_request", "the request needs a JSON body")
			return false
		}
		writeError(w, http.StatusBadRequest, "bad_request", "bad JSON: "+err.Error())
		return false
	}
	if dec.More() {
		writeError(w, http.StatusBadRequest, "bad_request", "bad JSON: more than one value in the body")
		return false
	}
	return true
}

// decodeOptional is decode for bodies that may be empty.
func decodeOptional(w http.ResponseWriter, r *http.Request, v any) bool {
	if r.ContentLength == 0 && r.Header.Get("Transfer-Encoding") == "" {
		return true
	}
	return decode(w, r, v)
}
