package store

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDeps keeps the boundary real: the store and its implementations
// know the lease record (package lease), never the protocol servers that
// use them.
func TestDeps(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", "./...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		for _, banned := range []string{"dhcp", "tftp", "httpboot", "ipxe"} {
			if pkg == "github.com/rackboot/rackboot/"+banned {
				t.Errorf("the store depends on %s", pkg)
			}
		}
	}
}
