package dhcp

import (
	"bytes"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// The order in which a worker takes its waiting packets. A storm (a hall
// powering on after a cut) brings each worker tens of requests in a
// second, and the clients all resend on the same schedule (PXE firmware
// after 4, 8, 16 and 32 s): what the queue keeps and what it answers
// first decides whether every client is served within its first tries.
//
//   - A client's newer DISCOVER or REQUEST replaces its older one still
//     waiting: the client has stopped waiting for that answer, and
//     answering both is twice the work for one exchange.
//   - What finishes an exchange (REQUEST, and DECLINE, RELEASE, INFORM)
//     is taken before a DISCOVER, which starts one: an OFFER already
//     made is wasted if its REQUEST is dropped. Of the DISCOVERs, iPXE's
//     go before the firmware's: their nodes are further into their boot.
//   - Oldest first while the worker keeps up; once the oldest has waited
//     lifoAfter, newest first: past what the server can answer, a FIFO
//     answers every client late, after it gave up, while the newest are
//     answered in time and the oldest age out at maxQueueWait.
//   - A full queue drops its oldest packet of the lowest rank.
const (
	// workerQueue is how many packets may wait for one worker.
	workerQueue = 32
	// maxQueueWait is how long one may wait: a packet older than that is
	// dropped unanswered (and counted as overloaded). It is under the
	// 4 s a PXE client waits for its first answer.
	maxQueueWait = 2 * time.Second
	// lifoAfter is how long the oldest packet waits before the worker
	// turns to the newest.
	lifoAfter = 250 * time.Millisecond
)

type packet struct {
	b    []byte
	peer net.Addr
	at   time.Time // when it was read
	// rank orders the packets of a queue (classify): the higher first.
	rank int
	// exchange says the packet is a DISCOVER or a REQUEST: one that a
	// newer DISCOVER or REQUEST of the same client replaces.
	exchange bool
}

// peek reads option 53 from a raw BOOTP packet without decoding it, and
// whether iPXE sent it (option 175, or 77 naming iPXE). The type is 0
// when the packet is too short, lacks the magic cookie, or the option is
// not in the options field (option overload puts it elsewhere, which is
// rare and then only costs the packet its rank).
func peek(b []byte) (mt byte, ipxe bool) {
	const start = 240
	if len(b) < start || !bytes.Equal(b[236:240], []byte{99, 130, 83, 99}) {
		return 0, false
	}
	for i := start; i < len(b); {
		code := b[i]
		switch code {
		case 0: // pad
			i++
			continue
		case 255: // end
			return mt, ipxe
		}
		if i+1 >= len(b) {
			return 0, false
		}
		n := int(b[i+1])
		if i+2+n > len(b) {
			return 0, false
		}
		v := b[i+2 : i+2+n]
		switch {
		case code == 53 && mt == 0:
			if n != 1 {
				return 0, false
			}
			mt = v[0]
		case code == optIPXEEncap && n > 0:
			ipxe = true
		case code == 77 && (string(v) == "iPXE" || string(v) == "\x04iPXE"):
			ipxe = true
		}
		i += 2 + n
	}
	return mt, ipxe
}

// classify sets the packet's rank and whether it is part of an exchange:
// a firmware's DISCOVER ranks lowest, iPXE's above it (its node is part
// way through its boot: a DORA and the loader's download would be lost
// with it), what finishes an exchange highest.
func classify(p *packet) {
	mt, ipxe := peek(p.b)
	switch mt {
	case 1: // DISCOVER
		p.exchange = true
		if ipxe {
			p.rank = 1
		}
	case 3: // REQUEST
		p.rank, p.exchange = 2, true
	case 0:
	default:
		p.rank = 2
	}
}

// sameClient says whether two packets carry the same client hardware
// address (htype, hlen and chaddr); a packet too short for one is no
// client's.
func sameClient(a, b []byte) bool {
	if len(a) < 44 || len(b) < 44 || a[1] != b[1] || a[2] != b[2] {
		return false
	}
	n := min(int(a[2]), 16)
	return bytes.Equal(a[28:28+n], b[28:28+n])
}

// queue is one worker's waiting packets, in the order they came.
type queue struct {
	mu     sync.Mutex
	items  []packet
	size   int
	closed bool
	// overloaded counts the packets dropped for room or age, superseded
	// those replaced by their client's newer one.
	overloaded, superseded *atomic.Uint64
	// ready holds a token while items may be waiting: the worker's
	// wake-up, never blocking the reader.
	ready chan struct{}
}

func newQueue(size int, overloaded, superseded *atomic.Uint64) *queue {
	return &queue{size: size, items: make([]packet, 0, size), ready: make(chan struct{}, 1),
		overloaded: overloaded, superseded: superseded}
}

// push adds p (its rank set by classify). It may displace a waiting
// packet, its client's older one or the least one to make room, or drop
// p itself when everything waiting outranks it.
func (q *queue) push(p packet) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		q.overloaded.Add(1)
		return
	}
	if p.exchange {
		for i, o := range q.items {
			if o.exchange && sameClient(o.b, p.b) {
				q.items = slices.Delete(q.items, i, i+1)
				q.superseded.Add(1)
				break
			}
		}
	}
	if len(q.items) >= q.size {
		victim := 0
		for i, o := range q.items {
			if o.rank < q.items[victim].rank {
				victim = i
			}
		}
		q.overloaded.Add(1)
		if q.items[victim].rank > p.rank {
			return
		}
		q.items = slices.Delete(q.items, victim, victim+1)
	}
	q.items = append(q.items, p)
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

// pop waits for the next packet to handle, dropping those that waited
// too long. It returns false once the queue is closed: what still waits
// is dropped, not answered late.
func (q *queue) pop(now func() time.Time) (packet, bool) {
	for {
		q.mu.Lock()
		if q.closed {
			q.mu.Unlock()
			return packet{}, false
		}
		t := now()
		n := len(q.items)
		q.items = slices.DeleteFunc(q.items, func(o packet) bool { return t.Sub(o.at) > maxQueueWait })
		q.overloaded.Add(uint64(n - len(q.items)))
		if i := q.next(t); i >= 0 {
			p := q.items[i]
			q.items = slices.Delete(q.items, i, i+1)
			q.mu.Unlock()
			return p, true
		}
		q.mu.Unlock()
		<-q.ready
	}
}

// next is the index of the packet to handle now, or -1 when none waits:
// of the highest rank waiting, the oldest while it has waited less than
// lifoAfter, else the newest.
func (q *queue) next(t time.Time) int {
	oldest, newest := -1, -1
	for i, o := range q.items {
		switch {
		case oldest < 0 || o.rank > q.items[oldest].rank:
			oldest, newest = i, i
		case o.rank == q.items[oldest].rank:
			newest = i
		}
	}
	if oldest < 0 || t.Sub(q.items[oldest].at) < lifoAfter {
		return oldest
	}
	return newest
}

// close ends the queue: pop returns false from now on.
func (q *queue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	select {
	case q.ready <- struct{}{}:
	default:
	}
}
