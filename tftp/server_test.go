package tftp

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/rackboot/rackboot/boot"
)

func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// eventOpts compares events without their time.
var eventOpts = cmp.Options{cmpopts.IgnoreFields(boot.Event{}, "Time"), cmpopts.EquateComparable(netip.Addr{})}

func localhost() netip.Addr { return netip.MustParseAddr("127.0.0.1") }

func TestTransfer(t *testing.T) {
	file := randomBytes(200_000, 1)
	exact := randomBytes(512*3, 2) // a multiple of the block size: ends with an empty block
	text := []byte("set timeout=5\nmenuentry x {\r\n}\n")
	root := writeTree(t, map[string][]byte{"boot/file.bin": file, "exact.bin": exact, "grub.cfg": text, "empty": nil})
	files, err := NewDir(root)
	if err != nil {
		t.Fatal(err)
	}
	opt := func(kv ...string) []Option {
		var o []Option
		for i := 0; i < len(kv); i += 2 {
			o = append(o, Option{kv[i], kv[i+1]})
		}
		return o
	}
	blocks := func(size, blk int) int { return size/blk + 1 }
	size := strconv.Itoa(len(file))
	tests := []struct {
		name        string
		server      *Server
		file        string
		mode        string
		options     []Option
		want        []byte
		wantOACK    []Option
		blk, window int
	}{
		{name: "plain", file: "boot/file.bin", want: file, blk: 512, window: 1},
		{name: "plain exact multiple", file: "exact.bin", want: exact, blk: 512, window: 1},
		{name: "empty file", file: "empty", want: nil, blk: 512, window: 1},
		{name: "blksize 1468", file: "boot/file.bin", options: opt("blksize", "1468"), want: file,
			wantOACK: opt("blksize", "1468"), blk: 1468, window: 1},
		{name: "blksize 8192", file: "boot/file.bin", options: opt("blksize", "8192"), want: file,
			wantOACK: opt("blksize", "8192"), blk: 8192, window: 1},
		{name: "blksize 65464", file: "boot/file.bin", options: opt("blksize", "65464"), want: file,
			wantOACK: opt("blksize", "65464"), blk: 65464, window: 1},
		{name: "blksize above the RFC maximum", file: "boot/file.bin", options: opt("blksize", "70000"), want: file,
			wantOACK: opt("blksize", "65464"), blk: 65464, window: 1},
		{name: "blksize capped by server", server: &Server{MaxBlockSize: 1024}, file: "boot/file.bin",
			options: opt("blksize", "1468"), want: file, wantOACK: opt("blksize", "1024"), blk: 1024, window: 1},
		{name: "blksize too small is not taken", file: "boot/file.bin", options: opt("blksize", "4"), want: file,
			blk: 512, window: 1},
		{name: "windowsize 1", file: "boot/file.bin", options: opt("blksize", "1468", "windowsize", "1"), want: file,
			wantOACK: opt("blksize", "1468", "windowsize", "1"), blk: 1468, window: 1},
		{name: "windowsize 16", file: "boot/file.bin", options: opt("blksize", "1468", "windowsize", "16"), want: file,
			wantOACK: opt("blksize", "1468", "windowsize", "16"), blk: 1468, window: 16},
		{name: "windowsize 64", file: "boot/file.bin", options: opt("blksize", "1468", "windowsize", "64"), want: file,
			wantOACK: opt("blksize", "1468", "windowsize", "64"), blk: 1468, window: 64},
		{name: "windowsize with 512-byte blocks", file: "exact.bin", options: opt("windowsize", "2"), want: exact,
			wantOACK: opt("windowsize", "2"), blk: 512, window: 2},
		{name: "windowsize capped by server", server: &Server{MaxWindowSize: 8}, file: "boot/file.bin",
			options: opt("windowsize", "64"), want: file, wantOACK: opt("windowsize", "8"), blk: 512, window: 8},
		{name: "tsize", file: "boot/file.bin", options: opt("tsize", "0"), want: file,
			wantOACK: opt("tsize", size), blk: 512, window: 1},
		{name: "all options, client order, names as sent", file: "/boot/file.bin",
			options: opt("tsize", "0", "windowsize", "4", "timeout", "3", "blksize", "1432", "multicast", ""),
			want:    file, wantOACK: opt("tsize", size, "windowsize", "4", "timeout", "3", "blksize", "1432"), blk: 1432, window: 4},
		{name: "timeout out of range is not taken", file: "exact.bin", options: opt("timeout", "0", "tsize", "0"),
			want: exact, wantOACK: opt("tsize", "1536"), blk: 512, window: 1},
		{name: "unknown option only: no OACK", file: "exact.bin", options: opt("x-rackboot", "1"), want: exact,
			blk: 512, window: 1},
		{name: "netascii", file: "grub.cfg", mode: "netascii", want: []byte("set timeout=5\r\nmenuentry x {\r\x00\r\n}\r\n"),
			blk: 512, window: 1},
		{name: "mode is case-insensitive", file: "exact.bin", mode: "OCTET", want: exact, blk: 512, window: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := &eventLog{}
			s := tc.server
			if s == nil {
				s = &Server{}
			}
			s.Files, s.Recorder = files, rec
			// Long enough that no retransmit happens on a loaded machine,
			// which keeps the packet count exact.
			s.Timeout = 5 * time.Second
			addr := startServer(t, s)
			res, err := testClient{mode: tc.mode, options: tc.options}.get(t.Context(), addr, tc.file)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(res.data, tc.want) {
				t.Errorf("got %d bytes, want %d (content differs)", len(res.data), len(tc.want))
			}
			if diff := cmp.Diff(tc.wantOACK, res.oack); diff != "" {
				t.Errorf("OACK (-want +got):\n%s", diff)
			}
			if got, want := res.dataPackets, blocks(len(tc.want), tc.blk); got != want {
				t.Errorf("%d DATA packets, want %d", got, want)
			}
			want := boot.Event{Proto: "tftp", Kind: "file", IP: localhost(), File: tc.file,
				Bytes: int64(len(tc.want)), Size: int64(len(tc.want)), BlockSize: tc.blk, WindowSize: tc.window, Complete: true}
			if diff := cmp.Diff([]boot.Event{want}, rec.wait(t, 1), eventOpts); diff != "" {
				t.Errorf("events (-want +got):\n%s", diff)
			}
			wantStats := Stats{Requests: 1, Completed: 1, Bytes: uint64(len(tc.want))}
			if diff := cmp.Diff(wantStats, s.Stats()); diff != "" {
				t.Errorf("stats (-want +got):\n%s", diff)
			}
		})
	}
}

