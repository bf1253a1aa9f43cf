package dhcp

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/lease"
)

// archBooter offers a file named after the client type, as the core would.
type archBooter struct{}

func (archBooter) BootOffer(ctx context.Context, c boot.Client) (boot.Offer, error) {
	switch {
	case c.IPXE:
		return boot.Offer{File: "http://10.0.0.1:8080/boot.ipxe"}, nil
	case c.Arch.HTTP():
		return boot.Offer{File: "http://10.0.0.1:8080/firmware/" + c.Arch.String(), HTTPClient: true}, nil
	case c.Arch == boot.ClientIA32UEFI:
		return boot.Offer{}, fmt.Errorf("no loader")
	}
	return boot.Offer{File: "loader/" + c.Arch.String()}, nil
}

var (
	local  = netip.MustParsePrefix("10.0.0.0/24")
	remote = netip.MustParsePrefix("10.5.0.0/24")
	mac1   = net.HardwareAddr{0x52, 0x54, 0, 0, 0, 1}
	mac2   = net.HardwareAddr{0x52, 0x54, 0, 0, 0, 2}
	resMAC = net.HardwareAddr{0x52, 0x54, 0, 0, 0, 9}
)

func newServer(mode Mode) (*Server, *MemoryLeases) {
	l := &MemoryLeases{}
	return &Server{
		Mode:     mode,
		ServerIP: netip.MustParseAddr("10.0.0.1"),
		Subnets: []Subnet{
			{Prefix: local, First: netip.MustParseAddr("10.0.0.100"), Last: netip.MustParseAddr("10.0.0.101"),
				Router: netip.MustParseAddr("10.0.0.254"), DNS: []netip.Addr{netip.MustParseAddr("10.0.0.53")}, Domain: "rack",
				Reservations: []Reservation{{MAC: resMAC, IP: netip.MustParseAddr("10.0.0.9"), Hostname: "gpu-09"}}},
			{Prefix: remote, First: netip.MustParseAddr("10.5.0.100"), Last: netip.MustParseAddr("10.5.0.200"),
				Relays: []netip.Prefix{netip.MustParsePrefix("10.5.0.1/32"), netip.MustParsePrefix("10.9.9.9/32")}},
		},
		Booter: archBooter{},
		Leases: l,
	}, l
}

func pxe(arch uint16) []dhcpv4.Modifier {
	return []dhcpv4.Modifier{
		dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.OptionClientSystemArchitectureType, []byte{byte(arch >> 8), byte(arch)})),
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier(fmt.Sprintf("PXEClient:Arch:%05d:UNDI:003000", arch))),
	}
}

func discover(t *testing.T, mac net.HardwareAddr, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	t.Helper()
	m, err := dhcpv4.NewDiscovery(mac, mods...)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func request(t *testing.T, mac net.HardwareAddr, ip, server string, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	t.Helper()
	mods = append(mods, dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest), dhcpv4.WithHwAddr(mac))
	if ip != "" {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP(ip))))
	}
	if server != "" {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.ParseIP(server))))
	}
	m, err := dhcpv4.New(mods...)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// summary is a stable text form of a reply: what a client acts on.
