//go:build integration

package dnsmasq

import (
	"encoding/json"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// ironicProvider runs Ironic's own dnsmasq provider (Debian's
// python3-ironic) on the directories; Debian's python packages import
// only under /usr/bin/python3.
func ironicProvider(t *testing.T, args ...string) map[string]any {
	t.Helper()
	if _, err := os.Stat("/usr/lib/python3/dist-packages/ironic/dhcp/dnsmasq.py"); err != nil {
		t.Fatalf("python3-ironic is not installed (%v): make deps installs it", err)
	}
	cmd := exec.Command("/usr/bin/python3", append([]string{"testdata/ironic_provider.py"}, args...)...)
	cmd.Dir = "."
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("ironic provider %v: %v", args, err)
	}
	var v map[string]any
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatalf("ironic provider %v: %q: %v", args, out, err)
	}
	return v
}

func TestIronicProvider(t *testing.T) {
	for _, mode := range []string{"pxe", "ipxe"} {
		t.Run(mode, func(t *testing.T) {
			hostsdir, optsdir := t.TempDir(), t.TempDir()
			leases := filepath.Join(t.TempDir(), "dnsmasq.leases")
			d := &Dir{HostsDirs: []string{hostsdir}, OptsDirs: []string{optsdir}}

			tag := ironicProvider(t, "write", hostsdir, optsdir, leases, mode)["tag"].(string)
			if err := d.Load(); err != nil {
				t.Fatal(err)
			}
			checkIronicNode(t, d, tag, mode == "ipxe")

			err := WriteLeaseFile(leases, []Lease{
				{Expires: time.Now().Add(time.Hour), MAC: mac(ironicMAC), Addr: netip.MustParseAddr("192.0.2.50"), Hostname: "node"},
				{Expires: time.Now().Add(time.Hour), MAC: mac("52:54:00:00:00:99"), Addr: netip.MustParseAddr("192.0.2.99")},
			})
			if err != nil {
				t.Fatal(err)
			}
			got := ironicProvider(t, "addresses", hostsdir, optsdir, leases, mode)["addresses"]
			if !slices.Equal(toStrings(got), []string{"192.0.2.50"}) {
				t.Errorf("Ironic read addresses %v, want [192.0.2.50]", got)
			}

			ironicProvider(t, "clean", hostsdir, optsdir, leases, mode, tag)
			if err := d.Load(); err != nil {
				t.Fatal(err)
			}
			if r, ok := d.Lookup(mac(ironicMAC)); !ok || !r.Ignore {
				t.Errorf("after Ironic cleaned: %+v, %v; want ignored", r, ok)
			}
		})
	}
}

func toStrings(v any) []string {
	var out []string
	for _, x := range v.([]any) {
		out = append(out, x.(string))
	}
	return out
}
