package dhcp

import (
	"context"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/rackboot/rackboot/lease"
)

// chanConn is a net.PacketConn whose packets come from a channel, all
// from one relay, and whose replies are kept in the order written.
type chanConn struct {
	in   chan []byte
	peer net.Addr
	once sync.Once
	stop chan struct{} // closed by a past read deadline: Serve's shutdown

	mu  sync.Mutex
	out []*dhcpv4.DHCPv4
}

func newChanConn() *chanConn {
	return &chanConn{in: make(chan []byte, 1024), stop: make(chan struct{}),
		peer: &net.UDPAddr{IP: net.ParseIP("10.5.0.1"), Port: 67}}
}

func (c *chanConn) ReadFrom(b []byte) (int, net.Addr, error) {
	select {
	case p := <-c.in:
		return copy(b, p), c.peer, nil
	case <-c.stop:
		return 0, nil, os.ErrDeadlineExceeded
	}
}

func (c *chanConn) WriteTo(b []byte, _ net.Addr) (int, error) {
	m, err := dhcpv4.FromBytes(b)
	if err != nil {
		return 0, err
	}
	c.mu.Lock()
	c.out = append(c.out, m)
	c.mu.Unlock()
	return len(b), nil
}

func (c *chanConn) SetReadDeadline(t time.Time) error {
	if t.Before(time.Now()) {
		c.once.Do(func() { close(c.stop) })
	}
	return nil
}

func (c *chanConn) Close() error                     { return nil }
func (c *chanConn) LocalAddr() net.Addr              { return &net.UDPAddr{IP: net.ParseIP("10.0.0.1"), Port: 67} }
func (c *chanConn) SetDeadline(t time.Time) error    { return c.SetReadDeadline(t) }
func (c *chanConn) SetWriteDeadline(time.Time) error { return nil }

// watchedLeases checks that no two Allocates of one MAC ever run at
// once, and notes how many of different MACs did.
type watchedLeases struct {
	Leases
	hold time.Duration

	mu                 sync.Mutex
	busy               map[string]bool
	now, most, overlap int
}

func (w *watchedLeases) Allocate(ctx context.Context, subnet netip.Prefix, first, last netip.Addr, mac net.HardwareAddr, want netip.Addr, reserved []netip.Addr, expires time.Time) (lease.Lease, error) {
	w.mu.Lock()
	if w.busy[mac.String()] {
		w.overlap++
	}
	w.busy[mac.String()] = true
	w.now++
	w.most = max(w.most, w.now)
	w.mu.Unlock()
	time.Sleep(w.hold) // a commit's wait for the disk
	defer func() {
		w.mu.Lock()
		w.busy[mac.String()] = false
		w.now--
		w.mu.Unlock()
	}()
	return w.Leases.Allocate(ctx, subnet, first, last, mac, want, reserved, expires)
}

// serveAll runs s on a chanConn until every packet sent was handled, then
// stops it and waits for Serve to return.
func serveAll(t *testing.T, s *Server, packets [][]byte) *chanConn {
	t.Helper()
	c := newChanConn()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, c) }()
	for _, p := range packets {
		c.in <- p
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		st := s.Stats()
		if st.Replied+st.Ignored+st.Malformed+st.Overloaded+st.Superseded == uint64(len(packets)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("handled %+v of %d packets", st, len(packets))
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve: %v", err)
	}
	return c
}

// TestServeOneClientInOrder checks the worker pool: clients are handled
// at once, but the packets of one client one after another, in order; of
// a client's DISCOVERs still waiting only the newest is answered.
func TestServeOneClientInOrder(t *testing.T) {
	s, mem := newServer(ModeAuthoritative)
	w := &watchedLeases{Leases: mem, hold: time.Millisecond, busy: map[string]bool{}}
	const clients, each = 20, 5
	// Queues long enough for every packet: the test sends them all at
	// once, faster than any client would.
	s.Leases, s.Workers, s.UnknownRate, s.queueLen = w, 8, -1, clients*each
	var packets [][]byte
	for j := range each {
		for i := range clients {
			m := discover(t, net.HardwareAddr{0x02, 0, 0, 0, 0, byte(i)}, dhcpv4.WithRelay(net.ParseIP("10.5.0.1")))
			m.TransactionID = dhcpv4.TransactionID{0, 0, byte(i), byte(j)}
			packets = append(packets, m.ToBytes())
		}
	}
	c := serveAll(t, s, packets)
	if st := s.Stats(); st.Replied+st.Superseded != clients*each || st.Replied < clients {
		t.Fatalf("stats %+v: want %d replies or superseded, at least one a client", st, clients*each)
	}
	if w.overlap != 0 {
		t.Errorf("%d times one client's requests were handled at once", w.overlap)
	}
	if w.most < 2 {
		t.Errorf("at most %d requests handled at once: no concurrency", w.most)
	}
	last := map[string]int{}
	for _, r := range c.out {
		mac, seq := r.ClientHWAddr.String(), int(r.TransactionID[3])
		if prev, ok := last[mac]; ok && seq <= prev {
			t.Errorf("%s: reply %d after reply %d", mac, seq, prev)
		}
		last[mac] = seq
	}
	for mac, seq := range last {
		if seq != each-1 {
			t.Errorf("%s: last reply %d, want its newest DISCOVER (%d) answered", mac, seq, each-1)
		}
	}
	if len(last) != clients {
		t.Errorf("%d clients answered, want %d", len(last), clients)
	}
}

