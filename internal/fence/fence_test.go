package fence

import (
	"os/exec"
	"strings"
	"testing"
)

const mod = "github.com/rackboot/rackboot/"

// protocol are the protocol libraries at the bottom of the layers.
// internal/httpserve, the HTTP server setup and file sending that
// httpboot and the appliance share, sits with them.
var protocol = []string{"boot", "lease", "dhcp", "tftp", "httpboot", "ipxe", "grub", "firmware", "internal/httpserve", "internal/secret"}

// above are the packages that sit on top of the protocol libraries and
// that none of them may reach.
var above = []string{"store", "api", "lifecycle", "core", "appliance", "web", "images", "agent", "lab", "cmd"}

// TestFences checks the non-test dependencies of each fenced package: a
// banned entry matches that package and everything under it.
func TestFences(t *testing.T) {
	type fence struct {
		pkg    string
		why    string
		banned []string
	}
	var fences []fence
	for _, p := range protocol {
		var banned []string
		for _, a := range above {
			banned = append(banned, mod+a)
		}
		// Protocol servers are libraries of their own: none imports
		// another (boot, the shared types, is beneath them all).
		for _, q := range []string{"dhcp", "tftp", "httpboot", "ipxe", "grub"} {
			if q != p {
				banned = append(banned, mod+q)
			}
		}
		fences = append(fences, fence{mod + p, "protocol libraries ask small interfaces; they know no store, API or wiring", banned})
	}
	fences = append(fences,
		fence{mod + "cmd/rackboot-agent", "the ramdisk stays small: the agent shares types with the server but none of its router, drivers or store; it talks to its BMC through /dev/ipmi0, not the server's lanplus client",
			[]string{"github.com/go-chi/", "modernc.org/sqlite", "github.com/jackc/pgx", "github.com/mattn/go-sqlite3", "github.com/bougou/go-ipmi", mod + "store", mod + "api", mod + "power"}},
		fence{mod + "cmd/rackboot-agent", "the agent stays static: libcuda is loaded at run time by the rackboot-gpuburn helper, which reports as JSON",
			[]string{"github.com/ebitengine/purego"}},
		fence{mod + "store", "the store keeps the data; the rules and servers above it are not its business",
			pkgs("lifecycle", "core", "api", "appliance", "web", "cmd", "dhcp", "tftp", "httpboot", "ipxe", "grub")},
		fence{mod + "lifecycle", "the lifecycle is the state machine over the store, whoever asks",
			pkgs("core", "api", "appliance", "web", "httpboot", "tftp", "cmd")},
		fence{mod + "api", "the API serves the store and the lifecycle; booting is the core's, wiring the appliance's",
			pkgs("core", "appliance", "web", "httpboot", "tftp", "ipxe", "grub", "cmd")},
		fence{mod + "web", "the UI is static files that talk to the API over HTTP", pkgs("store", "api", "lifecycle", "core", "appliance")},
		fence{mod + "images/...", "images are built and kept apart from the servers", pkgs("store", "api", "lifecycle", "core", "appliance", "web", "cmd")},
		fence{mod + "core", "the core decides what a node boots; the appliance hands the protocol servers its answers and the script and config generators",
			pkgs("grub", "ipxe", "tftp", "httpboot", "api", "appliance", "web", "cmd")},
		fence{mod + "cmd/rackboot", "no test code in the product: rackboot lab runs the lab without the testing package",
			[]string{"testing"}},
	)
	for _, f := range fences {
		t.Run(strings.TrimPrefix(f.pkg, mod), func(t *testing.T) {
			t.Parallel()
			out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", f.pkg).CombinedOutput()
			if err != nil {
				t.Fatalf("go list: %v\n%s", err, out)
			}
			deps := strings.Fields(string(out))
			if len(deps) < 2 {
				t.Fatalf("go list -deps %s listed %q: too few to mean anything", f.pkg, deps)
			}
			for _, d := range deps {
				for _, b := range f.banned {
					if d == b || strings.HasPrefix(d, strings.TrimSuffix(b, "/")+"/") {
						t.Errorf("%s depends on %s (%s)", f.pkg, d, f.why)
					}
				}
			}
		})
	}
}

// pkgs names packages of this module.
func pkgs(names ...string) []string {
	var out []string
	for _, n := range names {
		out = append(out, mod+n)
	}
	return out
}
