//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"golang.org/x/sys/unix"

	"github.com/rackboot/rackboot/api"
	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/dhcp"
	"github.com/rackboot/rackboot/lab"
	"github.com/rackboot/rackboot/trace"
)

// host is a network namespace wired to the rig's bridge by a veth pair.
type host struct {
	ns, dev string
}

func sh(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func addHost(t *testing.T, r *rig, name, cidr string) host {
	t.Helper()
	ns, err := r.net.AddHost(name, cidr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	return host{ns: ns, dev: "eth0"}
}

func (h host) run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", h.ns}, args...)...).CombinedOutput()
	return string(out), err
}

const udhcpcScript = `#!/bin/sh
[ "$1" = bound ] || exit 0
ip addr flush dev "$interface"
ip addr add "$ip/$mask" dev "$interface"
echo "ip=$ip bootfile=$bootfile boot_file=$boot_file siaddr=$siaddr" > "$OUT"
exit 0
`

// udhcpc runs busybox's DHCP client once and returns what it was offered.
func udhcpc(t *testing.T, h host, mac string, args ...string) map[string]string {
	t.Helper()
	sh(t, "ip", "-n", h.ns, "link", "set", h.dev, "down")
	sh(t, "ip", "-n", h.ns, "link", "set", h.dev, "address", mac)
	sh(t, "ip", "-n", h.ns, "addr", "flush", "dev", h.dev)
	sh(t, "ip", "-n", h.ns, "link", "set", h.dev, "up")
	dir := t.TempDir()
	script := filepath.Join(dir, "script")
	if err := os.WriteFile(script, []byte(udhcpcScript), 0o755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	cmd := exec.Command("ip", append([]string{"netns", "exec", h.ns, "busybox", "udhcpc", "-i", h.dev, "-f", "-q", "-n",
		"-t", "5", "-T", "1", "-O", "bootfile", "-s", script}, args...)...)
	cmd.Env = append(os.Environ(), "OUT="+out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("udhcpc %v: %v\n%s", args, err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatalf("udhcpc %v bound no lease: %v", args, err)
	}
	got := map[string]string{}
	for _, f := range strings.Fields(string(b)) {
		k, v, _ := strings.Cut(f, "=")
		got[k] = v
	}
	return got
}

// TestClients drives rackboot with real Linux clients: busybox udhcpc as
// every client type, a relayed client, tftp-hpa and atftp, and curl.
func TestClients(t *testing.T) {
	t.Parallel()
	cfg := filepath.Join(t.TempDir(), "rackboot.yaml")
	os.WriteFile(cfg, []byte(`dhcp:
  subnets:
    - prefix: 10.88.0.0/24
      range: 10.88.0.100-10.88.0.110
      router: 10.88.0.1
      relays: [10.88.0.1]
`), 0o644)
	r := newRig(t, rigOptions{name: "rbcli", prefix: "10.77.6.0/24", mode: "authoritative", arches: []boot.Arch{boot.ArchX86_64},
		extra: []string{"--config", cfg}})
	base := "http://10.77.6.1:8080"
	c := addHost(t, r, "c", "")

	tests := []struct {
		name, mac string
		args      []string
		bootfile  string
		arch      string
	}{
		{"x86 bios", "52:54:00:66:00:00", []string{"-x", "0x5d:0000", "-V", "PXEClient:Arch:00000:UNDI:002001"}, "ipxe/undionly.kpxe", "x86_64"},
		{"x86-64 uefi", "52:54:00:66:00:07", []string{"-x", "0x5d:0007", "-V", "PXEClient:Arch:00007:UNDI:003000"}, "ipxe/snponly.efi", "x86_64"},
		{"x86-64 uefi alt", "52:54:00:66:00:09", []string{"-x", "0x5d:0009", "-V", "PXEClient:Arch:00009:UNDI:003000"}, "ipxe/snponly.efi", "x86_64"},
		{"aarch64 uefi", "52:54:00:66:00:0b", []string{"-x", "0x5d:000b", "-V", "PXEClient:Arch:00011:UNDI:003000"}, "efi/aa64/grubnetaa64.efi", "aarch64"},
		{"x86-64 http boot", "52:54:00:66:00:10", []string{"-x", "0x5d:0010", "-V", "HTTPClient:Arch:00016:UNDI:003000"}, base + "/firmware/ipxe/snponly.efi", "x86_64"},
		{"aarch64 http boot", "52:54:00:66:00:13", []string{"-x", "0x5d:0013", "-V", "HTTPClient:Arch:00019:UNDI:003000"}, base + "/firmware/efi/aa64/grubhttpaa64.efi", "aarch64"},
		{"ipxe", "52:54:00:66:00:aa", []string{"-x", "0x5d:0007", "-V", "PXEClient:Arch:00007:UNDI:003010", "-x", "0x4d:69505845"}, base + "/boot.ipxe", "x86_64"},
		{"no pxe", "52:54:00:66:00:ff", nil, "", ""},
	}
	for _, tt := range tests {
		got := udhcpc(t, c, tt.mac, tt.args...)
		if !strings.HasPrefix(got["ip"], "10.77.6.") || got["bootfile"] != tt.bootfile {
			t.Errorf("%s: got %v, want an address in 10.77.6.0/24 and boot file %q", tt.name, got, tt.bootfile)
		}
		if tt.arch == "" {
			continue
		}
		var n api.Node
		r.cli(&n, "node", "show", tt.mac)
		if n.Arch != tt.arch {
			t.Errorf("%s: node enrolled as %q, want %q", tt.name, n.Arch, tt.arch)
		}
	}
	// A client that took its offer and went away: the trace says where
	// it stopped.
	var tr api.Trace
	r.cli(&tr, "node", "trace", "52:54:00:66:00:0b")
	if len(tr.Boots) != 1 || tr.Boots[0].Stage != trace.StageOffer ||
		tr.Boots[0].Verdict != "got a boot offer (efi/aa64/grubnetaa64.efi), never fetched the loader" {
		t.Errorf("trace of a client that never fetched its loader: %+v", tr.Boots)
	}

	var nodes []api.Node
	r.cli(&nodes, "node", "list")
	if len(nodes) != len(tests)-1 {
		t.Errorf("%d nodes enrolled, want %d (a client without PXE options is not a node)", len(nodes), len(tests)-1)
	}

	// The client keeps a 10.77.6.x address from the last run: fetch files.
	kernel := filepath.Join(r.dataDir, "artifacts", "x86_64", "vmlinuz")
	want, _ := os.ReadFile(kernel)
	loader, _ := os.ReadFile(filepath.Join(r.dataDir, "firmware", "ipxe", "snponly.efi"))
	dir := t.TempDir()
	if out, err := c.run(t, "tftp", "10.77.6.1", "-m", "binary", "-c", "get", "ipxe/snponly.efi", filepath.Join(dir, "tftp-hpa")); err != nil {
		t.Errorf("tftp-hpa get: %v %s", err, out)
	} else if b, _ := os.ReadFile(filepath.Join(dir, "tftp-hpa")); !bytes.Equal(b, loader) {
		t.Errorf("tftp-hpa got %d bytes, want the %d of the loader", len(b), len(loader))
	}
	if out, err := c.run(t, "atftp", "--option", "blksize 1468", "--option", "windowsize 16", "-g", "-r", "artifacts/x86_64/vmlinuz",
		"-l", filepath.Join(dir, "atftp"), "10.77.6.1"); err != nil {
		t.Errorf("atftp get: %v %s", err, out)
	} else if b, _ := os.ReadFile(filepath.Join(dir, "atftp")); sha256.Sum256(b) != sha256.Sum256(want) {
		t.Errorf("atftp got %d bytes, want the %d of the kernel", len(b), len(want))
	}
	if out, _ := c.run(t, "tftp", "10.77.6.1", "-m", "binary", "-c", "get", "../rackboot.db", filepath.Join(dir, "escape")); !strings.Contains(out, "Access violation") && !strings.Contains(out, "access violation") {
		t.Errorf("tftp get ../rackboot.db was not refused: %q", out)
	}
	if _, err := os.Stat(filepath.Join(dir, "escape")); err == nil {
		if b, _ := os.ReadFile(filepath.Join(dir, "escape")); len(b) > 0 {
			t.Errorf("tftp ../ leaked %d bytes", len(b))
		}
	}
	out, err := c.run(t, "curl", "-sf", base+"/boot.ipxe")
	if err != nil || !strings.Contains(out, "#!ipxe") || !strings.Contains(out, "chain") {
		t.Errorf("curl /boot.ipxe: %v %q", err, out)
	}
	out, err = c.run(t, "curl", "-sf", base+"/ipxe/52-54-00-66-00-07?arch=x86_64")
	if err != nil || !strings.Contains(out, "kernel "+base+"/artifacts/x86_64/vmlinuz") {
		t.Errorf("curl per-node script: %v %q", err, out)
	}
	out, err = c.run(t, "sh", "-c", "curl -sf -r 100-199 "+base+"/artifacts/x86_64/vmlinuz | sha256sum")
	if wantSum := fmt.Sprintf("%x", sha256.Sum256(want[100:200])); err != nil || !strings.HasPrefix(out, wantSum) {
		t.Errorf("ranged kernel download: %v %q, want sha256 %s", err, out, wantSum)
	}
	if out, _ := c.run(t, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--path-as-is", base+"/artifacts/../rackboot.db"); out == "200" {
		t.Errorf("curl /artifacts/../rackboot.db answered 200")
	}

	t.Run("relayed", func(t *testing.T) { testRelay(t, r) })

	// Leases live in the database: after a restart the same client gets
	// the same address back, and the nodes are still there.
	before := udhcpc(t, c, "52:54:00:66:00:07", "-x", "0x5d:0007", "-V", "PXEClient:Arch:00007:UNDI:003000")
	r.stop()
	r.start()
	after := udhcpc(t, c, "52:54:00:66:00:07", "-x", "0x5d:0007", "-V", "PXEClient:Arch:00007:UNDI:003000")
	if before["ip"] == "" || before["ip"] != after["ip"] {
		t.Errorf("address before a restart %q, after %q", before["ip"], after["ip"])
	}
	r.cli(&nodes, "node", "list")
	if len(nodes) != len(tests) { // the PXE clients above and the relayed one
		t.Errorf("%d nodes after a restart, want %d", len(nodes), len(tests))
	}
}

// testRelay puts a client behind a DHCP relay on another subnet: the relay
// forwards with giaddr set, and the client must get an address from that
// subnet's pool.
func testRelay(t *testing.T, r *rig) {
	rl := addHost(t, r, "r", "10.77.6.3/24")
	sh(t, "ip", "netns", "add", rl.ns+"c")
	t.Cleanup(func() { exec.Command("ip", "netns", "del", rl.ns+"c").Run() })
	sh(t, "ip", "-n", rl.ns, "link", "add", "down0", "type", "veth", "peer", "name", "eth0", "netns", rl.ns+"c")
	sh(t, "ip", "-n", rl.ns, "addr", "add", "10.88.0.1/24", "dev", "down0")
	sh(t, "ip", "-n", rl.ns, "link", "set", "down0", "up")
	sh(t, "ip", "-n", rl.ns+"c", "link", "set", "eth0", "up")
	sh(t, "ip", "-n", r.net.Name(), "route", "add", "10.88.0.0/24", "via", "10.77.6.3")

	var down, up net.PacketConn
	err := lab.InNamespace(rl.ns, func() error {
		var err error
		if down, err = dhcp.ListenUDP("down0", 67); err != nil {
			return err
		}
		lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
			return c.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1) })
		}}
		up, err = lc.ListenPacket(context.Background(), "udp4", "10.88.0.1:67")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer down.Close()
	defer up.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go relay(ctx, down, up, net.ParseIP("10.88.0.1"), &net.UDPAddr{IP: net.ParseIP("10.77.6.1"), Port: 67})

	got := udhcpc(t, host{ns: rl.ns + "c", dev: "eth0"}, "52:54:00:88:00:07", "-x", "0x5d:0007", "-V", "PXEClient:Arch:00007:UNDI:003000")
	if !strings.HasPrefix(got["ip"], "10.88.0.1") || got["bootfile"] != "ipxe/snponly.efi" {
		t.Errorf("relayed client got %v, want an address in 10.88.0.100-110 and ipxe/snponly.efi", got)
	}

	// A host on the server's segment that is not the subnet's relay
	// writes the relay's giaddr: it draws nothing from the pool, and its
	// client is never enrolled.
	forged := net.HardwareAddr{0x52, 0x54, 0, 0x88, 0, 0x66}
	err = lab.InNamespace(rl.ns, func() error {
		c, err := net.ListenPacket("udp4", "10.77.6.3:0")
		if err != nil {
			return err
		}
		defer c.Close()
		m, err := dhcpv4.NewDiscovery(forged, dhcpv4.WithRelay(net.ParseIP("10.88.0.1")),
			dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.OptionClientSystemArchitectureType, []byte{0, 7})),
			dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00007:UNDI:003000")))
		if err != nil {
			return err
		}
		for range 3 {
			if _, err := c.WriteTo(m.ToBytes(), &net.UDPAddr{IP: net.ParseIP("10.77.6.1"), Port: 67}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var n api.Node
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		time.Sleep(500 * time.Millisecond)
		var nodes []api.Node
		r.cli(&nodes, "node", "list")
		for _, nd := range nodes {
			for _, mac := range nd.MACs {
				if mac == forged.String() {
					n = nd
				}
			}
		}
	}
	if n.ID != "" {
		t.Errorf("a forged relayed DISCOVER from a host that is not the relay enrolled node %s", n.ID)
	}
}

// relay is a minimal RFC 1542 relay agent: requests from the client side
// go to the server with giaddr set; replies come back to giaddr and are
// broadcast on the client side.
func relay(ctx context.Context, down, up net.PacketConn, giaddr net.IP, server net.Addr) {
	go func() {
		buf := make([]byte, 1500)
		for {
			n, _, err := up.ReadFrom(buf)
			if err != nil {
				return
			}
			down.WriteTo(buf[:n], &net.UDPAddr{IP: net.IPv4bcast, Port: 68})
		}
	}()
	buf := make([]byte, 1500)
	for ctx.Err() == nil {
		n, _, err := down.ReadFrom(buf)
		if err != nil {
			return
		}
		m, err := dhcpv4.FromBytes(buf[:n])
		if err != nil || m.OpCode != dhcpv4.OpcodeBootRequest {
			continue
		}
		m.GatewayIPAddr = giaddr
		m.HopCount++
		up.WriteTo(m.ToBytes(), server)
	}
}
