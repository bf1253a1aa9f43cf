package dnsmasq

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// Option codes Ironic writes.
const (
	OptTFTPServerName    = 66  // tftp-server: text, the TFTP server's name or address
	OptBootfileName      = 67  // bootfile-name: text
	OptTFTPServerAddress = 150 // tftp-server-address (RFC 5859): IPv4 addresses
	OptPathPrefix        = 210 // PXELINUX path prefix (RFC 5071): text
	// OptServerIPAddress is not a DHCP option: dnsmasq's server-ip-address
	// sets the next server (siaddr), and Ironic writes it as 255.
	OptServerIPAddress = 255
)

type optType struct {
	code   uint8
	name   string // dnsmasq's option:<name>
	encode func(text) ([]byte, error)
	refuse error // non-nil: the line never takes effect
}

// options are the codes rackboot sends, each encoded by its RFC type.
// dnsmasq guesses the type of a number it has no entry for from the
// value's characters (210 included); the RFC type is what clients parse.
var options = map[uint8]optType{
	OptTFTPServerName:    {name: "tftp-server", encode: encodeText},
	OptBootfileName:      {name: "bootfile-name", encode: encodeText},
	OptTFTPServerAddress: {name: "tftp-server-address", encode: encodeAddrs},
	OptPathPrefix:        {encode: encodeText},
	OptServerIPAddress:   {name: "server-ip-address", encode: encodeAddr},
}

// refused names the codes a line may carry that rackboot will not send,
// with why; every other code is refused as unsupported.
var refused = map[uint8]string{
	0:  "pad",
	53: "the message type is the server's to set",
	54: "the server identifier is the server's own address",
	51: "lease times are the server's to set",
	58: "renewal times are the server's to set",
	59: "DHCPv4 59 is the rebinding time (T2); Ironic writes its DHCPv6 boot-file URL (DHCPv6 option 59) under this number",
}

func optionType(code uint8) optType {
	t, ok := options[code]
	if ok {
		t.code = code
		return t
	}
	t.code = code
	why, ok := refused[code]
	switch {
	case code == 59:
		t.refuse = fmt.Errorf("%w: %s", ErrNotDHCPv4, why)
	case ok:
		t.refuse = fmt.Errorf("%w: option %d: %s", ErrUnsupported, code, why)
	default:
		t.refuse = fmt.Errorf("%w: option %d (rackboot sends %s)", ErrUnsupported, code, supportedCodes())
	}
	return t
}

func optionByName(name string) (optType, bool) {
	for code, t := range options {
		if t.name != "" && t.name == name {
			return optionType(code), true
		}
	}
	return optType{}, false
}

func supportedNames() string {
	return "option:tftp-server, option:bootfile-name, option:tftp-server-address, option:server-ip-address"
}

func supportedCodes() string { return "66, 67, 150, 210 and 255 (server-ip-address)" }

// encodeText takes the value as dnsmasq does for a name option: the rest
// of the line, commas included.
func encodeText(v text) ([]byte, error) {
	return []byte(v.String()), nil
}

// encodeAddrs takes comma-separated dotted quads, as dnsmasq does for an
// address-list option; a quoted value is a string, not an address.
func encodeAddrs(v text) ([]byte, error) {
	if v.quoted() {
		return nil, errors.New("bad IP address: quoted")
	}
	var out []byte
	for rest, more := v, true; more; {
		var f text
		f, rest, more = rest.next()
		a, err := netip.ParseAddr(f.String())
		if err != nil || !a.Is4() || !strings.Contains(f.String(), ".") {
			return nil, fmt.Errorf("bad IP address %q", f.String())
		}
		b := a.As4()
		out = append(out, b[:]...)
	}
	return out, nil
}

func encodeAddr(v text) ([]byte, error) {
	b, err := encodeAddrs(v)
	if err == nil && len(b) != 4 {
		err = errors.New("takes one address")
	}
	return b, err
}
