package gpufleet

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/rackboot/rackboot/agent/burnin"
)

const (
	a100 = "NVIDIA A100-SXM4-80GB"
	t4   = "Tesla T4"
)

var t0 = time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)

// card is one GPU's figures in a made-up burn-in; a negative figure is
// left out.
type card struct {
	tflops, gbps float64
}

// node makes a burn-in of node id that ended at t0+at, its cards of the
// models given, as the agent's burn-in reports them.
func node(id string, at time.Duration, models []string, cs ...card) Burnin {
	figs := map[string]float64{"gpus_seen": float64(len(cs))}
	for i, c := range cs {
		if c.tflops >= 0 {
			figs[fmt.Sprintf("gpu%d_tflops", i)] = c.tflops
		}
		if c.gbps >= 0 {
			figs[fmt.Sprintf("gpu%d_memory_gbps", i)] = c.gbps
		}
		figs[fmt.Sprintf("gpu%d_max_temperature_c", i)] = 71
	}
	res := burnin.Result{Passed: true, Verdict: burnin.VerdictPassed, Tests: []burnin.Test{
		{Name: "cpu", Outcome: burnin.Passed, Figures: map[string]float64{"cpus": 64}},
		{Name: "gpu", Outcome: burnin.Passed, Reason: "loaded", Figures: figs},
	}}
	b, _ := json.Marshal(res)
	return Burnin{Node: id, NodeName: "name-" + id, Models: models, Task: fmt.Sprintf("task-%s-%d", id, at/time.Minute), Ended: t0.Add(at), Result: b}
}

func many(model string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = model
	}
	return out
}

func good() card { return card{100, 1600} }

func TestCompare(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []Burnin
		// want is each card's verdict, by "node/index".
		want map[string]string
	}{
		{
			name: "one slow card among its peers",
			in: []Burnin{
				node("n1", 0, many(a100, 4), good(), good(), card{70, 1600}, good()),
				node("n2", 0, many(a100, 2), card{101, 1590}, card{99, 1610}),
			},
			want: map[string]string{"n1/0": OK, "n1/1": OK, "n1/2": Below, "n1/3": OK, "n2/0": OK, "n2/1": OK},
		},
		{
			name: "two slow cards, one on compute and one on memory: neither hides the other",
			in: []Burnin{
				node("n1", 0, many(a100, 4), good(), card{60, 1600}, good(), good()),
				node("n2", 0, many(a100, 4), good(), good(), card{100, 1100}, good()),
			},
			want: map[string]string{"n1/0": OK, "n1/1": Below, "n1/2": OK, "n1/3": OK, "n2/0": OK, "n2/1": OK, "n2/2": Below, "n2/3": OK},
		},
		{
			name: "too few peers: three cards of a model have two others each",
			in: []Burnin{
				node("n1", 0, many(a100, 2), good(), card{50, 800}),
				node("n2", 0, many(a100, 1), good()),
			},
			want: map[string]string{"n1/0": TooFewPeers, "n1/1": TooFewPeers, "n2/0": TooFewPeers},
		},
		{
			name: "mixed models: a T4 is compared with T4s only",
			in: []Burnin{
				node("a", 0, many(a100, 4), good(), good(), good(), good()),
				node("t", 0, many(t4, 4), card{8, 250}, card{8.1, 255}, card{7.9, 248}, card{5, 250}),
				node("mixed", 0, []string{t4, a100}, card{8, 251}, card{99, 1590}),
			},
			want: map[string]string{
				"a/0": OK, "a/1": OK, "a/2": OK, "a/3": OK,
				"t/0": OK, "t/1": OK, "t/2": OK, "t/3": Below,
				"mixed/0": OK, "mixed/1": OK,
			},
		},
		{
			name: "missing figures: judged on what was measured, none at all is no figures",
			in: []Burnin{
				node("n1", 0, many(a100, 4), good(), good(), good(), card{-1, 1000}),
				node("n2", 0, many(a100, 2), card{-1, -1}, good()),
			},
			want: map[string]string{"n1/0": OK, "n1/1": OK, "n1/2": OK, "n1/3": Below, "n2/0": NoFigures, "n2/1": OK},
		},
		{
			name: "a node burned in again: its old, slow result counts for nothing",
			in: []Burnin{
				node("n1", time.Hour, many(a100, 2), good(), good()),
				node("n1", 0, many(a100, 2), card{40, 400}, card{40, 400}),
				node("n2", 0, many(a100, 2), good(), card{80, 1600}),
			},
			// Four cards count, not six: n2/1 has three peers, all good.
			want: map[string]string{"n1/0": OK, "n1/1": OK, "n2/0": OK, "n2/1": Below},
		},
		{
			name: "a burn-in that saw another count of GPUs than the inventory lists: no model, no verdict",
			in: []Burnin{
				node("n1", 0, many(a100, 4), good(), good(), good(), good()),
				node("n2", 0, []string{"AMD Instinct MI210", a100}, card{10, 100}),
			},
			want: map[string]string{"n1/0": OK, "n1/1": OK, "n1/2": OK, "n1/3": OK, "n2/0": UnknownModel},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := Compare(tc.in, Options{})
			got := map[string]string{}
			for _, c := range f.Cards(false) {
				got[fmt.Sprintf("%s/%d", c.Node, c.Index)] = c.Verdict
			}
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("verdicts (-want +got):\n%s", d)
			}
			var below []string
			for _, c := range f.Cards(true) {
				below = append(below, fmt.Sprintf("%s/%d", c.Node, c.Index))
			}
			var want []string
			for k, v := range tc.want {
				if v == Below {
					want = append(want, k)
				}
			}
			if d := cmp.Diff(want, below, cmpSorted); d != "" {
				t.Errorf("cards below their peers (-want +got):\n%s", d)
			}
			for _, c := range f.Cards(false) {
				n, ok := f.Node(c.Node)
				if !ok || c.Index >= len(n.Cards) || n.Cards[c.Index].Verdict != c.Verdict {
					t.Errorf("the node view of %s/%d disagrees with the fleet's", c.Node, c.Index)
				}
			}
		})
	}
}