// TestRollover sends more than 65535 blocks, so block numbers wrap to 0.
func TestRollover(t *testing.T) {
	file := randomBytes(65536*8+8*5+3, 3)
	for _, window := range []string{"1", "16"} {
		t.Run("windowsize "+window, func(t *testing.T) {
			rec := &eventLog{}
			s := &Server{Files: FilesFunc(func(context.Context, netip.AddrPort, string) (File, error) {
				return NewBytes(file), nil
			}), Recorder: rec, Timeout: 5 * time.Second}
			addr := startServer(t, s)
			res, err := testClient{options: []Option{{"blksize", "8"}, {"windowsize", window}}}.get(t.Context(), addr, "big")
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(res.data, file) {
				t.Fatalf("got %d bytes, want %d (content differs)", len(res.data), len(file))
			}
			ev := rec.wait(t, 1)[0]
			if !ev.Complete || ev.Bytes != int64(len(file)) || ev.BlockSize != 8 {
				t.Errorf("event %+v", ev)
			}
		})
	}
}

// TestLossAndDelay runs each case with the file in memory (Bytes) and on
// disk, where it is read ahead in chunks of 64 blocks of 512 bytes: the
// file is more than two chunks.
func TestLossAndDelay(t *testing.T) {
	file := randomBytes(150*512+100, 4)
	nblocks := len(file)/512 + 1
	disk, err := NewDir(writeTree(t, map[string][]byte{"f": file}))
	if err != nil {
		t.Fatal(err)
	}
	// sentAgainByACK checks that the lost block was sent again at the
	// client's early ACK, not at the server's timeout.
	sentAgainByACK := func(block int) func(*testing.T, clientResult, Stats, time.Duration) {
		return func(t *testing.T, res clientResult, st Stats, took time.Duration) {
			if took > 3*time.Second {
				t.Errorf("took %v: recovered by timeout, not by the ACK", took)
			}
			if st.Retransmits != 0 {
				t.Errorf("%d retransmits, want 0", st.Retransmits)
			}
			if res.dataPackets <= nblocks-1 {
				t.Errorf("%d DATA packets: block %d was never sent again", res.dataPackets, block)
			}
		}
	}
	tests := []struct {
		name   string
		client testClient
		server *Server
		// check gets the client's result, the server's stats, and how long
		// the transfer took.
		check func(t *testing.T, res clientResult, st Stats, took time.Duration)
	}{
		{
			name: "lost ACK is recovered by retransmit",
			client: testClient{options: []Option{{"windowsize", "4"}}, wait: 10 * time.Second,
				dropAck: func(block uint16, n int) bool { return n == 3 }},
			server: &Server{Timeout: 50 * time.Millisecond},
			check: func(t *testing.T, res clientResult, st Stats, _ time.Duration) {
				if st.Retransmits == 0 {
					t.Error("no retransmit")
				}
			},
		},
		{
			name: "late ACK after the retransmit is ignored",
			client: testClient{options: []Option{{"windowsize", "4"}}, wait: 10 * time.Second,
				delayAck: func(block uint16, n int) time.Duration {
					if n == 2 {
						return 200 * time.Millisecond
					}
					return 0
				}},
			server: &Server{Timeout: 50 * time.Millisecond},
			check: func(t *testing.T, res clientResult, st Stats, _ time.Duration) {
				if st.Retransmits == 0 {
					t.Error("no retransmit")
				}
			},
		},
		{
			name: "lost DATA rolls the window back at once",
			client: testClient{options: []Option{{"windowsize", "8"}}, wait: 10 * time.Second,
				dropData: func(block uint16, n int) bool { return n == 5 }},
			// A long timeout: only the client's early ACK can recover in time.
			server: &Server{Timeout: 10 * time.Second},
			check:  sentAgainByACK(6),
		},
		{
			// Block 64 ends the first chunk; the window 61-66 spans two, and
			// the loss of 64 takes the next window back into the first.
			name: "lost DATA at a chunk's end is sent again from that chunk",
			client: testClient{options: []Option{{"windowsize", "6"}}, wait: 10 * time.Second,
				dropData: func(block uint16, n int) bool { return n == 63 }},
			server: &Server{Timeout: 10 * time.Second},
			check:  sentAgainByACK(64),
		},
		{
			name:   "duplicate ACKs do not duplicate windows",
			client: testClient{options: []Option{{"windowsize", "4"}}, dupAcks: true},
			server: &Server{Timeout: 5 * time.Second},
			check: func(t *testing.T, res clientResult, st Stats, _ time.Duration) {
				if res.dataPackets != nblocks {
					t.Errorf("%d DATA packets, want %d", res.dataPackets, nblocks)
				}
			},
		},
	}
	sources := []struct {
		name  string
		files Files
	}{
		{"memory", FilesFunc(func(context.Context, netip.AddrPort, string) (File, error) { return NewBytes(file), nil })},
		{"disk", disk},
	}
	for _, src := range sources {
		for _, tc := range tests {
			t.Run(src.name+"/"+tc.name, func(t *testing.T) {
				rec := &eventLog{}
				s := &Server{Timeout: tc.server.Timeout, Files: src.files, Recorder: rec}
				addr := startServer(t, s)
				start := time.Now()
				res, err := tc.client.get(t.Context(), addr, "f")
				took := time.Since(start)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(res.data, file) {
					t.Fatalf("got %d bytes, want %d (content differs)", len(res.data), len(file))
				}
				ev := rec.wait(t, 1)[0]
				if !ev.Complete || ev.Bytes != int64(len(file)) {
					t.Errorf("event %+v", ev)
				}
				tc.check(t, res, s.Stats(), took)
			})
		}
	}
}

