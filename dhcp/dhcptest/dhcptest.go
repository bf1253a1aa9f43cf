// Package dhcptest drives a dhcp.Server from the tests and benchmarks of
// the packages that implement its interfaces, such as the lease stores.
package dhcptest

import (
	"context"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/rackboot/rackboot/dhcp"
)

// DORA measures one DISCOVER and one REQUEST of a new client, from parsed
// bytes to reply, through an authoritative server on leases (a /16 with
// room for b.N clients): the cost of a new client on that lease store.
// The limit on unknown clients is off: every client here is new, and the
// figure is the store's, not the limiter's.
func DORA(b *testing.B, leases dhcp.Leases) {
	ctx := context.Background()
	s := &dhcp.Server{Mode: dhcp.ModeAuthoritative, ServerIP: netip.MustParseAddr("10.0.0.1"), Leases: leases, UnknownRate: -1,
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

// DORAParallel is DORA with many clients at once, 16 per CPU, as the
// server's workers handle them under load: what it measures is the
// store's throughput when its callers overlap (on SQLite, the group
// commit of their leases).
func DORAParallel(b *testing.B, leases dhcp.Leases) {
	ctx := context.Background()
	s := &dhcp.Server{Mode: dhcp.ModeAuthoritative, ServerIP: netip.MustParseAddr("10.0.0.1"), Leases: leases, UnknownRate: -1,
		Subnets: []dhcp.Subnet{{Prefix: netip.MustParsePrefix("10.0.0.0/16"),
			First: netip.MustParseAddr("10.0.1.0"), Last: netip.MustParseAddr("10.0.255.254")}}}
	var n atomic.Uint32
	b.ReportAllocs()
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			mac := net.HardwareAddr{0x52, 0x54, 0, byte(i >> 16), byte(i >> 8), byte(i)}
			d, _ := dhcpv4.NewDiscovery(mac)
			offer, _ := s.HandleBytes(ctx, d.ToBytes(), nil)
			if offer == nil {
				b.Error("no offer")
				return
			}
			r, _ := dhcpv4.NewRequestFromOffer(offer)
			ack, _ := s.HandleBytes(ctx, r.ToBytes(), nil)
			if ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck {
				b.Error("no ack")
				return
			}
		}
	})
}
