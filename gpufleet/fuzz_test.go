package gpufleet

import (
	"encoding/json"
	"testing"
)

// FuzzCompare feeds the comparison burn-in results as an agent could
// send them: it must never panic, and every card it lists sits at its
// index in its node's view.
func FuzzCompare(f *testing.F) {
	f.Add([]byte(node("n", 0, many(a100, 2), good(), card{50, -1}).Result), 2)
	f.Add([]byte(`{"tests":[{"name":"gpu","figures":{"gpus_seen":1,"gpu1023_tflops":1,"gpu-1_tflops":2,"gpu_x":3}}]}`), 1)
	f.Add([]byte(`{"tests":[{"name":"gpu","figures":{"gpus_seen":1e300,"gpu0_tflops":-1,"gpu0_memory_gbps":0}}]}`), 0)
	f.Fuzz(func(t *testing.T, result []byte, models int) {
		if models < 0 || models > 64 {
			return
		}
		bs := []Burnin{
			{Node: "x", Models: many(a100, models), Result: json.RawMessage(result)},
			node("p", 0, many(a100, 4), good(), good(), good(), good()),
		}
		fl := Compare(bs, Options{})
		for _, c := range fl.Cards(false) {
			n, ok := fl.Node(c.Node)
			if !ok || c.Index >= len(n.Cards) || n.Cards[c.Index].Index != c.Index {
				t.Fatalf("card %s/%d is not at its place in its node", c.Node, c.Index)
			}
			if c.Verdict == "" {
				t.Fatalf("card %s/%d has no verdict", c.Node, c.Index)
			}
		}
	})
}
