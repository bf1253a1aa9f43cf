package tftp

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rackboot/rackboot/boot"
)

// Opcodes (RFC 1350, RFC 2347).
const (
	opRRQ   = 1
	opWRQ   = 2
	opDATA  = 3
	opACK   = 4
	opERROR = 5
	opOACK  = 6
)

// Error codes.
const (
	errUndefined    = 0
	errNotFound     = 1
	errAccess       = 2
	errIllegalOp    = 4
	errOptionRefuse = 8
)

// Request is a parsed read or write request.
type Request struct {
	Op       uint16
	Filename string
	Mode     string
	Options  map[string]string // lower-case names
}

// ParseRequest parses an RRQ or WRQ packet.
func ParseRequest(b []byte) (Request, error) {
	if len(b) < 4 {
		return Request{}, errors.New("request too short")
	}
	r := Request{Op: binary.BigEndian.Uint16(b), Options: map[string]string{}}
	if r.Op != opRRQ && r.Op != opWRQ {
		return r, fmt.Errorf("opcode %d is not a request", r.Op)
	}
	fields := strings.Split(string(b[2:]), "\x00")
	if len(fields) < 3 || fields[len(fields)-1] != "" {
		return r, errors.New("request fields not NUL-terminated")
	}
	fields = fields[:len(fields)-1]
	r.Filename, r.Mode = fields[0], strings.ToLower(fields[1])
	if r.Filename == "" {
		return r, errors.New("empty file name")
	}
	opts := fields[2:]
	if len(opts)%2 != 0 {
		return r, errors.New("option without a value")
	}
	for i := 0; i < len(opts); i += 2 {
		r.Options[strings.ToLower(opts[i])] = opts[i+1]
	}
	return r, nil
}

// Stats counts what the server did.
type Stats struct {
	Requests, Completed, Bytes, Malformed, Errors uint64
}

// Server is a read-only TFTP server. Zero values are defaults.
type Server struct {
	Files    Files
	Recorder boot.Recorder
	Logger   *slog.Logger
	// MaxBlockSize caps the blksize a client may ask for (default 65464,
	// RFC 2348's maximum); MaxWindowSize caps windowsize (default 64).
	MaxBlockSize, MaxWindowSize int
	// Timeout is the retransmission timeout unless the client asks for
	// another (default 1s); Retries how many times a window is resent
	// before the transfer is given up (default 5).
	Timeout time.Duration
	Retries int

	requests, completed, bytes, malformed, errs atomic.Uint64
}

// Stats returns the counters.
func (s *Server) Stats() Stats {
	return Stats{Requests: s.requests.Load(), Completed: s.completed.Load(), Bytes: s.bytes.Load(),
		Malformed: s.malformed.Load(), Errors: s.errs.Load()}
}

func (s *Server) log() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}

// Serve answers requests on conn until ctx ends, then waits for running
// transfers to stop and returns nil. Each transfer runs on a socket of its
// own on the same address (RFC 1350's transfer identifiers).
func (s *Server) Serve(ctx context.Context, conn net.PacketConn) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	local, _ := conn.LocalAddr().(*net.UDPAddr)
	var wg sync.WaitGroup
	defer wg.Wait()
	buf := make([]byte, 2048)
	for {
		n, peer, err := conn.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("tftp read: %w", err)
		}
		pa, ok := peer.(*net.UDPAddr)
		if !ok {
			continue
		}
		req, err := ParseRequest(buf[:n])
		if err != nil {
			s.malformed.Add(1)
			s.log().Debug("tftp dropped a malformed packet", "peer", peer.String(), "err", err)
			if n >= 2 && binary.BigEndian.Uint16(buf) > opOACK {
				s.sendError(conn, peer, errIllegalOp, "illegal TFTP operation")
			}
			continue
		}
		s.requests.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.transfer(ctx, local, pa, req)
		}()
	}
}

func (s *Server) sendError(conn net.PacketConn, to net.Addr, code uint16, msg string) {
	s.errs.Add(1)
	b := make([]byte, 4, 5+len(msg))
	binary.BigEndian.PutUint16(b, opERROR)
	binary.BigEndian.PutUint16(b[2:], code)
	b = append(append(b, msg...), 0)
	conn.WriteTo(b, to)
}

