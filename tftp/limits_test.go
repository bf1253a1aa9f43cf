package tftp

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// netasciiRef is the whole-file conversion the streamed one must match.
func netasciiRef(b []byte) []byte {
	var out []byte
	for _, c := range b {
		switch c {
		case '\n':
			out = append(out, '\r', '\n')
		case '\r':
			out = append(out, '\r', 0)
		default:
			out = append(out, c)
		}
	}
	return out
}

func TestNetasciiStreamed(t *testing.T) {
	cases := map[string][]byte{
		"empty":          nil,
		"text":           []byte("set timeout=5\nmenuentry x {\r\n}\n"),
		"all pairs":      bytes.Repeat([]byte("\r\n"), 3000),
		"random":         randomBytes(100_000, 9),
		"ends in a pair": append(bytes.Repeat([]byte("a"), 511), '\n'),
	}
	for name, src := range cases {
		want := netasciiRef(src)
		for _, blk := range []int{1, 7, 512, 1468} {
			f, err := netascii(NewBytes(src))
			if err != nil {
				t.Fatal(err)
			}
			if f.Size() != int64(len(want)) {
				t.Fatalf("%s: size %d, want %d", name, f.Size(), len(want))
			}
			// Read as a transfer does: blocks in order, and every so often
			// back a window (a retransmit), reading it again.
			got := make([]byte, len(want))
			for off := 0; off < len(want); {
				n := min(blk, len(want)-off)
				k, err := f.ReadAt(got[off:off+n], int64(off))
				if k != n || (err != nil && err != io.EOF) {
					t.Fatalf("%s blk %d: ReadAt(%d, %d) = %d, %v", name, blk, n, off, k, err)
				}
				if back := off - 3*blk; off%(5*blk) == 0 && back >= 0 {
					again := make([]byte, blk)
					if k, _ := f.ReadAt(again, int64(back)); !bytes.Equal(again[:k], want[back:back+k]) {
						t.Fatalf("%s blk %d: going back to %d read %q, want %q", name, blk, back, again[:k], want[back:back+k])
					}
				}
				off += n
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s blk %d: converted output differs", name, blk)
			}
			f.Close()
		}
	}
}

// A netascii transfer of a large file holds a block of it, not all of it
// (20 requests of a 16 MiB file once held 88 MiB).
func TestNetasciiMemory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "big.txt")
	line := []byte(strings.Repeat("x", 63) + "\n")
	if err := os.WriteFile(path, bytes.Repeat(line, (16<<20)/len(line)), 0o644); err != nil {
		t.Fatal(err)
	}
	root, err := NewDir(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	src, err := root.Open(context.Background(), netip.AddrPort{}, "big.txt")
	if err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f, err := netascii(src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	blk := make([]byte, 1468)
	var total int64
	for off := int64(0); off < f.Size(); off += int64(len(blk)) {
		n, _ := f.ReadAt(blk, off)
		total += int64(n)
	}
	runtime.ReadMemStats(&after)
	if want := int64((16 << 20) / len(line) * (len(line) + 1)); total != f.Size() || f.Size() != want {
		t.Fatalf("read %d of %d bytes", total, f.Size())
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 4<<20 {
		t.Errorf("converting a 16 MiB file allocated %d MiB", grew>>20)
	}
}

// silentPeer sends one request and reads whatever comes back, never
// answering, until the server has been quiet for quiet.
func silentPeer(t *testing.T, addr netip.AddrPort, req []byte, quiet time.Duration) (packets, bytesIn int) {
	t.Helper()
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.WriteToUDPAddrPort(req, addr); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 70000)
	for {
		conn.SetReadDeadline(time.Now().Add(quiet))
		n, _, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return packets, bytesIn
		}
		packets++
		bytesIn += n
	}
}

// A request from a source that never answers (a spoofed one) draws the
// first window once and one retransmit, not Retries of them: the figure
// docs/reliability.md gives is what this logs.
func TestSilentSource(t *testing.T) {
	s := &Server{Files: FilesFunc(func(context.Context, netip.AddrPort, string) (File, error) {
		return NewBytes(randomBytes(1<<20, 3)), nil
	}), Timeout: 30 * time.Millisecond, Retries: 5}
	addr := startServer(t, s)
	for _, tc := range []struct {
		name string
		req  []byte
		max  int
	}{
		{"no options", rrq(OpRRQ, "f", "octet"), 2 * (4 + 512)},
		{"blksize and windowsize", rrq(OpRRQ, "f", "octet", Option{"blksize", "1468"}, Option{"windowsize", "16"}), 2 * 64},
	} {
		packets, in := silentPeer(t, addr, tc.req, 500*time.Millisecond)
		t.Logf("%s: a %d-byte request drew %d packets, %d bytes (%.0fx)", tc.name, len(tc.req), packets, in, float64(in)/float64(len(tc.req)))
		if in > tc.max || packets != 2 {
			t.Errorf("%s: a silent source got %d packets, %d bytes; want 2 packets, at most %d bytes", tc.name, packets, in, tc.max)
		}
	}
}