// TestFileShrinks: a file cut short while it is served (an operator
// replacing it in place) ends the transfer with a read error, never with
// blocks of zeros or a transfer reported complete.
func TestFileShrinks(t *testing.T) {
	file := randomBytes(100_000, 5)
	root := writeTree(t, map[string][]byte{"f": file})
	dir, err := NewDir(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, window := range []string{"1", "16"} {
		t.Run("windowsize "+window, func(t *testing.T) {
			if err := os.WriteFile(filepath.Join(root, "f"), file, 0o644); err != nil {
				t.Fatal(err)
			}
			rec := &eventLog{}
			s := &Server{Recorder: rec, Timeout: 5 * time.Second,
				Files: FilesFunc(func(ctx context.Context, client netip.AddrPort, name string) (File, error) {
					f, err := dir.Open(ctx, client, name)
					if err == nil {
						err = os.Truncate(filepath.Join(root, name), 40_000)
					}
					return f, err
				})}
			addr := startServer(t, s)
			res, err := testClient{options: []Option{{"windowsize", window}}}.get(t.Context(), addr, "f")
			if err == nil || !strings.Contains(err.Error(), "read error") {
				t.Fatalf("transfer of a file cut short: %v, want the server's read error", err)
			}
			if !bytes.Equal(res.data, file[:len(res.data)]) || len(res.data) > 40_000 {
				t.Errorf("got %d bytes before the error, not a prefix of the file's first 40,000", len(res.data))
			}
			ev := rec.wait(t, 1)[0]
			if ev.Complete || ev.Error != "read error" || ev.Size != int64(len(file)) {
				t.Errorf("event %+v, want an incomplete transfer with a read error", ev)
			}
		})
	}
}

func TestRefusals(t *testing.T) {
	root := writeTree(t, map[string][]byte{"ok": []byte("ok"), "sub/x": []byte("x")})
	outside := writeTree(t, map[string][]byte{"secret": []byte("secret")})
	if err := os.Symlink(filepath.Join(outside, "secret"), filepath.Join(root, "out")); err != nil {
		t.Fatal(err)
	}
	files, err := NewDir(root)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		packet    []byte
		file      string // for the event; none expected when empty
		wantCode  ErrorCode
		wantMsg   string
		wantEvent bool
	}{
		{name: "write", packet: rrq(OpWRQ, "ok", "octet"), file: "ok",
			wantCode: ErrCodeAccess, wantMsg: "access violation: read-only server", wantEvent: true},
		{name: "dotdot", packet: rrq(OpRRQ, "../x", "octet"), file: "../x",
			wantCode: ErrCodeAccess, wantMsg: "access violation: path outside root", wantEvent: true},
		{name: "slash dotdot", packet: rrq(OpRRQ, "/../x", "octet"), file: "/../x",
			wantCode: ErrCodeAccess, wantMsg: "access violation: path outside root", wantEvent: true},
		{name: "dotdot past the root from inside", packet: rrq(OpRRQ, "sub/../../x", "octet"), file: "sub/../../x",
			wantCode: ErrCodeAccess, wantMsg: "access violation: path outside root", wantEvent: true},
		{name: "backslash dotdot", packet: rrq(OpRRQ, `..\x`, "octet"), file: `..\x`,
			wantCode: ErrCodeAccess, wantMsg: "access violation: path outside root", wantEvent: true},
		{name: "symlink out of root", packet: rrq(OpRRQ, "out", "octet"), file: "out",
			wantCode: ErrCodeAccess, wantMsg: "access violation: path outside root", wantEvent: true},
		{name: "directory", packet: rrq(OpRRQ, "sub", "octet"), file: "sub",
			wantCode: ErrCodeAccess, wantMsg: "access violation: not a regular file", wantEvent: true},
		{name: "not found", packet: rrq(OpRRQ, "missing.efi", "octet"), file: "missing.efi",
			wantCode: ErrCodeNotFound, wantMsg: "file not found", wantEvent: true},
		{name: "root itself", packet: rrq(OpRRQ, "/", "octet"), file: "/",
			wantCode: ErrCodeNotFound, wantMsg: "file not found", wantEvent: true},
		{name: "mail mode", packet: rrq(OpRRQ, "ok", "mail"), file: "ok",
			wantCode: ErrCodeIllegalOp, wantMsg: `illegal operation: mode "mail" not supported`, wantEvent: true},
		{name: "unknown opcode", packet: []byte{0, 99, 'x', 0},
			wantCode: ErrCodeIllegalOp, wantMsg: "illegal operation: opcode 99 on the request port"},
		{name: "ACK on the request port", packet: ack(1),
			wantCode: ErrCodeIllegalOp, wantMsg: "illegal operation: opcode 4 on the request port"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := &eventLog{}
			s := &Server{Files: files, Recorder: rec}
			addr := startServer(t, s)
			code, msg := exchangeError(t, addr, tc.packet)
			if code != tc.wantCode || msg != tc.wantMsg {
				t.Errorf("got error %d %q, want %d %q", code, msg, tc.wantCode, tc.wantMsg)
			}
			var want []boot.Event
			if tc.wantEvent {
				want = []boot.Event{{Proto: "tftp", Kind: "file", IP: localhost(), File: tc.file, Size: -1, Error: tc.wantMsg}}
			}
			if diff := cmp.Diff(want, rec.wait(t, len(want)), eventOpts, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("events (-want +got):\n%s", diff)
			}
			if st := s.Stats(); st.Errors != 1 || st.Completed != 0 {
				t.Errorf("stats %+v, want 1 error and no transfer", st)
			}
		})
	}
}

