package main

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestSystemdUnit checks contrib/rackboot.service: the keys the service
// needs (its command line, the capabilities DHCP and TFTP need, the data
// dir as the one place it writes), and, where systemd-analyze is there,
// that systemd accepts the unit.
func TestSystemdUnit(t *testing.T) {
	unit := filepath.Join("..", "..", "contrib", "rackboot.service")
	b, err := os.ReadFile(unit)
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string][]string{} // "Section.Key" → values
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		switch {
		case l == "" || strings.HasPrefix(l, "#"):
		case strings.HasPrefix(l, "[") && strings.HasSuffix(l, "]"):
			section = l[1 : len(l)-1]
		default:
			k, v, ok := strings.Cut(l, "=")
			if !ok {
				t.Fatalf("%s: line %q is neither a section nor a key", unit, l)
			}
			keys[section+"."+k] = append(keys[section+"."+k], v)
		}
	}
	for key, want := range map[string]string{
		"Service.ExecStart":               "/usr/local/bin/rackboot serve --config /etc/rackboot/rackboot.yaml --data-dir /var/lib/rackboot",
		"Service.AmbientCapabilities":     "CAP_NET_BIND_SERVICE CAP_NET_RAW",
		"Service.CapabilityBoundingSet":   "CAP_NET_BIND_SERVICE CAP_NET_RAW",
		"Service.NoNewPrivileges":         "yes",
		"Service.ProtectSystem":           "strict",
		"Service.ReadWritePaths":          "/var/lib/rackboot",
		"Service.StateDirectory":          "rackboot",
		"Service.PrivateTmp":              "yes",
		"Service.Restart":                 "on-failure",
		"Install.WantedBy":                "multi-user.target",
		"Unit.After":                      "network-online.target",
		"Service.RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6 AF_NETLINK",
	} {
		if got := keys[key]; !slices.Equal(got, []string{want}) {
			t.Errorf("%s = %q, want %q", key, got, want)
		}
	}
	// make install rewrites the binary's path for its PREFIX.
	if !strings.Contains(string(b), "/usr/local/bin/rackboot serve") {
		t.Error("ExecStart does not start with /usr/local/bin/rackboot, which make install replaces")
	}
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Log("no systemd-analyze: the unit's keys checked, not systemd's verdict")
		return
	}
	// verify wants the binary to exist: point the unit at this test's.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	copy := filepath.Join(t.TempDir(), "rackboot.service")
	os.WriteFile(copy, bytes.ReplaceAll(b, []byte("/usr/local/bin/rackboot"), []byte(self)), 0o644)
	out, err := exec.Command(sa, "verify", copy).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}
