package dhcp

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/lease"
)

// Mode is how the server takes part in the network's DHCP.
type Mode string

// Modes.
const (
	// ModeAuthoritative leases addresses from the subnets' pools.
	ModeAuthoritative Mode = "authoritative"
	// ModeProxy answers boot clients with boot options only (PXE
	// proxyDHCP), beside the site's DHCP server that leases the addresses.
	ModeProxy Mode = "proxy"
	// ModeOff serves nothing.
	ModeOff Mode = "off"
)

// Reservation pins an address to a MAC.
type Reservation struct {
	MAC      net.HardwareAddr
	IP       netip.Addr
	Hostname string
}

// Subnet is one network the server leases addresses on, directly or
// through relays (giaddr).
type Subnet struct {
	Prefix       netip.Prefix
	First, Last  netip.Addr // the pool; reservations may lie outside it
	Router       netip.Addr
	DNS          []netip.Addr
	Domain       string
	LeaseTime    time.Duration // 0 means one hour
	Reservations []Reservation
	// Relays are the relay agents that may forward requests for this
	// subnet: a relayed request (giaddr set) is answered only when the
	// packet comes from an address in Relays and its giaddr is in the
	// subnet or in Relays. Anyone can write a giaddr, so without this any
	// host could draw from the pool, or have replies sent to the address
	// it names. AnyRelay admits every sender (a lab).
	Relays   []netip.Prefix
	AnyRelay bool
}

// Stats counts what the server saw. Read it with Server.Stats.
type Stats struct {
	Received, Replied, Malformed, Ignored, NAKs uint64
	// RelayRefused counts relayed requests from a sender that is not a
	// relay of the subnet; they get no reply.
	RelayRefused uint64
	// Throttled counts requests of unknown clients dropped over
	// UnknownRate.
	Throttled uint64
	// Overloaded counts requests dropped unread because the worker of
	// their client had a full queue, or they waited in it too long.
	Overloaded uint64
	// Superseded counts DISCOVERs and REQUESTs dropped unread because
	// their client sent a newer one while they waited.
	Superseded uint64
}

// Server is a DHCPv4 server. Zero values of optional fields are defaults.
type Server struct {
	Mode Mode
	// ServerIP is the server identifier (option 54) and, for boot
	// clients, the TFTP server (siaddr).
	ServerIP netip.Addr
	Subnets  []Subnet
	// ProxyPort marks the server behind port 4011, where PXE clients ask
	// a proxy for their boot file after taking an address elsewhere.
	ProxyPort bool
	Booter    boot.Booter
	// Extern, when set, answers the boot options of the MACs another
	// provisioning system owns (Ironic), instead of Booter.
	Extern   Extern
	Leases   Leases
	Recorder boot.Recorder
	Logger   *slog.Logger
	// OfferTime is how long an offered address is held for the client's
	// REQUEST (default one minute); DeclineTime how long a declined
	// address rests (default ten minutes).
	OfferTime, DeclineTime time.Duration
	Now                    func() time.Time
	// Known says whether a MAC is a client rackboot knows (an enrolled
	// node). Clients with a reservation or a live lease are known too.
	// Nil knows nobody else.
	Known func(ctx context.Context, mac net.HardwareAddr) bool
	// UnknownRate is how many requests a second from unknown clients are
	// handled per relay (and for the local segment), UnknownBurst how many
	// at once (defaults 100 and twice the rate; a negative rate has no
	// limit). Over it they are dropped and counted, so a flood of made-up
	// MACs never crowds out the known nodes, which are never limited.
	UnknownRate  float64
	UnknownBurst int
	// KnownReserve is the share of each pool (0 to 0.5) that unknown
	// clients are never offered, so that a flood cannot exhaust what the
	// known nodes need; pools under ten addresses keep none. Zero keeps
	// none: new machines are unknown at their first DISCOVER, and a pool
	// sized for a rack of them must serve them all.
	KnownReserve float64
	// Workers is how many requests are handled at once (default 64).
	// Each client's requests are handled one after another, in order.
	Workers int

	// queueLen replaces workerQueue (tests).
	queueLen int

	overloaded, superseded,
	received, replied, malformed, ignored, naks, relayRefused, throttled atomic.Uint64
	limiter unknownLimiter
}