func summary(m *dhcpv4.DHCPv4, dst net.Addr) string {
	if m == nil {
		return "no reply"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s yiaddr=%s siaddr=%s file=%q to=%v", m.MessageType(), m.YourIPAddr, m.ServerIPAddr, m.BootFileName, dst)
	if vc := m.ClassIdentifier(); vc != "" {
		fmt.Fprintf(&b, " class=%s", vc)
	}
	if o := m.GetOneOption(dhcpv4.OptionVendorSpecificInformation); o != nil {
		fmt.Fprintf(&b, " pxe=%x", o)
	}
	if r := m.Router(); len(r) > 0 {
		fmt.Fprintf(&b, " router=%s", r[0])
	}
	if h := m.HostName(); h != "" {
		fmt.Fprintf(&b, " host=%s", h)
	}
	if msg := m.Message(); msg != "" {
		fmt.Fprintf(&b, " msg=%q", msg)
	}
	return b.String()
}

func TestHandleBootClients(t *testing.T) {
	bcast := "255.255.255.255:68"
	tests := []struct {
		name string
		mods []dhcpv4.Modifier
		want string
	}{
		{"x86 bios", pxe(0), `OFFER yiaddr=10.0.0.100 siaddr=10.0.0.1 file="loader/x86-bios" to=` + bcast + ` class=PXEClient pxe=060108ff router=10.0.0.254`},
		{"x86-64 uefi", pxe(7), `OFFER yiaddr=10.0.0.100 siaddr=10.0.0.1 file="loader/x86_64-uefi" to=` + bcast + ` class=PXEClient pxe=060108ff router=10.0.0.254`},
		{"x86-64 uefi 9", pxe(9), `OFFER yiaddr=10.0.0.100 siaddr=10.0.0.1 file="loader/x86_64-uefi" to=` + bcast + ` class=PXEClient pxe=060108ff router=10.0.0.254`},
		{"aarch64 uefi", pxe(11), `OFFER yiaddr=10.0.0.100 siaddr=10.0.0.1 file="loader/aarch64-uefi" to=` + bcast + ` class=PXEClient pxe=060108ff router=10.0.0.254`},
		{"x86-64 http", pxe(16), `OFFER yiaddr=10.0.0.100 siaddr=10.0.0.1 file="http://10.0.0.1:8080/firmware/x86_64-uefi-http" to=` + bcast + ` class=HTTPClient router=10.0.0.254`},
		{"aarch64 http", pxe(19), `OFFER yiaddr=10.0.0.100 siaddr=10.0.0.1 file="http://10.0.0.1:8080/firmware/aarch64-uefi-http" to=` + bcast + ` class=HTTPClient router=10.0.0.254`},
		{"ipxe", append(pxe(7), dhcpv4.WithOption(dhcpv4.OptUserClass("iPXE"))), `OFFER yiaddr=10.0.0.100 siaddr=10.0.0.1 file="http://10.0.0.1:8080/boot.ipxe" to=` + bcast + ` class=PXEClient router=10.0.0.254`},
		{"no loader for ia32", pxe(6), `OFFER yiaddr=10.0.0.100 siaddr=0.0.0.0 file="" to=` + bcast + ` router=10.0.0.254`},
		{"not a boot client", nil, `OFFER yiaddr=10.0.0.100 siaddr=0.0.0.0 file="" to=` + bcast + ` router=10.0.0.254`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := newServer(ModeAuthoritative)
			reply, dst := s.Handle(context.Background(), discover(t, mac1, tt.mods...), nil)
			if got := summary(reply, dst); got != tt.want {
				t.Errorf("\n got %s\nwant %s", got, tt.want)
			}
		})
	}
}