func (s *Server) record(ctx context.Context, e boot.Event) {
	if s.Recorder != nil {
		e.Proto, e.Kind, e.Time = "tftp", "file", time.Now()
		s.Recorder.Record(ctx, e)
	}
}

// transfer is one read request from start to end.
func (s *Server) transfer(ctx context.Context, local, peer *net.UDPAddr, req Request) {
	laddr := &net.UDPAddr{IP: local.IP}
	conn, err := net.ListenUDP("udp4", laddr)
	if err != nil {
		s.log().Warn("tftp transfer socket", "peer", peer.String(), "err", err)
		return
	}
	defer conn.Close()
	client := netip.AddrPortFrom(addrOf(peer.IP), uint16(peer.Port))
	ev := boot.Event{IP: client.Addr(), File: req.Filename, Size: -1}
	log := s.log().With("peer", peer.String(), "file", req.Filename)
	fail := func(code uint16, msg string) {
		s.sendError(conn, peer, code, msg)
		ev.Error = msg
		s.record(ctx, ev)
		log.Info("tftp refused", "err", msg)
	}
	if req.Op == opWRQ {
		fail(errAccess, "access violation: read-only server")
		return
	}
	if req.Mode != "octet" && req.Mode != "netascii" {
		fail(errIllegalOp, "unsupported mode "+req.Mode)
		return
	}
	f, err := s.Files.Open(ctx, client, req.Filename)
	if err != nil {
		switch {
		case errors.Is(err, ErrOutsideRoot):
			fail(errAccess, "access violation: "+req.Filename)
		case errors.Is(err, fs.ErrNotExist):
			fail(errNotFound, "file not found: "+req.Filename)
		default:
			fail(errUndefined, err.Error())
		}
		return
	}
	defer f.Close()
	ev.Size = f.Size()

	t := &tx{s: s, conn: conn, peer: peer, file: f, blksize: 512, window: 1, timeout: s.Timeout}
	if t.timeout <= 0 {
		t.timeout = time.Second
	}
	oack := t.negotiate(req.Options)
	ev.BlockSize, ev.WindowSize = t.blksize, t.window
	if len(oack) > 0 {
		ok, probe := t.sendOACK(oack)
		if probe {
			log.Debug("tftp size probe", "size", f.Size())
			return // firmware asks for tsize, then aborts and asks again
		}
		if !ok {
			ev.Error = "no acknowledgement of the options"
			s.record(ctx, ev)
			return
		}
	}
	start := time.Now()
	sent, err := t.send(ctx)
	ev.Bytes = sent
	s.bytes.Add(uint64(sent))
	if err != nil {
		ev.Error = err.Error()
		log.Info("tftp transfer failed", "bytes", sent, "err", err)
	} else {
		ev.Complete = true
		s.completed.Add(1)
		log.Info("tftp sent", "bytes", sent, "blksize", t.blksize, "windowsize", t.window, "seconds", time.Since(start).Seconds())
	}
	s.record(ctx, ev)
}

func addrOf(ip net.IP) netip.Addr {
	a, _ := netip.AddrFromSlice(ip)
	return a.Unmap()
}

type tx struct {
	s       *Server
	conn    *net.UDPConn
	peer    *net.UDPAddr
	file    File
	blksize int
	window  int
	timeout time.Duration
}

func (t *tx) retries() int {
	if t.s.Retries > 0 {
		return t.s.Retries
	}
	return 5
}

// negotiate applies the options the client asked for and returns the
// OACK's option list (empty: plain RFC 1350).
func (t *tx) negotiate(opts map[string]string) []string {
	var oack []string
	if v, ok := opts["blksize"]; ok {
		if n, err := strconv.Atoi(v); err == nil && n >= 8 {
			max := t.s.MaxBlockSize
			if max <= 0 || max > 65464 {
				max = 65464
			}
			t.blksize = min(n, max)
			oack = append(oack, "blksize", strconv.Itoa(t.blksize))
		}
	}
	if v, ok := opts["windowsize"]; ok {
		if n, err := strconv.Atoi(v); err == nil && n >= 1 {
			max := t.s.MaxWindowSize
			if max <= 0 {
				max = 64
			}
			t.window = min(n, max, 65535)
			oack = append(oack, "windowsize", strconv.Itoa(t.window))
		}
	}
	if v, ok := opts["timeout"]; ok {
		if n, err := strconv.Atoi(v); err == nil && n >= 1 && n <= 255 {
			t.timeout = time.Duration(n) * time.Second
			oack = append(oack, "timeout", v)
		}
	}
	if _, ok := opts["tsize"]; ok {
		oack = append(oack, "tsize", strconv.FormatInt(t.file.Size(), 10))
	}
	return oack
}

