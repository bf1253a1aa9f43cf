// Package api is rackboot's JSON HTTP API under /api/v1: nodes, their
// actions, their BMCs and power, boot traces and audit events (also live,
// as server-sent events), images, tasks, users and tokens, hypervisors,
// flavors and VMs, with role-based access for
// tokens and web sessions, an OpenAPI document generated from the same
// route table that serves the requests, and Prometheus metrics.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/gpufleet"
	"github.com/rackboot/rackboot/hypervisor"
	"github.com/rackboot/rackboot/images/catalog"
	"github.com/rackboot/rackboot/lifecycle"
	"github.com/rackboot/rackboot/power"
	"github.com/rackboot/rackboot/store"
)

// Server serves the API. Set the fields (New sets the parts a server on
// its own needs), then call Handler once.
type Server struct {
	Store Store
	// Handover hands nodes to OpenStack Ironic and back; nil answers
	// that no Ironic API is configured.
	Handover Handover
	// Lifecycle applies node actions and agent outcomes; it must be set.
	Lifecycle Lifecycle
	// Broker wakes the live event streams; it must be set. Whatever
	// writes events elsewhere (the lifecycle's notifications, the reaper)
	// publishes on the same broker.
	Broker *Broker
	Logger *slog.Logger
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
	// Secrets seals and opens BMC passwords (a *sealbox.Box or
	// *sealbox.File); nil refuses to store or use one.
	Secrets Secrets
	// PowerDial opens a BMC's driver (default power.Dial); tests put
	// fakes here.
	PowerDial func(power.Config) (power.Driver, error)
	// BMCCAFile is the PEM CA bundle that verifies Redfish BMCs'
	// certificates where no fingerprint is pinned (default: the system's
	// roots).
	BMCCAFile string
	// PowerOn staggers the power-ons (on, cycle, reset) of every power
	// action, single or bulk; nil runs them at once.
	PowerOn *power.Limiter
	// Power records the power states the API asks of BMCs (the poller,
	// which also counts them for the metrics); nil records them in Store
	// directly.
	Power PowerRecorder
	// VMs runs the hypervisors, flavors and VMs; nil answers their
	// routes with 501.
	VMs *hypervisor.Service
	// HypervisorTLS issues the libvirt TLS files of a node deployed as a
	// hypervisor, its server certificate naming hosts; nil refuses
	// deploys with role hypervisor.
	HypervisorTLS func(hosts []string) (hypervisor.TLSFiles, error)
	// HypervisorAgent says how node nodeID's hypervisor agent is
	// installed and reaches this server: the URL and SHA-256 of the agent
	// for arch, and its configuration line (Token is left empty); nil
	// refuses hypervisor deploys and agent tokens.
	HypervisorAgent func(nodeID string, arch boot.Arch) (hypervisor.Agent, error)

	// GPUPeers says when a GPU is below its peers (zero fields: 90% of
	// their median, from 3 other cards of its model).
	GPUPeers gpufleet.Options

	requests requestCounter
	logins   loginLimiter
}

// PowerRecorder records a power state just asked of a node's BMC, with an
// event (kind "power", actor "system") when it changed.
type PowerRecorder interface {
	Record(ctx context.Context, p store.PowerState) error
}

// Secrets seals secrets the server must read back; package sealbox
// implements it.
type Secrets interface {
	Seal(plaintext, ad []byte) []byte
	Open(sealed, ad []byte) ([]byte, error)
}

func (s *Server) log() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}

func (s *Server) sessionTTL() time.Duration {
	if s.SessionTTL == 0 {
		return 12 * time.Hour
	}
	return s.SessionTTL
}

// Handler returns the API's routes and /metrics. It panics when Store,
// Lifecycle or Broker is missing: a server without them cannot answer.
func (s *Server) Handler() http.Handler {
	if s.Store == nil || s.Lifecycle == nil || s.Broker == nil {
		panic("api: Server needs Store, Lifecycle and Broker (api.New sets them)")
	}
	r := chi.NewRouter()
	r.Use(s.count)
	for _, rt := range s.table() {
		r.Method(rt.method, rt.pattern, s.wrap(rt))
	}
	r.Get("/metrics", s.metrics)
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", "no such route: "+r.URL.Path)
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", r.Method+" is not allowed on "+r.URL.Path)
	})
	return r
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
