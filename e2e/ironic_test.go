//go:build e2e

package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rackboot/rackboot/api"
	"github.com/rackboot/rackboot/boot"
)

// ironicProvider runs Ironic's own dnsmasq DHCP provider (Debian's
// python3-ironic, under /usr/bin/python3, where Debian's packages import)
// on rackboot's Ironic directories: write prepares the node
// 52:54:00:12:34:56 for a deploy, addresses reads its address back from
// the lease file, clean tears it down.
func ironicProvider(t *testing.T, dirs [3]string, args ...string) map[string]any {
	t.Helper()
	script := filepath.Join(repoRoot, "ironic", "dnsmasq", "testdata", "ironic_provider.py")
	all := append([]string{script, args[0], dirs[0], dirs[1], dirs[2]}, args[1:]...)
	out, err := exec.Command("/usr/bin/python3", all...).Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("ironic provider %v: %v\n%s", args, err, stderr)
	}
	var v map[string]any
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatalf("ironic provider %v: %q", args, out)
	}
	return v
}

// TestIronicDnsmasq serves a node of Ironic's through the files of Ironic's
// dnsmasq DHCP provider, written by Ironic's own code: a real DHCP client
// with the node's MAC gets an address from rackboot's pool and Ironic's
// boot options (its conductor as next server, its boot file, iPXE's
// script for iPXE); Ironic reads the address back from the lease file
// rackboot writes; once Ironic has cleaned the node up, rackboot no longer
// answers it.
func TestIronicDnsmasq(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	dirs := [3]string{filepath.Join(dir, "hostsdir.d"), filepath.Join(dir, "optsdir.d"), filepath.Join(dir, "dnsmasq.leases")}
	for _, d := range dirs[:2] {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cfg := filepath.Join(dir, "rackboot.yaml")
	os.WriteFile(cfg, []byte("ironic:\n  hostsdir: "+dirs[0]+"\n  optsdir: "+dirs[1]+"\n  leasefile: "+dirs[2]+"\n"), 0o644)
	r := newRig(t, rigOptions{name: "rbirn", prefix: "10.77.8.0/24", mode: "authoritative", arches: []boot.Arch{boot.ArchX86_64},
		extra: []string{"--config", cfg}})
	c := addHost(t, r, "c", "")
	const mac = "52:54:00:12:34:56"
	uefi := []string{"-x", "0x5d:0007", "-V", "PXEClient:Arch:00007:UNDI:003000"}

	tag := ironicProvider(t, dirs, "write", "ipxe")["tag"].(string)
	// rackboot watches the directories: the node is Ironic's within
	// moments, without a restart.
	var got map[string]string
	for deadline := time.Now().Add(20 * time.Second); ; {
		got = udhcpc(t, c, mac, uefi...)
		if got["bootfile"] == "snponly.efi" || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	// The conductor's tftp_server (192.0.2.10) is the next server.
	if !strings.HasPrefix(got["ip"], "10.77.8.") || got["bootfile"] != "snponly.efi" || got["siaddr"] != "192.0.2.10" {
		t.Fatalf("the Ironic node's firmware got %v; want an address of 10.77.8.0/24, snponly.efi from 192.0.2.10", got)
	}
	ipxe := udhcpc(t, c, mac, append(uefi, "-x", "0x4d:69505845")...)
	if ipxe["bootfile"] != "http://192.0.2.10:8080/boot.ipxe" {
		t.Errorf("the Ironic node's iPXE got %v; want Ironic's boot.ipxe", ipxe)
	}
	// Another client is rackboot's own.
	if own := udhcpc(t, c, "52:54:00:66:01:07", uefi...); own["bootfile"] != "ipxe/snponly.efi" {
		t.Errorf("rackboot's own client got %v", own)
	}
	// Given to Ironic (owner ironic) without a hosts line, it still gets
	// an address, and rackboot boots it nothing of its own.
	var n api.Node
	r.cli(&n, "node", "set", "52:54:00:66:01:07", "--owner", "ironic")
	if other := udhcpc(t, c, "52:54:00:66:01:07", uefi...); !strings.HasPrefix(other["ip"], "10.77.8.") || other["bootfile"] != "" {
		t.Errorf("a node Ironic owns got %v from rackboot; want an address and no boot file", other)
	}

	var addrs []any
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		addrs, _ = ironicProvider(t, dirs, "addresses", "ipxe")["addresses"].([]any)
		if len(addrs) == 1 && addrs[0] == ipxe["ip"] {
			break
		}
	}
	if len(addrs) != 1 || addrs[0] != ipxe["ip"] {
		lf, _ := os.ReadFile(dirs[2])
		t.Fatalf("Ironic read addresses %v from rackboot's lease file, want [%s]:\n%s", addrs, ipxe["ip"], lf)
	}

	// Ironic cleans the node up: its hosts line says ignore, and rackboot
	// stays silent to it.
	ironicProvider(t, dirs, "clean", "ipxe", tag)
	time.Sleep(3 * time.Second)
	sh(t, "ip", "-n", c.ns, "link", "set", c.dev, "down")
	sh(t, "ip", "-n", c.ns, "link", "set", c.dev, "address", mac)
	sh(t, "ip", "-n", c.ns, "link", "set", c.dev, "up")
	cmd := exec.Command("ip", "netns", "exec", c.ns, "busybox", "udhcpc", "-i", c.dev, "-f", "-q", "-n", "-t", "3", "-T", "1", "-s", "/bin/true", "-x", "0x5d:0007", "-V", "PXEClient:Arch:00007:UNDI:003000")
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Errorf("a node Ironic cleaned up still got an answer:\n%s", out)
	}
}
