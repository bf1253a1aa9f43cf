package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/rackboot/rackboot/internal/httpserve"
	"github.com/rackboot/rackboot/store"
)

// Event is an audit event as the API shows it.
type Event struct {
	Seq     int64     `json:"seq"`
	Time    time.Time `json:"time"`
	NodeID  string    `json:"node_id"`
	Actor   string    `json:"actor"`
	Kind    string    `json:"kind"`
	From    string    `json:"from"`
	To      string    `json:"to"`
	Reason  string    `json:"reason"`
	Message string    `json:"message"`
}

// EventFrom converts a stored event.
func EventFrom(e store.Event) Event {
	return Event{Seq: e.Seq, Time: e.Time, NodeID: e.NodeID, Actor: e.Actor, Kind: e.Kind, From: string(e.From), To: string(e.To),
		Reason: e.Reason, Message: e.Message}
}

// EventList is a page of events, oldest first (or newest first with
// ?order=desc). NextCursor, when not empty, fetches the next page as
// ?after= (or ?before= with order=desc).
type EventList struct {
	Items      []Event `json:"items"`
	NextCursor string  `json:"next_cursor"`
}

// Broker wakes live event streams when an event is written. Streams read
// the events themselves from the store, so several rackboot servers on
// one database all see every event: a wake-up only makes it sooner.
type Broker struct {
	mu sync.Mutex
	ch chan struct{}
}

// NewBroker returns a broker.
func NewBroker() *Broker { return &Broker{ch: make(chan struct{})} }

// Wait returns a channel closed at the next Publish.
func (b *Broker) Wait() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.ch
}

// Publish wakes every waiting stream.
func (b *Broker) Publish() {
	b.mu.Lock()
	defer b.mu.Unlock()
	close(b.ch)
	b.ch = make(chan struct{})
}

func (s *Server) eventFilter(w http.ResponseWriter, r *http.Request) (store.EventFilter, bool) {
	q := r.URL.Query()
	f := store.EventFilter{}
	if ref := q.Get("node"); ref != "" {
		n, err := s.Store.Node(r.Context(), ref)
		if err != nil {
			s.fail(w, r, err)
			return f, false
		}
		f.NodeID = n.ID
	}
	after := q.Get("after")
	if after == "" {
		after = r.Header.Get("Last-Event-ID")
	}
	if after != "" {
		v, err := strconv.ParseInt(after, 10, 64)
		if err != nil || v < 0 {
			writeError(w, http.StatusBadRequest, "bad_request", "after must be an event sequence number")
			return f, false
		}
		f.After = v
	}
	return f, true
}

func (s *Server) listEvents(w http.ResponseWriter, r *http.Request) {
	f, ok := s.eventFilter(w, r)
	if !ok {
		return
	}
	if f.Limit, ok = limit(w, r, 100); !ok {
		return
	}
	q := r.URL.Query()
	switch q.Get("order") {
	case "", "asc":
	case "desc":
		f.Newest = true
		if b := q.Get("before"); b != "" {
			v, err := strconv.ParseInt(b, 10, 64)
			if err != nil || v <= 0 {
				writeError(w, http.StatusBadRequest, "bad_request", "before must be an event sequence number")
				return
			}
			f.Before = v
		}
	default:
		writeError(w, http.StatusBadRequest, "bad_request", `order must be "asc" (oldest first, page with after=) or "desc" (newest first, page with before=)`)
		return
	}
	evs, err := s.Store.Events(r.Context(), f)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := EventList{Items: []Event{}}
	for _, e := range evs {
		out.Items = append(out.Items, EventFrom(e))
	}
	if len(evs) == f.Limit {
		out.NextCursor = strconv.FormatInt(evs[len(evs)-1].Seq, 10)
	}
	writeJSON(w, http.StatusOK, out)
}

// streamPoll is how often a stream looks for events written by another
// server sharing the database, which cannot wake it.
const streamPoll = 2 * time.Second

// streamEvents is Server-Sent Events: every new event (after ?after= or
// Last-Event-ID, else from now on) as "event: event" with its sequence
// number as the id, so a reconnecting EventSource resumes where it was.
func (s *Server) streamEvents(w http.ResponseWriter, r *http.Request) {
	f, ok := s.eventFilter(w, r)
	if !ok {
		return
	}
	flusher, ok := w.(http.Flusher)
	if !ok {
		writeError(w, http.StatusInternalServerError, "internal", "streaming is not supported here")
		return
	}
	if r.URL.Query().Get("after") == "" && r.Header.Get("Last-Event-ID") == "" {
		// From now on: skip to the newest event.
		for {
			evs, err := s.Store.Events(r.Context(), store.EventFilter{NodeID: f.NodeID, After: f.After, Limit: 1000})
			if err != nil {
				s.fail(w, r, err)
				return
			}
			if len(evs) == 0 {
				break
			}
			f.After = evs[len(evs)-1].Seq
		}
	}
	// A stream is long on purpose; it ends with the server, its client
	// or its credential.
	httpserve.Long(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	fmt.Fprintf(w, "retry: 2000\n: rackboot events after %d\n\n", f.After)
	flusher.Flush()
	ctx := r.Context()
	poll := time.NewTicker(streamPoll)
	defer poll.Stop()
	ping := time.NewTicker(15 * time.Second)
	defer ping.Stop()
	rc := http.NewResponseController(w)
	for {
		// Each write has half a minute: a client that stops reading
		// does not hold its handler (and the connection cap) for ever.
		_ = rc.SetWriteDeadline(time.Now().Add(30 * time.Second))
		wake := s.Broker.Wait()
		f.Limit = 500
		evs, err := s.Store.Events(ctx, f)
		if err != nil {
			if ctx.Err() == nil {
				s.log().Error("event stream", "err", err)
			}
			return
		}
		for _, e := range evs {
			b, _ := json.Marshal(EventFrom(e))
			fmt.Fprintf(w, "id: %d\nevent: event\ndata: %s\n\n", e.Seq, b)
			f.After = e.Seq
		}
		if len(evs) > 0 {
			flusher.Flush()
		}
		if len(evs) == f.Limit {
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-wake:
		case <-poll.C:
			// A stream lives no longer than its credential: a revoked
			// token, a logged-out session or a demotion below readonly
			// ends it.
			if p, _, ok, err := s.authenticate(r); err == nil && (!ok || rank(p.Role) < rank(store.RoleReadonly)) {
				fmt.Fprint(w, "event: end\ndata: the credential of this stream is no longer valid\n\n")
				flusher.Flush()
				return
			}
		case <-ping.C:
			fmt.Fprint(w, ": ping\n\n")
			flusher.Flush()
		}
	}
}
