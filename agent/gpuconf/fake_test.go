package gpuconf

import (
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/rackboot/rackboot/agent/gpuconf/gpufake"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata")

// The fakes live in gpufake, for the packages that drive gpuconf too.
type (
	reply  = gpufake.Reply
	script = gpufake.Script
	tree   = gpufake.Tree
)

var (
	newTree = gpufake.NewTree
	devDir  = gpufake.DevDir
)

// golden compares got with testdata/name, or rewrites it under -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	p := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(p, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%v (run go test -update)", err)
	}
	if d := cmp.Diff(string(want), got); d != "" {
		t.Errorf("%s (-want +got):\n%s", name, d)
	}
}
