package netup

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"net"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/insomniacslk/dhcp/iana"
	"golang.org/x/sys/unix"

	"github.com/rackboot/rackboot/boot"
)

// A DHCP transaction id only pairs replies with requests; it is no
// secret. The library draws it from the kernel's CRNG and blocks until
// that is seeded, which on a machine without a hardware RNG (a VM without
// virtio-rng) takes minutes before the first packet leaves. The agent
// builds its packets itself, with an id that never waits.

// nonblockingRandom fills b without waiting for the kernel's random
// pool; it fails with EAGAIN while the pool is not seeded.
func nonblockingRandom(b []byte) error {
	n, err := unix.Getrandom(b, unix.GRND_NONBLOCK)
	if err == nil && n != len(b) {
		err = unix.EAGAIN
	}
	return err
}

// transactionID returns an id from the random pool when it is ready, and
// from the clock and the MAC when it is not: distinct across NICs and
// boots, which is all an id needs.
func transactionID(mac net.HardwareAddr, now time.Time, random func([]byte) error) dhcpv4.TransactionID {
	var xid dhcpv4.TransactionID
	if random(xid[:]) == nil {
		return xid
	}
	h := fnv.New32a()
	h.Write(mac)
	var t [8]byte
	binary.BigEndian.PutUint64(t[:], uint64(now.UnixNano()))
	h.Write(t[:])
	binary.BigEndian.PutUint32(xid[:], h.Sum32())
	return xid
}

// CRNGReady reports whether the kernel's random pool is seeded, so that
// reading it (TLS, secrets) will not wait.
func CRNGReady() bool {
	return nonblockingRandom(make([]byte, 1)) == nil
}

// message is dhcpv4.New without its blocking transaction id.
func message(xid dhcpv4.TransactionID, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	m := &dhcpv4.DHCPv4{
		OpCode:        dhcpv4.OpcodeBootRequest,
		HWType:        iana.HWTypeEthernet,
		ClientHWAddr:  make(net.HardwareAddr, 6),
		TransactionID: xid,
		ClientIPAddr:  net.IPv4zero,
		YourIPAddr:    net.IPv4zero,
		ServerIPAddr:  net.IPv4zero,
		GatewayIPAddr: net.IPv4zero,
		Options:       make(dhcpv4.Options),
	}
	for _, mod := range mods {
		mod(m)
	}
	return m
}

// requestOptions are what every agent packet asks for and says: as
// u-root's client did, plus the agent's user class, and a second one when
// the random pool is not seeded (so the boot trace can say what the agent
// is waiting for).
func requestOptions(mac net.HardwareAddr, seeded bool) []dhcpv4.Modifier {
	classes := []string{UserClass}
	if !seeded {
		classes = append(classes, boot.AgentNoRNG)
	}
	return []dhcpv4.Modifier{
		dhcpv4.WithHwAddr(mac),
		dhcpv4.WithBroadcast(true),
		dhcpv4.WithOption(dhcpv4.OptMaxMessageSize(nclient4.MaxMessageSize)),
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXE UROOT")),
		dhcpv4.WithRequestedOptions(dhcpv4.OptionSubnetMask, dhcpv4.OptionRouter, dhcpv4.OptionDomainName, dhcpv4.OptionDomainNameServer),
		dhcpv4.WithNetboot,
		dhcpv4.WithOption(dhcpv4.OptRFC3004UserClass(classes)),
	}
}

// discoverPacket is the agent's DISCOVER from mac.
func discoverPacket(mac net.HardwareAddr, xid dhcpv4.TransactionID, seeded bool) *dhcpv4.DHCPv4 {
	return message(xid, append(requestOptions(mac, seeded), dhcpv4.WithMessageType(dhcpv4.MessageTypeDiscover))...)
}

// requestPacket is the agent's REQUEST for an offer (RFC 2131 4.3.2,
// SELECTING: the offered address and the offering server named).
func requestPacket(offer *dhcpv4.DHCPv4, seeded bool) *dhcpv4.DHCPv4 {
	return message(offer.TransactionID, append(requestOptions(offer.ClientHWAddr, seeded),
		dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(offer.YourIPAddr)),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(offer.ServerIdentifier())))...)
}

// dora runs one DISCOVER, OFFER, REQUEST, ACK exchange on c and returns
// the ACK; random is where the transaction id comes from when it can.
func dora(ctx context.Context, c *nclient4.Client, mac net.HardwareAddr, random func([]byte) error) (*dhcpv4.DHCPv4, error) {
	seeded := random(make([]byte, 1)) == nil
	offer, err := c.SendAndRead(ctx, c.RemoteAddr(), discoverPacket(mac, transactionID(mac, time.Now(), random), seeded),
		nclient4.IsMessageType(dhcpv4.MessageTypeOffer))
	if err != nil {
		return nil, fmt.Errorf("no offer: %w", err)
	}
	ack, err := c.SendAndRead(ctx, c.RemoteAddr(), requestPacket(offer, seeded), nclient4.IsAll(
		nclient4.IsCorrectServer(offer.ServerIdentifier()),
		nclient4.IsMessageType(dhcpv4.MessageTypeAck, dhcpv4.MessageTypeNak)))
	if err != nil {
		return nil, fmt.Errorf("no answer to the request for %s: %w", offer.YourIPAddr, err)
	}
	if ack.MessageType() == dhcpv4.MessageTypeNak {
		return nil, errors.New("the server refused the offered address: " + ack.Message())
	}
	return ack, nil
}

// WaitCRNG returns once ready says the kernel's random pool is seeded
// (or ctx ends), saying on w, at once and then every minute, what it waits
// for: TLS and the agent's secrets need the pool, and on a machine with
// no hardware RNG the wait can be long and is otherwise silent.
func WaitCRNG(ctx context.Context, w io.Writer, ready func() bool) error {
	if ready() {
		return nil
	}
	start := time.Now()
	fmt.Fprintln(w, "rackboot-agent: waiting for the kernel's random pool: this machine has no hardware RNG (give a VM virtio-rng)")
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	said := start
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case now := <-tick.C:
			if ready() {
				fmt.Fprintf(w, "rackboot-agent: the kernel's random pool is ready after %.0f s\n", now.Sub(start).Seconds())
				return nil
			}
			if now.Sub(said) >= time.Minute {
				said = now
				fmt.Fprintf(w, "rackboot-agent: still waiting for the kernel's random pool (%.0f s): no hardware RNG\n", now.Sub(start).Seconds())
			}
		}
	}
}
