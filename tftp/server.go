// Package tftp is rackboot's read-only TFTP server. It serves boot loaders
// from a directory and generated files (per-client GRUB configs) with the
// blksize, tsize and timeout options (RFC 2347, 2348, 2349) and windowed
// transfers (RFC 7440), since 512-byte lock-step transfers are what make
// PXE slow. It refuses every write and every path that leaves its root, and
// reports each transfer as a boot.Event.
package tftp

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"

	"github.com/rackboot/rackboot/boot"
)

// Defaults and limits of the negotiated options.
const (
	DefaultBlockSize  = 512   // RFC 1350, when the client asks for no blksize
	MinBlockSize      = 8     // RFC 2348
	MaxBlockSize      = 65464 // RFC 2348
	DefaultMaxWindow  = 64
	DefaultTimeout    = time.Second
	DefaultRetries    = 5
	DefaultMaxTimeout = 5 * time.Second
	// DefaultMaxTransfers and DefaultMaxPerSource bound the transfers
	// running at once, overall and from one IP address.
	DefaultMaxTransfers = 1024
	DefaultMaxPerSource = 16
	maxRequestPacket    = 4096
)

// Server is a read-only TFTP server. The zero value of every field but
// Files means its default.
type Server struct {
	// Files answers read requests; it gets the path after CleanPath.
	Files Files
	// Recorder, when set, gets one event per request at its end:
	// transfers, refusals and failures alike.
	Recorder boot.Recorder
	// Logger logs requests and transfers with keys peer and file; nil
	// discards.
	Logger *slog.Logger
	// MaxBlockSize caps the blksize a client may negotiate (default and
	// upper bound 65464, RFC 2348's maximum). Clients that ask for no
	// blksize get 512-byte blocks regardless.
	MaxBlockSize int
	// MaxWindowSize caps the windowsize a client may negotiate (default
	// 64): that many blocks are sent before waiting for an ACK.
	MaxWindowSize int
	// Timeout is how long to wait for an ACK before sending the window
	// again (default 1s), unless the client negotiates its own timeout.
	Timeout time.Duration
	// Retries is how many times a window (or OACK) is sent again before
	// the transfer is given up (default 5). Until the client has
	// acknowledged something, once: a request from a spoofed source
	// never answers, and each retransmit is traffic aimed at whoever the
	// source names.
	Retries int
	// MaxTimeout is the longest timeout option a client may negotiate
	// (default 5s; RFC 2349 allows 255s); a longer one is left out of the
	// OACK and the server's Timeout holds. It bounds how long a silent
	// transfer lives: Timeout (or the client's) times Retries+1.
	MaxTimeout time.Duration
	// MaxTransfers and MaxPerSource cap the transfers running at once,
	// overall (default 1024) and from one IP address (default 16).
	// Requests over a cap are dropped and counted; the client retries.
	MaxTransfers, MaxPerSource int

	requests, completed, bytes, malformed, errs, retransmits, busy atomic.Uint64
	pollers                                                        atomic.Int64 // transfers in poll mode
}

// Stats counts what a Server has done since it was created.
type Stats struct {
	Requests    uint64 // read and write requests received
	Completed   uint64 // transfers whose last block the client acknowledged
	Bytes       uint64 // file bytes the clients acknowledged
	Malformed   uint64 // packets dropped because they could not be parsed
	Errors      uint64 // ERROR packets sent
	Retransmits uint64 // windows and OACKs sent again after a timeout
	Busy        uint64 // requests dropped because a transfer cap was reached
}

// Stats returns the server's counters.
func (s *Server) Stats() Stats {
	return Stats{
		Requests:    s.requests.Load(),
		Completed:   s.completed.Load(),
		Bytes:       s.bytes.Load(),
		Malformed:   s.malformed.Load(),
		Errors:      s.errs.Load(),
		Retransmits: s.retransmits.Load(),
		Busy:        s.busy.Load(),
	}
}

func (s *Server) log() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}

