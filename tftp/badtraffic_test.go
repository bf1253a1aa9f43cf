package tftp

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/internal/leakcheck"
)

// badRequest is one packet of the request-port half of the bad traffic: each packet with
// what the server must do with it.
type badRequest struct {
	what string
	b    []byte
	want string // "malformed" (dropped, counted), "silent" (an ERROR: dropped), "error" (answered with an ERROR), "request" (refused)
}

func badRequestPackets(r *rand.Rand) []badRequest {
	junk := func(k int) []byte {
		b := make([]byte, k)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return b
	}
	// As many options as a request of 4096 bytes holds, and more than
	// that: the server reads 4096 bytes of a datagram, and this cut lands
	// inside a name.
	many := func(n int) []byte {
		var opts []Option
		for i := range n {
			opts = append(opts, Option{"x" + strconv.Itoa(i), "1"})
		}
		return rrq(OpRRQ, "f", "octet", opts...)
	}
	over := many(2000)
	for over[maxRequestPacket-1] == 0 {
		over = append([]byte{0, 1, 'g'}, over[2:]...)
	}
	return []badRequest{
		{"zero-length packet", nil, "malformed"},
		{"1-byte packet", []byte{1}, "malformed"},
		{"RRQ opcode alone", []byte{0, 1}, "malformed"},
		{"no NUL", []byte("\x00\x01file"), "malformed"},
		{"no mode", []byte("\x00\x01file\x00"), "malformed"},
		{"empty filename", []byte("\x00\x01\x00octet\x00"), "malformed"},
		{"option without a value", []byte("\x00\x01f\x00octet\x00blksize\x00"), "malformed"},
		{"repeated option", []byte("\x00\x01f\x00octet\x00blksize\x00512\x00BlkSize\x00512\x00"), "malformed"},
		{"empty option name", []byte("\x00\x01f\x00octet\x00\x00512\x00"), "malformed"},
		{"a request cut at 4096 bytes", over, "malformed"},
		{"garbage RRQ without a NUL", append([]byte{0, 1}, bytes.ReplaceAll(junk(300), []byte{0}, []byte{1})...), "malformed"},
		{"ERROR", []byte{0, 5}, "silent"},
		{"ERROR with a message", append([]byte{0, 5, 0, 3}, junk(500)...), "silent"},
		{"DATA to the server", append([]byte{0, 3, 0, 1}, junk(512)...), "error"},
		{"DATA opcode alone", []byte{0, 3}, "error"},
		{"ACK on the request port", ack(1), "error"},
		{"OACK to the server", []byte("\x00\x06blksize\x00512\x00"), "error"},
		{"opcode 0", []byte{0, 0, 1, 2}, "error"},
		{"opcode 7", []byte{0, 7}, "error"},
		{"opcode 65535", []byte{0xff, 0xff, 0}, "error"},
		{"random opcode", append([]byte{0x12 + byte(r.IntN(200)), byte(r.Uint32())}, junk(r.IntN(100))...), "error"},
		{"WRQ", rrq(OpWRQ, "f", "octet", Option{"blksize", "1e9"}), "request"},
		{"mode mail", rrq(OpRRQ, "f", "mail"), "request"},
		{"mode of junk", rrq(OpRRQ, "f", "\xff"+strings.Repeat("z", 20)), "request"},
	}
}

// badOptions are the option sets of the RRQs the misbehaving clients send.
var badOptions = [][]Option{
	{{"blksize", "0"}}, {{"blksize", "7"}}, {{"blksize", "8"}}, {{"blksize", "65464"}}, {{"blksize", "65465"}},
	{{"blksize", "65536"}}, {{"blksize", "1000000000"}}, {{"blksize", "99999999999"}}, {{"blksize", "-1"}},
	{{"blksize", "abc"}}, {{"blksize", ""}}, {{"blksize", " 512"}}, {{"blksize", "0x200"}}, {{"blksize", "1e9"}},
	{{"windowsize", "0"}}, {{"windowsize", "65535"}}, {{"windowsize", "65536"}}, {{"windowsize", "1000000000"}},
	{{"blksize", "9"}, {"windowsize", "64"}}, {{"timeout", "0"}}, {{"timeout", "256"}}, {{"timeout", "99999"}},
	{{"tsize", "-1"}}, {{"tsize", "99999999999999999999"}}, {{"tsize", "0"}, {"blksize", "65464"}, {"windowsize", "2"}},
	{{"multicast", ""}}, {{"x-" + strings.Repeat("a", 500), strings.Repeat("b", 500)}},
	thousandOptions(),
}

