package dhcp

import (
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// testQueue is a queue and a clock the test moves.
type testQueue struct {
	*queue
	over, super atomic.Uint64
	now         time.Time
}

func newTestQueue(size int) *testQueue {
	q := &testQueue{now: time.Unix(1000, 0)}
	q.queue = newQueue(size, &q.over, &q.super)
	return q
}

// ipxeDiscover is a DISCOVER as iPXE sends it (the tests' own type).
const ipxeDiscover dhcpv4.MessageType = 101

// add queues a packet of type mt from the client whose MAC ends in c,
// marked with xid, that came at the current time.
func (q *testQueue) add(t *testing.T, mt dhcpv4.MessageType, c byte, xid byte) {
	t.Helper()
	mods := []dhcpv4.Modifier{dhcpv4.WithHwAddr(net.HardwareAddr{2, 0, 0, 0, 0, c}), dhcpv4.WithMessageType(mt),
		dhcpv4.WithTransactionID(dhcpv4.TransactionID{0, 0, 0, xid})}
	if mt == ipxeDiscover {
		mods = append(mods, dhcpv4.WithMessageType(dhcpv4.MessageTypeDiscover), dhcpv4.WithUserClass("iPXE", false))
	}
	m, err := dhcpv4.New(mods...)
	if err != nil {
		t.Fatal(err)
	}
	p := packet{b: m.ToBytes(), at: q.now}
	classify(&p)
	q.push(p)
}

// take pops the next packet and returns its xid's last byte.
func (q *testQueue) take(t *testing.T) byte {
	t.Helper()
	p, ok := q.pop(func() time.Time { return q.now })
	if !ok {
		t.Fatal("queue closed")
	}
	return p.b[7]
}

func TestQueueOrder(t *testing.T) {
	const (
		d = dhcpv4.MessageTypeDiscover
		r = dhcpv4.MessageTypeRequest
	)
	type add struct {
		mt     dhcpv4.MessageType
		client byte
		xid    byte
		after  time.Duration // since the previous packet
	}
	for _, tc := range []struct {
		name       string
		size       int
		adds       []add
		wait       time.Duration // before the packets are taken
		want       []byte        // xids, in the order taken
		over, supr uint64
	}{
		{name: "oldest first while the worker keeps up", size: 8,
			adds: []add{{d, 1, 1, 0}, {d, 2, 2, time.Millisecond}, {d, 3, 3, time.Millisecond}},
			want: []byte{1, 2, 3}},
		{name: "newest first once the oldest waited", size: 8,
			adds: []add{{d, 1, 1, 0}, {d, 2, 2, 10 * time.Millisecond}, {d, 3, 3, 10 * time.Millisecond}},
			wait: lifoAfter, want: []byte{3, 2, 1}},
		{name: "a REQUEST before the DISCOVERs ahead of it", size: 8,
			adds: []add{{d, 1, 1, 0}, {d, 2, 2, 0}, {r, 3, 3, 0}, {dhcpv4.MessageTypeRelease, 4, 4, 0}},
			want: []byte{3, 4, 1, 2}},
		{name: "iPXE's DISCOVER before the firmware's", size: 8,
			adds: []add{{d, 1, 1, 0}, {ipxeDiscover, 2, 2, 0}, {r, 3, 3, 0}, {ipxeDiscover, 4, 4, 0}},
			want: []byte{3, 2, 4, 1}},
		{name: "a client's newer DISCOVER replaces its older", size: 8,
			adds: []add{{d, 1, 1, 0}, {d, 2, 2, 0}, {d, 1, 3, 0}},
			want: []byte{2, 3}, supr: 1},
		{name: "a client's REQUEST replaces its DISCOVER", size: 8,
			adds: []add{{d, 1, 1, 0}, {d, 2, 2, 0}, {r, 1, 3, 0}},
			want: []byte{3, 2}, supr: 1},
		{name: "a DECLINE is never replaced", size: 8,
			adds: []add{{dhcpv4.MessageTypeDecline, 1, 1, 0}, {d, 1, 2, 0}},
			want: []byte{1, 2}},
		{name: "full: the oldest DISCOVER goes", size: 3,
			adds: []add{{d, 1, 1, 0}, {r, 2, 2, 0}, {d, 3, 3, 0}, {d, 4, 4, 0}},
			want: []byte{2, 3, 4}, over: 1},
		{name: "full of REQUESTs: a DISCOVER is turned away", size: 2,
			adds: []add{{r, 1, 1, 0}, {r, 2, 2, 0}, {d, 3, 3, 0}},
			want: []byte{1, 2}, over: 1},
		{name: "full of REQUESTs: a REQUEST takes the oldest's place", size: 2,
			adds: []add{{r, 1, 1, 0}, {r, 2, 2, 0}, {r, 3, 3, 0}},
			want: []byte{2, 3}, over: 1},
		{name: "too old: dropped unanswered", size: 8,
			adds: []add{{d, 1, 1, 0}, {d, 2, 2, maxQueueWait}, {d, 3, 3, 0}},
			wait: time.Millisecond, want: []byte{2, 3}, over: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := newTestQueue(tc.size)
			for _, a := range tc.adds {
				q.now = q.now.Add(a.after)
				q.add(t, a.mt, a.client, a.xid)
			}
			q.now = q.now.Add(tc.wait)
			var got []byte
			for range tc.want {
				got = append(got, q.take(t))
			}
			if string(got) != string(tc.want) {
				t.Errorf("taken %v, want %v", got, tc.want)
			}
			if len(q.items) != 0 {
				t.Errorf("%d packets left", len(q.items))
			}
			if q.over.Load() != tc.over || q.super.Load() != tc.supr {
				t.Errorf("overloaded %d, superseded %d; want %d, %d", q.over.Load(), q.super.Load(), tc.over, tc.supr)
			}
		})
	}
}

