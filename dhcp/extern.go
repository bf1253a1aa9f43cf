package dhcp

import (
	"context"
	"net"
	"net/netip"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// Extern gives the boot options of the MACs another provisioning system
// owns: Ironic, through the files of its dnsmasq DHCP provider. A listed
// MAC gets its address from rackboot's pools as any client does, and its
// boot options from Extern, not from the Booter; one Extern ignores gets
// no answer at all, as dnsmasq gives a host marked ignore. A MAC the
// other system does not list, or no longer claims, is rackboot's (ok
// false).
type Extern interface {
	ExternBoot(ctx context.Context, mac net.HardwareAddr, ipxe bool) (ExternReply, bool)
}

// ExternReply is what Extern says of a listed MAC.
type ExternReply struct {
	Ignore bool
	// NextServer is siaddr, invalid for rackboot's own address; 0.0.0.0
	// also means rackboot's.
	NextServer netip.Addr
	// Options go into the reply as they are, by code, after rackboot's
	// own; 67 and 66 also fill the file and sname header fields, where
	// old PXE ROMs read them. 0.0.0.0 in an address option means
	// rackboot's address.
	Options []ExternOption
}

// ExternOption is one DHCPv4 option without code and length bytes.
type ExternOption struct {
	Code  uint8
	Value []byte
}

// externOptions writes an Extern's answer into reply.
func (s *Server) externOptions(reply *dhcpv4.DHCPv4, r ExternReply) {
	own := ip(s.ServerIP)
	reply.ServerIPAddr = own
	if r.NextServer.IsValid() && !r.NextServer.IsUnspecified() {
		reply.ServerIPAddr = ip(r.NextServer)
	}
	for _, o := range r.Options {
		v := o.Value
		if addressOption(o.Code) {
			v = append([]byte(nil), v...)
			for i := 0; i+4 <= len(v); i += 4 {
				if netip.AddrFrom4([4]byte(v[i : i+4])).IsUnspecified() {
					copy(v[i:i+4], own.To4())
				}
			}
		}
		// The header fields hold 127 and 63 bytes and a NUL: a longer
		// value goes in its option alone, never cut short.
		switch o.Code {
		case dhcpv4.OptionBootfileName.Code():
			if len(v) <= 127 {
				reply.BootFileName = string(v)
			}
		case dhcpv4.OptionTFTPServerName.Code():
			if len(v) <= 63 {
				reply.ServerHostName = string(v)
			}
		}
		reply.UpdateOption(dhcpv4.OptGeneric(dhcpv4.GenericOptionCode(o.Code), v))
	}
}

// addressOption says whether an option's value is a list of IPv4
// addresses: the TFTP server addresses (150) are, of what Ironic writes.
func addressOption(code uint8) bool { return code == 150 }
