package gpuconf

import (
	"flag"
	"testing"

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
	gpufake.Golden(t, *update, name, got)
}
