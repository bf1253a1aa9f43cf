package tftp

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rackboot/rackboot/boot"
)

// testClient is a TFTP client for tests, written from the RFCs apart from
// the server's code so that the two do not share mistakes. It acts as an
// RFC 7440 receiver: it acknowledges every windowsize blocks, and on a
// block out of order it acknowledges the last block it has in order.
type testClient struct {
	mode    string   // "octet" when empty
	options []Option // sent as given

	// Hooks that make the client misbehave. n counts calls from 0.
	dropAck  func(block uint16, n int) bool          // do not send this ACK
	delayAck func(block uint16, n int) time.Duration // send this ACK late
	dropData func(block uint16, n int) bool          // act as if this DATA never came
	dupAcks  bool                                    // send every ACK twice

	wait time.Duration // before re-sending the last ACK; 2s when zero
}

type clientResult struct {
	data        []byte
	oack        []Option
	dataPackets int // DATA packets taken in, duplicates included
}

// wireError is an ERROR packet the server sent.
type wireError struct {
	code ErrorCode
	msg  string
}

func (e *wireError) Error() string { return fmt.Sprintf("tftp error %d: %s", e.code, e.msg) }

func rrq(op Opcode, file, mode string, opts ...Option) []byte {
	b := binary.BigEndian.AppendUint16(nil, uint16(op))
	b = append(append(b, file...), 0)
	b = append(append(b, mode...), 0)
	for _, o := range opts {
		b = append(append(b, o.Name...), 0)
		b = append(append(b, o.Value...), 0)
	}
	return b
}

func ack(block uint16) []byte {
	return binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(nil, uint16(OpAck)), block)
}

func (c testClient) get(ctx context.Context, server netip.AddrPort, file string) (clientResult, error) {
	var res clientResult
	network, local := "udp4", net.IPv4(127, 0, 0, 1)
	if server.Addr().Is6() && !server.Addr().Is4In6() {
		network, local = "udp6", net.IPv6loopback
	}
	conn, err := net.ListenUDP(network, &net.UDPAddr{IP: local})
	if err != nil {
		return res, err
	}
	defer conn.Close()
	var wg sync.WaitGroup
	defer wg.Wait()
	mode := c.mode
	if mode == "" {
		mode = "octet"
	}
	wait := c.wait
	if wait == 0 {
		wait = 2 * time.Second
	}
	req := rrq(OpRRQ, file, mode, c.options...)
	if _, err := conn.WriteToUDPAddrPort(req, server); err != nil {
		return res, err
	}
	var tid netip.AddrPort
	blksize, window := 512, 1
	expected := uint16(1)
	inWindow, acks, datas, timeouts := 0, 0, 0, 0
	oooAcked := false
	sendAck := func(block uint16) {
		n := acks
		acks++
		inWindow = 0
		if c.dropAck != nil && c.dropAck(block, n) {
			return
		}
		copies := 1
		if c.dupAcks {
			copies = 2
		}
		if c.delayAck != nil {
			if d := c.delayAck(block, n); d > 0 {
				to := tid
				wg.Go(func() {
					time.Sleep(d)
					conn.WriteToUDPAddrPort(ack(block), to)
				})
				return
			}
		}
		for range copies {
			conn.WriteToUDPAddrPort(ack(block), tid)
		}
	}
	buf := make([]byte, 70000)
	for {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		conn.SetReadDeadline(time.Now().Add(wait))
		n, from, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				return res, err
			}
			timeouts++
			if timeouts > 5 {
				return res, fmt.Errorf("client timed out at block %d", expected)
			}
			if !tid.IsValid() {
				conn.WriteToUDPAddrPort(req, server)
			} else {
				sendAck(expected - 1)
			}
			continue
		}
		if tid.IsValid() && from != tid {
			continue
		}
		tid = from
		if n < 2 {
			return res, fmt.Errorf("short packet of %d bytes", n)
		}
		p := buf[:n]
		switch Opcode(binary.BigEndian.Uint16(p)) {
		case OpError:
			if n < 4 {
				return res, fmt.Errorf("short error packet")
			}
			return res, &wireError{code: ErrorCode(binary.BigEndian.Uint16(p[2:])), msg: strings.TrimRight(string(p[4:]), "\x00")}
		case OpOACK:
			fields := strings.Split(strings.TrimSuffix(string(p[2:]), "\x00"), "\x00")
			if len(fields)%2 != 0 {
				return res, fmt.Errorf("odd OACK %q", p[2:])
			}
			res.oack = nil
			for i := 0; i < len(fields); i += 2 {
				res.oack = append(res.oack, Option{fields[i], fields[i+1]})
				v, _ := strconv.Atoi(fields[i+1])
				switch fields[i] {
				case "blksize":
					blksize = v
				case "windowsize":
					window = v
				}
			}
			sendAck(0)
		case OpData:
			block := binary.BigEndian.Uint16(p[2:])
			nd := datas
			datas++
			if c.dropData != nil && c.dropData(block, nd) {
				continue
			}
			res.dataPackets++
			if block != expected {
				if !oooAcked {
					oooAcked = true
					sendAck(expected - 1)
				}
				continue
			}
			oooAcked = false
			res.data = append(res.data, p[4:]...)
			expected++
			inWindow++
			if n-4 < blksize {
				sendAck(block)
				return res, nil
			}
			if inWindow == window {
				sendAck(block)
			}
		default:
			return res, fmt.Errorf("unexpected opcode %d", binary.BigEndian.Uint16(p))
		}
	}
}

// startServer serves s on 127.0.0.1 at a port the kernel picks until the
// test ends, and checks that Serve then returns nil.
func startServer(t testing.TB, s *Server) netip.AddrPort {
	t.Helper()
	return startServerAt(t, s, "udp4", net.IPv4(127, 0, 0, 1))
}

// startServerAt is startServer on another loopback address (::1).
func startServerAt(t testing.TB, s *Server, network string, ip net.IP) netip.AddrPort {
	t.Helper()
	conn, err := net.ListenUDP(network, &net.UDPAddr{IP: ip})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, conn) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		conn.Close()
	})
	return conn.LocalAddr().(*net.UDPAddr).AddrPort()
}

// eventLog is a boot.Recorder that keeps what it gets.
type eventLog struct {
	mu     sync.Mutex
	events []boot.Event
}

func (l *eventLog) Record(_ context.Context, e boot.Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, e)
}

// wait returns the events once there are n of them: the server records a
// transfer after the client has its last block, so a test must wait.
func (l *eventLog) wait(t testing.TB, n int) []boot.Event {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		l.mu.Lock()
		got := append([]boot.Event(nil), l.events...)
		l.mu.Unlock()
		if len(got) >= n || time.Now().After(deadline) {
			if len(got) != n {
				t.Fatalf("got %d events, want %d: %+v", len(got), n, got)
			}
			return got
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// writeTree creates files (name → content) under a new temporary root.
func writeTree(t testing.TB, files map[string][]byte) string {
	t.Helper()
	root := t.TempDir()
	for name, b := range files {
		p := root + "/" + name
		if err := os.MkdirAll(p[:strings.LastIndexByte(p, '/')], 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}
