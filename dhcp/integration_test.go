//go:build integration

package dhcp

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/rackboot/rackboot/lab"
)

// rig is two network namespaces joined by a veth pair: the server side
// holds 10.77.0.1/24 on SIf, the client side CIf (no address unless a test
// gives it one).
type rig struct {
	S, C     string // namespace names
	SIf, CIf string
}

func need(t *testing.T, progs ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("integration tests need root (network namespaces)")
	}
	for _, p := range progs {
		if _, err := exec.LookPath(p); err != nil {
			t.Fatalf("%s not found: apt-get install -y iproute2 busybox", p)
		}
	}
}

func run(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func newRig(t *testing.T) rig {
	t.Helper()
	need(t, "ip", "busybox")
	b := make([]byte, 3)
	rand.Read(b)
	id := hex.EncodeToString(b)
	r := rig{S: "rbdhcp-s-" + id, C: "rbdhcp-c-" + id, SIf: "vs" + id, CIf: "vc" + id}
	run(t, "ip", "netns", "add", r.S)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", r.S).Run() })
	run(t, "ip", "netns", "add", r.C)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", r.C).Run() })
	run(t, "ip", "link", "add", r.SIf, "netns", r.S, "type", "veth", "peer", "name", r.CIf, "netns", r.C)
	run(t, "ip", "-n", r.S, "addr", "add", "10.77.0.1/24", "dev", r.SIf)
	run(t, "ip", "-n", r.S, "link", "set", r.SIf, "up")
	run(t, "ip", "-n", r.S, "link", "set", "lo", "up")
	run(t, "ip", "-n", r.C, "link", "set", r.CIf, "up")
	run(t, "ip", "-n", r.C, "link", "set", "lo", "up")
	return r
}

func listenIn(t *testing.T, ns, ifname string, port int) net.PacketConn {
	t.Helper()
	var conn net.PacketConn
	err := lab.InNamespace(ns, func() (err error) {
		conn, err = ListenUDP(ifname, port)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func integServer(mode Mode) *Server {
	return &Server{
		Mode:     mode,
		ServerIP: netip.MustParseAddr("10.77.0.1"),
		Subnets: []Subnet{
			{Prefix: netip.MustParsePrefix("10.77.0.0/24"), First: netip.MustParseAddr("10.77.0.100"),
				Last: netip.MustParseAddr("10.77.0.150"), Router: netip.MustParseAddr("10.77.0.1")},
			{Prefix: netip.MustParsePrefix("10.78.0.0/24"), First: netip.MustParseAddr("10.78.0.100"),
				Last: netip.MustParseAddr("10.78.0.150"), Router: netip.MustParseAddr("10.78.0.1"),
				Relays: []netip.Prefix{netip.MustParsePrefix("10.78.0.1/32")}},
		},
		Booter: archBooter{},
		Leases: &MemoryLeases{},
	}
}

// serve runs s on conn until the test ends.
func serve(t *testing.T, s *Server, conn net.PacketConn) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, conn) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
}

func TestIntegrationUdhcpc(t *testing.T) {
	tests := []struct {
		name, vendor, arch, userClass string
		want                          string
	}{
		{"bios", "PXEClient:Arch:00000:UNDI:002001", "0000", "", "loader/x86-bios"},
		{"x86-64 uefi", "PXEClient:Arch:00007:UNDI:003000", "0007", "", "loader/x86_64-uefi"},
		{"aarch64 uefi", "PXEClient:Arch:00011:UNDI:003000", "000b", "", "loader/aarch64-uefi"},
		{"x86-64 http", "HTTPClient:Arch:00016:UNDI:003000", "0010", "", "http://10.0.0.1:8080/firmware/x86_64-uefi-http"},
		{"aarch64 http", "HTTPClient:Arch:00019:UNDI:003000", "0013", "", "http://10.0.0.1:8080/firmware/aarch64-uefi-http"},
		{"ipxe", "PXEClient:Arch:00007:UNDI:003010", "0007", hex.EncodeToString([]byte("iPXE")), "http://10.0.0.1:8080/boot.ipxe"},
		{"plain client", "", "", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t)
			s := integServer(ModeAuthoritative)
			serve(t, s, listenIn(t, r.S, r.SIf, 67))

			dir := t.TempDir()
			out := filepath.Join(dir, "lease")
			script := filepath.Join(dir, "script")
			os.WriteFile(script, []byte(`#!/bin/sh
[ "$1" = bound ] && echo "ip=$ip bootfile=$bootfile serverid=$serverid" > `+out+"\nexit 0\n"), 0o755)
			args := []string{"netns", "exec", r.C, "busybox", "udhcpc", "-i", r.CIf, "-f", "-q", "-n", "-t", "4", "-T", "1",
				"-O", "bootfile", "-s", script}
			if tt.vendor != "" {
				args = append(args, "-V", tt.vendor, "-x", "0x5d:"+tt.arch)
			}
			if tt.userClass != "" {
				args = append(args, "-x", "0x4d:"+tt.userClass)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if b, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput(); err != nil {
				t.Fatalf("udhcpc: %v\n%s", err, b)
			}
			got, err := os.ReadFile(out)
			if err != nil {
				t.Fatalf("udhcpc got no lease: %v", err)
			}
			want := fmt.Sprintf("ip=10.77.0.100 bootfile=%s serverid=10.77.0.1\n", tt.want)
			if string(got) != want {
				t.Errorf("lease\n got %s want %s", got, want)
			}
			if st := s.Stats(); st.Replied != 2 || st.Malformed != 0 {
				t.Errorf("stats %+v, want 2 replies (OFFER, ACK)", st)
			}
		})
	}
}

// exchange sends m to dst on conn and reads the first reply for m's xid.
func exchange(t *testing.T, conn net.PacketConn, m *dhcpv4.DHCPv4, dst net.Addr) (*dhcpv4.DHCPv4, net.Addr) {
	t.Helper()
	if _, err := conn.WriteTo(m.ToBytes(), dst); err != nil {
		t.Fatalf("send %s to %s: %v", m.MessageType(), dst, err)
	}
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1500)
	for {
		n, from, err := conn.ReadFrom(buf)
		if err != nil {
			t.Fatalf("no reply to %s: %v", m.MessageType(), err)
		}
		r, err := dhcpv4.FromBytes(buf[:n])
		if err == nil && r.OpCode == dhcpv4.OpcodeBootReply && r.TransactionID == m.TransactionID {
			return r, from
		}
	}
}

