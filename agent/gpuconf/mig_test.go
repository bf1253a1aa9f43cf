package gpuconf

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const smiQuery = "nvidia-smi --query-gpu=index,pci.bus_id,mig.mode.current,mig.mode.pending --format=csv,noheader"

// a100Host is two A100-SXM4-40GB and an NVSwitch, which is no GPU.
func a100Host(t *testing.T, state string) (*Host, *script) {
	tr := newTree(t)
	tr.PCI("0000:07:00.0", "10de", "20b0", "030200")
	tr.PCI("0000:0f:00.0", "10de", "20b0", "030200")
	tr.PCI("0000:c1:00.0", "10de", "1af1", "068000")
	q := reply{File: "a100x2/query.txt"}
	none := map[string]reply{
		"nvidia-smi mig -lgi": {File: "lgi-none.txt", Fail: true},
		"nvidia-smi mig -lci": {File: "lci-none.txt", Fail: true},
	}
	s := &script{T: t, State: state, Table: map[string]map[string]reply{
		"empty": {
			smiQuery:                          q,
			"nvidia-smi mig -lgi":             none["nvidia-smi mig -lgi"],
			"nvidia-smi mig -lci":             none["nvidia-smi mig -lci"],
			"nvidia-smi mig -lgip":            {File: "a100x2/lgip.txt"},
			"nvidia-smi mig -i 0 -cgi 9,9 -C": {File: "a100x2/cgi-0.txt", Next: "gpu0"},
		},
		"gpu0": {
			"nvidia-smi mig -i 1 -cgi 9,9 -C": {File: "a100x2/cgi-1.txt", Next: "layout"},
		},
		"layout": {
			smiQuery:              q,
			"nvidia-smi mig -lgi": {File: "a100x2/lgi-3g.txt"},
			"nvidia-smi mig -lci": {File: "a100x2/lci-3g.txt"},
			"nvidia-smi -L":       {File: "a100x2/list-3g.txt"},
		},
		// GPU 0 carries the layout, GPU 1 a single 7g.40gb.
		"mixed": {
			smiQuery:                   q,
			"nvidia-smi mig -lgi":      {File: "a100x2/lgi-mixed.txt"},
			"nvidia-smi mig -lci":      {File: "a100x2/lci-mixed.txt"},
			"nvidia-smi mig -lgip":     {File: "a100x2/lgip.txt"},
			"nvidia-smi mig -i 1 -dci": {File: "a100x2/dci-1.txt", Next: "mixed-gis"},
		},
		"mixed-gis": {
			"nvidia-smi mig -i 1 -dgi": {File: "a100x2/dgi-1.txt", Next: "gpu0"},
		},
	}}
	return &Host{Root: tr.Root, Runner: s}, s
}

// h100Host is one H100 80GB HBM3.
func h100Host(t *testing.T, state string) (*Host, *script) {
	tr := newTree(t)
	tr.PCI("0000:18:00.0", "10de", "2330", "030200")
	s := &script{T: t, State: state, Table: map[string]map[string]reply{
		"off": {
			smiQuery:                 {File: "h100/query-off.txt"},
			"nvidia-smi -i 0 -mig 1": {File: "h100/mig1.txt", Next: "on"},
			"nvidia-smi -L":          {File: "h100/list-off.txt"},
		},
		// A process holds the card: MIG mode can only become pending.
		"busy": {
			smiQuery:                 {File: "h100/query-off.txt"},
			"nvidia-smi -i 0 -mig 1": {File: "h100/mig1-busy.txt", Next: "pending"},
		},
		"pending": {
			smiQuery:        {File: "h100/query-pending.txt"},
			"nvidia-smi -L": {File: "h100/list-off.txt"},
		},
		"on": {
			smiQuery:                              {File: "h100/query-on.txt"},
			"nvidia-smi mig -lgi":                 {File: "lgi-none.txt", Fail: true},
			"nvidia-smi mig -lci":                 {File: "lci-none.txt", Fail: true},
			"nvidia-smi mig -lgip":                {File: "h100/lgip.txt"},
			"nvidia-smi mig -i 0 -cgi 9,14,15 -C": {File: "h100/cgi.txt", Next: "layout"},
		},
		// MIG is on, but set to go off at the next reset.
		"disabling": {
			smiQuery:                 {File: "h100/query-disabling.txt"},
			"nvidia-smi -i 0 -mig 1": {File: "h100/mig1.txt", Next: "layout"},
		},
		"layout": {
			smiQuery:              {File: "h100/query-on.txt"},
			"nvidia-smi mig -lgi": {File: "h100/lgi-layout.txt"},
			"nvidia-smi mig -lci": {File: "h100/lci-layout.txt"},
			"nvidia-smi -L":       {File: "h100/list-layout.txt"},
		},
	}}
	return &Host{Root: tr.Root, Runner: s}, s
}

func calls(s *script) string { return strings.Join(s.Calls, "\n") + "\n" }

var a100Layout = []string{"3g.20gb", "3g.20gb"}

