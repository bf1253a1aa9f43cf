//go:build integration

package dhcp

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/rackboot/rackboot/internal/leakcheck"
	"github.com/rackboot/rackboot/lab"
)

// openFDs counts the descriptors the test process holds.
func openFDs(t *testing.T) int {
	t.Helper()
	n, err := leakcheck.FDs()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

var heapAfterGC = leakcheck.HeapAfterGC

// TestIntegrationBadTraffic sends the packets of badDHCP over a veth pair
// to a server in a namespace, in batches, and after each batch a known
// node does a DORA and must be answered. None of the bad packets may crash
// the server or draw a reply it is marked silent for; every reply answers
// its request; the server's counters account for every packet; its
// goroutines, descriptors and heap come back to where they were. The known
// node's latency is a figure (docs/reliability.md), not an assertion.
func TestIntegrationBadTraffic(t *testing.T) {
	r := newRig(t)
	run(t, "ip", "-n", r.C, "addr", "add", "10.77.0.2/24", "dev", r.CIf)
	s := integServer(ModeAuthoritative)
	s.UnknownRate = -1 // every bad packet reaches the handler: none is dropped unread
	known := net.HardwareAddr{0x52, 0x54, 0, 0x77, 0xaa, 2}
	s.Known = func(_ context.Context, m net.HardwareAddr) bool { return m.String() == known.String() }
	s.KnownReserve = 0.1 // the renewals of made-up leases may take the rest of the pool
	serve(t, s, listenIn(t, r.S, r.SIf, 67))
	client := listenIn(t, r.C, r.CIf, 68)
	var sender net.PacketConn
	if err := lab.InNamespace(r.C, func() (err error) {
		sender, err = net.ListenPacket("udp4", "10.77.0.2:0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer sender.Close()
	server := &net.UDPAddr{IP: net.ParseIP("10.77.0.1"), Port: 67}

	ps := badDHCP(2, badSize(), badAddrs{server: net.ParseIP("10.77.0.1"), pooled: net.ParseIP("10.77.0.100"),
		foreign: net.ParseIP("192.0.2.7"), refusedRelays: []net.IP{net.ParseIP("10.78.0.1"), net.ParseIP("10.78.0.50")}})

	// One reader for the client's port: the known node's replies go to it
	// by channel; a reply to a bad packet is checked as it comes, against
	// the packet its xid names.
	var mu sync.Mutex
	replies, own := 0, 0
	var wrong []string
	var knownXID dhcpv4.TransactionID
	knownReplies := make(chan *dhcpv4.DHCPv4, 16)
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		buf := make([]byte, 4096)
		for {
			n, _, err := client.ReadFrom(buf)
			if err != nil {
				return
			}
			m, err := dhcpv4.FromBytes(buf[:n])
			if err != nil {
				continue
			}
			mu.Lock()
			x := binary.BigEndian.Uint32(m.TransactionID[:])
			switch i := int(x &^ 0xbad00000); {
			case x&0xfff00000 != 0xbad00000 || i >= len(ps):
				own++
				if m.TransactionID == knownXID {
					select {
					case knownReplies <- m:
					default: // duplicates nobody waits for
					}
				}
			default:
				replies++
				if ps[i].silent {
					wrong = append(wrong, fmt.Sprintf("%s (%d bytes) drew %s", ps[i].what, len(ps[i].b), m.MessageType()))
				} else if err := answers(ps[i].b, m, false); err != nil {
					wrong = append(wrong, fmt.Sprintf("%s: %v", ps[i].what, err))
				}
			}
			mu.Unlock()
		}
	}()
	ownPackets := uint64(0) // what the known node sent, retries included
	try := func(m *dhcpv4.DHCPv4) (*dhcpv4.DHCPv4, error) {
		mu.Lock()
		knownXID = m.TransactionID
		mu.Unlock()
		for range 4 {
			if _, err := client.WriteTo(m.ToBytes(), &net.UDPAddr{IP: net.IPv4bcast, Port: 67}); err != nil {
				return nil, err
			}
			ownPackets++
			for wait := time.After(time.Second); ; {
				select {
				case rep := <-knownReplies:
					if rep.TransactionID != m.TransactionID {
						continue // a late answer to an earlier try
					}
					return rep, nil
				case <-wait:
				}
				break
			}
		}
		return nil, fmt.Errorf("no answer to %s in four tries", m.MessageType())
	}
	var lat []time.Duration
	dora := func(batch int) {
		t.Helper()
		start := time.Now()
		d, _ := dhcpv4.NewDiscovery(known, pxe(7)...)
		offer, err := try(d)
		if err != nil {
			t.Fatalf("known node after batch %d: %v (server stats %+v)", batch, err, s.Stats())
		}
		req, _ := dhcpv4.NewRequestFromOffer(offer)
		ack, err := try(req)
		if err != nil || ack.MessageType() != dhcpv4.MessageTypeAck {
			t.Fatalf("known node after batch %d: %v %v", batch, ack, err)
		}
		lat = append(lat, time.Since(start))
	}

	settle := func() { time.Sleep(200 * time.Millisecond) }
	settle()
	g0, f0, h0 := runtime.NumGoroutine(), openFDs(t), heapAfterGC()
	dora(0)
	// How long the server took to read a burst, at worst: a server whose
	// sends block stops reading too.
	var slowest time.Duration
	const batch, burst = 300, 25 // a burst stays well inside the socket's buffer
	for i := 0; i < len(ps); i += batch {
		for j := i; j < min(i+batch, len(ps)); j += burst {
			for _, p := range ps[j:min(j+burst, len(ps), i+batch)] {
				if _, err := sender.WriteTo(p.b, server); err != nil {
					t.Fatalf("send %s: %v", p.what, err)
				}
			}
			bt := time.Now()
			waitReceived(t, s, uint64(min(j+burst, len(ps), i+batch))+ownPackets)
			slowest = max(slowest, time.Since(bt))
		}
		dora(i/batch + 1)
	}
	settle() // the last replies on their way
	g1, f1, h1 := runtime.NumGoroutine(), openFDs(t), heapAfterGC()

	waitReceived(t, s, uint64(len(ps))+ownPackets)
	mu.Lock()
	for _, w := range wrong[:min(len(wrong), 20)] {
		t.Error(w)
	}
	if len(wrong) > 20 {
		t.Errorf("and %d more wrong replies", len(wrong)-20)
	}
	mu.Unlock()
	st := s.Stats()
	slices.Sort(lat)
	silent := 0
	for _, p := range ps {
		if p.silent {
			silent++
		}
	}
	t.Logf("%d bad packets, %d of them to draw no reply (%s)", len(ps), silent, counts(ps))
	t.Logf("server stats %+v; %d replies to bad packets and %d to the known node seen on the segment; the slowest burst of %d was read in %s",
		st, replies, own, burst, slowest.Round(time.Microsecond))
	t.Logf("the known node's %d DORAs, one after every %d bad packets: median %s, max %s", len(lat), batch,
		lat[len(lat)/2].Round(time.Microsecond), lat[len(lat)-1].Round(time.Microsecond))
	t.Logf("goroutines %d before, %d after; descriptors %d before, %d after; heap %d KiB before, %d KiB after", g0, g1, f0, f1, h0>>10, h1>>10)

	if want := uint64(len(ps)) + ownPackets; st.Received != want {
		t.Errorf("server received %d packets, want %d", st.Received, want)
	}
	// Overloaded: dropped unread, their worker's queue full under the
	// burst; a client would ask again. Superseded: dropped unread for
	// their client's newer request.
	if sum := st.Malformed + st.Ignored + st.Replied + st.Overloaded + st.Superseded; sum != st.Received {
		t.Errorf("malformed %d + ignored %d + replied %d + overloaded %d + superseded %d = %d of %d received: some packets are unaccounted for",
			st.Malformed, st.Ignored, st.Replied, st.Overloaded, st.Superseded, sum, st.Received)
	}
	// Every reply is broadcast: none may go to a ciaddr the packet did
	// not come from, where no host need answer ARP (see destination).
	if uint64(replies+own) != st.Replied {
		t.Errorf("%d replies seen on the segment, the server sent %d", replies+own, st.Replied)
	}
	if g1 > g0+2 {
		t.Errorf("goroutines grew from %d to %d", g0, g1)
	}
	if f1 > f0+2 {
		t.Errorf("descriptors grew from %d to %d", f0, f1)
	}
	// The leases of eight made-up MACs and of the pool's 51 addresses: a
	// few KiB. A MiB is room for the runtime's own noise.
	if h1 > h0+1<<20 {
		t.Errorf("heap grew from %d KiB to %d KiB", h0>>10, h1>>10)
	}
	client.Close()
	<-readerDone
}

// waitReceived waits until the server has read n packets: a burst is sent
// only once the last one was read, so none is lost to a full socket buffer
// and the counters can be held to account.
func waitReceived(t *testing.T, s *Server, n uint64) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); s.Stats().Received < n; {
		if time.Now().After(deadline) {
			t.Fatalf("the server read %d packets in 10 s, want %d", s.Stats().Received, n)
		}
		time.Sleep(200 * time.Microsecond)
	}
}