var cmpSorted = cmp.Transformer("sort", func(in []string) []string {
	out := append([]string(nil), in...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
})

// The figures a card is reported with: its own, its peers' median
// without itself, the ratio and the count.
func TestCardFigures(t *testing.T) {
	f := Compare([]Burnin{
		node("n1", 0, many(a100, 4), card{100, 1600}, card{102, 1620}, card{98, 1580}, card{70, 1500}),
		node("n2", 0, many(a100, 1), card{104, 1640}),
	}, Options{})
	n, ok := f.Node("n1")
	if !ok {
		t.Fatal("no n1")
	}
	slow := n.Cards[3]
	if slow.Model != a100 || slow.TFLOPS.Peers != 4 || slow.TFLOPS.PeerMedian != 101 || !slow.TFLOPS.Below {
		t.Fatalf("slow card: %+v", slow.TFLOPS)
	}
	if r := slow.TFLOPS.Ratio; math.Abs(r-70.0/101) > 1e-9 {
		t.Errorf("ratio %v, want %v", r, 70.0/101)
	}
	if slow.MemoryGBps.Below || slow.MemoryGBps.PeerMedian != 1610 {
		t.Errorf("memory: %+v", slow.MemoryGBps)
	}
	if !strings.Contains(slow.Reason, "TFLOP/s 70 is 69% of its 4 peers' median 101") {
		t.Errorf("reason %q", slow.Reason)
	}
	if slow.MaxTemperatureC == nil || *slow.MaxTemperatureC != 71 || slow.Task != "task-n1-0" || slow.NodeName != "name-n1" {
		t.Errorf("card: %+v", slow)
	}
	// A stricter threshold and more peers needed change the verdicts.
	strict := Compare([]Burnin{
		node("n1", 0, many(a100, 4), card{100, 1600}, card{102, 1620}, card{98, 1580}, card{93, 1500}),
	}, Options{Threshold: 0.95, MinPeers: 3})
	if v := strict.Cards(false)[3].Verdict; v != Below {
		t.Errorf("93%% at a 95%% threshold: %s", v)
	}
	if v := Compare([]Burnin{node("n1", 0, many(a100, 4), good(), good(), good(), good())}, Options{MinPeers: 4}).Cards(false)[0].Verdict; v != TooFewPeers {
		t.Errorf("three peers where four are needed: %s", v)
	}
}

// A burn-in whose GPU test did not load the cards has no card, and says
// why; one whose result is not JSON says so.
func TestNodeWithoutFigures(t *testing.T) {
	res, _ := json.Marshal(burnin.Result{Verdict: burnin.VerdictIncomplete, Tests: []burnin.Test{
		{Name: "gpu", Outcome: burnin.NotRun, Reason: "4 GPUs, but no NVIDIA driver here"},
	}})
	f := Compare([]Burnin{
		{Node: "n1", Models: many(a100, 4), Task: "t1", Ended: t0, Result: res},
		{Node: "n2", Models: many(a100, 4), Task: "t2", Ended: t0, Result: json.RawMessage(`{"tests":`)},
	}, Options{})
	n, _ := f.Node("n1")
	if len(n.Cards) != 0 || n.Outcome != burnin.NotRun || !strings.Contains(n.Reason, "no NVIDIA driver") {
		t.Errorf("n1: %+v", n)
	}
	n, _ = f.Node("n2")
	if len(n.Cards) != 0 || !strings.Contains(n.Reason, "unreadable") {
		t.Errorf("n2: %+v", n)
	}
	if _, ok := f.Node("n3"); ok {
		t.Error("a node with no burn-in has a view")
	}
	if len(f.Cards(false)) != 0 {
		t.Errorf("cards: %v", f.Cards(false))
	}
}

// medianWithout agrees with the median of a copy that lacks the element,
// whatever its place and however many equal values there are.
func TestMedianWithout(t *testing.T) {
	naive := func(vs []float64, p int) float64 {
		o := append(append([]float64(nil), vs[:p]...), vs[p+1:]...)
		sort.Float64s(o)
		if len(o)%2 == 1 {
			return o[len(o)/2]
		}
		return (o[len(o)/2-1] + o[len(o)/2]) / 2
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for n := 2; n < 40; n++ {
		vs := make([]float64, n)
		for i := range vs {
			vs[i] = float64(rng.IntN(6))
		}
		sort.Float64s(vs)
		for p := range vs {
			if got, want := medianWithout(vs, p), naive(vs, p); got != want {
				t.Fatalf("%v without [%d]: %v, want %v", vs, p, got, want)
			}
		}
	}
}