// thousandOptions are as many distinct options as fit in a 4096-byte
// request.
func thousandOptions() []Option {
	var o []Option
	for i := 0; len(rrq(OpRRQ, "f", "octet", o...)) < maxRequestPacket-8; i++ {
		o = append(o, Option{strconv.Itoa(i), "1"})
	}
	return o[:len(o)-1]
}

// countingRecorder counts the events: the test's recorder, holding none.
type countingRecorder struct {
	mu sync.Mutex
	// byClient are the transfers the client ended: by its ERROR, or by
	// going away (the server's next send draws a port unreachable).
	events, byClient int
	refused          int            // writes and modes refused at the request
	others           map[string]int // why the other failed transfers ended
}

func (c *countingRecorder) Record(_ context.Context, e boot.Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.events++
	switch {
	case e.Complete:
	case strings.HasPrefix(e.Error, "client error"), e.Error == "client gone":
		c.byClient++
	case e.Error == "access violation: read-only server", strings.HasPrefix(e.Error, "illegal operation: mode"):
		c.refused++
	default:
		if c.others == nil {
			c.others = map[string]int{}
		}
		c.others[e.Error]++
	}
}

func (c *countingRecorder) counts() (events, byClient, refused int, others map[string]int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.events, c.byClient, c.refused, maps.Clone(c.others)
}

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

// badClient is a misbehaving client on a socket of its own: it sends an
// RRQ with bad options, checks what was negotiated, then does one of the
// bad things of its kind, and ends the transfer: with an ERROR, or by
// going away. It returns how many packets it sent and how many of them the
// server must count as malformed.
func badClient(addr netip.AddrPort, conn *net.UDPConn, kind int, opts []Option, mode string) (sent, malformed int, err error) {
	defer conn.Close()
	send := func(b []byte, to netip.AddrPort) {
		conn.WriteToUDPAddrPort(b, to)
		sent++
	}
	buf := make([]byte, 70000)
	read := func() ([]byte, netip.AddrPort, error) {
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, from, err := conn.ReadFromUDPAddrPort(buf)
		return buf[:n], from, err
	}
	send(rrq(OpRRQ, "big", mode, opts...), addr)
	p, tid, err := read()
	if err != nil {
		return sent, 0, fmt.Errorf("no answer to the RRQ: %v", err)
	}
	blksize, window := 512, 1
	switch Opcode(binary.BigEndian.Uint16(p)) {
	case OpOACK:
		f := strings.Split(strings.TrimSuffix(string(p[2:]), "\x00"), "\x00")
		for i := 0; i+1 < len(f); i += 2 {
			v, err := strconv.Atoi(f[i+1])
			switch {
			case err != nil:
				return sent, 0, fmt.Errorf("OACK %s=%q", f[i], f[i+1])
			case f[i] == "blksize" && (v < MinBlockSize || v > MaxBlockSize),
				f[i] == "windowsize" && (v < 1 || v > DefaultMaxWindow),
				f[i] == "timeout" && (v < 1 || v > 5):
				return sent, 0, fmt.Errorf("OACK took %s=%d out of range", f[i], v)
			case f[i] == "blksize":
				blksize = v
			case f[i] == "windowsize":
				window = v
			}
		}
		if kind == 3 {
			return sent, 0, nil // silent: the server finds out on its own
		}
		send(ack(0), tid)
		if p, _, err = read(); err != nil {
			return sent, 0, fmt.Errorf("no DATA after ACK 0: %v", err)
		}
	case OpData:
		if kind == 3 {
			return sent, 0, nil
		}
	default:
		return sent, 0, fmt.Errorf("the RRQ drew %q", p[:min(len(p), 40)])
	}
	if len(p) < 4 || Opcode(binary.BigEndian.Uint16(p)) != OpData || binary.BigEndian.Uint16(p[2:]) != 1 || len(p)-4 > blksize {
		return sent, 0, fmt.Errorf("want DATA 1 of at most %d bytes, got %d bytes %x", blksize, len(p), p[:min(len(p), 4)])
	}
	// The whole first window: the next DATA read is then the server's
	// answer to what this client sends next.
	for k := 1; k < window; k++ {
		if _, _, err := read(); err != nil {
			return sent, 0, fmt.Errorf("window of %d: %v", window, err)
		}
	}
	switch kind {
	case 0: // ACKs of blocks never sent, then the right one
		for _, b := range []uint16{uint16(window + 1), uint16(window + 1000), 65535, 40000} {
			send(ack(b), tid)
		}
		send(ack(uint16(window)), tid)
		p, _, err := read()
		if err != nil {
			return sent, 0, fmt.Errorf("no DATA after the ACK of block %d: %v", window, err)
		}
		if len(p) < 4 || Opcode(binary.BigEndian.Uint16(p)) != OpData || binary.BigEndian.Uint16(p[2:]) != uint16(window+1) {
			return sent, 0, fmt.Errorf("after ACKs of blocks never sent and the ACK of %d: %x, want DATA %d", window, p[:min(len(p), 4)], window+1)
		}
	case 1: // an ERROR mid-transfer, after a window acknowledged
		send(ack(uint16(window)), tid)
		if _, _, err := read(); err != nil {
			return sent, 0, err
		}
	case 2: // junk on the transfer's port
		for _, b := range [][]byte{nil, {0}, {0, 4, 0}, {0, 3, 0, 1, 'x'}, rrq(OpRRQ, "f", "octet"), {0xff, 0xff, 0, 0}, {0, 6, 'a', 0}} {
			send(b, tid)
			malformed++
		}
	case 4: // an ACK from another port: not this transfer's peer
		other, err := net.ListenUDP("udp4", &net.UDPAddr{IP: conn.LocalAddr().(*net.UDPAddr).IP})
		if err != nil {
			return sent, malformed, err
		}
		other.WriteToUDPAddrPort(ack(uint16(window)), tid)
		other.Close()
		sent++
	}
	send(appendError(nil, ErrCodeUndefined, "bad client gives up"), tid)
	return sent, malformed, nil
}