// Stats returns the counters.
func (s *Server) Stats() Stats {
	return Stats{Received: s.received.Load(), Replied: s.replied.Load(), Malformed: s.malformed.Load(),
		Ignored: s.ignored.Load(), NAKs: s.naks.Load(), RelayRefused: s.relayRefused.Load(), Throttled: s.throttled.Load(),
		Overloaded: s.overloaded.Load(), Superseded: s.superseded.Load()}
}

func (s *Server) log() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}

func (s *Server) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// Serve answers requests on conn until ctx ends, then returns nil, once
// every worker has finished the packet in its hands.
//
// Packets are handled by a pool of workers, so that one client's reply
// waiting for its lease to reach the disk does not hold up the others
// (and the lease store can commit the leases of many in one write). All
// packets of one client (by chaddr) go to one worker, so a client's
// requests are never handled at once; the worker takes them in the order
// its queue ranks them (see queue), where a client's newer DISCOVER or
// REQUEST replaces its older one.
func (s *Server) Serve(ctx context.Context, conn net.PacketConn) error {
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	workers := s.Workers
	if workers <= 0 {
		workers = 64
	}
	queues := make([]*queue, workers)
	var wg sync.WaitGroup
	for i := range queues {
		queues[i] = newQueue(cmp.Or(s.queueLen, workerQueue), &s.overloaded, &s.superseded)
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.work(ctx, conn, queues[i])
		}()
	}
	defer func() {
		for _, q := range queues {
			q.close()
		}
		wg.Wait()
	}()
	buf := make([]byte, 4096)
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
			return fmt.Errorf("dhcp read: %w", err)
		}
		s.received.Add(1)
		p := packet{b: append([]byte(nil), buf[:n]...), peer: peer, at: time.Now()}
		classify(&p)
		// The reader never waits for a busy worker: a full queue drops
		// what matters least, and the client asks again.
		queues[shard(p.b, len(queues))].push(p)
	}
}

// shard is the worker of a packet: a hash of its chaddr (RFC 2131
// offsets: hlen at 2, chaddr at 28). A packet too short for one is
// malformed, and any worker will drop it.
func shard(b []byte, n int) int {
	if len(b) < 44 {
		return 0
	}
	h := fnv.New32a()
	h.Write(b[28 : 28+min(int(b[2]), 16)])
	return int(h.Sum32() % uint32(n))
}

// work handles the packets of one queue until it is closed; packets
// still queued when ctx ends are dropped, not answered late.
func (s *Server) work(ctx context.Context, conn net.PacketConn, q *queue) {
	for {
		p, ok := q.pop(time.Now)
		if !ok {
			return
		}
		if ctx.Err() != nil {
			continue
		}
		reply, dst := s.HandleBytes(ctx, p.b, p.peer)
		if reply == nil {
			continue
		}
		if _, err := conn.WriteTo(reply.ToBytes(), dst); err != nil {
			s.log().Warn("dhcp send", "peer", dst.String(), "mac", reply.ClientHWAddr.String(), "err", err)
			continue
		}
		s.replied.Add(1)
	}
}

// HandleBytes parses one packet and handles it. Malformed packets are
// dropped and counted.
func (s *Server) HandleBytes(ctx context.Context, b []byte, peer net.Addr) (*dhcpv4.DHCPv4, net.Addr) {
	req, err := dhcpv4.FromBytes(b)
	if err != nil || req.OpCode != dhcpv4.OpcodeBootRequest || req.MessageType() == dhcpv4.MessageTypeNone ||
		len(req.ClientHWAddr) != 6 {
		s.malformed.Add(1)
		s.log().Debug("dhcp dropped a malformed packet", "peer", fmt.Sprint(peer), "bytes", len(b))
		return nil, nil
	}
	reply, dst := s.Handle(ctx, req, peer)
	if reply == nil {
		s.ignored.Add(1)
	}
	return reply, dst
}

