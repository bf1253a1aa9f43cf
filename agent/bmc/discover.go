package bmc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
)

// ErrNoLAN is a BMC with no 802.3 LAN channel: nothing the server could
// reach it on.
var ErrNoLAN = errors.New("the BMC has no LAN channel")

// LAN is one of the BMC's LAN channels as the BMC reports it.
type LAN struct {
	// Channel is the IPMI channel number (1..11).
	Channel int
	// Address is the channel's IPv4 address; invalid when it has none
	// (0.0.0.0).
	Address netip.Addr
	// AddressSource says where Address came from: "static", "dhcp",
	// "bios" or "other"; "" when the BMC did not say.
	AddressSource string
	// V6Address is the first usable IPv6 address (global or unique
	// local, static before dynamic); invalid when there is none or the
	// BMC has no IPv6.
	V6Address netip.Addr
	MAC       net.HardwareAddr
	// Access is the channel's access mode (Get Channel Access, active
	// setting): "disabled", "pre-boot only", "always available" or
	// "shared"; "" when the BMC did not say. Some BMCs ship with IPMI
	// over LAN disabled, and the server cannot reach them then.
	Access string
}

// Channel medium types (IPMI v2.0 table 6-3).
const mediumLAN = 0x04

// LAN configuration parameters (IPMI v2.0 table 23-4, and the IPv6
// parameters of the IPMI v2.0 rev 1.1 errata).
const (
	paramIP            = 3
	paramIPSource      = 4
	paramMAC           = 5
	paramIPv6Support   = 50
	paramIPv6Enables   = 51
	paramIPv6Status    = 55
	paramIPv6Static    = 56
	paramIPv6Dynamic   = 59
	maxIPv6AddressSets = 16 // when the BMC does not say how many it has
)

// Discover finds the BMC's LAN channels and returns the first with an
// IPv4 address, else the first with an IPv6 address, else the first LAN
// channel. A BMC with none is ErrNoLAN.
func Discover(ctx context.Context, c Conn) (LAN, error) {
	var lans []LAN
	var errs []error
	for ch := 1; ch <= 11; ch++ {
		resp, err := c.Command(ctx, NetFnApp, cmdGetChannelInfo, []byte{byte(ch)})
		if refused(err) {
			// 0xcc is the usual answer for a channel that is not there.
			continue
		}
		if err != nil {
			return LAN{}, fmt.Errorf("get channel info %d: %w", ch, err)
		}
		medium, err := ParseChannelMedium(resp)
		if err != nil {
			return LAN{}, fmt.Errorf("get channel info %d: %w", ch, err)
		}
		if medium != mediumLAN {
			continue
		}
		lan, err := readLAN(ctx, c, ch)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if lan.Address.IsValid() {
			return lan, nil
		}
		lans = append(lans, lan)
	}
	for _, l := range lans {
		if l.V6Address.IsValid() {
			return l, nil
		}
	}
	if len(lans) > 0 {
		return lans[0], nil
	}
	if len(errs) > 0 {
		return LAN{}, errors.Join(errs...)
	}
	return LAN{}, ErrNoLAN
}

// getLAN reads one LAN configuration parameter and returns its data
// (after the revision byte).
func getLAN(ctx context.Context, c Conn, ch int, param, set byte) ([]byte, error) {
	resp, err := c.Command(ctx, NetFnTransport, cmdGetLANConfig, []byte{byte(ch), param, set, 0})
	if err != nil {
		return nil, fmt.Errorf("get lan config channel %d param %d set %d: %w", ch, param, set, err)
	}
	if len(resp) < 1 {
		return nil, fmt.Errorf("get lan config channel %d param %d set %d: empty response", ch, param, set)
	}
	return resp[1:], nil
}

func readLAN(ctx context.Context, c Conn, ch int) (LAN, error) {
	lan := LAN{Channel: ch}
	b, err := getLAN(ctx, c, ch, paramIP, 0)
	if err != nil {
		return lan, err
	}
	if lan.Address, err = ParseIPv4(b); err != nil {
		return lan, fmt.Errorf("channel %d ip address: %w", ch, err)
	}
	if b, err = getLAN(ctx, c, ch, paramMAC, 0); err != nil {
		return lan, err
	}
	if lan.MAC, err = ParseMAC(b); err != nil {
		return lan, fmt.Errorf("channel %d mac address: %w", ch, err)
	}
	// The source is detail: a BMC that will not say still has its
	// address.
	if b, err := getLAN(ctx, c, ch, paramIPSource, 0); err == nil && len(b) > 0 {
		lan.AddressSource = ipSource(b[0])
	}
	lan.V6Address = readIPv6(ctx, c, ch)
	// Bits 6-7 of the second byte ask for the active (volatile) setting.
	if b, err := c.Command(ctx, NetFnApp, cmdGetChannelAccess, []byte{byte(ch), 0x80}); err == nil && len(b) > 0 {
		lan.Access = accessMode(b[0])
	}
	return lan, nil
}