// exchangeError sends one packet to the server and returns the ERROR that
// comes back.
func exchangeError(t *testing.T, addr netip.AddrPort, packet []byte) (ErrorCode, string) {
	t.Helper()
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.WriteToUDPAddrPort(packet, addr); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1024)
	n, _, err := conn.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatal(err)
	}
	r, err := parseReply(buf[:n])
	if err != nil || r.op != OpError {
		t.Fatalf("reply %q is not an ERROR (%v)", buf[:n], err)
	}
	return r.code, r.msg
}

func TestPathsInsideRoot(t *testing.T) {
	root := writeTree(t, map[string][]byte{"grub/grub.cfg": []byte("cfg"), "boot/x64/wdsnbp.com": []byte("nbp")})
	if err := os.Symlink("grub/grub.cfg", filepath.Join(root, "link.cfg")); err != nil {
		t.Fatal(err)
	}
	files, err := NewDir(root)
	if err != nil {
		t.Fatal(err)
	}
	addr := startServer(t, &Server{Files: files})
	for _, tc := range []struct{ path, want string }{
		{"grub/grub.cfg", "cfg"},
		{"/grub/grub.cfg", "cfg"},
		{"//grub/grub.cfg", "cfg"},
		{"./grub//grub.cfg", "cfg"},
		{`\boot\x64\wdsnbp.com`, "nbp"},
		{"link.cfg", "cfg"},
	} {
		t.Run(tc.path, func(t *testing.T) {
			res, err := testClient{}.get(t.Context(), addr, tc.path)
			if err != nil {
				t.Fatal(err)
			}
			if string(res.data) != tc.want {
				t.Errorf("got %q, want %q", res.data, tc.want)
			}
		})
	}
}

