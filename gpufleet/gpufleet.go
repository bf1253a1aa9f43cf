// Package gpufleet compares every GPU's burn-in figures with those of its
// peers, the cards of the same model across the fleet, so a card that
// computes or moves memory more slowly than its siblings shows before it
// takes work. A card is below its peers when a figure is under a fraction
// of the median of the other cards of its model; medians, not means, so
// one slow card does not drag the yardstick down and hide a second.
package gpufleet

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/rackboot/rackboot/agent/burnin"
)

// Defaults of Options.
const (
	DefaultThreshold = 0.9
	DefaultMinPeers  = 3
)

// Options say when a card is below its peers. Zero fields mean the
// defaults.
type Options struct {
	// Threshold is the fraction of the peers' median a figure must reach
	// (default 0.9).
	Threshold float64 `json:"threshold"`
	// MinPeers is how many other cards of its model a card needs for a
	// verdict (default 3).
	MinPeers int `json:"min_peers"`
}

func (o Options) withDefaults() Options {
	if o.Threshold <= 0 || o.Threshold > 1 {
		o.Threshold = DefaultThreshold
	}
	if o.MinPeers <= 0 {
		o.MinPeers = DefaultMinPeers
	}
	return o
}

// Burnin is one node's ended burn-in, as the store lists them.
type Burnin struct {
	Node, NodeName string
	// Models are the node's GPU model names, in PCI address order (the
	// inventory's order, store.Node.GPUModels).
	Models []string
	Task   string
	Ended  time.Time
	// Result is the task's result: burnin.Result in JSON.
	Result json.RawMessage
}

// Verdicts of a card.
const (
	// Below: a figure is under the threshold of its peers' median.
	Below = "below peers"
	OK    = "ok"
	// TooFewPeers: fewer than MinPeers other cards of its model have the
	// figure.
	TooFewPeers = "too few peers"
	// NoFigures: the burn-in did not load the card.
	NoFigures = "no figures"
	// UnknownModel: the card could not be matched to its model.
	UnknownModel = "model unknown"
)

// Figure is one of a card's figures beside its peers'. Value is nil when
// the burn-in did not measure it; PeerMedian and Ratio are 0 when Peers
// is under the minimum.
type Figure struct {
	Value      *float64 `json:"value"`
	PeerMedian float64  `json:"peer_median"`
	Ratio      float64  `json:"ratio"`
	Peers      int      `json:"peers"`
	Below      bool     `json:"below"`
}

// Card is one GPU of a node's latest burn-in, compared with its peers.
type Card struct {
	Node     string `json:"node"`
	NodeName string `json:"node_name"`
	// Index is nvidia-smi's index of the card on its node.
	Index int    `json:"index"`
	Model string `json:"model"`
	Task  string `json:"task"`
	// Ended is when the burn-in that measured it ended.
	Ended time.Time `json:"ended"`

	TFLOPS     Figure `json:"tflops"`
	MemoryGBps Figure `json:"memory_gbps"`
	// The card's state under load, for the eye: not compared.
	MaxTemperatureC *float64 `json:"max_temperature_c,omitempty"`
	MinSMClockMHz   *float64 `json:"min_sm_clock_mhz,omitempty"`
	ThrottleReasons *float64 `json:"throttle_reasons,omitempty"`

	Verdict string `json:"verdict"`
	// Reason says why, in words.
	Reason string `json:"reason"`
}

// NodeGPUs is what one node's latest burn-in says of its GPUs.
type NodeGPUs struct {
	Node string `json:"node"`
	// Task is the burn-in task the figures come from, empty when the node
	// has none that ended.
	Task  string    `json:"task,omitempty"`
	Ended time.Time `json:"ended,omitzero"`
	// Outcome and Reason are the burn-in's GPU test's.
	Outcome string `json:"outcome,omitempty"`
	Reason  string `json:"reason,omitempty"`
	Cards   []Card `json:"cards"`
}

