package dhcp

import (
	"context"
	"net"
	"net/netip"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/rackboot/rackboot/boot"
)

// ironic answers as the files of Ironic's dnsmasq provider would: mac1 is
// a node of conductor 10.0.0.7, mac2 one it cleaned up (ignore).
type ironic struct{}

func (ironic) ExternBoot(_ context.Context, mac net.HardwareAddr, ipxe bool) (ExternReply, bool) {
	switch mac.String() {
	case mac1.String():
		file := "snponly.efi"
		if ipxe {
			file = "http://10.0.0.7:8088/boot.ipxe"
		}
		return ExternReply{NextServer: netip.MustParseAddr("10.0.0.7"), Options: []ExternOption{
			{Code: 67, Value: []byte(file)},
			{Code: 66, Value: []byte("10.0.0.7")},
			{Code: 150, Value: []byte{10, 0, 0, 7, 0, 0, 0, 0}},
			{Code: 210, Value: []byte("/tftpboot/")},
		}}, true
	case mac2.String():
		return ExternReply{Ignore: true}, true
	}
	return ExternReply{}, false
}

func TestExtern(t *testing.T) {
	ctx := context.Background()
	s, l := newServer(ModeAuthoritative)
	s.Extern = ironic{}
	peer := &net.UDPAddr{IP: net.IPv4zero, Port: 68}

	// A node of Ironic's: an address from rackboot's pool, the boot
	// options from Ironic's files, its conductor as next server.
	offer, _ := s.Handle(ctx, discover(t, mac1, pxe(7)...), peer)
	if offer == nil || offer.MessageType() != dhcpv4.MessageTypeOffer || !local.Contains(addr(offer.YourIPAddr)) {
		t.Fatalf("offer: %s", summary(offer, nil))
	}
	if offer.BootFileName != "snponly.efi" || offer.BootFileNameOption() != "snponly.efi" || !offer.ServerIPAddr.Equal(net.IPv4(10, 0, 0, 7)) || offer.ServerHostName != "10.0.0.7" {
		t.Errorf("offer: %s sname=%q", summary(offer, nil), offer.ServerHostName)
	}
	if v := offer.GetOneOption(dhcpv4.GenericOptionCode(150)); len(v) != 8 || !net.IP(v[4:]).Equal(net.IPv4(10, 0, 0, 1)) {
		t.Errorf("option 150 %v: 0.0.0.0 is rackboot's own address", v)
	}
	if v := offer.GetOneOption(dhcpv4.GenericOptionCode(210)); string(v) != "/tftpboot/" {
		t.Errorf("option 210 %q", v)
	}
	ack, _ := s.Handle(ctx, request(t, mac1, offer.YourIPAddr.String(), "10.0.0.1", pxe(7)...), peer)
	if ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck || ack.BootFileName != "snponly.efi" {
		t.Fatalf("ack: %s", summary(ack, nil))
	}
	if le, err := l.ByMAC(ctx, local, mac1); err != nil || le.IP != addr(offer.YourIPAddr) {
		t.Errorf("lease %+v %v", le, err)
	}
	// iPXE's request (user class iPXE) gets Ironic's iPXE script.
	ipxe := append(pxe(7), dhcpv4.WithOption(dhcpv4.OptUserClass("iPXE")))
	offer, _ = s.Handle(ctx, discover(t, mac1, ipxe...), peer)
	if offer == nil || offer.BootFileName != "http://10.0.0.7:8088/boot.ipxe" {
		t.Errorf("iPXE offer: %s", summary(offer, nil))
	}
	// A host Ironic marked ignore gets nothing at all.
	if r, _ := s.Handle(ctx, discover(t, mac2, pxe(7)...), peer); r != nil {
		t.Errorf("ignored host answered: %s", summary(r, nil))
	}
	// Anyone else is rackboot's.
	mac3 := net.HardwareAddr{0x52, 0x54, 0, 0, 0, 3}
	s.Subnets[0].Last = netip.MustParseAddr("10.0.0.110")
	offer, _ = s.Handle(ctx, discover(t, mac3, pxe(7)...), peer)
	if offer == nil || offer.BootFileName != "loader/x86_64-uefi" || !offer.ServerIPAddr.Equal(net.IPv4(10, 0, 0, 1)) {
		t.Errorf("rackboot's own client: %s", summary(offer, nil))
	}
}

// conductorBooter offers what an Ironic conductor's own DHCP server would
// (dhcp_provider = none): its loader, on its own TFTP server.
type conductorBooter struct{}

func (conductorBooter) BootOffer(ctx context.Context, c boot.Client) (boot.Offer, error) {
	return boot.Offer{File: "snponly.efi", NextServer: netip.MustParseAddr("10.0.0.7")}, nil
}

// TestOfferNextServer: a boot offer naming another TFTP server sends the
// client there (siaddr and option 66), in both modes.
func TestOfferNextServer(t *testing.T) {
	ctx := context.Background()
	peer := &net.UDPAddr{IP: net.IPv4zero, Port: 68}
	for _, mode := range []Mode{ModeAuthoritative, ModeProxy} {
		s, _ := newServer(mode)
		s.Booter = conductorBooter{}
		offer, _ := s.Handle(ctx, discover(t, mac1, pxe(7)...), peer)
		if offer == nil || offer.BootFileName != "snponly.efi" || !offer.ServerIPAddr.Equal(net.IPv4(10, 0, 0, 7)) ||
			offer.GetOneOption(dhcpv4.OptionTFTPServerName) == nil || string(offer.GetOneOption(dhcpv4.OptionTFTPServerName)) != "10.0.0.7" {
			t.Errorf("%s: %s", mode, summary(offer, nil))
		}
	}
}