// accessMode names a channel access mode (IPMI v2.0 table 22-28).
func accessMode(b byte) string {
	switch b & 0x07 {
	case 0:
		return "disabled"
	case 1:
		return "pre-boot only"
	case 2:
		return "always available"
	case 3:
		return "shared"
	}
	return ""
}

func ipSource(b byte) string {
	switch b & 0x0f {
	case 1:
		return "static"
	case 2:
		return "dhcp"
	case 3:
		return "bios"
	case 0:
		return ""
	}
	return "other"
}

// readIPv6 is best effort: many BMCs have no IPv6 parameters at all and
// answer 0x80 or 0xc1, and any refusal means no IPv6 address.
func readIPv6(ctx context.Context, c Conn, ch int) netip.Addr {
	b, err := getLAN(ctx, c, ch, paramIPv6Support, 0)
	// Bit 0: IPv6 only; bit 1: IPv4 and IPv6 together.
	if err != nil || len(b) < 1 || b[0]&0x03 == 0 {
		return netip.Addr{}
	}
	// 0 is IPv4 only: the IPv6 addresses are configured but not used.
	if b, err := getLAN(ctx, c, ch, paramIPv6Enables, 0); err == nil && len(b) > 0 && b[0] == 0 {
		return netip.Addr{}
	}
	static, dynamic := maxIPv6AddressSets, maxIPv6AddressSets
	if b, err := getLAN(ctx, c, ch, paramIPv6Status, 0); err == nil && len(b) >= 2 {
		static, dynamic = int(b[0]), int(b[1])
	}
	for _, p := range []struct {
		param byte
		n     int
	}{{paramIPv6Static, static}, {paramIPv6Dynamic, dynamic}} {
		for set := 0; set < p.n && set < 256; set++ {
			b, err := getLAN(ctx, c, ch, p.param, byte(set))
			if err != nil {
				// Past the last set, or no such parameter.
				break
			}
			a, err := ParseIPv6Address(b)
			if err == nil && a.usable(p.param == paramIPv6Static) {
				return a.Addr
			}
		}
	}
	return netip.Addr{}
}

// ParseChannelMedium returns the medium type from a Get Channel Info
// response: [channel, medium, protocol, ...].
func ParseChannelMedium(resp []byte) (byte, error) {
	if len(resp) < 2 {
		return 0, fmt.Errorf("channel info is %d bytes, want at least 2", len(resp))
	}
	return resp[1] & 0x7f, nil
}

// ParseIPv4 reads parameter 3's data; 0.0.0.0 is no address (invalid).
func ParseIPv4(b []byte) (netip.Addr, error) {
	if len(b) < 4 {
		return netip.Addr{}, fmt.Errorf("ip address is %d bytes, want 4", len(b))
	}
	a := netip.AddrFrom4([4]byte(b[:4]))
	if a.IsUnspecified() {
		return netip.Addr{}, nil
	}
	return a, nil
}

// ParseMAC reads parameter 5's data.
func ParseMAC(b []byte) (net.HardwareAddr, error) {
	if len(b) < 6 {
		return nil, fmt.Errorf("mac address is %d bytes, want 6", len(b))
	}
	return net.HardwareAddr(append([]byte(nil), b[:6]...)), nil
}

// IPv6Address is one set of parameter 56 (static) or 59 (dynamic).
type IPv6Address struct {
	Set    byte
	Source byte // static: bit 7 enabled, bits 3:0 0; dynamic: 1 SLAAC, 2 DHCPv6
	Addr   netip.Addr
	Prefix byte
	Status byte // 0 active, 1 disabled, 2 pending, 3 failed, 4 deprecated, 5 invalid
}

// ParseIPv6Address reads [set, source, 16-byte address, prefix, status].
func ParseIPv6Address(b []byte) (IPv6Address, error) {
	if len(b) < 20 {
		return IPv6Address{}, fmt.Errorf("ipv6 address set is %d bytes, want 20", len(b))
	}
	return IPv6Address{Set: b[0], Source: b[1], Addr: netip.AddrFrom16([16]byte(b[2:18])), Prefix: b[18], Status: b[19]}, nil
}

// usable is an address the server could reach the BMC on: enabled, not
// disabled, failed or invalid, and not link-local or unspecified (a
// link-local address says nothing without its interface).
func (a IPv6Address) usable(static bool) bool {
	if static && a.Source&0x80 == 0 {
		return false
	}
	switch a.Status {
	case 1, 3, 5:
		return false
	}
	return a.Addr.IsValid() && !a.Addr.IsUnspecified() && !a.Addr.IsLinkLocalUnicast() && !a.Addr.Is4In6()
}