// clientSocket opens a socket on ip at a port none of this test's clients
// used before. A port the kernel picks may be one a vanished client had,
// whose transfer is still running: its RRQ is then a duplicate, dropped,
// and it takes over the old transfer.
func clientSocket(t *testing.T, ip net.IP, next map[string]int) *net.UDPConn {
	t.Helper()
	for {
		port := 30000 + next[ip.String()]
		next[ip.String()]++
		if port > 65535 {
			t.Fatalf("no port left on %s", ip)
		}
		conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: ip, Port: port})
		if err == nil {
			return conn
		}
	}
}

// TestBadTraffic sends thousands of bad TFTP packets from misbehaving
// clients over loopback: garbage and stray opcodes to the request port,
// RRQs with out-of-range and thousands of options, ACKs of blocks never
// sent, junk on the transfers' ports, ERRORs mid-transfer, clients that
// vanish. After each batch a real client fetches a file, which must come
// back whole; its latency is a figure (docs/reliability.md), not an
// assertion. The counters must account for every malformed packet and
// every ERROR, and goroutines, descriptors and heap come back down.
func TestBadTraffic(t *testing.T) {
	// big is over four of the largest blocks: a first window of two of
	// them leaves the transfer running, and fits a socket's buffer.
	small, big := randomBytes(3000, 21), randomBytes(200<<10, 22)
	rec := &countingRecorder{}
	// No retransmit unless a client stalls for a second: each bad client
	// sees the packets it asked for, in order.
	s := &Server{Files: FilesFunc(func(_ context.Context, _ netip.AddrPort, name string) (File, error) {
		if name == "small" {
			return NewBytes(small), nil
		}
		return NewBytes(big), nil
	}), Recorder: rec, Timeout: time.Second, Retries: 2}
	addr := startServer(t, s)
	r := rand.New(rand.NewPCG(7, 7))

	scenarios := 1500
	if os.Getenv("RACKBOOT_SOAK") != "" {
		scenarios = 30000
	}
	const perBatch = 50
	garbage, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 1, 250)})
	if err != nil {
		t.Fatal(err)
	}
	defer garbage.Close()
	errorsBack, bytesBack := 0, 0
	var drained sync.WaitGroup
	drained.Go(func() { // the ERRORs the stray opcodes draw
		buf := make([]byte, 1500)
		for {
			n, _, err := garbage.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if n >= 4 && Opcode(binary.BigEndian.Uint16(buf)) == OpError {
				errorsBack++
				bytesBack += n
			}
		}
	})

	time.Sleep(100 * time.Millisecond)
	g0, f0, h0 := runtime.NumGoroutine(), openFDs(t), heapAfterGC()
	var lat []time.Duration
	packets, wantMalformed, wantRequests, wantRefused, wantErrorsBack := 0, 0, 0, 0, 0
	bytesAnswered := 0 // of the request-port packets that draw an ERROR
	fetch := func(batch int) {
		t.Helper()
		start := time.Now()
		res, err := testClient{}.get(t.Context(), addr, "small")
		if err != nil || !bytes.Equal(res.data, small) {
			t.Fatalf("the real client after batch %d: %v, %d of %d bytes (stats %+v)", batch, err, len(res.data), len(small), s.Stats())
		}
		lat = append(lat, time.Since(start))
		wantRequests++
	}
	fetch(0)
	nextPort := map[string]int{}
	reqs := badRequestPackets(r)
	for i := 0; i < scenarios; i += perBatch {
		for j := i; j < min(i+perBatch, scenarios); j++ {
			// Packets to the request port between the clients, from a
			// source of their own.
			for range 2 {
				q := reqs[r.IntN(len(reqs))]
				garbage.WriteToUDPAddrPort(q.b, addr)
				packets++
				switch q.want {
				case "malformed":
					wantMalformed++
				case "error":
					wantErrorsBack++
					bytesAnswered += len(q.b)
				case "request":
					bytesAnswered += len(q.b)
					wantRequests++
					wantRefused++
					wantErrorsBack++
				}
			}
			conn := clientSocket(t, net.IPv4(127, 0, 2, byte(1+j%64)), nextPort)
			mode := "octet"
			if j%5 == 0 {
				mode = "netascii"
			}
			sent, malformed, err := badClient(addr, conn, j%5, badOptions[j%len(badOptions)], mode)
			if err != nil {
				t.Fatalf("bad client %d (kind %d, options %.60v): %v", j, j%5, badOptions[j%len(badOptions)], err)
			}
			packets += sent
			wantMalformed += malformed
			wantRequests++
		}
		fetch(i/perBatch + 1)
	}

	// The last transfers end: a vanished client's at the server's next
	// send, a second after its last.
	settled := func() bool {
		events, _, _, _ := rec.counts()
		return s.Stats().Malformed >= uint64(wantMalformed) && events >= wantRequests && runtime.NumGoroutine() <= g0+2
	}
	for deadline := time.Now().Add(10 * time.Second); !settled() && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	g1, f1, h1 := runtime.NumGoroutine(), openFDs(t), heapAfterGC()
	garbage.Close()
	drained.Wait()
	st := s.Stats()
	events, byClient, refused, others := rec.counts()
	slices.Sort(lat)
	t.Logf("%d bad clients and %d packets in all, %d of them malformed, %d that must draw an ERROR; server stats %+v; %d events: %d transfers ended by their client, %d requests refused, %d completed, others %v",
		scenarios, packets, wantMalformed, wantErrorsBack, st, events, byClient, refused, st.Completed, others)
	t.Logf("the real client's %d fetches of a %d-byte file, one after every %d bad clients: median %s, max %s", len(lat), len(small), perBatch,
		lat[len(lat)/2].Round(time.Microsecond), lat[len(lat)-1].Round(time.Microsecond))
	t.Logf("the %d request-port packets answered with an ERROR (stray opcodes, writes, bad modes): %d bytes in, %d bytes of ERROR out (%.1fx)",
		wantErrorsBack, bytesAnswered, bytesBack, float64(bytesBack)/float64(max(bytesAnswered, 1)))
	t.Logf("goroutines %d before, %d after; descriptors %d before, %d after; heap %d KiB before, %d KiB after", g0, g1, f0, f1, h0>>10, h1>>10)

	if st.Malformed != uint64(wantMalformed) {
		t.Errorf("%d packets counted malformed, want %d", st.Malformed, wantMalformed)
	}
	// The real client resends its RRQ only after 2 s without an answer;
	// each resend is one more request.
	if st.Requests < uint64(wantRequests) || st.Requests > uint64(wantRequests+len(lat)) {
		t.Errorf("%d requests counted, want %d", st.Requests, wantRequests)
	}
	if events != wantRequests {
		t.Errorf("%d events, want one for each of the %d requests", events, wantRequests)
	}
	if byClient != scenarios || refused != wantRefused || len(others) > 0 {
		t.Errorf("%d of the %d bad clients' transfers ended by the client, %d of %d requests refused; others ended %v",
			byClient, scenarios, refused, wantRefused, others)
	}
	if st.Completed != uint64(len(lat)) {
		t.Errorf("%d transfers completed, want the real client's %d", st.Completed, len(lat))
	}
	if st.Busy != 0 {
		t.Errorf("%d requests dropped as over a cap", st.Busy)
	}
	if errorsBack != wantErrorsBack {
		t.Errorf("%d ERRORs came back to the request port's packets, want %d", errorsBack, wantErrorsBack)
	}
	if g1 > g0+2 {
		t.Errorf("goroutines grew from %d to %d", g0, g1)
	}
	if f1 > f0+2 {
		t.Errorf("descriptors grew from %d to %d", f0, f1)
	}
	// Transfers end and take their buffers (at most a 64 KiB block each)
	// with them.
	if h1 > h0+1<<20 {
		t.Errorf("heap grew from %d KiB to %d KiB", h0>>10, h1>>10)
	}
}
