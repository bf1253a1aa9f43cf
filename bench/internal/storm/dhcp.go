package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// relay is the generator's DHCP side: every simulated node's packets
// go out of one socket on the relay address (giaddr), as a rack's
// switch relays them, and the server's answers come back to it; each
// is handed to the node waiting on its transaction id.
type relay struct {
	conn   *net.UDPConn
	server *net.UDPAddr
	giaddr net.IP

	mu      sync.Mutex
	waiting map[dhcpv4.TransactionID]chan *dhcpv4.DHCPv4
}

func newRelay(giaddr, server netip.Addr) (*relay, error) {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: giaddr.AsSlice(), Port: 67})
	if err != nil {
		return nil, fmt.Errorf("relay socket on %s:67: %w", giaddr, err)
	}
	// Hundreds of answers may arrive between two reads.
	c.SetReadBuffer(8 << 20)
	r := &relay{conn: c, server: &net.UDPAddr{IP: server.AsSlice(), Port: 67}, giaddr: giaddr.AsSlice(),
		waiting: map[dhcpv4.TransactionID]chan *dhcpv4.DHCPv4{}}
	go r.read()
	return r, nil
}

func (r *relay) Close() error { return r.conn.Close() }

func (r *relay) read() {
	buf := make([]byte, 1500)
	for {
		n, _, err := r.conn.ReadFromUDP(buf)
		if err != nil {
			return
		}
		m, err := dhcpv4.FromBytes(buf[:n])
		if err != nil || m.OpCode != dhcpv4.OpcodeBootReply {
			continue
		}
		r.mu.Lock()
		ch := r.waiting[m.TransactionID]
		r.mu.Unlock()
		if ch != nil {
			select {
			case ch <- m:
			default: // a late duplicate
			}
		}
	}
}

// exchange sends m and waits for an answer of type want, sending m again
// after each of the waits (as firmware does, doubling); it returns the
// answer and how many times m was sent again.
func (r *relay) exchange(ctx context.Context, m *dhcpv4.DHCPv4, want dhcpv4.MessageType, waits []time.Duration) (*dhcpv4.DHCPv4, int, error) {
	ch := make(chan *dhcpv4.DHCPv4, 4)
	r.mu.Lock()
	r.waiting[m.TransactionID] = ch
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.waiting, m.TransactionID)
		r.mu.Unlock()
	}()
	b := m.ToBytes()
	for try, wait := range waits {
		if _, err := r.conn.WriteToUDP(b, r.server); err != nil {
			return nil, try, fmt.Errorf("dhcp %s: send: %w", m.MessageType(), err)
		}
		t := time.NewTimer(wait)
		for done := false; !done; {
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, try, ctx.Err()
			case a := <-ch:
				switch a.MessageType() {
				case want:
					t.Stop()
					return a, try, nil
				case dhcpv4.MessageTypeNak:
					t.Stop()
					return nil, try, fmt.Errorf("dhcp %s: NAK: %s", m.MessageType(), a.Message())
				}
			case <-t.C:
				done = true
			}
		}
	}
	return nil, len(waits) - 1, fmt.Errorf("dhcp %s: no %s after %d tries", m.MessageType(), want, len(waits))
}

// Firmware's PXE client sends its DISCOVER 4 times, 4, 8, 16 and 32 s
// apart (UEFI's PXE base code); iPXE starts at a second.
var (
	firmwareWaits = []time.Duration{4 * time.Second, 8 * time.Second, 16 * time.Second, 32 * time.Second}
	ipxeWaits     = []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second}
)

// lease is what one DORA gave a node.
type lease struct {
	ip   netip.Addr
	file string
	next netip.Addr // siaddr, the TFTP server
}

var errNoFile = errors.New("the ACK names no boot file")

// dora runs DISCOVER-OFFER-REQUEST-ACK for mac as a UEFI x86-64 PXE
// client (ipxe false) or as iPXE on it, and returns the lease and the
// number of packets sent again.
func (r *relay) dora(ctx context.Context, mac net.HardwareAddr, uuid [16]byte, ipxe bool) (lease, int, error) {
	class, waits := "PXEClient:Arch:00007:UNDI:003016", firmwareWaits
	mods := []dhcpv4.Modifier{
		dhcpv4.WithRelay(r.giaddr),
		dhcpv4.WithOption(dhcpv4.OptClientArch(iana.EFI_X86_64)),
		dhcpv4.WithGeneric(dhcpv4.OptionClientNetworkInterfaceIdentifier, []byte{1, 3, 16}),
		dhcpv4.WithGeneric(dhcpv4.OptionClientMachineIdentifier, append([]byte{0}, uuid[:]...)),
		dhcpv4.WithRequestedOptions(dhcpv4.OptionBootfileName, dhcpv4.OptionTFTPServerName, dhcpv4.OptionVendorSpecificInformation),
	}
	if ipxe {
		waits = ipxeWaits
		mods = append(mods, dhcpv4.WithUserClass("iPXE", false))
	}
	mods = append(mods, dhcpv4.WithOption(dhcpv4.OptClassIdentifier(class)))
	d, err := dhcpv4.NewDiscovery(mac, mods...)
	if err != nil {
		return lease{}, 0, err
	}
	offer, again, err := r.exchange(ctx, d, dhcpv4.MessageTypeOffer, waits)
	if err != nil {
		return lease{}, again, err
	}
	req, err := dhcpv4.NewRequestFromOffer(offer, mods...)
	if err != nil {
		return lease{}, again, err
	}
	ack, again2, err := r.exchange(ctx, req, dhcpv4.MessageTypeAck, waits)
	again += again2
	if err != nil {
		return lease{}, again, err
	}
	l := lease{file: ack.BootFileNameOption()}
	if l.file == "" {
		l.file = ack.BootFileName
	}
	l.ip, _ = netip.AddrFromSlice(ack.YourIPAddr.To4())
	l.next, _ = netip.AddrFromSlice(ack.ServerIPAddr.To4())
	if l.file == "" {
		return l, again, errNoFile
	}
	return l, again, nil
}