// TestMalformed sends broken packets to the request port and to a
// transfer's port: they are dropped and counted, and serving goes on.
func TestMalformed(t *testing.T) {
	file := randomBytes(3000, 5)
	s := &Server{Files: FilesFunc(func(context.Context, netip.AddrPort, string) (File, error) { return NewBytes(file), nil })}
	addr := startServer(t, s)
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	bad := [][]byte{
		{},
		{0},
		{0, 1},
		[]byte("\x00\x01file"),     // no NUL terminator
		[]byte("\x00\x01file\x00"), // no mode
		[]byte("\x00\x01file\x00octet\x00tsize\x00"),                       // option without a value
		[]byte("\x00\x01\x00octet\x00"),                                    // empty file name
		[]byte("\x00\x01f\x00octet\x00blksize\x008\x00BLKSIZE\x00512\x00"), // repeated option
	}
	for _, b := range bad {
		if _, err := conn.WriteToUDPAddrPort(b, addr); err != nil {
			t.Fatal(err)
		}
	}
	// A real transfer, with junk sent to its port before each ACK.
	if _, err := conn.WriteToUDPAddrPort(rrq(OpRRQ, "f", "octet"), addr); err != nil {
		t.Fatal(err)
	}
	var got []byte
	buf := make([]byte, 1024)
	junk := 0
	for {
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, from, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatal(err)
		}
		if Opcode(binary.BigEndian.Uint16(buf)) != OpData {
			t.Fatalf("got %q, want DATA", buf[:n])
		}
		got = append(got, buf[4:n]...)
		conn.WriteToUDPAddrPort([]byte{0, 4, 0}, from) // short ACK
		conn.WriteToUDPAddrPort([]byte{0, 3, 0, 1, 'x'}, from)
		junk += 2
		conn.WriteToUDPAddrPort(ack(binary.BigEndian.Uint16(buf[2:])), from)
		if n-4 < 512 {
			break
		}
	}
	if !bytes.Equal(got, file) {
		t.Fatalf("got %d bytes, want %d (content differs)", len(got), len(file))
	}
	waitFor(t, func() bool { return s.Stats().Completed == 1 })
	want := Stats{Requests: 1, Completed: 1, Bytes: uint64(len(file)), Malformed: uint64(len(bad) + junk)}
	if diff := cmp.Diff(want, s.Stats()); diff != "" {
		t.Errorf("stats (-want +got):\n%s", diff)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestGiveUp checks that an unanswered window is sent 1+Retries times,
// then the transfer ends with an ERROR and a recorded failure.
func TestGiveUp(t *testing.T) {
	rec := &eventLog{}
	s := &Server{Files: FilesFunc(func(context.Context, netip.AddrPort, string) (File, error) {
		return NewBytes(randomBytes(5000, 6)), nil
	}), Recorder: rec, Timeout: 20 * time.Millisecond, Retries: 2}
	addr := startServer(t, s)
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.WriteToUDPAddrPort(rrq(OpRRQ, "f", "octet", Option{"blksize", "1000"}, Option{"windowsize", "2"}), addr)
	var got []string
	buf := make([]byte, 2048)
	for {
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, from, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatal(err)
		}
		switch Opcode(binary.BigEndian.Uint16(buf)) {
		case OpOACK:
			got = append(got, "oack")
			conn.WriteToUDPAddrPort(ack(0), from)
			continue
		case OpData:
			got = append(got, "data "+strconv.Itoa(int(binary.BigEndian.Uint16(buf[2:]))))
			continue
		}
		r, err := parseReply(buf[:n])
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, r.msg)
		break
	}
	want := []string{"oack", "data 1", "data 2", "data 1", "data 2", "data 1", "data 2", "timed out waiting for ack"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("packets (-want +got):\n%s", diff)
	}
	ev := rec.wait(t, 1)[0]
	wantEv := boot.Event{Proto: "tftp", Kind: "file", IP: localhost(), File: "f", Size: 5000, BlockSize: 1000,
		WindowSize: 2, Error: "timed out waiting for ack"}
	if diff := cmp.Diff(wantEv, ev, eventOpts); diff != "" {
		t.Errorf("event (-want +got):\n%s", diff)
	}
	if st := s.Stats(); st.Retransmits != 2 || st.Errors != 1 {
		t.Errorf("stats %+v, want 2 retransmits and 1 error", st)
	}
}

