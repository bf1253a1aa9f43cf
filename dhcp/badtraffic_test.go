package dhcp

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// badPacket is one generated packet of malformed or hostile traffic.
type badPacket struct {
	what   string // the mutation, for counts and messages
	b      []byte
	silent bool // must draw no reply, whatever the server's state
}

// badAddrs are the addresses the generated packets name: the server's
// identifier, an address of its pool, and subnets it does not serve.
type badAddrs struct {
	server, pooled net.IP
	foreign        net.IP   // on no subnet of the server
	refusedRelays  []net.IP // giaddrs whose sender is not a listed relay
}

// badSize is how many packets the bad-traffic tests send: thousands in
// make test, a hundred thousand in make soak (RACKBOOT_SOAK=1).
func badSize() int {
	if os.Getenv("RACKBOOT_SOAK") != "" {
		return 100_000
	}
	return 6000
}

// optionsAt walks the options of a well-formed packet and returns the
// offset of each option's code byte and of the End option.
func optionsAt(b []byte) (opts []int, end int) {
	for p := 240; p < len(b); {
		switch b[p] {
		case 0:
			p++
		case 255:
			return opts, p
		default:
			opts = append(opts, p)
			p += 2 + int(b[p+1])
		}
	}
	panic("template without an End option")
}

// withOptions inserts raw options before the End option of b.
func withOptions(b []byte, raw ...[]byte) []byte {
	_, end := optionsAt(b)
	out := append([]byte(nil), b[:end]...)
	for _, r := range raw {
		out = append(out, r...)
	}
	return append(out, 255)
}

func opt(code byte, v []byte) []byte { return append([]byte{code, byte(len(v))}, v...) }