// TestServeUnknownRateConcurrent checks that the unknown-client limit
// holds under the worker pool: exactly the burst is answered.
func TestServeUnknownRateConcurrent(t *testing.T) {
	s, _ := newServer(ModeAuthoritative)
	now := time.Now()
	s.Now = func() time.Time { return now } // no refill during the test
	s.UnknownRate, s.UnknownBurst, s.Workers, s.queueLen = 10, 10, 16, 50
	var packets [][]byte
	for i := range 50 {
		packets = append(packets, discover(t, net.HardwareAddr{0x02, 0, 0, 1, 0, byte(i)}, dhcpv4.WithRelay(net.ParseIP("10.5.0.1"))).ToBytes())
	}
	serveAll(t, s, packets)
	if st := s.Stats(); st.Replied != 10 || st.Throttled != 40 {
		t.Errorf("stats %+v: want 10 replied, 40 throttled", st)
	}
}

// blockingLeases holds every Allocate until release is closed.
type blockingLeases struct {
	Leases
	entered  chan struct{}
	release  chan struct{}
	finished atomic.Bool
}

func (b *blockingLeases) Allocate(ctx context.Context, subnet netip.Prefix, first, last netip.Addr, mac net.HardwareAddr, want netip.Addr, reserved []netip.Addr, expires time.Time) (lease.Lease, error) {
	close(b.entered)
	<-b.release
	defer b.finished.Store(true)
	return b.Leases.Allocate(ctx, subnet, first, last, mac, want, reserved, expires)
}

// TestServeWaitsForWorkers checks that Serve returns only once the
// request a worker is handling is done.
func TestServeWaitsForWorkers(t *testing.T) {
	s, mem := newServer(ModeAuthoritative)
	b := &blockingLeases{Leases: mem, entered: make(chan struct{}), release: make(chan struct{})}
	s.Leases = b
	c := newChanConn()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		err := s.Serve(ctx, c)
		if !b.finished.Load() {
			t.Error("Serve returned while a worker was still handling a request")
		}
		done <- err
	}()
	c.in <- discover(t, mac1, pxe(7)...).ToBytes()
	<-b.entered
	cancel()
	select {
	case err := <-done:
		t.Fatalf("Serve returned (%v) with a request in a worker's hands", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(b.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestServeDropsStalePackets checks that a packet that waited in its
// worker's queue past maxQueueWait is dropped and counted, not answered
// late.
func TestServeDropsStalePackets(t *testing.T) {
	s, mem := newServer(ModeAuthoritative)
	b := &blockingLeases{Leases: mem, entered: make(chan struct{}), release: make(chan struct{})}
	s.Leases = b
	c := newChanConn()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, c) }()
	c.in <- discover(t, mac1, pxe(7)...).ToBytes()
	<-b.entered
	// Queued behind the first, on the same worker: the same client.
	c.in <- discover(t, mac1, pxe(7)...).ToBytes()
	for s.Stats().Received < 2 {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(maxQueueWait + 100*time.Millisecond)
	b.entered = make(chan struct{}) // the second, if run, must not close the first's
	close(b.release)
	deadline := time.Now().Add(10 * time.Second)
	for st := s.Stats(); st.Replied+st.Overloaded < 2; st = s.Stats() {
		if time.Now().After(deadline) {
			t.Fatalf("stats %+v", st)
		}
		time.Sleep(time.Millisecond)
	}
	if st := s.Stats(); st.Replied != 1 || st.Overloaded != 1 {
		t.Errorf("stats %+v: want the first answered, the stale second dropped", st)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