func TestApplyMIG(t *testing.T) {
	for _, tc := range []struct {
		name   string
		host   func(*testing.T, string) (*Host, *script)
		state  string
		layout []string
		end    string
	}{
		// Nothing on the cards: the layout is created on each, then read
		// back.
		{"a100x2-apply", a100Host, "empty", a100Layout, "layout"},
		// The cards carry the layout: read, nothing destroyed or made.
		{"a100x2-again", a100Host, "layout", a100Layout, "layout"},
		// One card carries another layout: only that one is redone.
		{"a100x2-mixed", a100Host, "mixed", a100Layout, "layout"},
		// MIG off: switched on, then the layout, largest instance first.
		{"h100-enable", h100Host, "off", []string{"1g.20gb", "3g.40gb", "2g.20gb"}, "layout"},
		// MIG on but going off at the next reset: kept on, layout kept.
		{"h100-keep-mode", h100Host, "disabling", []string{"3g.40gb", "2g.20gb", "1g.20gb"}, "layout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, s := tc.host(t, tc.state)
			if err := h.ApplyMIG(context.Background(), tc.layout); err != nil {
				t.Fatal(err)
			}
			if s.State != tc.end {
				t.Errorf("host left in state %s, want %s", s.State, tc.end)
			}
			golden(t, tc.name+".calls", calls(s))
		})
	}
}

// TestApplyMIGReboot: MIG mode outlives a reboot, its instances do not;
// applying again after one recreates exactly what the first apply made.
func TestApplyMIGReboot(t *testing.T) {
	ctx := context.Background()
	h, s := a100Host(t, "empty")
	if err := h.ApplyMIG(ctx, a100Layout); err != nil {
		t.Fatal(err)
	}
	first := calls(s)
	s.Calls = nil
	if err := h.ApplyMIG(ctx, a100Layout); err != nil {
		t.Fatal(err)
	}
	for _, c := range s.Calls {
		if strings.Contains(c, "-cgi") || strings.Contains(c, "-dgi") || strings.Contains(c, "-dci") {
			t.Errorf("applied on a host that carries the layout: %s", c)
		}
	}
	s.State, s.Calls = "empty", nil // the reboot
	if err := h.ApplyMIG(ctx, a100Layout); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(first, calls(s)); d != "" {
		t.Errorf("after the reboot (-first apply +this one):\n%s", d)
	}
	if s.State != "layout" {
		t.Errorf("host left in state %s", s.State)
	}
}

func TestApplyMIGRefused(t *testing.T) {
	t4 := func(t *testing.T, _ string) (*Host, *script) {
		tr := newTree(t)
		tr.PCI("0000:3b:00.0", "10de", "1eb8", "030200")
		s := &script{T: t}
		return &Host{Root: tr.Root, Runner: s}, s
	}
	for _, tc := range []struct {
		name   string
		host   func(*testing.T, string) (*Host, *script)
		layout []string
		want   string
	}{
		{"too many slices", a100Host, []string{"7g.40gb", "1g.5gb"}, "compute slices"},
		{"profile of another card", a100Host, []string{"3g.40gb"}, "has no MIG profile 3g.40gb"},
		{"too much memory", h100Host, []string{"3g.40gb", "3g.40gb", "1g.10gb"}, "memory slices"},
		{"too many of one", h100Host, []string{"3g.40gb", "3g.40gb", "3g.40gb"}, "at most 2"},
		{"empty", h100Host, nil, "at least one"},
		{"no MIG", t4, []string{"1g.5gb"}, "does not support MIG"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, s := tc.host(t, "empty")
			err := h.ApplyMIG(context.Background(), tc.layout)
			if !errors.Is(err, ErrLayout) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("ApplyMIG(%q) = %v, want ErrLayout saying %q", tc.layout, err, tc.want)
			}
			if len(s.Calls) > 0 {
				t.Errorf("a refused layout ran %q", s.Calls)
			}
		})
	}
}

func TestApplyMIGPending(t *testing.T) {
	for _, tc := range []struct {
		state string
		calls []string
	}{
		// Switching MIG on while a process holds the card leaves it
		// pending; no reset is tried.
		{"busy", []string{smiQuery, "nvidia-smi -i 0 -mig 1", smiQuery}},
		// Already pending: switching it on again would change nothing.
		{"pending", []string{smiQuery}},
	} {
		t.Run(tc.state, func(t *testing.T) {
			h, s := h100Host(t, tc.state)
			err := h.ApplyMIG(context.Background(), []string{"7g.80gb"})
			var pe *PendingError
			if !errors.Is(err, ErrResetNeeded) || !errors.As(err, &pe) {
				t.Fatalf("ApplyMIG = %v, want a PendingError", err)
			}
			if d := cmp.Diff([]string{"GPU 0 (0000:18:00.0)"}, pe.GPUs); d != "" {
				t.Errorf("pending GPUs (-want +got):\n%s", d)
			}
			if !strings.Contains(err.Error(), "reset or a reboot") {
				t.Errorf("error %q does not say what makes the mode effective", err)
			}
			if d := cmp.Diff(tc.calls, s.Calls); d != "" {
				t.Errorf("calls (-want +got):\n%s", d)
			}
		})
	}
}

func TestState(t *testing.T) {
	for _, tc := range []struct {
		name  string
		host  func(*testing.T, string) (*Host, *script)
		state string
	}{
		{"a100x2-state", a100Host, "layout"},
		{"h100-layout-state", h100Host, "layout"},
		{"h100-pending-state", h100Host, "pending"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, s := tc.host(t, tc.state)
			st, err := h.State(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			b, err := json.MarshalIndent(st, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			golden(t, tc.name+".json", string(b)+"\n")
			for _, c := range s.Calls {
				if strings.Contains(c, "-cgi") || strings.Contains(c, "-d") || strings.Contains(c, "-mig") {
					t.Errorf("State changed the cards: %s", c)
				}
			}
		})
	}
}