// Handle decides the reply to one request and where it goes; nil means
// no reply. It touches no socket.
func (s *Server) Handle(ctx context.Context, req *dhcpv4.DHCPv4, peer net.Addr) (*dhcpv4.DHCPv4, net.Addr) {
	c, isBoot := Classify(req)
	mt := req.MessageType()
	log := s.log().With("mac", req.ClientHWAddr.String(), "xid", req.TransactionID.String(), "type", mt.String())
	if g := addr(req.GatewayIPAddr); g.IsValid() && !s.relayAllowed(g, peer) {
		s.relayRefused.Add(1)
		log.Warn("dhcp dropped a relayed request from a sender that is not a relay of the subnet", "giaddr", g.String(), "peer", fmt.Sprint(peer))
		return nil, nil
	}
	known := s.known(ctx, req)
	if s.Extern != nil {
		if r, ok := s.Extern.ExternBoot(ctx, req.ClientHWAddr, c.IPXE); ok {
			if r.Ignore {
				log.Debug("dhcp: the client's provisioning system ignores it (a dnsmasq host marked ignore)")
				return nil, nil
			}
			known = true
		}
	}
	// One budget per subnet, not per giaddr: a sender picks its giaddr.
	bucket := netip.Prefix{}
	if sn, ok := s.subnetFor(req); ok {
		bucket = sn.Prefix
	}
	if !known && !s.limiter.allow(bucket, s.UnknownRate, s.UnknownBurst, s.now()) {
		if s.throttled.Add(1)%1000 == 1 {
			log.Warn("dhcp dropping requests of unknown clients over the rate limit", "giaddr", req.GatewayIPAddr.String(), "dropped", s.throttled.Load())
		}
		return nil, nil
	}
	// The agent's first exchange goes in the boot trace too (not its
	// renewals): a boot whose agent got an address and never called in
	// then says so.
	traced := isBoot || boot.IsAgentUserClass(c.UserClass) && !addr(req.ClientIPAddr).IsValid()
	if traced {
		s.record(ctx, boot.Event{MAC: req.ClientHWAddr, Proto: "dhcp", Kind: kind(mt), Options: options(req, c),
			IP: addr(req.ClientIPAddr)})
	}
	var reply *dhcpv4.DHCPv4
	var toClient bool
	var err error
	switch s.Mode {
	case ModeProxy:
		reply, err = s.proxy(ctx, req, c, isBoot)
	case ModeAuthoritative:
		reply, toClient, err = s.authoritative(ctx, req, c, isBoot, known, log)
	default:
		return nil, nil
	}
	if err != nil {
		log.Warn("dhcp", "err", err)
	}
	if reply == nil {
		return nil, nil
	}
	if traced {
		s.record(ctx, boot.Event{MAC: req.ClientHWAddr, Proto: "dhcp", Kind: kind(reply.MessageType()),
			File: reply.BootFileNameOption(), IP: addr(reply.YourIPAddr), Options: options(req, c)})
	}
	log.Debug("dhcp reply", "reply", reply.MessageType().String(), "yiaddr", reply.YourIPAddr.String(), "file", reply.BootFileNameOption())
	return reply, s.destination(req, peer, toClient)
}

// known says whether the client of req is one rackboot knows: an enrolled
// node, a reservation, a live lease of its subnet.
func (s *Server) known(ctx context.Context, req *dhcpv4.DHCPv4) bool {
	mac := req.ClientHWAddr
	if s.Known != nil && s.Known(ctx, mac) {
		return true
	}
	sn, ok := s.subnetFor(req)
	if !ok {
		return false
	}
	if _, ok := sn.reservation(mac); ok {
		return true
	}
	if s.Mode == ModeAuthoritative && s.Leases != nil {
		if _, err := s.Leases.ByMAC(ctx, sn.Prefix, mac); err == nil {
			return true
		}
	}
	return false
}

