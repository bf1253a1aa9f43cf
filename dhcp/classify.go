// Package dhcp is rackboot's DHCPv4 server: authoritative (pools per
// subnet, relays, reservations, leases kept by a Leases store), proxy (PXE
// answers only, beside a site's own DHCP server, on ports 67 and 4011), and
// the classification of network-boot clients from their options. What a
// client boots is not decided here: the server asks a boot.Booter.
package dhcp

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/rackboot/rackboot/boot"
)

// Option codes the PXE and iPXE world uses that dhcpv4 has no name for.
const (
	optIPXEEncap = 175 // iPXE's encapsulated options: present on every iPXE request
)

// Classify tells whether a request comes from a network-boot client, and
// what kind: the architecture from option 93 (or, failing that, from the
// vendor class "PXEClient:Arch:NNNNN"), PXE or UEFI HTTP boot from option
// 60, iPXE from its user class (option 77) or option 175.
func Classify(m *dhcpv4.DHCPv4) (boot.Client, bool) {
	c := boot.Client{MAC: m.ClientHWAddr, Arch: 0xffff}
	c.VendorClass = m.ClassIdentifier()
	archKnown := false
	if b := m.GetOneOption(dhcpv4.OptionClientSystemArchitectureType); len(b) >= 2 {
		c.Arch = boot.ClientArch(binary.BigEndian.Uint16(b[:2]))
		archKnown = true
	}
	if !archKnown {
		if a, ok := archFromVendorClass(c.VendorClass); ok {
			c.Arch, archKnown = a, true
		}
	}
	c.UserClass = userClass(m.GetOneOption(dhcpv4.OptionUserClassInformation))
	c.IPXE = c.UserClass == "iPXE" || len(m.GetOneOption(dhcpv4.GenericOptionCode(optIPXEEncap))) > 0
	if b := m.GetOneOption(dhcpv4.OptionClientMachineIdentifier); len(b) == 17 && b[0] == 0 {
		c.UUID = append([]byte(nil), b[1:]...)
	}
	pxe := strings.HasPrefix(c.VendorClass, "PXEClient") || strings.HasPrefix(c.VendorClass, "HTTPClient")
	return c, (pxe && archKnown) || c.IPXE
}

func archFromVendorClass(vc string) (boot.ClientArch, bool) {
	f := strings.Split(vc, ":")
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "Arch" {
			n, err := strconv.ParseUint(f[i+1], 10, 16)
			if err == nil {
				return boot.ClientArch(n), true
			}
		}
	}
	return 0, false
}

// userClass reads option 77 as iPXE sends it (the bare string "iPXE") or
// in RFC 3004 form (length-prefixed strings), joined by commas.
func userClass(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	var parts []string
	for rest := b; len(rest) > 0; {
		n := int(rest[0])
		if n == 0 || n+1 > len(rest) {
			return printable(b)
		}
		parts = append(parts, printable(rest[1:1+n]))
		rest = rest[1+n:]
	}
	return strings.Join(parts, ",")
}

func printable(b []byte) string {
	for _, c := range b {
		if c < 0x20 || c > 0x7e {
			return "0x" + hex.EncodeToString(b)
		}
	}
	return string(b)
}

// options returns the boot-relevant options of a request as text, for the
// boot trace.
func options(m *dhcpv4.DHCPv4, c boot.Client) map[string]string {
	o := map[string]string{}
	if b := m.GetOneOption(dhcpv4.OptionClientSystemArchitectureType); len(b) >= 2 {
		var arches []string
		for i := 0; i+1 < len(b); i += 2 {
			arches = append(arches, strconv.Itoa(int(binary.BigEndian.Uint16(b[i:]))))
		}
		o["93"] = strings.Join(arches, ",")
	}
	if c.VendorClass != "" {
		o["60"] = c.VendorClass
	}
	if c.UserClass != "" {
		o["77"] = c.UserClass
	}
	if len(c.UUID) > 0 {
		o["97"] = fmt.Sprintf("%x-%x-%x-%x-%x", c.UUID[0:4], c.UUID[4:6], c.UUID[6:8], c.UUID[8:10], c.UUID[10:16])
	}
	if len(m.GetOneOption(dhcpv4.GenericOptionCode(optIPXEEncap))) > 0 {
		o["175"] = "present"
	}
	return o
}