// TestServeStops checks that Serve returns once its context ends, with a
// transfer stalled in the middle.
func TestServeStops(t *testing.T) {
	s := &Server{Files: FilesFunc(func(context.Context, netip.AddrPort, string) (File, error) {
		return NewBytes(make([]byte, 10000)), nil
	}), Timeout: time.Hour}
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, conn) }()
	client, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	client.WriteToUDPAddrPort(rrq(OpRRQ, "f", "octet"), conn.LocalAddr().(*net.UDPAddr).AddrPort())
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := client.ReadFromUDPAddrPort(make([]byte, 1024)); err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return")
	}
}

// TestDuplicateRequest: a client that repeats its request before the first
// reply arrives gets one transfer, not two.
func TestDuplicateRequest(t *testing.T) {
	rec := &eventLog{}
	s := &Server{Files: FilesFunc(func(context.Context, netip.AddrPort, string) (File, error) {
		return NewBytes([]byte("hello")), nil
	}), Recorder: rec, Timeout: 200 * time.Millisecond, Retries: 1}
	addr := startServer(t, s)
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	req := rrq(OpRRQ, "f", "octet")
	conn.WriteToUDPAddrPort(req, addr)
	conn.WriteToUDPAddrPort(req, addr)
	// Answer nothing: the one transfer times out; two would record two events.
	rec.wait(t, 1)
	time.Sleep(600 * time.Millisecond)
	if got := rec.wait(t, 1); len(got) != 1 {
		t.Errorf("%d events", len(got))
	}
	if st := s.Stats(); st.Requests != 2 {
		t.Errorf("stats %+v, want 2 requests", st)
	}
}

func TestServeNeedsFiles(t *testing.T) {
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := (&Server{}).Serve(t.Context(), conn); err == nil {
		t.Error("Serve without Files: no error")
	}
}

func TestFilesErrorsStayPrivate(t *testing.T) {
	s := &Server{Files: FilesFunc(func(context.Context, netip.AddrPort, string) (File, error) {
		return nil, errors.New("database at 10.1.2.3 is down")
	})}
	addr := startServer(t, s)
	code, msg := exchangeError(t, addr, rrq(OpRRQ, "f", "octet"))
	if code != ErrCodeUndefined || msg != "cannot open file" {
		t.Errorf("got %d %q", code, msg)
	}
}

