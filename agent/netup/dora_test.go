package netup

import (
	"context"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"golang.org/x/sys/unix"

	"github.com/rackboot/rackboot/dhcp"
)

// serverConn is a PacketConn whose writes are handled by a rackboot DHCP
// server and whose reads are its replies: the agent's exchange against
// the real server logic, without sockets.
type serverConn struct {
	s       *dhcp.Server
	replies chan []byte
	once    sync.Once
	closed  chan struct{}
}

func (c *serverConn) ReadFrom(b []byte) (int, net.Addr, error) {
	select {
	case r := <-c.replies:
		return copy(b, r), &net.UDPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 67}, nil
	case <-c.closed:
		return 0, nil, net.ErrClosed
	}
}

func (c *serverConn) WriteTo(b []byte, _ net.Addr) (int, error) {
	if reply, _ := c.s.HandleBytes(context.Background(), b, &net.UDPAddr{IP: net.IPv4zero, Port: 68}); reply != nil {
		c.replies <- reply.ToBytes()
	}
	return len(b), nil
}

func (c *serverConn) Close() error                     { c.once.Do(func() { close(c.closed) }); return nil }
func (c *serverConn) LocalAddr() net.Addr              { return &net.UDPAddr{Port: 68} }
func (c *serverConn) SetDeadline(time.Time) error      { return nil }
func (c *serverConn) SetReadDeadline(time.Time) error  { return nil }
func (c *serverConn) SetWriteDeadline(time.Time) error { return nil }

// On a machine whose random pool is not seeded, the agent's DHCP still
// goes out at once and gets its lease.
func TestDORAWithoutEntropy(t *testing.T) {
	calls := 0
	emptyPool := func([]byte) error { calls++; return unix.EAGAIN }
	s := &dhcp.Server{Mode: dhcp.ModeAuthoritative, ServerIP: netip.MustParseAddr("10.0.0.1"), Leases: &dhcp.MemoryLeases{},
		Subnets: []dhcp.Subnet{{Prefix: netip.MustParsePrefix("10.0.0.0/24"),
			First: netip.MustParseAddr("10.0.0.100"), Last: netip.MustParseAddr("10.0.0.110")}}}
	mac := net.HardwareAddr{0x52, 0x54, 0, 0xab, 0, 1}
	conn := &serverConn{s: s, replies: make(chan []byte, 4), closed: make(chan struct{})}
	c, err := nclient4.NewWithConn(conn, mac, nclient4.WithTimeout(time.Second), nclient4.WithRetry(1))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	ack, err := dora(ctx, c, mac, emptyPool)
	if err != nil {
		t.Fatal(err)
	}
	if ack.YourIPAddr.String() != "10.0.0.100" || ack.MessageType() != dhcpv4.MessageTypeAck {
		t.Errorf("ack = %s", ack.Summary())
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("the exchange took %s", took)
	}
	if calls == 0 {
		t.Error("the transaction id never tried the random pool")
	}
}

func TestTransactionID(t *testing.T) {
	emptyPool := func([]byte) error { return unix.EAGAIN }
	now := time.Unix(1700000000, 5)
	a := transactionID(net.HardwareAddr{0x52, 0x54, 0, 0, 0, 1}, now, emptyPool)
	b := transactionID(net.HardwareAddr{0x52, 0x54, 0, 0, 0, 2}, now, emptyPool)
	c := transactionID(net.HardwareAddr{0x52, 0x54, 0, 0, 0, 1}, now.Add(time.Nanosecond), emptyPool)
	if a == b || a == c || a == (dhcpv4.TransactionID{}) {
		t.Errorf("ids without entropy: %v %v %v", a, b, c)
	}
	pool := func(b []byte) error { copy(b, []byte{1, 2, 3, 4}); return nil }
	if got := transactionID(nil, now, pool); got != (dhcpv4.TransactionID{1, 2, 3, 4}) {
		t.Errorf("with entropy the id is %v, not the pool's", got)
	}
}

// The agent's packets say what u-root's client said, with the agent's
// user class, so the server tells it from the node's firmware.
func TestAgentPackets(t *testing.T) {
	mac := net.HardwareAddr{0x52, 0x54, 0, 0xab, 0, 1}
	d := discoverPacket(mac, dhcpv4.TransactionID{9, 9, 9, 9}, true)
	if d.MessageType() != dhcpv4.MessageTypeDiscover || d.ClientHWAddr.String() != mac.String() || !d.IsBroadcast() ||
		d.ClassIdentifier() != "PXE UROOT" || len(d.UserClass()) != 1 || d.UserClass()[0] != UserClass {
		t.Errorf("discover: %s", d.Summary())
	}
	// Without a seeded pool the packets say so, in a second user class.
	if u := discoverPacket(mac, dhcpv4.TransactionID{9, 9, 9, 9}, false).UserClass(); len(u) != 2 || u[0] != UserClass || u[1] != "no-rng" {
		t.Errorf("discover without entropy: user classes %q", u)
	}
	offer := message(d.TransactionID, dhcpv4.WithHwAddr(mac), dhcpv4.WithMessageType(dhcpv4.MessageTypeOffer),
		dhcpv4.WithYourIP(net.IPv4(10, 0, 0, 5)), dhcpv4.WithServerIP(net.IPv4(10, 0, 0, 1)),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IPv4(10, 0, 0, 1))))
	r := requestPacket(offer, true)
	if r.MessageType() != dhcpv4.MessageTypeRequest || r.TransactionID != d.TransactionID ||
		!r.RequestedIPAddress().Equal(net.IPv4(10, 0, 0, 5)) || !r.ServerIdentifier().Equal(net.IPv4(10, 0, 0, 1)) {
		t.Errorf("request: %s", r.Summary())
	}
}

// Without a seeded pool the agent says so on the console before it waits,
// and says when the wait is over; with one it says nothing.
func TestWaitCRNG(t *testing.T) {
	var out strings.Builder
	if err := WaitCRNG(context.Background(), &out, func() bool { return true }); err != nil || out.Len() != 0 {
		t.Fatalf("a ready pool: %v %q", err, out.String())
	}
	var calls atomic.Int32
	ready := func() bool { return calls.Add(1) > 3 }
	if err := WaitCRNG(context.Background(), &out, ready); err != nil {
		t.Fatal(err)
	}
	if s := out.String(); !strings.Contains(s, "waiting for the kernel's random pool: this machine has no hardware RNG") || !strings.Contains(s, "ready after") {
		t.Errorf("console: %q", s)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := WaitCRNG(ctx, io.Discard, func() bool { return false }); err == nil {
		t.Error("a wait that never ends returned nil when its context ended")
	}
}