// Serve answers requests arriving on conn, a UDP socket (port 69 in
// production), until ctx ends; it then waits for running transfers to stop
// and returns nil. Each transfer runs on a socket of its own, bound to
// conn's local IP and an ephemeral port (RFC 1350's transfer identifier),
// so conn should be bound to the address clients use rather than to the
// unspecified address. Serve sets conn's read deadline to stop and does not
// close conn.
func (s *Server) Serve(ctx context.Context, conn net.PacketConn) error {
	if s.Files == nil {
		return errors.New("serve tftp: no Files")
	}
	local, ok := conn.LocalAddr().(*net.UDPAddr)
	if !ok {
		return fmt.Errorf("serve tftp: %T is not a UDP socket", conn.LocalAddr())
	}
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()

	var wg sync.WaitGroup
	defer wg.Wait()
	// A client that resends its request before our first reply reaches it
	// must not start a second transfer to the same port.
	var mu sync.Mutex
	active := map[netip.AddrPort]bool{}
	perSource := map[netip.Addr]int{}
	maxAll, maxSrc := s.MaxTransfers, s.MaxPerSource
	if maxAll <= 0 {
		maxAll = DefaultMaxTransfers
	}
	if maxSrc <= 0 {
		maxSrc = DefaultMaxPerSource
	}

	buf := make([]byte, maxRequestPacket)
	for {
		n, addr, err := conn.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("read tftp request: %w", err)
		}
		ua, ok := addr.(*net.UDPAddr)
		if !ok {
			continue
		}
		peer := ua.AddrPort()
		req, ok := s.accept(ctx, conn, ua, buf[:n])
		if !ok {
			continue
		}
		src := peer.Addr().Unmap()
		mu.Lock()
		dup := active[peer]
		full := !dup && (len(active) >= maxAll || perSource[src] >= maxSrc)
		if !dup && !full {
			active[peer] = true
			perSource[src]++
		}
		mu.Unlock()
		if dup {
			s.log().Debug("tftp duplicate request", "peer", peer, "file", req.Filename)
			continue
		}
		if full {
			s.busy.Add(1)
			s.log().Debug("tftp request dropped: too many transfers", "peer", peer, "file", req.Filename)
			continue
		}
		wg.Go(func() {
			defer func() {
				mu.Lock()
				delete(active, peer)
				if perSource[src]--; perSource[src] <= 0 {
					delete(perSource, src)
				}
				mu.Unlock()
			}()
			s.transfer(ctx, local, ua, req)
		})
	}
}

// accept parses a packet from the listening socket and refuses, from that
// socket, what needs no transfer: malformed packets (dropped), stray
// opcodes, writes and unsupported modes. It reports whether req should be
// served.
func (s *Server) accept(ctx context.Context, conn net.PacketConn, peer *net.UDPAddr, b []byte) (Request, bool) {
	log := s.log()
	if len(b) < 2 {
		s.malformed.Add(1)
		log.Debug("tftp malformed packet dropped", "peer", peer, "len", len(b))
		return Request{}, false
	}
	switch op := Opcode(binary.BigEndian.Uint16(b)); op {
	case OpRRQ, OpWRQ:
	case OpError:
		// Never answer an ERROR: two confused peers would bounce errors.
		return Request{}, false
	default:
		s.sendErrorTo(conn, peer, ErrCodeIllegalOp, fmt.Sprintf("illegal operation: opcode %d on the request port", op))
		log.Debug("tftp unexpected opcode", "peer", peer, "opcode", op)
		return Request{}, false
	}
	req, err := ParseRequest(b)
	if err != nil {
		s.malformed.Add(1)
		log.Debug("tftp malformed request dropped", "peer", peer, "err", err)
		return Request{}, false
	}
	s.requests.Add(1)
	refuse := func(code ErrorCode, msg string) {
		s.sendErrorTo(conn, peer, code, msg)
		log.Info("tftp request refused", "peer", peer, "file", req.Filename, "err", msg)
		s.record(ctx, boot.Event{IP: peer.AddrPort().Addr().Unmap(), File: req.Filename, Size: -1, Error: msg})
	}
	if req.Op == OpWRQ {
		refuse(ErrCodeAccess, "access violation: read-only server")
		return Request{}, false
	}
	if req.Mode != "octet" && req.Mode != "netascii" {
		refuse(ErrCodeIllegalOp, fmt.Sprintf("illegal operation: mode %q not supported", req.Mode))
		return Request{}, false
	}
	return req, true
}