func TestIntegrationRelay(t *testing.T) {
	r := newRig(t)
	run(t, "ip", "-n", r.C, "addr", "add", "10.77.0.2/24", "dev", r.CIf)
	run(t, "ip", "-n", r.C, "addr", "add", "10.78.0.1/24", "dev", r.CIf)
	run(t, "ip", "-n", r.S, "route", "add", "10.78.0.0/24", "via", "10.77.0.2")
	s := integServer(ModeAuthoritative)
	serve(t, s, listenIn(t, r.S, r.SIf, 67))

	var relay net.PacketConn
	if err := lab.InNamespace(r.C, func() (err error) {
		relay, err = net.ListenPacket("udp4", "10.78.0.1:67")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer relay.Close()
	d, err := dhcpv4.NewDiscovery(net.HardwareAddr{0x52, 0x54, 0, 0x77, 0, 1}, append(pxe(11), dhcpv4.WithRelay(net.ParseIP("10.78.0.1")))...)
	if err != nil {
		t.Fatal(err)
	}
	offer, from := exchange(t, relay, d, &net.UDPAddr{IP: net.ParseIP("10.77.0.1"), Port: 67})
	got := fmt.Sprintf("%s yiaddr=%s file=%s from=%s", offer.MessageType(), offer.YourIPAddr, offer.BootFileName, from)
	want := "OFFER yiaddr=10.78.0.100 file=loader/aarch64-uefi from=10.77.0.1:67"
	if got != want {
		t.Errorf("relayed\n got %s\nwant %s", got, want)
	}
	// The same host from its address that is not the relay's: a forged
	// giaddr, which draws no reply, at the relay or anywhere.
	var forger net.PacketConn
	if err := lab.InNamespace(r.C, func() (err error) {
		forger, err = net.ListenPacket("udp4", "10.77.0.2:0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer forger.Close()
	d2, _ := dhcpv4.NewDiscovery(net.HardwareAddr{0x52, 0x54, 0, 0x77, 0, 2}, append(pxe(11), dhcpv4.WithRelay(net.ParseIP("10.78.0.1")))...)
	forger.WriteTo(d2.ToBytes(), &net.UDPAddr{IP: net.ParseIP("10.77.0.1"), Port: 67})
	relay.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 1500)
	for {
		n, _, err := relay.ReadFrom(buf)
		if err != nil {
			break
		}
		if m, err := dhcpv4.FromBytes(buf[:n]); err == nil && m.TransactionID == d2.TransactionID {
			t.Errorf("a forged relayed DISCOVER got %s", m.MessageType())
		}
	}
	if st := s.Stats(); st.RelayRefused != 1 {
		t.Errorf("stats %+v, want 1 relayed request refused", st)
	}
}

func TestIntegrationProxy(t *testing.T) {
	r := newRig(t)
	// The site's DHCP server gave the client 10.77.0.2.
	run(t, "ip", "-n", r.C, "addr", "add", "10.77.0.2/24", "dev", r.CIf)
	s67 := integServer(ModeProxy)
	serve(t, s67, listenIn(t, r.S, r.SIf, 67))
	s4011 := integServer(ModeProxy)
	s4011.ProxyPort = true
	serve(t, s4011, listenIn(t, r.S, r.SIf, 4011))

	client := listenIn(t, r.C, r.CIf, 68)
	mac := net.HardwareAddr{0x52, 0x54, 0, 0x77, 0, 2}
	d, err := dhcpv4.NewDiscovery(mac, pxe(7)...)
	if err != nil {
		t.Fatal(err)
	}
	offer, _ := exchange(t, client, d, &net.UDPAddr{IP: net.IPv4bcast, Port: 67})
	got := fmt.Sprintf("%s yiaddr=%s siaddr=%s file=%s class=%s", offer.MessageType(), offer.YourIPAddr, offer.ServerIPAddr, offer.BootFileName, offer.ClassIdentifier())
	if want := "OFFER yiaddr=0.0.0.0 siaddr=10.77.0.1 file=loader/x86_64-uefi class=PXEClient"; got != want {
		t.Errorf("proxy offer\n got %s\nwant %s", got, want)
	}

	req, err := dhcpv4.New(append(pxe(7), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest), dhcpv4.WithHwAddr(mac),
		dhcpv4.WithClientIP(net.ParseIP("10.77.0.2")))...)
	if err != nil {
		t.Fatal(err)
	}
	ack, from := exchange(t, client, req, &net.UDPAddr{IP: net.ParseIP("10.77.0.1"), Port: 4011})
	got = fmt.Sprintf("%s yiaddr=%s file=%s from=%s", ack.MessageType(), ack.YourIPAddr, ack.BootFileName, from)
	if want := "ACK yiaddr=0.0.0.0 file=loader/x86_64-uefi from=10.77.0.1:4011"; got != want {
		t.Errorf("proxy 4011 ack\n got %s\nwant %s", got, want)
	}

	// A client that is not booting gets nothing from a proxy.
	plain, _ := dhcpv4.NewDiscovery(net.HardwareAddr{0x52, 0x54, 0, 0x77, 0, 3})
	client.WriteTo(plain.ToBytes(), &net.UDPAddr{IP: net.IPv4bcast, Port: 67})
	client.SetReadDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 1500)
	for {
		n, _, err := client.ReadFrom(buf)
		if err != nil {
			break
		}
		if m, err := dhcpv4.FromBytes(buf[:n]); err == nil && m.OpCode == dhcpv4.OpcodeBootReply && m.TransactionID == plain.TransactionID {
			t.Fatalf("proxy answered a non-boot client: %s", m.Summary())
		}
	}
}

// TestIntegrationFlood: while another host floods the server with
// DISCOVERs from tens of thousands of made-up MACs, every exchange of a
// known node is still answered (with the retries every DHCP client
// makes); the unknown clients are limited to UnknownRate. The latency the
// known node sees is a figure (docs/reliability.md), not an assertion.
func TestIntegrationFlood(t *testing.T) {
	r := newRig(t)
	run(t, "ip", "-n", r.C, "addr", "add", "10.77.0.2/24", "dev", r.CIf)
	s := integServer(ModeAuthoritative)
	known := net.HardwareAddr{0x52, 0x54, 0, 0x77, 0xaa, 1}
	s.Known = func(_ context.Context, m net.HardwareAddr) bool { return m.String() == known.String() }
	s.KnownReserve = 0.1 // the known node has no lease yet: it needs an address the flood cannot take
	serve(t, s, listenIn(t, r.S, r.SIf, 67))
	client := listenIn(t, r.C, r.CIf, 68)
	var flooder net.PacketConn
	if err := lab.InNamespace(r.C, func() (err error) {
		flooder, err = net.ListenPacket("udp4", "10.77.0.2:0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer flooder.Close()
	server := &net.UDPAddr{IP: net.ParseIP("10.77.0.1"), Port: 67}

	const flood = 30000
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sent := make(chan int, 1)
	go func() {
		n := 0
		defer func() { sent <- n }()
		for i := 0; i < flood && ctx.Err() == nil; i++ {
			mac := net.HardwareAddr{0x02, byte(i >> 16), byte(i >> 8), byte(i), 0xee, 0xee}
			d, err := dhcpv4.NewDiscovery(mac, pxe(7)...)
			if err != nil {
				return
			}
			if _, err := flooder.WriteTo(d.ToBytes(), server); err == nil {
				n++
			}
			if i%200 == 199 {
				time.Sleep(20 * time.Millisecond) // about 10,000 a second
			}
		}
	}()

	// The known node's exchanges, each step tried up to four times with
	// a second's wait, as firmware does.
	try := func(m *dhcpv4.DHCPv4) (*dhcpv4.DHCPv4, error) {
		buf := make([]byte, 1500)
		for range 4 {
			if _, err := client.WriteTo(m.ToBytes(), &net.UDPAddr{IP: net.IPv4bcast, Port: 67}); err != nil {
				return nil, err
			}
			client.SetReadDeadline(time.Now().Add(time.Second))
			for {
				n, _, err := client.ReadFrom(buf)
				if err != nil {
					break
				}
				if rep, err := dhcpv4.FromBytes(buf[:n]); err == nil && rep.TransactionID == m.TransactionID && rep.OpCode == dhcpv4.OpcodeBootReply {
					return rep, nil
				}
			}
		}
		return nil, fmt.Errorf("no answer to %s in four tries", m.MessageType())
	}
	var lat []time.Duration
	deadline := time.Now().Add(3 * time.Second)
	for i := 0; time.Now().Before(deadline) || i < 10; i++ {
		start := time.Now()
		d, _ := dhcpv4.NewDiscovery(known, pxe(7)...)
		offer, err := try(d)
		if err != nil {
			t.Fatalf("known node, exchange %d: %v (server stats %+v)", i, err, s.Stats())
		}
		req, _ := dhcpv4.NewRequestFromOffer(offer)
		ack, err := try(req)
		if err != nil || ack.MessageType() != dhcpv4.MessageTypeAck {
			t.Fatalf("known node, exchange %d: %v %v", i, ack, err)
		}
		lat = append(lat, time.Since(start))
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	n := <-sent
	st := s.Stats()
	slices.Sort(lat)
	t.Logf("flood of %d DISCOVERs from made-up MACs (about 10,000/s): %d throttled, %d offers made in all; the known node's %d DORAs: median %s, max %s (a lost packet costs a one-second retry)",
		n, st.Throttled, st.Replied, len(lat), lat[len(lat)/2].Round(time.Microsecond), lat[len(lat)-1].Round(time.Microsecond))
	if st.Throttled == 0 {
		t.Errorf("no unknown client was throttled: stats %+v", st)
	}
}