// Fleet is the comparison of every node's latest burn-in.
type Fleet struct {
	opts  Options
	cards []Card
	nodes map[string]NodeGPUs
}

// Compare compares the GPUs of each node's newest burn-in in bs (an older
// burn-in of a node that was burned in again counts for nothing) with
// their peers'.
func Compare(bs []Burnin, o Options) *Fleet {
	o = o.withDefaults()
	latest := map[string]Burnin{}
	for _, b := range bs {
		if cur, ok := latest[b.Node]; !ok || b.Ended.After(cur.Ended) || (b.Ended.Equal(cur.Ended) && b.Task > cur.Task) {
			latest[b.Node] = b
		}
	}
	f := &Fleet{opts: o, nodes: map[string]NodeGPUs{}}
	ids := make([]string, 0, len(latest))
	for id := range latest {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		n := cards(latest[id])
		f.nodes[id] = n
		f.cards = append(f.cards, n.Cards...)
	}

	type key struct{ model, figure string }
	values := map[key][]float64{}
	for _, c := range f.cards {
		if c.Model == "" {
			continue
		}
		if v := c.TFLOPS.Value; v != nil {
			values[key{c.Model, "tflops"}] = append(values[key{c.Model, "tflops"}], *v)
		}
		if v := c.MemoryGBps.Value; v != nil {
			values[key{c.Model, "memory"}] = append(values[key{c.Model, "memory"}], *v)
		}
	}
	for _, vs := range values {
		sort.Float64s(vs)
	}
	for i := range f.cards {
		c := &f.cards[i]
		if c.Verdict != "" {
			continue
		}
		compare(&c.TFLOPS, values[key{c.Model, "tflops"}], o)
		compare(&c.MemoryGBps, values[key{c.Model, "memory"}], o)
		c.Verdict, c.Reason = verdict(*c, o)
	}
	// Each node's cards are its run of f.cards, in index order.
	for lo := 0; lo < len(f.cards); {
		hi := lo + 1
		for hi < len(f.cards) && f.cards[hi].Node == f.cards[lo].Node {
			hi++
		}
		n := f.nodes[f.cards[lo].Node]
		n.Cards = f.cards[lo:hi:hi]
		f.nodes[n.Node] = n
		lo = hi
	}
	return f
}

// compare fills in fig's peers from sorted, the values of every card of
// the model in order, fig's own among them once.
func compare(fig *Figure, sorted []float64, o Options) {
	if fig.Value == nil {
		return
	}
	fig.Peers = len(sorted) - 1
	if fig.Peers < o.MinPeers {
		return
	}
	fig.PeerMedian = medianWithout(sorted, sort.SearchFloat64s(sorted, *fig.Value))
	if fig.PeerMedian > 0 {
		fig.Ratio = *fig.Value / fig.PeerMedian
		fig.Below = fig.Ratio < o.Threshold
	}
}

// medianWithout is the median of sorted without its element at p: found
// by place, not by copying, so a fleet of n cards costs n log n and not n².
func medianWithout(sorted []float64, p int) float64 {
	at := func(k int) float64 {
		if k >= p {
			k++
		}
		return sorted[k]
	}
	m := len(sorted) - 1
	if m%2 == 1 {
		return at(m / 2)
	}
	return (at(m/2-1) + at(m/2)) / 2
}

func verdict(c Card, o Options) (string, string) {
	var below []string
	enough := false
	for _, f := range []struct {
		name, unit string
		fig        Figure
	}{{"TFLOP/s", "", c.TFLOPS}, {"memory bandwidth", " GB/s", c.MemoryGBps}} {
		if f.fig.Value == nil || f.fig.Peers < o.MinPeers {
			continue
		}
		enough = true
		if f.fig.Below {
			below = append(below, fmt.Sprintf("%s %.4g%s is %.0f%% of its %d peers' median %.4g%s",
				f.name, *f.fig.Value, f.unit, 100*f.fig.Ratio, f.fig.Peers, f.fig.PeerMedian, f.unit))
		}
	}
	switch {
	case len(below) > 0:
		return Below, strings.Join(below, "; ") + fmt.Sprintf(" (under %.0f%%)", 100*o.Threshold)
	case !enough:
		return TooFewPeers, fmt.Sprintf("%d other %s cards measured: a verdict needs %d", max(c.TFLOPS.Peers, c.MemoryGBps.Peers), c.Model, o.MinPeers)
	}
	return OK, fmt.Sprintf("within %.0f%% of its peers' median", 100*o.Threshold)
}