// A client may not make a silent transfer live for minutes: a timeout
// option over MaxTimeout is left out of the OACK.
func TestTimeoutOptionBounded(t *testing.T) {
	s := &Server{Files: FilesFunc(func(context.Context, netip.AddrPort, string) (File, error) {
		return NewBytes(randomBytes(4000, 4)), nil
	})}
	addr := startServer(t, s)
	for _, tc := range []struct{ ask, want string }{{"255", ""}, {"6", ""}, {"5", "5"}, {"1", "1"}} {
		conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		conn.WriteToUDPAddrPort(rrq(OpRRQ, "f", "octet", Option{"timeout", tc.ask}, Option{"tsize", "0"}), addr)
		buf := make([]byte, 600)
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, _, err := conn.ReadFromUDPAddrPort(buf)
		conn.Close()
		if err != nil || Opcode(binary.BigEndian.Uint16(buf)) != OpOACK {
			t.Fatalf("timeout %s: no OACK: %v", tc.ask, err)
		}
		got := ""
		fields := bytes.Split(buf[2:n], []byte{0})
		for i := 0; i+1 < len(fields); i += 2 {
			if string(fields[i]) == "timeout" {
				got = string(fields[i+1])
			}
		}
		if got != tc.want {
			t.Errorf("timeout %s: OACK says %q, want %q", tc.ask, got, tc.want)
		}
	}
}

// More transfers than the caps allow, from one source or in all, are
// dropped and counted; a transfer that ends frees its place.
func TestTransferCaps(t *testing.T) {
	s := &Server{Files: FilesFunc(func(context.Context, netip.AddrPort, string) (File, error) {
		return NewBytes(randomBytes(4000, 5)), nil
	}), Timeout: time.Hour, MaxPerSource: 2, MaxTransfers: 3}
	addr := startServer(t, s)
	open := func(ip net.IP) (*net.UDPConn, netip.AddrPort, bool) {
		conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: ip})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		conn.WriteToUDPAddrPort(rrq(OpRRQ, "f", "octet", Option{"blksize", "1468"}), addr)
		conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		buf := make([]byte, 2000)
		_, from, err := conn.ReadFromUDPAddrPort(buf)
		return conn, from, err == nil
	}
	a, b := net.IPv4(127, 0, 0, 1), net.IPv4(127, 0, 0, 2)
	if _, _, ok := open(a); !ok {
		t.Fatal("first transfer not served")
	}
	if _, _, ok := open(a); !ok {
		t.Fatal("second transfer from one source not served")
	}
	if _, _, ok := open(a); ok {
		t.Error("a third transfer from one source was served over MaxPerSource 2")
	}
	c1, tid, ok := open(b)
	if !ok {
		t.Fatal("another source was refused while the cap for all was not reached")
	}
	if _, _, ok := open(b); ok {
		t.Error("a fourth transfer was served over MaxTransfers 3")
	}
	if st := s.Stats(); st.Busy != 2 {
		t.Errorf("stats %+v, want 2 busy", st)
	}
	// The client at b gives up its transfer: its place is free again.
	c1.WriteToUDPAddrPort(appendError(nil, ErrCodeUndefined, "bye"), tid)
	waitFor(t, func() bool {
		_, _, ok := open(b)
		return ok
	})
}

// FuzzNetascii checks the streamed conversion against the whole-file
// one, read in blocks of any size with a step back now and then.
func FuzzNetascii(f *testing.F) {
	f.Add([]byte("set timeout=5\nmenuentry x {\r\n}\n"), uint16(7), uint8(2))
	f.Add([]byte("\r\r\n\n\r"), uint16(1), uint8(1))
	f.Fuzz(func(t *testing.T, src []byte, blk uint16, back uint8) {
		if blk == 0 {
			blk = 1
		}
		want := netasciiRef(src)
		n, err := netascii(NewBytes(src))
		if err != nil {
			t.Fatal(err)
		}
		if n.Size() != int64(len(want)) {
			t.Fatalf("size %d, want %d", n.Size(), len(want))
		}
		got := make([]byte, 0, len(want))
		buf := make([]byte, blk)
		furthest := 0
		for off := 0; off < len(want); {
			k, err := n.ReadAt(buf, int64(off))
			if k == 0 {
				t.Fatalf("ReadAt(%d) read nothing: %v", off, err)
			}
			got = append(got[:off], buf[:k]...)
			off += k
			if b := int(back) * int(blk); back > 0 && off > furthest && off%(3*int(blk)) == 0 && b <= off {
				furthest = off
				off -= b // read a window again, as a retransmit does
			}
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("streamed %q, want %q", got, want)
		}
	})
}
