package gpuconf

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// seed adds the recorded outputs whose names match glob.
func seed(f *testing.F, glob string) {
	ps, err := filepath.Glob(filepath.Join("testdata/smi", glob))
	if err != nil || len(ps) == 0 {
		f.Fatalf("no seeds for %s: %v", glob, err)
	}
	for _, p := range ps {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
}

func FuzzParseProfiles(f *testing.F) {
	seed(f, "*/lgip.txt")
	f.Add([]byte("|   0  MIG 1g.5gb        99999999999999999999     7/7        4.75       No     14     0     0   |\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ps, err := parseProfiles(b)
		if err != nil {
			return
		}
		for _, p := range ps {
			if p.Name == "" || p.GPU < 0 || p.ID < 0 || p.Free < 0 || p.Total < 0 {
				t.Errorf("parsed %+v", p)
			}
		}
	})
}

func FuzzParseInstances(f *testing.F) {
	seed(f, "*/lgi-*.txt")
	seed(f, "lgi-none.txt")
	f.Fuzz(func(t *testing.T, b []byte) {
		is, err := parseInstances(b)
		if err != nil {
			return
		}
		for _, i := range is {
			if i.Profile == "" || i.GPU < 0 || i.ID < 0 || i.ProfileID < 0 || i.Start < 0 || i.Size < 1 {
				t.Errorf("parsed %+v", i)
			}
		}
	})
}

func FuzzParseComputes(f *testing.F) {
	seed(f, "*/lci-*.txt")
	seed(f, "lci-none.txt")
	f.Fuzz(func(t *testing.T, b []byte) {
		cs, err := parseComputes(b)
		if err != nil {
			return
		}
		for _, c := range cs {
			if c.Profile == "" || c.GPU < 0 || c.GI < 0 || c.ID < 0 || c.Size < 1 {
				t.Errorf("parsed %+v", c)
			}
		}
	})
}

func FuzzParseList(f *testing.F) {
	seed(f, "*/list-*.txt")
	f.Add([]byte("GPU 0: A100-SXM4-40GB (UUID: GPU-5c89852c-d268-c3f3-1b07-005d5ae1dc3f)\n  MIG 3g.20gb Device 0: (UUID: MIG-GPU-5c89852c-d268-c3f3-1b07-005d5ae1dc3f/1/0)\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		gs, err := parseList(b)
		if err != nil {
			return
		}
		for _, g := range gs {
			if !strings.HasPrefix(g.UUID, "GPU-") {
				t.Errorf("GPU %+v", g)
			}
			for _, d := range g.MIG {
				if !strings.HasPrefix(d.UUID, "MIG-") || d.Device < 0 {
					t.Errorf("MIG device %+v", d)
				}
			}
		}
	})
}

func FuzzParseQuery(f *testing.F) {
	seed(f, "*/query*.txt")
	f.Fuzz(func(t *testing.T, b []byte) {
		gs, err := parseQuery(b)
		if err != nil {
			return
		}
		for _, g := range gs {
			if g.Index < 0 || strings.Contains(g.BusID, ",") {
				t.Errorf("parsed %+v", g)
			}
		}
	})
}