func (s *Server) serverTimeout() time.Duration {
	if s.Timeout > 0 {
		return s.Timeout
	}
	return DefaultTimeout
}

func (s *Server) sendErrorTo(conn net.PacketConn, peer net.Addr, code ErrorCode, msg string) {
	// Counted before it leaves, so whoever reads the error reads the count.
	s.errs.Add(1)
	if _, err := conn.WriteTo(appendError(nil, code, msg), peer); err != nil {
		s.errs.Add(^uint64(0))
		s.log().Debug("tftp send error", "peer", peer, "err", err)
		return
	}
}

func (s *Server) record(ctx context.Context, e boot.Event) {
	if s.Recorder == nil {
		return
	}
	e.Time = time.Now()
	e.Proto = "tftp"
	e.Kind = "file"
	// The event describes what already happened; a server shutting down
	// should still report it.
	s.Recorder.Record(context.WithoutCancel(ctx), e)
}

// transferError is why a transfer failed, and what to tell the client.
type transferError struct {
	code ErrorCode
	msg  string // sent to the client and recorded
	send bool   // whether an ERROR packet should go out
	err  error  // the cause, for the log
}

func (e *transferError) Error() string { return e.msg }

// transfer serves one read request on a socket of its own.
func (s *Server) transfer(ctx context.Context, local, peer *net.UDPAddr, req Request) {
	start := time.Now()
	log := s.log().With("peer", peer.AddrPort(), "file", req.Filename)
	ev := boot.Event{IP: peer.AddrPort().Addr().Unmap(), File: req.Filename, Size: -1}

	sock, err := net.DialUDP("udp", &net.UDPAddr{IP: local.IP, Zone: local.Zone}, peer)
	if err != nil {
		ev.Error = "cannot open transfer socket"
		log.Error("tftp transfer socket", "err", err)
		s.record(ctx, ev)
		return
	}
	defer sock.Close()
	stop := context.AfterFunc(ctx, func() { sock.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()

	t := &xfer{s: s, sock: sock, blksize: DefaultBlockSize, window: 1, timeout: s.serverTimeout(), retries: s.Retries}
	if t.retries <= 0 {
		t.retries = DefaultRetries
	}
	terr := t.open(ctx, peer.AddrPort(), req)
	if terr == nil {
		defer t.f.Close()
		ev.Size = t.size
		oack := t.negotiate(req)
		ev.BlockSize, ev.WindowSize = t.blksize, t.window
		if t.window <= pollWindow {
			// Given back as soon as the transfer ends, not after its
			// event is recorded: a slow recorder must not keep other
			// transfers out of poll mode.
			release := t.pollMode()
			defer release()
			terr = t.run(ctx, oack)
			release()
		} else {
			terr = t.run(ctx, oack)
		}
		ev.Bytes = t.ackedBytes()
	}
	s.bytes.Add(uint64(ev.Bytes))
	if terr != nil {
		// A source that never answered may be spoofed: it gets no ERROR
		// either, as it got no more than one retransmit.
		if terr.send && (t.heard || !t.started) {
			t.sendError(terr.code, terr.msg)
		}
		ev.Error = terr.msg
		attrs := []any{"err", terr.msg, "bytes", ev.Bytes, "elapsed", time.Since(start)}
		if terr.err != nil {
			attrs = append(attrs, "cause", terr.err)
		}
		if terr.code == ErrCodeNotFound {
			log.Info("tftp file not found", attrs...)
		} else {
			log.Warn("tftp transfer failed", attrs...)
		}
		s.record(ctx, ev)
		return
	}
	ev.Complete = true
	s.completed.Add(1)
	log.Info("tftp transfer complete", "bytes", ev.Bytes, "blksize", t.blksize, "windowsize", t.window,
		"elapsed", time.Since(start))
	s.record(ctx, ev)
}

// xfer is the state of one transfer.
type xfer struct {
	s       *Server
	sock    *net.UDPConn
	f       File
	size    int64
	blksize int
	window  int
	timeout time.Duration
	retries int

	started bool  // the first window or OACK went out
	heard   bool  // the client has answered at all: its address is real
	last    int64 // index of the final block: the first one shorter than blksize
	acked   int64 // highest block index the client acknowledged; -1 while the OACK is out

	// The file is read ahead in chunks of several blocks, one ReadAt for
	// all of them, and each DATA packet leaves as two pieces, its header
	// and its block's bytes in the chunk, so nothing is copied for it.
	chunk    []byte // file bytes from chunkOff
	chunkOff int64
	chunkCap int            // bytes a chunk read asks for: whole blocks
	inMemory bool           // the file is Bytes: the whole of it is the chunk
	hdrs     []byte         // 4 header bytes per block of a batch
	msgs     []ipv4.Message // a batch: the blocks of a window in the chunk
	batch    batchWriter

	// poll: this transfer (lock-step, or a short window) waits for each
	// ACK in poll(2) on a thread of its own (see read).
	poll bool
	raw  syscall.RawConn
	pfd  [1]unix.PollFd
}

// read reads the client's next packet, or fails with
// os.ErrDeadlineExceeded once due has passed or ctx has ended.
//
// A transfer in poll mode blocks its thread in poll(2) until the ACK
// comes, as tftpd-hpa's processes do: the kernel wakes that thread itself
// when the packet arrives. Through Go's netpoller the wake-up goes through
// the scheduler first, which on loopback made a lock-step transfer a
// fifth slower; with many transfers at once the netpoller's shared wait is
// the better one, and a thread per transfer the worse.
func (t *xfer) read(ctx context.Context, b []byte, due time.Time) (int, error) {
	if !t.poll {
		return t.sock.Read(b)
	}
	for {
		if ctx.Err() != nil {
			return 0, os.ErrDeadlineExceeded
		}
		wait := time.Until(due)
		if wait <= 0 {
			return 0, os.ErrDeadlineExceeded
		}
		// Woken at least every 100 ms to see ctx: a shutdown's deadline
		// does not end a poll(2).
		ms := int(min(wait, 100*time.Millisecond)/time.Millisecond) + 1
		var n int
		var rerr error
		err := t.raw.Read(func(fd uintptr) bool {
			t.pfd[0] = unix.PollFd{Fd: int32(fd), Events: unix.POLLIN}
			if _, err := unix.Poll(t.pfd[:], ms); err != nil && err != unix.EINTR {
				rerr = err
				return true
			}
			n, rerr = unix.Read(int(fd), b)
			return true
		})
		if err != nil {
			return 0, err
		}
		if rerr == unix.EAGAIN || rerr == unix.EINTR {
			continue
		}
		return n, rerr
	}
}

// batchWriter sends several datagrams in one system call (sendmmsg):
// ipv4.PacketConn and ipv6.PacketConn, whose Message types are one.
type batchWriter interface {
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
}

func (t *xfer) open(ctx context.Context, peer netip.AddrPort, req Request) *transferError {
	p, err := CleanPath(req.Filename)
	if err == nil {
		t.f, err = t.s.Files.Open(ctx, peer, p)
	}
	switch {
	case err == nil:
	case errors.Is(err, ErrOutsideRoot):
		return &transferError{code: ErrCodeAccess, msg: "access violation: path outside root", send: true, err: err}
	case errors.Is(err, ErrNotRegular):
		return &transferError{code: ErrCodeAccess, msg: "access violation: not a regular file", send: true, err: err}
	case errors.Is(err, fs.ErrPermission):
		return &transferError{code: ErrCodeAccess, msg: "access violation", send: true, err: err}
	case errors.Is(err, fs.ErrNotExist):
		return &transferError{code: ErrCodeNotFound, msg: "file not found", send: true, err: err}
	default:
		return &transferError{code: ErrCodeUndefined, msg: "cannot open file", send: true, err: err}
	}
	if req.Mode == "netascii" {
		f, err := netascii(t.f) // f closes t.f
		if err != nil {
			t.f.Close()
			return &transferError{code: ErrCodeUndefined, msg: "netascii: " + err.Error(), send: true, err: err}
		}
		t.f = f
	}
	t.size = t.f.Size()
	return nil
}

// negotiate applies the client's options and returns the OACK to send,
// empty when the client asked for no option the server knows. Options with
// values out of range are left out of the OACK, which tells the client they
// were not taken (RFC 2347).
func (t *xfer) negotiate(req Request) []Option {
	var oack []Option
	for _, o := range req.Options {
		v, err := strconv.ParseUint(o.Value, 10, 32)
		if err != nil {
			continue
		}
		switch o.Name {
		case "blksize":
			if v < MinBlockSize {
				continue
			}
			limit := t.s.MaxBlockSize
			if limit <= 0 || limit > MaxBlockSize {
				limit = MaxBlockSize
			}
			limit = max(limit, MinBlockSize)
			t.blksize = int(min(v, uint64(limit)))
			oack = append(oack, Option{o.Name, strconv.Itoa(t.blksize)})
		case "windowsize":
			if v < 1 {
				continue
			}
			limit := t.s.MaxWindowSize
			if limit <= 0 {
				limit = DefaultMaxWindow
			}
			t.window = int(min(v, uint64(min(limit, 65535))))
			oack = append(oack, Option{o.Name, strconv.Itoa(t.window)})
		case "tsize":
			oack = append(oack, Option{o.Name, strconv.FormatInt(t.size, 10)})
		case "timeout":
			limit := t.s.MaxTimeout
			if limit <= 0 {
				limit = DefaultMaxTimeout
			}
			if v < 1 || v > 255 || time.Duration(v)*time.Second > limit {
				continue
			}
			t.timeout = time.Duration(v) * time.Second
			oack = append(oack, Option{o.Name, o.Value})
		}
	}
	return oack
}

// run sends the file: a window of blocks, then wait for the ACK of its
// last one. An ACK of an earlier block of the window means the client
// missed the one after it, and the next window starts there (RFC 7440).
// ACKs of blocks already acknowledged are duplicates, from the client's own
// timeouts or from our retransmits, and are ignored: answering them would
// double every packet from then on (the Sorcerer's Apprentice bug). Only
// our timeout sends a window again.
func (t *xfer) run(ctx context.Context, oack []Option) *transferError {
	t.last = t.size/int64(t.blksize) + 1
	t.prepareSend()
	t.started = true
	var sent int64 // highest block index sent
	if len(oack) > 0 {
		t.acked = -1
		if terr := t.send(appendOACK(nil, oack)); terr != nil {
			return terr
		}
	} else {
		var terr *transferError
		if sent, terr = t.sendWindow(1); terr != nil {
			return terr
		}
	}
	rbuf := make([]byte, 4+t.blksize)
	tries := 0
	// Until the client has answered, the server's own timeout: a spoofed
	// request must not hold a transfer slot for the timeout it asked for.
	wait := func() time.Duration {
		if !t.heard {
			return min(t.timeout, t.s.serverTimeout())
		}
		return t.timeout
	}
	// due is when the client's silence becomes a timeout. The socket's
	// deadline is set again only when it passes before due: an ACK moves
	// due, but setting a deadline per ACK cost a timer update per block.
	due := time.Now().Add(wait())
	t.arm(due)
	for {
		if ctx.Err() != nil {
			return &transferError{code: ErrCodeUndefined, msg: "server shutting down", send: true}
		}
		n, err := t.read(ctx, rbuf, due)
		if err != nil {
			if ctx.Err() != nil {
				continue
			}
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				return &transferError{msg: "client gone", err: err}
			}
			if time.Now().Before(due) {
				t.arm(due)
				continue
			}
			tries++
			if tries > t.retries || (!t.heard && tries > 1) {
				return &transferError{code: ErrCodeUndefined, msg: "timed out waiting for ack", send: true}
			}
			t.s.retransmits.Add(1)
			var terr *transferError
			if t.acked < 0 {
				terr = t.send(appendOACK(nil, oack))
			} else {
				sent, terr = t.sendWindow(t.acked + 1)
			}
			if terr != nil {
				return terr
			}
			due = time.Now().Add(wait())
			t.arm(due)
			continue
		}
		r, err := parseReply(rbuf[:n])
		if err != nil {
			t.s.malformed.Add(1)
			continue
		}
		t.heard = true
		if r.op == OpError {
			return &transferError{msg: fmt.Sprintf("client error %d: %s", r.code, r.msg)}
		}
		// How far past the last acknowledged block this ACK is, in
		// 16-bit block numbers that wrap past 65535 to 0.
		d := int64(r.block - uint16(t.acked))
		if d == 0 || d > sent-t.acked {
			continue
		}
		t.acked += d
		tries = 0
		if t.acked == t.last {
			return nil
		}
		var terr *transferError
		if sent, terr = t.sendWindow(t.acked + 1); terr != nil {
			return terr
		}
		due = time.Now().Add(wait())
	}
}

// pollWindow is the largest window a transfer waits for in poll(2). The
// wait for the ACK of a longer window outlasts the runtime's patience with
// a thread in a system call: it hands the thread's processor to another
// thread each time, and that costs more than the netpoller's wake-up
// (measured on loopback: poll(2) 1.2x faster at windowsize 4, 0.93x at 8).
const pollWindow = 4

// pollMode puts a transfer in poll mode unless GOMAXPROCS transfers
// already are, which bounds the threads they hold, and returns what ends
// it.
// The returned function may be called more than once.
func (t *xfer) pollMode() func() {
	if t.s.pollers.Add(1) > int64(max(runtime.GOMAXPROCS(0), 1)) {
		t.s.pollers.Add(-1)
		return func() {}
	}
	raw, err := t.sock.SyscallConn()
	if err != nil {
		t.s.pollers.Add(-1)
		return func() {}
	}
	t.poll, t.raw = true, raw
	return sync.OnceFunc(func() { t.poll = false; t.s.pollers.Add(-1) })
}

// arm sets the socket's read deadline for the netpoller's wait. A
// transfer in poll mode sets none: it polls until due itself, and a
// deadline left behind would fail its reads once it passed.
func (t *xfer) arm(due time.Time) {
	if !t.poll {
		t.sock.SetReadDeadline(due)
	}
}

// chunkBytes is how much of the file one read fetches ahead: whole
// blocks, about 32 KiB, at least one block. A thousand transfers at once
// hold 32 MiB of it.
const chunkBytes = 32 << 10

// prepareSend sets up the chunk and the batch for the negotiated blksize
// and window.
func (t *xfer) prepareSend() {
	t.chunkCap = max(1, chunkBytes/t.blksize) * t.blksize
	if b, ok := t.f.(Bytes); ok {
		t.chunk, t.inMemory = b, true
	}
	perBatch := min(t.window, max(1, t.chunkCap/t.blksize))
	if t.inMemory {
		perBatch = min(t.window, 64)
	}
	t.hdrs = make([]byte, 4*perBatch)
	t.msgs = make([]ipv4.Message, perBatch)
	for i := range t.msgs {
		t.msgs[i].Buffers = make([][]byte, 2)
	}
	if a, ok := t.sock.LocalAddr().(*net.UDPAddr); ok && a.IP.To4() == nil {
		t.batch = ipv6.NewPacketConn(t.sock)
	} else {
		t.batch = ipv4.NewPacketConn(t.sock)
	}
}

// block returns block k's bytes, reading the chunk that holds them when
// the current one does not.
func (t *xfer) block(k int64) ([]byte, error) {
	off := (k - 1) * int64(t.blksize)
	n := min(int64(t.blksize), max(t.size-off, 0))
	if n == 0 {
		return nil, nil
	}
	if t.inMemory || (off >= t.chunkOff && off+n <= t.chunkOff+int64(len(t.chunk))) {
		return t.chunk[off-t.chunkOff : off-t.chunkOff+n], nil
	}
	if cap(t.chunk) < t.chunkCap {
		t.chunk = make([]byte, t.chunkCap)
	}
	want := min(int64(t.chunkCap), t.size-off)
	got, err := t.f.ReadAt(t.chunk[:want], off)
	if int64(got) < want {
		if err == nil {
			err = io.ErrUnexpectedEOF
		}
		t.chunk = t.chunk[:0]
		return nil, err
	}
	t.chunk, t.chunkOff = t.chunk[:want], off
	return t.chunk[:n], nil
}

// inChunk reports whether block k's bytes are in the current chunk.
func (t *xfer) inChunk(k int64) bool {
	off := (k - 1) * int64(t.blksize)
	n := min(int64(t.blksize), max(t.size-off, 0))
	return n == 0 || t.inMemory || (off >= t.chunkOff && off+n <= t.chunkOff+int64(len(t.chunk)))
}

// sendWindow sends up to window blocks from first and returns the index of
// the last one sent. The blocks go in batches, one sendmmsg each: those of
// the window that lie in one chunk.
func (t *xfer) sendWindow(first int64) (int64, *transferError) {
	end := min(first+int64(t.window), t.last+1) // one past the last block to send
	k := first
	for k < end {
		batch := 0
		for k < end && batch < len(t.msgs) {
			// Reading the next chunk would overwrite the bytes the
			// batch refers to: the batch goes first.
			if batch > 0 && !t.inChunk(k) {
				break
			}
			// block reads a chunk only for the batch's first block (see
			// above), so a read error leaves nothing of the batch unsent.
			data, err := t.block(k)
			if err != nil {
				return k - 1, &transferError{code: ErrCodeUndefined, msg: "read error", send: true, err: err}
			}
			h := t.hdrs[4*batch : 4*batch+4]
			binary.BigEndian.PutUint16(h[0:], uint16(OpData))
			binary.BigEndian.PutUint16(h[2:], uint16(k))
			m := &t.msgs[batch]
			m.Buffers[0], m.Buffers[1] = h, data
			batch++
			k++
		}
		if terr := t.sendBatch(batch); terr != nil {
			return k - 1 - int64(batch), terr
		}
	}
	return k - 1, nil
}

// sendBatch sends the first n messages of the batch, all of them or a
// failure.
func (t *xfer) sendBatch(n int) *transferError {
	ms := t.msgs[:n]
	for try := 0; len(ms) > 0; {
		sent, err := t.batch.WriteBatch(ms, 0)
		ms = ms[max(sent, 0):]
		if err == nil {
			continue
		}
		// A full socket buffer is a reason to wait a little, not to give up.
		if errors.Is(err, syscall.ENOBUFS) && try < 1000 {
			try++
			time.Sleep(time.Millisecond)
			continue
		}
		return &transferError{msg: "client gone", err: err}
	}
	return nil
}

func (t *xfer) send(b []byte) *transferError {
	for try := 0; ; try++ {
		_, err := t.sock.Write(b)
		if err == nil {
			return nil
		}
		// A full socket buffer is a reason to wait a little, not to give up.
		if errors.Is(err, syscall.ENOBUFS) && try < 1000 {
			time.Sleep(time.Millisecond)
			continue
		}
		return &transferError{msg: "client gone", err: err}
	}
}

func (t *xfer) sendError(code ErrorCode, msg string) {
	t.s.errs.Add(1)
	if _, err := t.sock.Write(appendError(nil, code, msg)); err != nil {
		t.s.errs.Add(^uint64(0))
	}
}

// ackedBytes is how much of the file the client acknowledged.
func (t *xfer) ackedBytes() int64 {
	if t.acked <= 0 {
		return 0
	}
	return min(t.acked*int64(t.blksize), t.size)
}
