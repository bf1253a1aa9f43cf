// Package api is rackboot's JSON HTTP API under /api/v1: nodes and their
// boot traces. Every route needs a bearer token.
package api

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/store"
	"github.com/rackboot/rackboot/trace"
)

// Server serves the API.
type Server struct {
	Store store.Store
	// Token is the admin token every request must carry as
	// "Authorization: Bearer <token>".
	Token  string
	Logger *slog.Logger
}

// Node is a node as the API shows it.
type Node struct {
	ID         string    `json:"id"`
	Name       string    `json:"name"`
	State      string    `json:"state"`
	Arch       string    `json:"arch"`
	Firmware   string    `json:"firmware"`
	ClientArch string    `json:"client_arch"`
	SecureBoot *bool     `json:"secure_boot"`
	UUID       string    `json:"uuid,omitempty"`
	MACs       []string  `json:"macs"`
	FirstSeen  time.Time `json:"first_seen"`
	LastSeen   time.Time `json:"last_seen"`
}

// Event is one stored boot event.
type Event struct {
	Seq        int64             `json:"seq"`
	Time       time.Time         `json:"time"`
	MAC        string            `json:"mac,omitempty"`
	IP         string            `json:"ip,omitempty"`
	Proto      string            `json:"proto"`
	Kind       string            `json:"kind"`
	File       string            `json:"file,omitempty"`
	Bytes      int64             `json:"bytes"`
	Size       int64             `json:"size"`
	BlockSize  int               `json:"block_size,omitempty"`
	WindowSize int               `json:"window_size,omitempty"`
	Complete   bool              `json:"complete"`
	Error      string            `json:"error,omitempty"`
	Options    map[string]string `json:"options,omitempty"`
}

// Trace is a node's boot trace: the boots with their verdicts, and the raw events.
type Trace struct {
	Node   string       `json:"node"`
	Boots  []trace.Boot `json:"boots"`
	Events []Event      `json:"events"`
}

// Error is the shape of every error response.
type Error struct {
	Error string `json:"error"`
}

// NodeFrom converts a stored node.
func NodeFrom(n store.Node) Node {
	return Node{ID: n.ID, Name: n.Name, State: string(n.State), Arch: string(n.Arch), Firmware: string(n.Firmware),
		ClientArch: n.ClientArch.String(), SecureBoot: n.SecureBoot, UUID: n.UUID, MACs: n.MACs,
		FirstSeen: n.FirstSeen, LastSeen: n.LastSeen}
}

// Handler returns the API's routes.
func (s *Server) Handler() http.Handler {
	r := chi.NewRouter()
	r.Use(s.auth)
	r.Get("/api/v1/nodes", s.listNodes)
	r.Get("/api/v1/nodes/{ref}", s.getNode)
	r.Patch("/api/v1/nodes/{ref}", s.patchNode)
	r.Get("/api/v1/nodes/{ref}/trace", s.getTrace)
	r.NotFound(func(w http.ResponseWriter, r *http.Request) { writeError(w, http.StatusNotFound, "no such route") })
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusMethodNotAllowed, "method not allowed")
	})
	return r
}

func (s *Server) auth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || s.Token == "" || subtle.ConstantTimeCompare([]byte(got), []byte(s.Token)) != 1 {
			writeError(w, http.StatusUnauthorized, "missing or bad token")
			return
		}
		next.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, Error{Error: msg})
}

func (s *Server) storeError(w http.ResponseWriter, err error) {
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, http.StatusNotFound, err.Error())
		return
	}
	if s.Logger != nil {
		s.Logger.Error("api", "err", err)
	}
	writeError(w, http.StatusInternalServerError, err.Error())
}

func (s *Server) listNodes(w http.ResponseWriter, r *http.Request) {
	nodes, err := s.Store.Nodes(r.Context())
	if err != nil {
		s.storeError(w, err)
		return
	}
	out := []Node{}
	for _, n := range nodes {
		out = append(out, NodeFrom(n))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) getNode(w http.ResponseWriter, r *http.Request) {
	n, err := s.Store.Node(r.Context(), chi.URLParam(r, "ref"))
	if err != nil {
		s.storeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, NodeFrom(n))
}

// NodePatch is the body of PATCH /api/v1/nodes/{ref}. SecureBoot is "on",
// "off" or "inherit" (take the subnet's setting).
type NodePatch struct {
	SecureBoot *string `json:"secure_boot,omitempty"`
}

func (s *Server) patchNode(w http.ResponseWriter, r *http.Request) {
	var p NodePatch
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		writeError(w, http.StatusBadRequest, "bad JSON: "+err.Error())
		return
	}
	n, err := s.Store.Node(r.Context(), chi.URLParam(r, "ref"))
	if err != nil {
		s.storeError(w, err)
		return
	}
	if p.SecureBoot != nil {
		var on *bool
		switch *p.SecureBoot {
		case "on", "off":
			v := *p.SecureBoot == "on"
			on = &v
		case "inherit":
		default:
			writeError(w, http.StatusBadRequest, `secure_boot must be "on", "off" or "inherit"`)
			return
		}
		if err := s.Store.SetSecureBoot(r.Context(), n.ID, on); err != nil {
			s.storeError(w, err)
			return
		}
	}
	if n, err = s.Store.Node(r.Context(), n.ID); err != nil {
		s.storeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, NodeFrom(n))
}

func (s *Server) getTrace(w http.ResponseWriter, r *http.Request) {
	n, err := s.Store.Node(r.Context(), chi.URLParam(r, "ref"))
	if err != nil {
		s.storeError(w, err)
		return
	}
	limit := 1000
	if v := r.URL.Query().Get("limit"); v != "" {
		if limit, err = strconv.Atoi(v); err != nil || limit <= 0 {
			writeError(w, http.StatusBadRequest, "limit must be a positive number")
			return
		}
	}
	events, err := s.Store.Trace(r.Context(), n.ID, limit)
	if err != nil {
		s.storeError(w, err)
		return
	}
	out := Trace{Node: n.ID, Events: []Event{}, Boots: []trace.Boot{}}
	raw := make([]boot.Event, 0, len(events))
	for _, e := range events {
		raw = append(raw, e.Event)
		ae := Event{Seq: e.Seq, Time: e.Time, Proto: e.Proto, Kind: e.Kind, File: e.File, Bytes: e.Bytes, Size: e.Size,
			BlockSize: e.BlockSize, WindowSize: e.WindowSize, Complete: e.Complete, Error: e.Error, Options: e.Options}
		if len(e.MAC) > 0 {
			ae.MAC = e.MAC.String()
		}
		if e.IP.IsValid() {
			ae.IP = e.IP.String()
		}
		out.Events = append(out.Events, ae)
	}
	if b := trace.Summarize(raw); b != nil {
		out.Boots = b
	}
	writeJSON(w, http.StatusOK, out)
}