// badDHCP generates n malformed and hostile packets from valid DISCOVER,
// REQUEST, RELEASE and INFORM packets, the same ones for a seed. Every
// packet has an xid of its own, so that a reply names what it answers.
func badDHCP(seed uint64, n int, a badAddrs) []badPacket {
	r := rand.New(rand.NewPCG(seed, seed^0x5deece66d))
	junk := func(k int) []byte {
		b := make([]byte, k)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return b
	}
	macs := make([]net.HardwareAddr, 8) // few MACs: the pool outlasts the run
	for i := range macs {
		macs[i] = net.HardwareAddr{0x02, 0xba, 0xd0, 0, 0, byte(i)}
	}
	mac := func() net.HardwareAddr { return macs[r.IntN(len(macs))] }
	must := func(m *dhcpv4.DHCPv4, err error) []byte {
		if err != nil {
			panic(err)
		}
		return m.ToBytes()
	}
	arch := []dhcpv4.Modifier{
		dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.OptionClientSystemArchitectureType, []byte{0, 7})),
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00007:UNDI:003000")),
	}
	templates := map[string]func() []byte{
		"discover": func() []byte {
			return must(dhcpv4.NewDiscovery(mac(), append(arch, dhcpv4.WithOption(dhcpv4.OptHostName("bad")),
				dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(a.pooled)))...))
		},
		"request": func() []byte {
			return must(dhcpv4.New(append(arch, dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest), dhcpv4.WithHwAddr(mac()),
				dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(a.pooled)), dhcpv4.WithOption(dhcpv4.OptServerIdentifier(a.server)))...))
		},
		"release": func() []byte {
			return must(dhcpv4.New(dhcpv4.WithMessageType(dhcpv4.MessageTypeRelease), dhcpv4.WithHwAddr(mac()),
				dhcpv4.WithClientIP(a.pooled), dhcpv4.WithOption(dhcpv4.OptServerIdentifier(a.server))))
		},
		"inform": func() []byte {
			return must(dhcpv4.New(append(arch, dhcpv4.WithMessageType(dhcpv4.MessageTypeInform), dhcpv4.WithHwAddr(mac()),
				dhcpv4.WithClientIP(a.pooled))...))
		},
	}
	names := []string{"discover", "request", "release", "inform"}

	var out []badPacket
	add := func(what string, b []byte, silent bool) {
		if len(b) >= 8 {
			binary.BigEndian.PutUint32(b[4:], 0xbad00000|uint32(len(out)))
		}
		out = append(out, badPacket{what, b, silent})
	}
	for _, name := range names {
		t := templates[name]()
		opts, end := optionsAt(t)
		// A packet cut before its End option fails to parse; one cut in
		// the padding after it is whole.
		for k := range len(t) {
			add("truncated "+name, append([]byte(nil), t[:k]...), k <= end)
		}
		for _, p := range opts {
			for _, l := range []int{len(t) - p - 1, 255} {
				if l > 255 || p+2+l <= len(t) {
					continue
				}
				b := append([]byte(nil), t...)
				b[p+1] = byte(l)
				add("option length overrun", b, true)
			}
		}
		b := append([]byte(nil), t...)
		b[end] = 0
		add("no end option", b, true)
		add("no end option", append([]byte(nil), t[:end]...), true)

		for _, v := range []byte{1, 2, 3, 0, 4, 255} {
			b := withOptions(t, opt(52, []byte{v}))
			copy(b[44:108], junk(64))
			copy(b[108:236], junk(128))
			if r.IntN(2) == 0 {
				copy(b[108:], []byte{53, 1, 1, 61, 200, 1, 2, 255}) // options that overrun the field
			}
			add("option overload", b, false)
		}
		add("huge client id", withOptions(t, opt(61, junk(255))), false)
		for _, times := range []int{2, 8, 14} {
			var raw [][]byte
			for range times {
				raw = append(raw, opt(61, junk(255)))
			}
			add("repeated client id", withOptions(t, raw...), false)
		}
		add("repeated message type", withOptions(t, opt(53, []byte{1})), false)
		add("repeated requested address", withOptions(t, opt(50, a.pooled.To4())), false)
		for _, guid := range [][]byte{{}, {0}, {1}, junk(16), append([]byte{1}, junk(16)...), append([]byte{0}, junk(16)...), junk(255)} {
			add("bad client guid", withOptions(t, opt(97, guid)), false)
		}
		for _, v := range [][]byte{{}, {7}, {0, 7, 0}, junk(255)} {
			add("bad architecture", withOptions(t, opt(93, v)), false)
		}
		for _, v := range [][]byte{junk(255), []byte("PXEClient:Arch:99999999:UNDI:"), []byte("HTTPClient:Arch:"), {}} {
			add("bad vendor class", withOptions(t, opt(60, v)), false)
		}
		for _, v := range [][]byte{{}, {4, 'i', 'P', 'X'}, {200, 'i'}, junk(255)} {
			add("bad user class", withOptions(t, opt(77, v)), false)
		}
		for hops := 17; hops <= 255; hops += 7 {
			b := append([]byte(nil), t...)
			b[3] = byte(hops)
			add("hops over 16", b, false)
		}
		for _, g := range append([]net.IP{a.foreign}, a.refusedRelays...) {
			b := append([]byte(nil), t...)
			copy(b[24:28], g.To4())
			add("giaddr of no listed relay", b, true)
		}
		for _, op := range []byte{0, 2, 3, 255} {
			b := append([]byte(nil), t...)
			b[0] = op
			add("not a BOOTREQUEST", b, true)
		}
		for _, hlen := range []byte{0, 1, 5, 7, 16, 17, 255} {
			b := append([]byte(nil), t...)
			b[2] = hlen
			add("hardware address length", b, true)
		}
		p53 := -1
		for _, p := range opts {
			if t[p] == 53 {
				p53 = p
			}
		}
		for _, mt := range []byte{0, 2, 4, 5, 6, 7, 9, 13, 18, 255} {
			b := append([]byte(nil), t...)
			b[p53+2] = mt
			add("message type a server does not answer", b, true)
		}
	}
	mk := func(mods ...dhcpv4.Modifier) []byte {
		return must(dhcpv4.New(append([]dhcpv4.Modifier{dhcpv4.WithHwAddr(mac())}, mods...)...))
	}
	req := dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest)
	add("inform from a foreign ciaddr", mk(dhcpv4.WithMessageType(dhcpv4.MessageTypeInform), dhcpv4.WithClientIP(a.foreign)), true)
	add("request for another server's offer", mk(req, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(a.pooled)),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(a.foreign))), true)
	add("request of a foreign address", mk(req, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(a.foreign))), false)
	add("renewal from a foreign ciaddr", mk(req, dhcpv4.WithClientIP(a.foreign)), false)
	pooled := binary.BigEndian.Uint32(a.pooled.To4())
	for i := range uint32(16) {
		ip := binary.BigEndian.AppendUint32(nil, pooled+i)
		add("renewal of a lease that does not exist", mk(req, dhcpv4.WithClientIP(ip)), false)
		add("init-reboot for a lease that does not exist", mk(req, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip))), false)
	}

	// The rest: valid packets with a few bytes changed, and garbage.
	for len(out) < n {
		t := templates[names[r.IntN(len(names))]]()
		switch r.IntN(4) {
		case 0:
			add("random bytes", junk(r.IntN(600)), false)
		default:
			for range 1 + r.IntN(8) {
				t[r.IntN(len(t))] = byte(r.Uint32())
			}
			add("random bytes changed", t, false)
		}
	}
	return out
}