// TestPollersBounded: lock-step transfers wait in poll(2) on threads of
// their own only up to GOMAXPROCS at once; the others wait through the
// netpoller, and every one gives its place back when it ends.
func TestPollersBounded(t *testing.T) {
	s := &Server{Files: FilesFunc(func(context.Context, netip.AddrPort, string) (File, error) {
		return NewBytes(make([]byte, 10000)), nil
	}), Timeout: time.Hour}
	limit := runtime.GOMAXPROCS(0)
	s.MaxPerSource, s.MaxTransfers = limit+3, limit+3
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, conn) }()
	for range limit + 3 {
		client, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		defer client.Close()
		// The first DATA comes, and no ACK goes back: the transfer waits.
		client.WriteToUDPAddrPort(rrq(OpRRQ, "f", "octet"), conn.LocalAddr().(*net.UDPAddr).AddrPort())
		client.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, _, err := client.ReadFromUDPAddrPort(make([]byte, 1024)); err != nil {
			t.Fatal(err)
		}
	}
	if got := s.pollers.Load(); got != int64(limit) {
		t.Errorf("%d transfers in poll mode, want %d (GOMAXPROCS) of %d", got, limit, limit+3)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if got := s.pollers.Load(); got != 0 {
		t.Errorf("%d transfers still in poll mode after they all ended", got)
	}
}

// TestSlowAcks: ACKs that each come well within the timeout, for many
// timeouts in all, draw no retransmit, with the transfer waiting in
// poll(2) (lock-step) and through the netpoller (a window of 8); the read
// deadline is not set per ACK, only when it passes early.
func TestSlowAcks(t *testing.T) {
	file := randomBytes(300*512+7, 6)
	for _, window := range []string{"1", "8"} {
		t.Run("windowsize "+window, func(t *testing.T) {
			s := &Server{Timeout: 100 * time.Millisecond,
				Files: FilesFunc(func(context.Context, netip.AddrPort, string) (File, error) { return NewBytes(file), nil })}
			addr := startServer(t, s)
			acks := 0
			c := testClient{options: []Option{{"windowsize", window}}, delayAck: func(block uint16, n int) time.Duration {
				acks++
				return 30 * time.Millisecond
			}}
			if window == "1" {
				// Lock-step: 300 slow ACKs would take 9 s; the first 40
				// are slow, over 12 timeouts.
				c.delayAck = func(block uint16, n int) time.Duration {
					if acks++; n < 40 {
						return 30 * time.Millisecond
					}
					return 0
				}
			}
			start := time.Now()
			res, err := c.get(t.Context(), addr, "f")
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(res.data, file) {
				t.Fatalf("got %d bytes, want %d (content differs)", len(res.data), len(file))
			}
			if st := s.Stats(); st.Retransmits != 0 {
				t.Errorf("%d retransmits with every ACK 30 ms late against a 100 ms timeout (%d ACKs in %v)",
					st.Retransmits, acks, time.Since(start))
			}
		})
	}
}

// TestIPv6: transfers over ::1, lock-step (poll mode) and windowed (the
// netpoller), from memory and from disk.
func TestIPv6(t *testing.T) {
	file := randomBytes(100*1024, 8)
	disk, err := NewDir(writeTree(t, map[string][]byte{"f": file}))
	if err != nil {
		t.Fatal(err)
	}
	for _, src := range []struct {
		name  string
		files Files
	}{
		{"memory", FilesFunc(func(context.Context, netip.AddrPort, string) (File, error) { return NewBytes(file), nil })},
		{"disk", disk},
	} {
		for _, window := range []string{"1", "16"} {
			t.Run(src.name+"/windowsize "+window, func(t *testing.T) {
				s := &Server{Files: src.files, Timeout: 5 * time.Second}
				addr := startServerAt(t, s, "udp6", net.IPv6loopback)
				res, err := testClient{options: []Option{{"blksize", "1432"}, {"windowsize", window}}}.get(t.Context(), addr, "f")
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(res.data, file) {
					t.Fatalf("got %d bytes, want %d (content differs)", len(res.data), len(file))
				}
			})
		}
	}
}
