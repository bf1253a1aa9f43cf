package dnsmasq

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"

	"github.com/rackboot/rackboot/internal/atomicfile"
)

// Lease is one DHCPv4 lease as dnsmasq records it.
type Lease struct {
	// Expires is when the lease ends; zero means never (dnsmasq writes 0).
	Expires time.Time
	MAC     net.HardwareAddr
	// HWType is the ARP hardware type; 0 means Ethernet (1), which
	// dnsmasq writes without a "<type>-" prefix.
	HWType   uint8
	Addr     netip.Addr
	Hostname string
	ClientID []byte
}

// WriteLeases writes leases in dnsmasq's lease-file format, one per line:
// "<expiry epoch> <mac> <ip> <hostname or *> <client id or *>". Ironic
// splits each line on white space and takes the third field for the MAC
// in the second, so a host name that is not a legal DNS name (a client
// chooses its own) is written as "*", as dnsmasq keeps none such.
func WriteLeases(w io.Writer, leases []Lease) error {
	bw := bufio.NewWriter(w)
	for _, l := range leases {
		if !l.Addr.Is4() {
			return fmt.Errorf("write lease %v: not an IPv4 address", l.Addr)
		}
		if len(l.MAC) == 0 || len(l.MAC) > 16 {
			return fmt.Errorf("write lease %v: bad hardware address %v", l.Addr, l.MAC)
		}
		var exp int64
		if !l.Expires.IsZero() {
			exp = max(l.Expires.Unix(), 1)
		}
		fmt.Fprintf(bw, "%d ", exp)
		if l.HWType != 0 && l.HWType != 1 {
			fmt.Fprintf(bw, "%02x-", l.HWType)
		}
		bw.WriteString(hexColons(l.MAC))
		fmt.Fprintf(bw, " %s ", l.Addr)
		if legalHostname(l.Hostname) {
			bw.WriteString(l.Hostname)
		} else {
			bw.WriteByte('*')
		}
		bw.WriteByte(' ')
		if len(l.ClientID) > 0 {
			bw.WriteString(hexColons(l.ClientID))
		} else {
			bw.WriteByte('*')
		}
		bw.WriteByte('\n')
	}
	return bw.Flush()
}

// WriteLeaseFile replaces the lease file at path whole (a temporary file
// in the same directory, then a rename): dnsmasq rewrites its own in
// place, and Ironic reading at that moment finds it short.
func WriteLeaseFile(path string, leases []Lease) error {
	var b bytes.Buffer
	if err := WriteLeases(&b, leases); err != nil {
		return err
	}
	if err := atomicfile.Write(path, b.Bytes()); err != nil {
		return fmt.Errorf("write lease file %s: %w", path, err)
	}
	return nil
}

func hexColons(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 3*len(b))
	for i, c := range b {
		if i > 0 {
			out = append(out, ':')
		}
		out = append(out, digits[c>>4], digits[c&15])
	}
	return string(out)
}

// legalHostname admits what dnsmasq's legal_hostname does, so nothing
// but a name can land in the hostname field.
func legalHostname(s string) bool {
	if s == "" || len(s) > 255 || s[0] == '.' || s[0] == '-' || s[0] == '_' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.'
		if !ok {
			return false
		}
	}
	return true
}