// answers is what a reply to req may be: an OFFER to a DISCOVER, an ACK or
// a NAK to a REQUEST, an ACK to an INFORM; always a BOOTREPLY to the same
// client and transaction. It returns why rep is not one.
func answers(req []byte, rep *dhcpv4.DHCPv4, proxy bool) error {
	q, err := dhcpv4.FromBytes(req)
	if err != nil {
		return fmt.Errorf("a reply to a packet that does not parse (%v)", err)
	}
	ok := map[dhcpv4.MessageType][]dhcpv4.MessageType{
		dhcpv4.MessageTypeDiscover: {dhcpv4.MessageTypeOffer},
		dhcpv4.MessageTypeRequest:  {dhcpv4.MessageTypeAck, dhcpv4.MessageTypeNak},
		dhcpv4.MessageTypeInform:   {dhcpv4.MessageTypeAck},
	}[q.MessageType()]
	switch {
	case rep.OpCode != dhcpv4.OpcodeBootReply || rep.TransactionID != q.TransactionID ||
		rep.ClientHWAddr.String() != q.ClientHWAddr.String():
		return fmt.Errorf("reply %s does not answer %s", rep.Summary(), q.Summary())
	case !containsType(ok, rep.MessageType()):
		return fmt.Errorf("%s answered with %s", q.MessageType(), rep.MessageType())
	case proxy && !rep.YourIPAddr.IsUnspecified():
		return fmt.Errorf("proxy handed out %s", rep.YourIPAddr)
	}
	return nil
}

func containsType(ts []dhcpv4.MessageType, t dhcpv4.MessageType) bool {
	for _, x := range ts {
		if x == t {
			return true
		}
	}
	return false
}

// counts is how many packets of each mutation, for the log.
func counts(ps []badPacket) string {
	n := map[string]int{}
	var order []string
	for _, p := range ps {
		k := p.what
		if strings.HasPrefix(k, "truncated") {
			k = "truncated"
		}
		if n[k] == 0 {
			order = append(order, k)
		}
		n[k]++
	}
	var b strings.Builder
	for _, k := range order {
		fmt.Fprintf(&b, "%s %d; ", k, n[k])
	}
	return strings.TrimSuffix(b.String(), "; ")
}

// TestBadPackets hands every generated packet to both modes without a
// socket: none may panic, the ones marked silent draw no reply, and every
// reply answers its request. TestIntegrationBadTraffic sends the same
// packets over a veth pair.
func TestBadPackets(t *testing.T) {
	ps := badDHCP(1, badSize(), badAddrs{server: net.ParseIP("10.0.0.1"), pooled: net.ParseIP("10.0.0.100"),
		foreign: net.ParseIP("192.0.2.7"), refusedRelays: []net.IP{net.ParseIP("10.5.0.1"), net.ParseIP("10.5.0.77")}})
	for _, mode := range []Mode{ModeAuthoritative, ModeProxy} {
		t.Run(string(mode), func(t *testing.T) {
			s, _ := newServer(mode)
			s.UnknownRate = -1 // every packet reaches the handler, none is throttled
			s.Subnets[0].Last = s.Subnets[0].First.Next().Next().Next()
			peer := &net.UDPAddr{IP: net.ParseIP("10.0.0.5"), Port: 68}
			var ms0, ms1 runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&ms0)
			replies, silent := 0, 0
			for _, p := range ps {
				rep, _ := s.HandleBytes(context.Background(), p.b, peer)
				if p.silent {
					silent++
				}
				if rep == nil {
					continue
				}
				replies++
				if p.silent {
					t.Errorf("%s (%d bytes) drew %s", p.what, len(p.b), rep.MessageType())
				} else if err := answers(p.b, rep, mode == ModeProxy); err != nil {
					t.Errorf("%s: %v", p.what, err)
				}
			}
			runtime.GC()
			runtime.ReadMemStats(&ms1)
			st := s.Stats()
			t.Logf("%d packets (%d that must draw no reply): %d replies, stats %+v; heap %d KiB before, %d KiB after",
				len(ps), silent, replies, st, ms0.HeapAlloc>>10, ms1.HeapAlloc>>10)
			if got := st.Malformed + st.Ignored + uint64(replies); got != uint64(len(ps)) {
				t.Errorf("malformed %d + ignored %d + replied %d = %d, want the %d packets handled", st.Malformed, st.Ignored, replies, got, len(ps))
			}
		})
	}
}