// cards reads one burn-in's GPU figures. nvidia-smi numbers a node's
// NVIDIA GPUs in PCI bus order, the inventory's order, so card N is model
// N when the burn-in saw as many GPUs as the inventory lists; otherwise
// (another vendor's GPU beside them, a card lost) the match is a guess
// and none is made.
func cards(b Burnin) NodeGPUs {
	out := NodeGPUs{Node: b.Node, Task: b.Task, Ended: b.Ended, Cards: []Card{}}
	var res burnin.Result
	if err := json.Unmarshal(b.Result, &res); err != nil {
		out.Reason = "the burn-in's result is unreadable: " + err.Error()
		return out
	}
	var gpu *burnin.Test
	for i := range res.Tests {
		if res.Tests[i].Name == "gpu" {
			gpu = &res.Tests[i]
		}
	}
	if gpu == nil {
		out.Reason = "the burn-in ran no GPU test"
		return out
	}
	out.Outcome, out.Reason = gpu.Outcome, gpu.Reason
	figs := map[int]map[string]float64{}
	for k, v := range gpu.Figures {
		rest, ok := strings.CutPrefix(k, "gpu")
		if !ok {
			continue
		}
		num, name, ok := strings.Cut(rest, "_")
		i, err := strconv.Atoi(num)
		if !ok || err != nil || i < 0 || i >= 1024 {
			continue
		}
		if figs[i] == nil {
			figs[i] = map[string]float64{}
		}
		figs[i][name] = v
	}
	n := 0
	for i := range figs {
		n = max(n, i+1)
	}
	seen, seenOK := gpu.Figures["gpus_seen"]
	matched := seenOK && int(seen) == len(b.Models) && n <= len(b.Models)
	for i := 0; i < n; i++ {
		c := Card{Node: b.Node, NodeName: b.NodeName, Index: i, Task: b.Task, Ended: b.Ended}
		get := func(name string) *float64 {
			if v, ok := figs[i][name]; ok {
				return &v
			}
			return nil
		}
		c.TFLOPS.Value, c.MemoryGBps.Value = get("tflops"), get("memory_gbps")
		c.MaxTemperatureC, c.MinSMClockMHz, c.ThrottleReasons = get("max_temperature_c"), get("min_sm_clock_mhz"), get("throttle_reasons")
		switch {
		case matched:
			c.Model = b.Models[i]
		default:
			c.Verdict = UnknownModel
			c.Reason = fmt.Sprintf("the inventory lists %d GPUs and the burn-in saw %g: the card is not matched to a model", len(b.Models), seen)
		}
		if c.Verdict == "" && c.TFLOPS.Value == nil && c.MemoryGBps.Value == nil {
			c.Verdict, c.Reason = NoFigures, "the burn-in did not load it"
		}
		out.Cards = append(out.Cards, c)
	}
	return out
}

// Node is what the latest burn-in of node id says of its GPUs; false when
// the node has no ended burn-in.
func (f *Fleet) Node(id string) (NodeGPUs, bool) {
	n, ok := f.nodes[id]
	return n, ok
}

// Cards lists every card, by node id and index; with below, only those
// below their peers.
func (f *Fleet) Cards(below bool) []Card {
	out := []Card{}
	for _, c := range f.cards {
		if !below || c.Verdict == Below {
			out = append(out, c)
		}
	}
	return out
}

// Options are the options the comparison ran with, defaults filled in.
func (f *Fleet) Options() Options { return f.opts }