// unknownLimiter is a token bucket per subnet (the zero Prefix is for
// requests of no subnet) for the requests of unknown clients.
type unknownLimiter struct {
	mu      sync.Mutex
	buckets map[netip.Prefix]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

func (l *unknownLimiter) allow(key netip.Prefix, rate float64, burst int, now time.Time) bool {
	if rate < 0 {
		return true
	}
	if rate == 0 {
		rate = 100
	}
	if burst <= 0 {
		burst = int(2 * rate)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.buckets == nil {
		l.buckets = map[netip.Prefix]*bucket{}
	}
	b := l.buckets[key] // the configured subnets: a bounded set
	if b == nil {
		b = &bucket{tokens: float64(burst), last: now}
		l.buckets[key] = b
	}
	b.tokens = min(float64(burst), b.tokens+now.Sub(b.last).Seconds()*rate)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// relayAllowed says whether a request with giaddr g, arriving from peer,
// comes from a relay agent of the subnet g is on.
func (s *Server) relayAllowed(g netip.Addr, peer net.Addr) bool {
	src := netip.Addr{}
	if u, ok := peer.(*net.UDPAddr); ok && u != nil {
		src = addr(u.IP)
	}
	for _, sn := range s.Subnets {
		if !sn.Prefix.Contains(g) && !listed(sn.Relays, g) {
			continue
		}
		if sn.AnyRelay || (src.IsValid() && listed(sn.Relays, src)) {
			return true
		}
	}
	return false
}

func listed(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func kind(mt dhcpv4.MessageType) string {
	return strings.ToLower(strings.TrimPrefix(mt.String(), "DHCP"))
}

func addr(ip net.IP) netip.Addr {
	a, ok := netip.AddrFromSlice(ip.To4())
	if !ok || a.IsUnspecified() {
		return netip.Addr{}
	}
	return a
}

func ip(a netip.Addr) net.IP { return net.IP(a.AsSlice()) }

func (s *Server) record(ctx context.Context, e boot.Event) {
	if s.Recorder == nil {
		return
	}
	e.Time, e.Size = s.now(), -1
	s.Recorder.Record(ctx, e)
}

// destination follows RFC 2131 4.1: relays get the reply at giaddr (a
// relay already checked by relayAllowed), a client at its ciaddr only
// when toClient says the address is its own (a renewal of a lease it
// holds, an INFORM from a served subnet) and the request came from that
// address, everyone else by broadcast (rackboot has no raw socket to
// unicast to an address the client does not have yet). A ciaddr is the
// client's word: unicasting to any ciaddr would let anyone aim replies at
// a host of their choosing. And a reply to an address no host holds waits
// in the kernel's neighbour queue for the 3 s ARP takes to give up,
// charged to the server's socket: a couple of hundred of them fill its
// send buffer and every reply, to everyone, waits with them. A host that
// sends from its address answers ARP.
func (s *Server) destination(req *dhcpv4.DHCPv4, peer net.Addr, toClient bool) net.Addr {
	switch {
	case addr(req.GatewayIPAddr).IsValid():
		return &net.UDPAddr{IP: req.GatewayIPAddr, Port: 67}
	case s.ProxyPort:
		return peer
	case toClient && sentFrom(peer, addr(req.ClientIPAddr)):
		return &net.UDPAddr{IP: req.ClientIPAddr, Port: 68}
	}
	return &net.UDPAddr{IP: net.IPv4bcast, Port: 68}
}

// sentFrom says whether the packet from peer came from address a.
func sentFrom(peer net.Addr, a netip.Addr) bool {
	u, ok := peer.(*net.UDPAddr)
	return ok && u != nil && a.IsValid() && addr(u.IP) == a
}

// proxy answers boot clients only, never with an address.
func (s *Server) proxy(ctx context.Context, req *dhcpv4.DHCPv4, c boot.Client, isBoot bool) (*dhcpv4.DHCPv4, error) {
	if !isBoot {
		return nil, nil
	}
	mt := req.MessageType()
	var rt dhcpv4.MessageType
	switch {
	case !s.ProxyPort && mt == dhcpv4.MessageTypeDiscover:
		rt = dhcpv4.MessageTypeOffer
	case !s.ProxyPort && mt == dhcpv4.MessageTypeRequest && req.ServerIdentifier().Equal(ip(s.ServerIP)):
		// Some firmware sends its REQUEST for the proxy offer to port 67
		// instead of 4011. A REQUEST naming another server belongs to the
		// site's DHCP server and is none of a proxy's business.
		rt = dhcpv4.MessageTypeAck
	case s.ProxyPort && (mt == dhcpv4.MessageTypeRequest || mt == dhcpv4.MessageTypeInform):
		rt = dhcpv4.MessageTypeAck
	default:
		return nil, nil
	}
	reply, err := dhcpv4.NewReplyFromRequest(req, dhcpv4.WithMessageType(rt),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(ip(s.ServerIP))))
	if err != nil {
		return nil, fmt.Errorf("proxy reply: %w", err)
	}
	reply.YourIPAddr = net.IPv4zero
	if rt == dhcpv4.MessageTypeAck && req.ClientIPAddr != nil {
		reply.ClientIPAddr = req.ClientIPAddr
	}
	if !s.bootOptions(ctx, reply, c) {
		return nil, nil // nothing to boot: a proxy has nothing else to say
	}
	return reply, nil
}

// bootOptions asks the Booter and writes its answer into reply. It
// reports whether there was one.
func (s *Server) bootOptions(ctx context.Context, reply *dhcpv4.DHCPv4, c boot.Client) bool {
	if s.Extern != nil {
		if r, ok := s.Extern.ExternBoot(ctx, c.MAC, c.IPXE); ok {
			if r.Ignore {
				return false
			}
			s.externOptions(reply, r)
			return true
		}
	}
	if s.Booter == nil {
		return false
	}
	o, err := s.Booter.BootOffer(ctx, c)
	if errors.Is(err, boot.ErrUnknownNode) {
		s.log().Debug("no boot offer for a client that is not a node (enroll: known)", "mac", c.MAC.String())
		return false
	}
	if errors.Is(err, boot.ErrOtherOwner) {
		s.log().Debug("no boot offer for a node Ironic owns", "mac", c.MAC.String())
		return false
	}
	if err != nil {
		s.log().Warn("no boot offer", "mac", c.MAC.String(), "arch", c.Arch.String(), "err", err)
		return false
	}
	next := s.ServerIP
	if o.NextServer.Is4() && !o.NextServer.IsUnspecified() {
		next = o.NextServer
	}
	reply.ServerIPAddr = ip(next)
	reply.BootFileName = o.File
	reply.UpdateOption(dhcpv4.OptBootFileName(o.File))
	reply.UpdateOption(dhcpv4.OptTFTPServerName(next.String()))
	if o.HTTPClient {
		reply.UpdateOption(dhcpv4.OptClassIdentifier("HTTPClient"))
	} else {
		reply.UpdateOption(dhcpv4.OptClassIdentifier("PXEClient"))
	}
	if !o.HTTPClient && !c.IPXE {
		// PXE discovery control (sub-option 6) = 8: boot the file in
		// this offer, without waiting for boot server discovery.
		reply.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionVendorSpecificInformation, []byte{6, 1, 8, 255}))
	}
	return true
}

func (s *Server) subnetFor(req *dhcpv4.DHCPv4) (Subnet, bool) {
	at := s.ServerIP
	if g := addr(req.GatewayIPAddr); g.IsValid() {
		at = g
	}
	for _, sn := range s.Subnets {
		if sn.Prefix.Contains(at) {
			return sn, true
		}
	}
	return Subnet{}, false
}

func (sn Subnet) reservation(mac net.HardwareAddr) (Reservation, bool) {
	for _, r := range sn.Reservations {
		if r.MAC.String() == mac.String() {
			return r, true
		}
	}
	return Reservation{}, false
}

func (sn Subnet) reservedFor(a netip.Addr) (Reservation, bool) {
	for _, r := range sn.Reservations {
		if r.IP == a {
			return r, true
		}
	}
	return Reservation{}, false
}

func (sn Subnet) reservedIPs() []netip.Addr {
	out := make([]netip.Addr, 0, len(sn.Reservations))
	for _, r := range sn.Reservations {
		out = append(out, r.IP)
	}
	return out
}

func (sn Subnet) leaseTime() time.Duration {
	if sn.LeaseTime <= 0 {
		return time.Hour
	}
	return sn.LeaseTime
}

// unknownLast is the end of the part of the pool unknown clients may be
// offered: in pools of ten addresses or more, all but the share reserve
// of it, which stays for known nodes.
func (sn Subnet) unknownLast(reserve float64) netip.Addr {
	if reserve <= 0 || !sn.First.Is4() || !sn.Last.Is4() {
		return sn.Last
	}
	reserve = min(reserve, 0.5)
	f, l := sn.First.As4(), sn.Last.As4()
	first := uint32(f[0])<<24 | uint32(f[1])<<16 | uint32(f[2])<<8 | uint32(f[3])
	last := uint32(l[0])<<24 | uint32(l[1])<<16 | uint32(l[2])<<8 | uint32(l[3])
	if last < first+9 {
		return sn.Last
	}
	keep := uint32(float64(last-first+1) * reserve)
	end := last - keep
	return netip.AddrFrom4([4]byte{byte(end >> 24), byte(end >> 16), byte(end >> 8), byte(end)})
}

func (sn Subnet) inPool(a netip.Addr) bool {
	return sn.First.Compare(a) <= 0 && a.Compare(sn.Last) <= 0
}

// authoritative answers a request from the pools. toClient says the
// reply may go to the client's ciaddr (see destination).
func (s *Server) authoritative(ctx context.Context, req *dhcpv4.DHCPv4, c boot.Client, isBoot, known bool, log *slog.Logger) (reply *dhcpv4.DHCPv4, toClient bool, err error) {
	if s.Leases == nil {
		return nil, false, errors.New("authoritative mode without a lease store")
	}
	sn, ok := s.subnetFor(req)
	if !ok {
		return nil, false, fmt.Errorf("no subnet for a request via %s", req.GatewayIPAddr)
	}
	ciaddr := addr(req.ClientIPAddr)
	c.Network = sn.Prefix
	mac := req.ClientHWAddr
	now := s.now()
	switch req.MessageType() {
	case dhcpv4.MessageTypeDiscover:
		var yi netip.Addr
		if r, ok := sn.reservation(mac); ok {
			yi = r.IP
		} else {
			offerTime := s.OfferTime
			if offerTime <= 0 {
				offerTime = time.Minute
			}
			// Unknown clients draw from the pool but its last tenth, which
			// is kept for known nodes: a flood of made-up MACs can exhaust
			// only its own part.
			last := sn.Last
			if !known {
				last = sn.unknownLast(s.KnownReserve)
			}
			l, err := s.Leases.Allocate(ctx, sn.Prefix, sn.First, last, mac, addr(req.RequestedIPAddress()), sn.reservedIPs(), now.Add(offerTime))
			if err != nil {
				return nil, false, err
			}
			yi = l.IP
		}
		reply, err := s.leaseReply(ctx, req, c, isBoot, sn, dhcpv4.MessageTypeOffer, yi, true)
		return reply, false, err

	case dhcpv4.MessageTypeRequest:
		if sid := req.ServerIdentifier(); sid != nil && !sid.Equal(ip(s.ServerIP)) {
			// The client took another server's offer: free ours.
			if err := s.Leases.ReleaseOffer(ctx, sn.Prefix, mac, addr(req.RequestedIPAddress())); err != nil {
				log.Warn("free offer", "err", err)
			}
			return nil, false, nil
		}
		want := addr(req.RequestedIPAddress())
		if !want.IsValid() {
			want = addr(req.ClientIPAddr)
		}
		nak := func(why string) (*dhcpv4.DHCPv4, bool, error) {
			s.naks.Add(1)
			log.Info("dhcp nak", "ip", want.String(), "why", why)
			r, err := dhcpv4.NewReplyFromRequest(req, dhcpv4.WithMessageType(dhcpv4.MessageTypeNak),
				dhcpv4.WithOption(dhcpv4.OptServerIdentifier(ip(s.ServerIP))), dhcpv4.WithOption(dhcpv4.OptMessage(why)))
			if err != nil {
				return nil, false, err
			}
			r.YourIPAddr = net.IPv4zero
			return r, false, nil // a NAK is broadcast (RFC 2131 4.3.2)
		}
		if !want.IsValid() {
			return nak("no address requested")
		}
		if !sn.Prefix.Contains(want) {
			return nak(fmt.Sprintf("%s is not on subnet %s", want, sn.Prefix))
		}
		r, reserved := sn.reservation(mac)
		switch {
		case reserved && r.IP != want:
			return nak(fmt.Sprintf("%s is reserved %s", mac, r.IP))
		case !reserved:
			if other, ok := sn.reservedFor(want); ok {
				return nak(fmt.Sprintf("%s is reserved for %s", want, other.MAC))
			}
			if !sn.inPool(want) {
				return nak(fmt.Sprintf("%s is outside the pool", want))
			}
			// The pool's last tenth is for known nodes: an unknown client
			// may not claim it by asking for it outright.
			if !known && want.Compare(sn.unknownLast(s.KnownReserve)) > 0 {
				if l, err := s.Leases.ByIP(ctx, want); err != nil || !sameMAC(l.MAC, mac) {
					return nak(fmt.Sprintf("%s is kept for known nodes", want))
				}
			}
		}
		hostname := req.HostName()
		if reserved && r.Hostname != "" {
			hostname = r.Hostname
		}
		// A renewing client (RFC 2131 4.3.2: ciaddr filled in) is answered
		// at its ciaddr only if that is a lease it holds already.
		renewing := false
		if ciaddr.IsValid() && ciaddr == want {
			if l, err := s.Leases.ByIP(ctx, ciaddr); err == nil && l.State == lease.Bound && sameMAC(l.MAC, mac) {
				renewing = true
			}
		}
		if _, err := s.Leases.Bind(ctx, sn.Prefix, mac, want, hostname, now.Add(sn.leaseTime())); err != nil {
			if errors.Is(err, lease.ErrNoLease) {
				return nak(fmt.Sprintf("%s is leased to another client", want))
			}
			return nil, false, err
		}
		reply, err := s.leaseReply(ctx, req, c, isBoot, sn, dhcpv4.MessageTypeAck, want, true)
		return reply, renewing, err

	case dhcpv4.MessageTypeDecline:
		return nil, false, s.decline(ctx, req, log)

	case dhcpv4.MessageTypeRelease:
		if ciaddr.IsValid() {
			return nil, false, s.Leases.Release(ctx, mac, ciaddr)
		}
		return nil, false, nil

	case dhcpv4.MessageTypeInform:
		// RFC 2131 3.4: the client has its address and asks for the rest;
		// the answer goes to ciaddr, so only to an address of a subnet
		// rackboot serves.
		if !s.served(ciaddr) {
			log.Debug("dhcp inform from an address outside the served subnets", "ciaddr", ciaddr.String())
			return nil, false, nil
		}
		reply, err := s.leaseReply(ctx, req, c, isBoot, sn, dhcpv4.MessageTypeAck, netip.Addr{}, false)
		return reply, true, err
	}
	return nil, false, nil
}

// decline rests an address a client found in use, but only when the
// address is that client's: held by it or offered to it. Anyone else's
// DECLINE would take addresses away from their owners (a few hundred
// packets empty a /24). A reserved address is never taken away: a
// conflict on it is logged for an operator to resolve.
func (s *Server) decline(ctx context.Context, req *dhcpv4.DHCPv4, log *slog.Logger) error {
	bad := addr(req.RequestedIPAddress())
	if !bad.IsValid() {
		return nil
	}
	mac := req.ClientHWAddr
	for _, sn := range s.Subnets {
		if r, ok := sn.reservedFor(bad); ok {
			if sameMAC(r.MAC, mac) {
				log.Warn("dhcp decline of a reserved address: another machine uses it; it stays reserved", "ip", bad.String())
			} else {
				log.Warn("dhcp decline ignored: the address is reserved for another MAC", "ip", bad.String(), "reserved_for", r.MAC.String())
			}
			return nil
		}
	}
	l, err := s.Leases.ByIP(ctx, bad)
	if err != nil || !sameMAC(l.MAC, mac) || (l.State != lease.Bound && l.State != lease.Offered) {
		log.Warn("dhcp decline ignored: the address is not this client's", "ip", bad.String())
		return nil
	}
	d := s.DeclineTime
	if d <= 0 {
		d = 10 * time.Minute
	}
	log.Warn("dhcp decline: the address is in use on the network", "ip", bad.String(), "rests", d.String())
	return s.Leases.Decline(ctx, bad, s.now().Add(d))
}

// served says whether a is inside a subnet the server leases on.
func (s *Server) served(a netip.Addr) bool {
	if !a.IsValid() {
		return false
	}
	for _, sn := range s.Subnets {
		if sn.Prefix.Contains(a) {
			return true
		}
	}
	return false
}

func sameMAC(a, b net.HardwareAddr) bool {
	return len(a) > 0 && string(a) == string(b)
}

func (s *Server) leaseReply(ctx context.Context, req *dhcpv4.DHCPv4, c boot.Client, isBoot bool, sn Subnet, mt dhcpv4.MessageType, yi netip.Addr, lease bool) (*dhcpv4.DHCPv4, error) {
	mask := net.CIDRMask(sn.Prefix.Bits(), 32)
	mods := []dhcpv4.Modifier{
		dhcpv4.WithMessageType(mt),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(ip(s.ServerIP))),
		dhcpv4.WithOption(dhcpv4.OptSubnetMask(mask)),
	}
	if sn.Router.IsValid() {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptRouter(ip(sn.Router))))
	}
	if len(sn.DNS) > 0 {
		var d []net.IP
		for _, a := range sn.DNS {
			d = append(d, ip(a))
		}
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptDNS(d...)))
	}
	if sn.Domain != "" {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptDomainName(sn.Domain)))
	}
	if lease {
		lt := sn.leaseTime()
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptIPAddressLeaseTime(lt)),
			dhcpv4.WithOption(dhcpv4.OptRenewTimeValue(lt/2)),
			dhcpv4.WithOption(dhcpv4.OptRebindingTimeValue(lt*7/8)))
		if r, ok := sn.reservation(req.ClientHWAddr); ok && r.Hostname != "" {
			mods = append(mods, dhcpv4.WithOption(dhcpv4.OptHostName(r.Hostname)))
		}
	}
	reply, err := dhcpv4.NewReplyFromRequest(req, mods...)
	if err != nil {
		return nil, fmt.Errorf("build %s: %w", mt, err)
	}
	if mt == dhcpv4.MessageTypeAck && req.ClientIPAddr != nil {
		reply.ClientIPAddr = req.ClientIPAddr // RFC 2131 table 3
	}
	if yi.IsValid() {
		reply.YourIPAddr = ip(yi)
	} else {
		reply.YourIPAddr = net.IPv4zero
	}
	if isBoot {
		s.bootOptions(ctx, reply, c)
	}
	return reply, nil
}