func TestAuthoritativeExchanges(t *testing.T) {
	ctx := context.Background()
	s, leases := newServer(ModeAuthoritative)
	check := func(name string, m *dhcpv4.DHCPv4, want string) {
		t.Helper()
		reply, dst := s.Handle(ctx, m, nil)
		if got := summary(reply, dst); got != want {
			t.Errorf("%s:\n got %s\nwant %s", name, got, want)
		}
	}
	check("discover", discover(t, mac1), `OFFER yiaddr=10.0.0.100 siaddr=0.0.0.0 file="" to=255.255.255.255:68 router=10.0.0.254`)
	check("request selecting", request(t, mac1, "10.0.0.100", "10.0.0.1"), `ACK yiaddr=10.0.0.100 siaddr=0.0.0.0 file="" to=255.255.255.255:68 router=10.0.0.254`)
	check("another client", discover(t, mac2), `OFFER yiaddr=10.0.0.101 siaddr=0.0.0.0 file="" to=255.255.255.255:68 router=10.0.0.254`)
	check("taken by another MAC", request(t, mac2, "10.0.0.100", ""), `NAK yiaddr=0.0.0.0 siaddr=0.0.0.0 file="" to=255.255.255.255:68 msg="10.0.0.100 is leased to another client"`)
	check("wrong subnet", request(t, mac2, "192.168.1.5", ""), `NAK yiaddr=0.0.0.0 siaddr=0.0.0.0 file="" to=255.255.255.255:68 msg="192.168.1.5 is not on subnet 10.0.0.0/24"`)
	check("someone's reservation", request(t, mac2, "10.0.0.9", ""), `NAK yiaddr=0.0.0.0 siaddr=0.0.0.0 file="" to=255.255.255.255:68 msg="10.0.0.9 is reserved for 52:54:00:00:00:09"`)
	// The same address from another server: a server sharing our
	// database, binding our very lease. It stays.
	check("other server, same address", request(t, mac2, "10.0.0.101", "10.0.0.2"), "no reply")
	if _, err := leases.ByMAC(ctx, local, mac2); err != nil {
		t.Error("the offer the other server is binding was freed")
	}
	check("other server chosen", request(t, mac2, "10.0.0.150", "10.0.0.2"), "no reply")
	if _, err := leases.ByMAC(ctx, local, mac2); err == nil {
		t.Error("the offer to a client that chose another server was kept")
	}
	check("pool exhausted", discover(t, net.HardwareAddr{0x52, 0x54, 0, 0, 0, 3}), `OFFER yiaddr=10.0.0.101 siaddr=0.0.0.0 file="" to=255.255.255.255:68 router=10.0.0.254`)
	check("now really exhausted", discover(t, net.HardwareAddr{0x52, 0x54, 0, 0, 0, 4}), "no reply")
	check("reservation", discover(t, resMAC), `OFFER yiaddr=10.0.0.9 siaddr=0.0.0.0 file="" to=255.255.255.255:68 router=10.0.0.254 host=gpu-09`)
	check("reservation request", request(t, resMAC, "10.0.0.9", "10.0.0.1"), `ACK yiaddr=10.0.0.9 siaddr=0.0.0.0 file="" to=255.255.255.255:68 router=10.0.0.254 host=gpu-09`)

	// A restart loses the store: an INIT-REBOOT for a free address is ACKed.
	var reply *dhcpv4.DHCPv4
	var dst net.Addr
	s2, _ := newServer(ModeAuthoritative)
	reply, _ = s2.Handle(ctx, request(t, mac1, "10.0.0.100", ""), nil)
	if reply == nil || reply.MessageType() != dhcpv4.MessageTypeAck {
		t.Errorf("init-reboot after a restart: %s", summary(reply, nil))
	}

	// RELEASE frees; a DECLINE from the address's holder blocks it for
	// everyone, a DECLINE from anyone else changes nothing.
	rel, _ := dhcpv4.New(dhcpv4.WithMessageType(dhcpv4.MessageTypeRelease), dhcpv4.WithHwAddr(mac1), dhcpv4.WithClientIP(net.ParseIP("10.0.0.100")))
	check("release", rel, "no reply")
	if _, err := leases.ByIP(ctx, netip.MustParseAddr("10.0.0.100")); err == nil {
		t.Error("release kept the lease")
	}
	decline := func(mac net.HardwareAddr, a string) *dhcpv4.DHCPv4 {
		d, _ := dhcpv4.New(dhcpv4.WithMessageType(dhcpv4.MessageTypeDecline), dhcpv4.WithHwAddr(mac),
			dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP(a))))
		return d
	}
	check("decline of a free address", decline(mac1, "10.0.0.100"), "no reply")
	check("a free address stays free", discover(t, mac1), `OFFER yiaddr=10.0.0.100 siaddr=0.0.0.0 file="" to=255.255.255.255:68 router=10.0.0.254`)
	check("decline of another client's offer", decline(mac2, "10.0.0.100"), "no reply")
	check("bound after a stranger's decline", request(t, mac1, "10.0.0.100", "10.0.0.1"), `ACK yiaddr=10.0.0.100 siaddr=0.0.0.0 file="" to=255.255.255.255:68 router=10.0.0.254`)
	check("decline of another client's lease", decline(mac2, "10.0.0.100"), "no reply")
	if l, err := leases.ByIP(ctx, netip.MustParseAddr("10.0.0.100")); err != nil || l.State != lease.Bound || l.MAC.String() != mac1.String() {
		t.Errorf("a stranger's decline took the lease: %+v %v", l, err)
	}
	check("decline of someone's reservation", decline(mac2, "10.0.0.9"), "no reply")
	check("decline of one's own reservation", decline(resMAC, "10.0.0.9"), "no reply")
	check("the reservation is kept", discover(t, resMAC), `OFFER yiaddr=10.0.0.9 siaddr=0.0.0.0 file="" to=255.255.255.255:68 router=10.0.0.254 host=gpu-09`)
	check("decline by the holder", decline(mac1, "10.0.0.100"), "no reply")
	check("declined address not offered", discover(t, mac1), "no reply")

	inf, _ := dhcpv4.New(dhcpv4.WithMessageType(dhcpv4.MessageTypeInform), dhcpv4.WithHwAddr(mac2), dhcpv4.WithClientIP(net.ParseIP("10.0.0.50")))
	reply, dst = s.Handle(ctx, inf, &net.UDPAddr{IP: net.ParseIP("10.0.0.50"), Port: 68})
	if got, want := summary(reply, dst), `ACK yiaddr=0.0.0.0 siaddr=0.0.0.0 file="" to=10.0.0.50:68 router=10.0.0.254`; got != want {
		t.Errorf("inform:\n got %s\nwant %s", got, want)
	}
	if st := s.Stats(); st.NAKs != 3 {
		t.Errorf("stats %+v: want 3 NAKs", st)
	}
}

