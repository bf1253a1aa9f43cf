package inventory

import (
	"strings"
	"testing"
)

// TestNVIDIATable: the shipped table parses, holds every device id the
// project promises, and each entry's MIG profiles fit its own memory.
func TestNVIDIATable(t *testing.T) {
	n, err := parseNVIDIA(nvidiaJSON)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"1eb8", "1db1", "1db4", "1db5", "1db6", "1df5", "1df6", "20b0", "20b1", "20f1", "20b2", "20b5",
		"20b7", "2236", "27b8", "26b9", "2330", "2331", "2321", "2335", "233b"} {
		m, ok := n.models[id]
		if !ok {
			t.Errorf("device %s missing from the table", id)
			continue
		}
		g := GPU{Model: m.Name, Memory: m.MemGiB << 30, MIG: MIG{Capable: len(m.MIG) > 0, Profiles: m.MIG}}
		for _, p := range m.MIG {
			layout := make([]string, p.Max)
			for i := range layout {
				layout[i] = p.Name
			}
			if err := CheckMIGLayout(g, layout); err != nil {
				t.Errorf("%s: its own %d× %s does not fit: %v", m.Name, p.Max, p.Name, err)
			}
		}
	}
	for _, bad := range []string{
		`{"gpus":[{"id":"1","name":"a","memory_gib":1},{"id":"1","name":"b","memory_gib":1}]}`,
		`{"gpus":[{"id":"1","name":"a","memory_gib":1,"mig":"nope"}]}`,
		`{"mig_layouts":{"x":[{"name":"big","max":1}]},"gpus":[]}`,
		`{"mig_layouts":{"x":[{"name":"1g.5gb","max":0}]},"gpus":[]}`,
		`{"gpus":[{"id":"1","memory_gib":1}]}`,
		`not json`,
	} {
		if _, err := parseNVIDIA([]byte(bad)); err == nil {
			t.Errorf("table %s: no error", bad)
		}
	}
}

func TestCheckMIGLayout(t *testing.T) {
	m, _ := nvidiaModel("2330")
	h100 := GPU{Model: m.Name, Memory: m.MemGiB << 30, MIG: MIG{Capable: true, Profiles: m.MIG}}
	t4, _ := nvidiaModel("1eb8")
	m30, _ := nvidiaModel("20b7")
	a30 := GPU{Model: m30.Name, Memory: m30.MemGiB << 30, MIG: MIG{Capable: true, Profiles: m30.MIG}}
	for _, c := range []struct {
		name   string
		g      GPU
		layout []string
		err    string
	}{
		{"seven small", h100, []string{"1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb"}, ""},
		{"two halves", h100, []string{"3g.40gb", "3g.40gb"}, ""},
		{"4 and 3", h100, []string{"4g.40gb", "3g.40gb"}, ""},
		{"mixed", h100, []string{"2g.20gb", "2g.20gb", "2g.20gb", "1g.10gb"}, ""},
		{"eight small", h100, []string{"1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb"}, "at most 7"},
		{"too many slices", h100, []string{"4g.40gb", "4g.40gb"}, "at most 1"},
		{"slices over 7", h100, []string{"4g.40gb", "2g.20gb", "2g.20gb"}, "8 compute slices"},
		{"memory over", h100, []string{"1g.20gb", "1g.20gb", "1g.20gb", "1g.20gb", "3g.40gb"}, "12 of the 8 memory slices"},
		{"halves and a small one", h100, []string{"3g.40gb", "3g.40gb", "1g.10gb"}, "9 of the 8 memory slices"},
		{"a profile of another card", h100, []string{"1g.5gb"}, "has no MIG profile 1g.5gb"},
		{"empty", h100, nil, "at least one"},
		{"A30 has four compute slices", a30, []string{"2g.12gb", "2g.12gb", "1g.6gb"}, "5 compute slices; NVIDIA A30 has 4"},
		{"A30 quarters", a30, []string{"1g.6gb", "1g.6gb", "2g.12gb"}, ""},
		{"no MIG", GPU{Model: t4.Name, Memory: t4.MemGiB << 30}, []string{"1g.5gb"}, "does not support MIG"},
	} {
		err := CheckMIGLayout(c.g, c.layout)
		if c.err == "" && err != nil || c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)) {
			t.Errorf("%s: %v, want %q", c.name, err, c.err)
		}
	}
}
