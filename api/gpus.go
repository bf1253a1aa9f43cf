package api

import (
	"fmt"
	"net/http"
	"time"

	"github.com/rackboot/rackboot/gpufleet"
)

// NodeGPUs is the answer of GET /api/v1/nodes/{id}/gpus: the figures of
// each GPU in the node's latest ended burn-in, beside its peers'.
type NodeGPUs struct {
	Node string `json:"node"`
	// Task is the burn-in task the figures come from; empty when the
	// node has no burn-in that ended.
	Task  string    `json:"task"`
	Ended time.Time `json:"ended"`
	// Outcome and Reason are that burn-in's GPU test's.
	Outcome    string           `json:"outcome"`
	Reason     string           `json:"reason"`
	Cards      []gpufleet.Card  `json:"cards"`
	Comparison gpufleet.Options `json:"comparison"`
}

// GPUList is the answer of GET /api/v1/gpus: the cards of every node's
// latest burn-in, or only those below their peers.
type GPUList struct {
	Items []gpufleet.Card `json:"items"`
	// Burnins is how many nodes' burn-ins were compared.
	Burnins    int              `json:"burnins"`
	Comparison gpufleet.Options `json:"comparison"`
}

// fleet compares the GPUs of every node's latest ended burn-in: one store
// query whatever the fleet's size, so the node view and the fleet view
// judge a card alike.
func (s *Server) fleet(r *http.Request) (*gpufleet.Fleet, int, error) {
	latest, err := s.Store.LatestTasks(r.Context(), "burnin", "tests")
	if err != nil {
		return nil, 0, fmt.Errorf("gpu comparison: %w", err)
	}
	bs := make([]gpufleet.Burnin, 0, len(latest))
	for _, nt := range latest {
		if len(nt.Node.GPUModels) == 0 {
			continue
		}
		bs = append(bs, gpufleet.Burnin{Node: nt.Node.ID, NodeName: nt.Node.Name, Models: nt.Node.GPUModels,
			Task: nt.Task.ID, Ended: nt.Task.Updated, Result: nt.Task.Result})
	}
	return gpufleet.Compare(bs, s.GPUPeers), len(bs), nil
}

func (s *Server) getNodeGPUs(w http.ResponseWriter, r *http.Request) {
	n, ok := s.node(w, r)
	if !ok {
		return
	}
	f, _, err := s.fleet(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := NodeGPUs{Node: n.ID, Cards: []gpufleet.Card{}, Comparison: f.Options()}
	if g, ok := f.Node(n.ID); ok {
		out.Task, out.Ended, out.Outcome, out.Reason, out.Cards = g.Task, g.Ended, g.Outcome, g.Reason, g.Cards
	} else if len(n.GPUModels) > 0 {
		out.Reason = "no burn-in of this node has ended"
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) listGPUs(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var below bool
	switch q.Get("below") {
	case "", "false":
	case "true":
		below = true
	default:
		writeError(w, http.StatusBadRequest, "bad_request", "below must be true or false")
		return
	}
	f, n, err := s.fleet(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := GPUList{Items: []gpufleet.Card{}, Burnins: n, Comparison: f.Options()}
	model := q.Get("model")
	for _, c := range f.Cards(below) {
		if model == "" || c.Model == model {
			out.Items = append(out.Items, c)
		}
	}
	writeJSON(w, http.StatusOK, out)
}