func TestRelayed(t *testing.T) {
	ctx := context.Background()
	s, _ := newServer(ModeAuthoritative)
	relay := &net.UDPAddr{IP: net.ParseIP("10.5.0.1"), Port: 67}
	m := discover(t, mac1, append(pxe(7), dhcpv4.WithRelay(net.ParseIP("10.5.0.1")))...)
	reply, dst := s.Handle(ctx, m, relay)
	want := `OFFER yiaddr=10.5.0.100 siaddr=10.0.0.1 file="loader/x86_64-uefi" to=10.5.0.1:67 class=PXEClient pxe=060108ff`
	if got := summary(reply, dst); got != want {
		t.Errorf("\n got %s\nwant %s", got, want)
	}
	// A relay that sends from another of its addresses than giaddr.
	other := &net.UDPAddr{IP: net.ParseIP("10.9.9.9"), Port: 67}
	if reply, _ := s.Handle(ctx, discover(t, mac2, dhcpv4.WithRelay(net.ParseIP("10.5.0.1"))), other); reply == nil {
		t.Error("a listed relay sending from another listed address got no reply")
	}
	m = discover(t, mac1, dhcpv4.WithRelay(net.ParseIP("172.16.0.1")))
	if reply, _ := s.Handle(ctx, m, &net.UDPAddr{IP: net.ParseIP("172.16.0.1"), Port: 67}); reply != nil {
		t.Errorf("a relay from an unknown subnet got %s", summary(reply, nil))
	}
	// Anyone can write a giaddr: a host that is not a relay of the
	// subnet draws nothing from its pool and aims no reply anywhere.
	for _, peer := range []net.Addr{nil, &net.UDPAddr{IP: net.ParseIP("10.0.0.66"), Port: 68}, &net.UDPAddr{IP: net.ParseIP("10.5.0.7"), Port: 67}} {
		before := s.Stats().RelayRefused
		m := discover(t, net.HardwareAddr{0x52, 0x54, 0, 0, 0x66, 1}, append(pxe(7), dhcpv4.WithRelay(net.ParseIP("10.5.0.1")))...)
		if reply, dst := s.Handle(ctx, m, peer); reply != nil {
			t.Errorf("forged relay from %v got %s", peer, summary(reply, dst))
		}
		if s.Stats().RelayRefused != before+1 {
			t.Errorf("forged relay from %v not counted: %+v", peer, s.Stats())
		}
	}
	any, _ := newServer(ModeAuthoritative)
	any.Subnets[1].Relays, any.Subnets[1].AnyRelay = nil, true
	if reply, _ := any.Handle(ctx, discover(t, mac1, dhcpv4.WithRelay(net.ParseIP("10.5.0.1"))), nil); reply == nil {
		t.Error("relays: any refused a relayed request")
	}
}

