package catalog

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"syscall"
	"time"
)

// cgnat is RFC 6598's shared address space: as internal as RFC 1918's.
var cgnat = netip.MustParsePrefix("100.64.0.0/10")

// reserved are IPv4 networks no image source lives on: "this network",
// RFC 2544's benchmark range and the old class E.
var reserved = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/8"), netip.MustParsePrefix("198.18.0.0/15"), netip.MustParsePrefix("240.0.0.0/4")}

// Translation prefixes carry an IPv4 address inside an IPv6 one: NAT64
// (RFC 6052) in the last 32 bits, 6to4 (RFC 3056) in bits 16-47. The
// rules apply to the IPv4 address they reach.
var (
	nat64  = netip.MustParsePrefix("64:ff9b::/96")
	sixTo4 = netip.MustParsePrefix("2002::/16")
)

func embedded(a netip.Addr) (netip.Addr, bool) {
	b := a.As16()
	switch {
	case nat64.Contains(a):
		return netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]}), true
	case sixTo4.Contains(a):
		return netip.AddrFrom4([4]byte{b[2], b[3], b[4], b[5]}), true
	}
	return a, false
}

// blockedError is a connection the source rules refused before it was
// made.
type blockedError struct {
	addr netip.Addr
	rule string
}

func (e *blockedError) Error() string { return fmt.Sprintf("%s is %s", e.addr, e.rule) }

// checkSource says why an import may not connect to a: a URL import is a
// request the appliance makes on a caller's behalf, from inside the
// provisioning network, and must not reach what the caller could not
// (its own API, a cloud metadata service, the machines behind it).
func (c *Catalog) checkSource(ap netip.AddrPort) error {
	if c.permit != nil && c.permit(ap) {
		return nil
	}
	a := ap.Addr().Unmap()
	if v4, ok := embedded(a); ok {
		if err := c.checkSource(netip.AddrPortFrom(v4, ap.Port())); err != nil {
			return &blockedError{addr: a, rule: "an IPv6 translation of " + err.Error()}
		}
		return nil
	}
	rule := ""
	switch {
	case a.IsLoopback():
		rule = "a loopback address"
	case a.IsMulticast():
		rule = "a multicast address"
	case a.IsLinkLocalUnicast():
		rule = "a link-local address (where cloud metadata services answer)"
	case a.IsUnspecified():
		rule = "the unspecified address"
	case a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		rule = "the broadcast address"
	case slices.ContainsFunc(reserved, func(p netip.Prefix) bool { return p.Contains(a) }):
		rule = "a reserved address"
	case c.own(a):
		rule = "one of this appliance's own addresses"
	case (a.IsPrivate() || cgnat.Contains(a)) && !c.allowed(a):
		rule = "a private address: list its network in images.allow_networks to import from it"
	}
	if rule != "" {
		return &blockedError{addr: a, rule: rule}
	}
	return nil
}

func (c *Catalog) allowed(a netip.Addr) bool {
	for _, p := range c.AllowNetworks {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// own reports whether a is an address of this machine's interfaces,
// asked each time: addresses come and go.
func (c *Catalog) own(a netip.Addr) bool {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, ia := range addrs {
		if p, err := netip.ParsePrefix(ia.String()); err == nil && p.Addr().Unmap() == a {
			return true
		}
	}
	return false
}

// client fetches URL imports. Every connection, the first and each
// redirect's, is checked against the source rules after DNS has
// resolved it, at the moment it is made, so neither a redirect nor a
// name that resolves differently the second time gets past them. No
// proxy is used: the rules are about where the bytes come from.
func (c *Catalog) client() *http.Client {
	d := &net.Dialer{Timeout: 30 * time.Second, Control: func(network, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return &blockedError{rule: "not an IP address: " + address}
		}
		return c.checkSource(ap)
	}}
	return &http.Client{
		Timeout: 30 * time.Minute,
		Transport: &http.Transport{
			DialContext:           d.DialContext,
			TLSHandshakeTimeout:   30 * time.Second,
			ResponseHeaderTimeout: 2 * time.Minute,
			MaxIdleConns:          1,
		},
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 5 {
				return errors.New("more than 5 redirects")
			}
			if req.URL.Scheme != "http" && req.URL.Scheme != "https" {
				return fmt.Errorf("a redirect to %s: only http and https sources are accepted", req.URL.Scheme)
			}
			return nil
		},
	}
}
