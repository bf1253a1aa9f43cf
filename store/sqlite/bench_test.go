package sqlite

import (
	"context"
	"net"
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/rackboot/rackboot/dhcp"
)

// BenchmarkDORA measures one DISCOVER and one REQUEST, from parsed bytes
// to reply, through the DHCP server on the SQLite lease store: the cost
// of a new client on a rackboot with an embedded database.
func BenchmarkDORA(b *testing.B) {
	ctx := context.Background()
	st, err := Open(ctx, filepath.Join(b.TempDir(), "db"))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	s := &dhcp.Server{Mode: dhcp.ModeAuthoritative, ServerIP: netip.MustParseAddr("10.0.0.1"), Leases: st,
		Subnets: []dhcp.Subnet{{Prefix: netip.MustParsePrefix("10.0.0.0/16"),
			First: netip.MustParseAddr("10.0.1.0"), Last: netip.MustParseAddr("10.0.255.254")}}}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		mac := net.HardwareAddr{0x52, 0x54, 0, byte(i >> 16), byte(i >> 8), byte(i)}
		d, _ := dhcpv4.NewDiscovery(mac)
		offer, _ := s.HandleBytes(ctx, d.ToBytes(), nil)
		if offer == nil {
			b.Fatal("no offer")
		}
		r, _ := dhcpv4.NewRequestFromOffer(offer)
		ack, _ := s.HandleBytes(ctx, r.ToBytes(), nil)
		if ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck {
			b.Fatal("no ack")
		}
	}
}