// A ciaddr is only the client's word: replies go there only for a client
// renewing a lease it holds, or an INFORM from a served subnet, and only
// when the request came from that address. Otherwise a forged INFORM or
// renewal aims the reply at an address no host answers ARP for, where it
// holds the server's send buffer for 3 s (TestIntegrationBadTraffic saw
// 3 s stalls of all replies before).
func TestCiaddrReflection(t *testing.T) {
	ctx := context.Background()
	s, _ := newServer(ModeAuthoritative)
	victim := net.ParseIP("192.0.2.77")
	bcast := "255.255.255.255:68"
	withCI := func(a net.IP) dhcpv4.Modifier { return dhcpv4.WithClientIP(a) }
	other := "10.0.0.66"
	cases := []struct {
		name string
		req  *dhcpv4.DHCPv4
		from string
		want string // destination, or "" for no reply
	}{
		{"discover naming a victim", discover(t, mac1, withCI(victim)), other, bcast},
		{"request naming a victim", request(t, mac1, "10.0.0.100", "10.0.0.1", withCI(victim)), other, bcast},
		{"inform from outside the served subnets", mustNew(t, dhcpv4.WithMessageType(dhcpv4.MessageTypeInform), dhcpv4.WithHwAddr(mac2), withCI(victim)), "192.0.2.77", ""},
		{"renewal of another client's lease", request(t, mac2, "", "", withCI(net.ParseIP("10.0.0.100"))), "10.0.0.100", bcast},
		{"renewal of one's own lease", request(t, mac1, "", "", withCI(net.ParseIP("10.0.0.100"))), "10.0.0.100", "10.0.0.100:68"},
		{"renewal of one's own lease sent from another address", request(t, mac1, "", "", withCI(net.ParseIP("10.0.0.100"))), other, bcast},
		{"renewal of one's own lease sent from 0.0.0.0", request(t, mac1, "", "", withCI(net.ParseIP("10.0.0.100"))), "0.0.0.0", bcast},
		{"inform from a served subnet", mustNew(t, dhcpv4.WithMessageType(dhcpv4.MessageTypeInform), dhcpv4.WithHwAddr(mac2), withCI(net.ParseIP("10.0.0.50"))), "10.0.0.50", "10.0.0.50:68"},
		{"inform naming a served address, sent from another", mustNew(t, dhcpv4.WithMessageType(dhcpv4.MessageTypeInform), dhcpv4.WithHwAddr(mac2), withCI(net.ParseIP("10.0.0.50"))), other, bcast},
	}
	for _, c := range cases {
		reply, dst := s.Handle(ctx, c.req, &net.UDPAddr{IP: net.ParseIP(c.from), Port: 68})
		got := ""
		if reply != nil {
			got = dst.String()
		}
		if got != c.want {
			t.Errorf("%s: reply to %q, want %q (%s)", c.name, got, c.want, summary(reply, dst))
		}
	}
}