// sendOACK sends the option acknowledgement until the client ACKs block
// 0. probe reports a client that answered with an error instead: UEFI and
// iPXE ask for tsize that way before the real request.
func (t *tx) sendOACK(oack []string) (ok, probe bool) {
	b := []byte{0, opOACK}
	for _, o := range oack {
		b = append(append(b, o...), 0)
	}
	buf := make([]byte, 1024)
	for try := 0; try <= t.retries(); try++ {
		if _, err := t.conn.WriteToUDP(b, t.peer); err != nil {
			return false, false
		}
		deadline := time.Now().Add(t.timeout)
		for {
			t.conn.SetReadDeadline(deadline)
			n, from, err := t.conn.ReadFromUDP(buf)
			if err != nil {
				break // timeout: resend
			}
			if !from.IP.Equal(t.peer.IP) || from.Port != t.peer.Port || n < 4 {
				continue
			}
			switch binary.BigEndian.Uint16(buf) {
			case opACK:
				if binary.BigEndian.Uint16(buf[2:]) == 0 {
					return true, false
				}
			case opERROR:
				return false, true
			}
		}
	}
	return false, false
}

// send streams the file in windows of blocks and returns the bytes the
// client acknowledged.
func (t *tx) send(ctx context.Context) (int64, error) {
	size := t.file.Size()
	last := uint64(size/int64(t.blksize)) + 1 // the final block is short, maybe empty
	pkt := make([]byte, 4+t.blksize)
	ackBuf := make([]byte, 1024)
	var acked uint64 // blocks the client has
	tries := 0
	for acked < last {
		if ctx.Err() != nil {
			return t.bytes(acked, size), ctx.Err()
		}
		end := min(acked+uint64(t.window), last)
		for blk := acked + 1; blk <= end; blk++ {
			off := int64(blk-1) * int64(t.blksize)
			n, err := t.file.ReadAt(pkt[4:], off)
			if n < t.blksize && err == nil && off+int64(n) < size {
				return t.bytes(acked, size), fmt.Errorf("short read at %d", off)
			}
			binary.BigEndian.PutUint16(pkt, opDATA)
			binary.BigEndian.PutUint16(pkt[2:], uint16(blk))
			if _, err := t.conn.WriteToUDP(pkt[:4+n], t.peer); err != nil {
				return t.bytes(acked, size), fmt.Errorf("send block %d: %w", blk, err)
			}
		}
		progressed := false
		deadline := time.Now().Add(t.timeout)
		for !progressed {
			t.conn.SetReadDeadline(deadline)
			n, from, err := t.conn.ReadFromUDP(ackBuf)
			if err != nil {
				break
			}
			if !from.IP.Equal(t.peer.IP) || from.Port != t.peer.Port || n < 4 {
				continue
			}
			switch binary.BigEndian.Uint16(ackBuf) {
			case opERROR:
				msg := strings.TrimRight(string(ackBuf[4:n]), "\x00")
				return t.bytes(acked, size), fmt.Errorf("client aborted: %s", msg)
			case opACK:
				got := binary.BigEndian.Uint16(ackBuf[2:])
				// Unwrap the 16-bit block number against the window
				// in flight; an ACK outside it is a stale duplicate.
				for blk := acked; blk <= end; blk++ {
					if uint16(blk) == got {
						if blk > acked {
							acked, progressed = blk, true
						} else if blk == acked && end > acked {
							// RFC 7440: an ACK of an earlier block
							// means the rest of the window was lost.
							progressed = true
						}
						break
					}
				}
			}
		}
		if progressed {
			tries = 0
			continue
		}
		tries++
		if tries > t.retries() {
			return t.bytes(acked, size), fmt.Errorf("no acknowledgement after block %d (%d tries)", acked, tries)
		}
	}
	return size, nil
}

func (t *tx) bytes(blocks uint64, size int64) int64 {
	return min(int64(blocks)*int64(t.blksize), size)
}