// TestQueueWakesAndCloses: a worker waiting on an empty queue takes the
// next packet as it comes, and returns when the queue closes, leaving
// what still waits.
func TestQueueWakesAndCloses(t *testing.T) {
	q := newTestQueue(8)
	got := make(chan byte)
	go func() {
		for {
			p, ok := q.pop(time.Now)
			if !ok {
				close(got)
				return
			}
			got <- p.b[7]
		}
	}()
	q.now = time.Now()
	q.add(t, dhcpv4.MessageTypeDiscover, 1, 7)
	if x := <-got; x != 7 {
		t.Fatalf("took %d, want 7", x)
	}
	q.close()
	if _, ok := <-got; ok {
		t.Fatal("a packet taken after close")
	}
	q.add(t, dhcpv4.MessageTypeDiscover, 1, 8) // after close: dropped
	if q.over.Load() != 1 {
		t.Errorf("overloaded %d after a push to a closed queue, want 1", q.over.Load())
	}
}

func TestPeek(t *testing.T) {
	m, err := dhcpv4.New(dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest), dhcpv4.WithOption(dhcpv4.OptHostName("n1")))
	if err != nil {
		t.Fatal(err)
	}
	good := m.ToBytes()
	// The type after a pad and another option.
	padded := append(append([]byte{}, good[:240]...), 0, 0, 12, 2, 'n', '1', 53, 1, 1, 255)
	for _, tc := range []struct {
		name string
		b    []byte
		want byte
	}{
		{"built", good, 3},
		{"after pad and an option", padded, 1},
		{"empty", nil, 0},
		{"no options", good[:240], 0},
		{"no cookie", append(append([]byte{}, good[:236]...), 1, 2, 3, 4, 53, 1, 1), 0},
		{"cut in the option's header", append(append([]byte{}, good[:240]...), 53), 0},
		{"cut in its value", append(append([]byte{}, good[:240]...), 53, 1), 0},
		{"wrong length", append(append([]byte{}, good[:240]...), 53, 2, 1, 1), 0},
		{"an option running past the end", append(append([]byte{}, good[:240]...), 12, 200, 53, 1, 1), 0},
		{"after the end option", append(append([]byte{}, good[:240]...), 255, 53, 1, 1), 0},
		{"no end option", append(append([]byte{}, good[:240]...), 53, 1, 1), 1},
	} {
		if got, _ := peek(tc.b); got != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, got, tc.want)
		}
	}
}

// FuzzPeek: never a panic, and a type it reads is one the packet
// holds and that a full decode agrees with.
func FuzzPeek(f *testing.F) {
	for _, mt := range []dhcpv4.MessageType{dhcpv4.MessageTypeDiscover, dhcpv4.MessageTypeRequest, dhcpv4.MessageTypeInform} {
		m, _ := dhcpv4.New(dhcpv4.WithMessageType(mt), dhcpv4.WithOption(dhcpv4.OptHostName("node")), dhcpv4.WithUserClass("iPXE", false))
		f.Add(m.ToBytes())
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		mt, _ := peek(b)
		if mt == 0 {
			return
		}
		found := false
		for i := 240; i+2 < len(b); i++ {
			if b[i] == 53 && b[i+1] == 1 && b[i+2] == mt {
				found = true
				break
			}
		}
		if !found {
			t.Fatalf("type %d read from a packet without it", mt)
		}
		if m, err := dhcpv4.FromBytes(b); err == nil && len(m.Options.Get(dhcpv4.OptionDHCPMessageType)) == 1 && byte(m.MessageType()) != mt {
			t.Fatalf("type %d, a full decode says %d", mt, m.MessageType())
		}
	})
}

// TestPeekIPXE: iPXE is told by its user class, in either form, or by
// its encapsulated options, as Classify tells it.
func TestPeekIPXE(t *testing.T) {
	for _, tc := range []struct {
		name string
		mods []dhcpv4.Modifier
		want bool
	}{
		{"user class", []dhcpv4.Modifier{dhcpv4.WithUserClass("iPXE", false)}, true},
		{"user class, RFC 3004", []dhcpv4.Modifier{dhcpv4.WithUserClass("iPXE", true)}, true},
		{"option 175", []dhcpv4.Modifier{dhcpv4.WithGeneric(dhcpv4.GenericOptionCode(optIPXEEncap), []byte{0x13, 1, 1})}, true},
		{"firmware", []dhcpv4.Modifier{dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00007:UNDI:003016"))}, false},
		{"another user class", []dhcpv4.Modifier{dhcpv4.WithUserClass("iPXE-not", false)}, false},
	} {
		m, err := dhcpv4.New(append(tc.mods, dhcpv4.WithMessageType(dhcpv4.MessageTypeDiscover))...)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := Classify(m)
		if mt, ipxe := peek(m.ToBytes()); mt != 1 || ipxe != tc.want || c.IPXE != tc.want {
			t.Errorf("%s: peek %d, %v; Classify %v; want 1, %v", tc.name, mt, ipxe, c.IPXE, tc.want)
		}
	}
}