func mustNew(t *testing.T, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	t.Helper()
	m, err := dhcpv4.New(mods...)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestProxy(t *testing.T) {
	ctx := context.Background()
	s, leases := newServer(ModeProxy)
	reply, dst := s.Handle(ctx, discover(t, mac1, pxe(7)...), nil)
	want := `OFFER yiaddr=0.0.0.0 siaddr=10.0.0.1 file="loader/x86_64-uefi" to=255.255.255.255:68 class=PXEClient pxe=060108ff`
	if got := summary(reply, dst); got != want {
		t.Errorf("proxy offer:\n got %s\nwant %s", got, want)
	}
	if reply, _ := s.Handle(ctx, discover(t, mac2), nil); reply != nil {
		t.Errorf("proxy answered a client without PXE options: %s", summary(reply, nil))
	}
	if reply, _ := s.Handle(ctx, request(t, mac1, "10.0.0.77", "10.0.0.99", pxe(7)...), nil); reply != nil {
		t.Errorf("proxy answered a REQUEST on port 67: %s", summary(reply, nil))
	}
	p4011, _ := newServer(ModeProxy)
	p4011.ProxyPort = true
	peer := &net.UDPAddr{IP: net.ParseIP("10.0.0.77"), Port: 4011}
	req := request(t, mac1, "", "", append(pxe(7), dhcpv4.WithClientIP(net.ParseIP("10.0.0.77")))...)
	reply, dst = p4011.Handle(ctx, req, peer)
	want = `ACK yiaddr=0.0.0.0 siaddr=10.0.0.1 file="loader/x86_64-uefi" to=10.0.0.77:4011 class=PXEClient pxe=060108ff`
	if got := summary(reply, dst); got != want {
		t.Errorf("proxy 4011 ack:\n got %s\nwant %s", got, want)
	}
	if _, err := leases.ByMAC(ctx, local, mac1); err == nil {
		t.Error("proxy mode leased an address")
	}
}

func TestClassify(t *testing.T) {
	tests := []struct {
		name string
		mods []dhcpv4.Modifier
		arch boot.ClientArch
		ipxe bool
		boot bool
	}{
		{"option 93", pxe(11), boot.ClientARM64UEFI, false, true},
		{"vendor class only", []dhcpv4.Modifier{dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00007:UNDI:003000"))}, boot.ClientX64UEFI, false, true},
		{"ipxe raw user class", append(pxe(0), dhcpv4.WithOption(dhcpv4.OptUserClass("iPXE"))), boot.ClientX86BIOS, true, true},
		{"ipxe rfc3004 user class", append(pxe(0), dhcpv4.WithOption(dhcpv4.OptRFC3004UserClass([]string{"iPXE"}))), boot.ClientX86BIOS, true, true},
		{"ipxe option 175", append(pxe(7), dhcpv4.WithGeneric(dhcpv4.GenericOptionCode(175), []byte{1, 1, 1})), boot.ClientX64UEFI, true, true},
		{"plain client", nil, 0xffff, false, false},
		{"pxe without arch", []dhcpv4.Modifier{dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient"))}, 0xffff, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, ok := Classify(discover(t, mac1, tt.mods...))
			if c.Arch != tt.arch || c.IPXE != tt.ipxe || ok != tt.boot {
				t.Errorf("Classify = %+v, %v; want arch %d ipxe %v boot %v", c, ok, tt.arch, tt.ipxe, tt.boot)
			}
		})
	}
}

func TestMalformedCounted(t *testing.T) {
	s, _ := newServer(ModeAuthoritative)
	good := discover(t, mac1).ToBytes()
	reply := discover(t, mac1)
	reply.OpCode = dhcpv4.OpcodeBootReply
	for _, b := range [][]byte{nil, {1, 2, 3}, good[:100], reply.ToBytes()} {
		if r, _ := s.HandleBytes(context.Background(), b, nil); r != nil {
			t.Errorf("%d-byte packet got a reply", len(b))
		}
	}
	if st := s.Stats(); st.Malformed != 4 {
		t.Errorf("stats %+v: want 4 malformed", st)
	}
}

func TestRecordsBootEvents(t *testing.T) {
	s, _ := newServer(ModeAuthoritative)
	var events []boot.Event
	s.Recorder = boot.RecorderFunc(func(_ context.Context, e boot.Event) { events = append(events, e) })
	m := discover(t, mac1, append(pxe(7), dhcpv4.WithOption(dhcpv4.OptUserClass("iPXE")))...)
	s.Handle(context.Background(), m, nil)
	s.Handle(context.Background(), discover(t, mac2), nil) // not a boot client: not traced
	if len(events) != 2 || events[0].Kind != "discover" || events[1].Kind != "offer" ||
		events[0].Options["93"] != "7" || events[0].Options["77"] != "iPXE" || events[1].File != "http://10.0.0.1:8080/boot.ipxe" {
		t.Errorf("events = %+v", events)
	}
}

// fuzzSeeds are the packets FuzzHandle starts from; TestFuzzSeeds
// writes them to testdata/fuzz/FuzzHandle with -update.
func fuzzSeeds() map[string][]byte {
	seeds := map[string][]byte{}
	// A fixed xid keeps the files stable across -update runs.
	fixed := func(m *dhcpv4.DHCPv4) []byte {
		m.TransactionID = dhcpv4.TransactionID{0x72, 0x62, 0x6f, 0x74}
		return m.ToBytes()
	}
	for _, arch := range []uint16{0, 7, 11, 16, 19} {
		m, _ := dhcpv4.NewDiscovery(mac1, pxe(arch)...)
		seeds[fmt.Sprintf("discover-arch-%d", arch)] = fixed(m)
	}
	m, _ := dhcpv4.NewDiscovery(mac1, append(pxe(7), dhcpv4.WithOption(dhcpv4.OptUserClass("iPXE")),
		dhcpv4.WithGeneric(dhcpv4.GenericOptionCode(175), []byte{0xb1, 1, 1}))...)
	seeds["discover-ipxe"] = fixed(m)
	r, _ := dhcpv4.New(dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest), dhcpv4.WithHwAddr(mac1),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP("10.0.0.100"))), dhcpv4.WithRelay(net.ParseIP("10.5.0.1")))
	seeds["request-relayed"] = fixed(r)
	r, _ = dhcpv4.New(dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest), dhcpv4.WithHwAddr(mac1),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP("10.0.0.100"))),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.ParseIP("10.0.0.1"))))
	seeds["request-selecting"] = fixed(r)
	r, _ = dhcpv4.New(dhcpv4.WithMessageType(dhcpv4.MessageTypeDecline), dhcpv4.WithHwAddr(mac1),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP("10.0.0.100"))))
	seeds["decline"] = fixed(r)
	seeds["truncated"] = seeds["discover-arch-7"][:240]
	return seeds
}

func TestFuzzSeeds(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzHandle")
	for name, b := range fuzzSeeds() {
		path := filepath.Join(dir, name)
		want := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
		if *update {
			if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (run with -update to create it)", err)
		}
		if string(got) != want {
			t.Errorf("%s is stale; run with -update", path)
		}
	}
}

// FuzzHandle feeds arbitrary bytes to both modes: no input may panic, and
// what is answered must be a reply to the same client.
func FuzzHandle(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, mode := range []Mode{ModeAuthoritative, ModeProxy} {
			s, _ := newServer(mode)
			reply, dst := s.HandleBytes(context.Background(), b, &net.UDPAddr{IP: net.ParseIP("10.0.0.5"), Port: 68})
			if reply == nil {
				continue
			}
			req, err := dhcpv4.FromBytes(b)
			if err != nil {
				t.Fatalf("a reply to an unparsable packet: %v", err)
			}
			if dst == nil || reply.OpCode != dhcpv4.OpcodeBootReply || reply.TransactionID != req.TransactionID ||
				reply.ClientHWAddr.String() != req.ClientHWAddr.String() {
				t.Fatalf("bad reply %v to %v", reply, req)
			}
			if mode == ModeProxy && !reply.YourIPAddr.IsUnspecified() {
				t.Fatalf("proxy handed out %s", reply.YourIPAddr)
			}
		}
	})
}

// Unknown clients are limited per relay; known nodes, reservations and
// clients with a lease are not, however many unknown ones there are.
func TestUnknownRate(t *testing.T) {
	ctx := context.Background()
	s, _ := newServer(ModeAuthoritative)
	s.Subnets[0].Last = netip.MustParseAddr("10.0.0.250")
	now := time.Now() // the memory leases expire by the wall clock
	s.Now = func() time.Time { return now }
	s.UnknownRate, s.UnknownBurst = 10, 10
	known := net.HardwareAddr{0x52, 0x54, 0, 0, 0x0c, 1}
	s.Known = func(_ context.Context, m net.HardwareAddr) bool { return m.String() == known.String() }
	answered := 0
	for i := range 50 {
		if r, _ := s.Handle(ctx, discover(t, net.HardwareAddr{0x02, 0, 0, 0, byte(i >> 8), byte(i)}, pxe(7)...), nil); r != nil {
			answered++
		}
	}
	if answered != 10 || s.Stats().Throttled != 40 {
		t.Errorf("%d of 50 unknown clients answered, %d throttled; want 10 and 40", answered, s.Stats().Throttled)
	}
	if r, _ := s.Handle(ctx, discover(t, known, pxe(7)...), nil); r == nil {
		t.Error("a known node was throttled")
	}
	if r, _ := s.Handle(ctx, discover(t, resMAC, pxe(0)...), nil); r == nil {
		t.Error("a reservation was throttled")
	}
	// A client answered before holds an offer: its REQUEST goes through.
	if r, _ := s.Handle(ctx, request(t, net.HardwareAddr{0x02, 0, 0, 0, 0, 0}, "10.0.0.100", "10.0.0.1"), nil); r == nil || r.MessageType() != dhcpv4.MessageTypeAck {
		t.Errorf("the REQUEST of a client with an offer: %s", summary(r, nil))
	}
	// Another relay has a budget of its own.
	relay := &net.UDPAddr{IP: net.ParseIP("10.5.0.1"), Port: 67}
	if r, _ := s.Handle(ctx, discover(t, net.HardwareAddr{0x02, 0, 0, 1, 0, 1}, append(pxe(7), dhcpv4.WithRelay(relay.IP))...), relay); r == nil {
		t.Error("a relayed unknown client was throttled by the local segment's budget")
	}
	now = now.Add(time.Second)
	if r, _ := s.Handle(ctx, discover(t, net.HardwareAddr{0x02, 0, 0, 2, 0, 1}, pxe(7)...), nil); r == nil {
		t.Error("the budget did not refill after a second")
	}
	s.UnknownRate = -1
	for i := range 30 {
		if r, _ := s.Handle(ctx, discover(t, net.HardwareAddr{0x02, 0, 0, 3, 0, byte(i)}), nil); r == nil {
			t.Fatalf("unknown_rate -1 throttled client %d", i)
		}
	}
}

// A flood of unknown clients exhausts only their part of a pool: its last
// tenth stays for known nodes.
func TestKnownNodesKeepAPartOfThePool(t *testing.T) {
	ctx := context.Background()
	s, _ := newServer(ModeAuthoritative)
	s.Subnets[0].Last = netip.MustParseAddr("10.0.0.119") // 20 addresses: 2 kept
	s.UnknownRate, s.KnownReserve = -1, 0.1
	known := net.HardwareAddr{0x52, 0x54, 0, 0, 0x0d, 1}
	s.Known = func(_ context.Context, m net.HardwareAddr) bool { return m.String() == known.String() }
	offered := 0
	for i := range 40 {
		if r, _ := s.Handle(ctx, discover(t, net.HardwareAddr{0x02, 0, 0, 9, 0, byte(i)}), nil); r != nil {
			offered++
			if a := r.YourIPAddr.String(); a == "10.0.0.118" || a == "10.0.0.119" {
				t.Errorf("an unknown client was offered %s, kept for known nodes", a)
			}
		}
	}
	if offered != 18 {
		t.Errorf("%d unknown clients got offers, want 18", offered)
	}
	// Nor may an unknown client ask for one outright.
	if r, _ := s.Handle(ctx, request(t, net.HardwareAddr{0x02, 0, 0, 9, 1, 1}, "10.0.0.119", ""), nil); r == nil || r.MessageType() != dhcpv4.MessageTypeNak {
		t.Errorf("an unknown client's REQUEST for a kept address: %s", summary(r, nil))
	}
	r, _ := s.Handle(ctx, discover(t, known), nil)
	if r == nil || r.YourIPAddr.String() != "10.0.0.118" {
		t.Errorf("the known node after the pool's unknown part ran out: %s", summary(r, nil))
	}
}

// failingRelease is a lease store whose ReleaseOffer fails.
type failingRelease struct{ *MemoryLeases }

func (failingRelease) ReleaseOffer(context.Context, netip.Prefix, net.HardwareAddr, netip.Addr) error {
	return fmt.Errorf("release offer: connection lost")
}

// TestFreeOfferFailureLogged: a REQUEST for another server's offer whose
// freeing of ours fails is logged with the client's MAC as text and the
// exchange's xid, as every other line (before: the MAC's raw bytes).
func TestFreeOfferFailureLogged(t *testing.T) {
	s, l := newServer(ModeAuthoritative)
	s.Leases = failingRelease{l}
	var buf strings.Builder
	s.Logger = slog.New(slog.NewTextHandler(&buf, nil))
	req := request(t, mac1, "10.0.0.100", "10.0.0.2")
	if reply, _ := s.Handle(context.Background(), req, &net.UDPAddr{IP: net.IPv4zero, Port: 68}); reply != nil {
		t.Fatalf("answered a REQUEST for another server: %v", reply.MessageType())
	}
	got := buf.String()
	for _, want := range []string{`msg="free offer"`, "mac=" + mac1.String(), "xid=" + req.TransactionID.String(), "connection lost"} {
		if !strings.Contains(got, want) {
			t.Errorf("log %q lacks %q", got, want)
		}
	}
}
