// Package roots serves the trees OpenStack Ironic's conductors write their
// boot files into (each conductor's [pxe]tftp_root and [deploy]http_root),
// so that a conductor whose tftp_server and http_url name rackboot needs
// no TFTP or web server of its own. Each tree is served read-only under a
// prefix of its own (ironic/NAME/), so Ironic's boot.ipxe, grub/grub.cfg
// and pxelinux.cfg/ never shadow rackboot's files of the same names; two
// paths Ironic itself cannot prefix are mapped as well: the absolute
// /tftpboot/ its GRUB configs source, and the unprefixed names (the
// loader, GRUB's grub/grub.cfg) that a node Ironic boots asks for. Files
// are opened per request, since Ironic rewrites them in place as a node
// moves between deploy stages, and through os.Root, so a link Ironic made
// inside its tree is followed and one that leaves it is refused.
package roots

import (
	"context"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/tftp"
)

// Root is one conductor's trees.
type Root struct {
	// Name is the prefix's last element: ironic/NAME/.
	Name string
	// TFTPRoot and HTTPRoot are the conductor's [pxe]tftp_root and
	// [deploy]http_root (the same host, or a shared mount); either may be
	// empty.
	TFTPRoot, HTTPRoot string
	// Subnets are the clients whose /tftpboot/ and unprefixed paths this
	// conductor answers; a root without any answers the clients no other
	// root claims.
	Subnets []netip.Prefix
	// What the DHCP answers of the conductor's nodes say where Ironic's
	// dnsmasq files do not ([dhcp]dhcp_provider = none): the conductor's
	// boot interface (BootIPXE, the default, or BootPXE), its
	// [deploy]http_url (empty: rackboot's own URL of HTTPRoot) and
	// [pxe]tftp_server (invalid: rackboot), and the loaders' names by
	// firmware (Ironic's [pxe] bootfile names; missing ones get Ironic's
	// defaults).
	BootInterface string
	HTTPURL       string
	TFTPServer    netip.Addr
	BootFiles     map[Firmware]string
	// ConductorGroups and Conductors say which of the nodes Ironic's API
	// lists this root answers: those of these conductor groups, or of
	// these conductors (their [DEFAULT]host). A root is also the one of
	// the group or conductor its Name spells.
	ConductorGroups, Conductors []string
}

// Boot interfaces of Ironic's that rackboot answers for.
const (
	BootIPXE = "ipxe"
	BootPXE  = "pxe"
)

// Firmware is a kind of client firmware, as Ironic's bootfile settings
// tell them apart.
type Firmware string

// The firmware a loader is named for.
const (
	FirmwareBIOS    Firmware = "bios"
	FirmwareUEFI    Firmware = "uefi"
	FirmwareAArch64 Firmware = "aarch64"
)

// defaultBootFiles are Ironic's own defaults (21.x): [pxe]ipxe_bootfile_name,
// uefi_ipxe_bootfile_name, pxe_bootfile_name and uefi_pxe_bootfile_name;
// Ironic has no AArch64 default, so it gets the names its install guide
// sets in *_bootfile_name_by_arch.
var defaultBootFiles = map[string]map[Firmware]string{
	BootIPXE: {FirmwareBIOS: "undionly.kpxe", FirmwareUEFI: "snponly.efi", FirmwareAArch64: "snponly.efi"},
	BootPXE:  {FirmwareBIOS: "pxelinux.0", FirmwareUEFI: "bootx64.efi", FirmwareAArch64: "grubaa64.efi"},
}

// bootInterface is r's, defaulted.
func (r Root) bootInterface() string {
	if r.BootInterface == "" {
		return BootIPXE
	}
	return r.BootInterface
}

// Prefix is where the root is served: "ironic/NAME", without slashes at
// either end.
func (r Root) Prefix() string { return "ironic/" + r.Name }

// TFTPBootPrefix is the conductor path Ironic's GRUB configs name files
// by ("configfile /tftpboot/$net_default_mac.conf"), absolute because
// Ironic assumes its own TFTP server is rooted there.
const TFTPBootPrefix = "tftpboot/"

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// Set is the conductors' roots rackboot serves.
type Set struct {
	roots []Root
	// Base is rackboot's boot-time HTTP URL ("http://10.0.0.1:8080"): a
	// root without an http_url has its http_root there.
	Base string
	// ConductorOf names the root of the node with a MAC from what its
	// conductor wrote for it (Ironic's dnsmasq options), "" when they do
	// not say; it comes before Ironic's API and the subnet. Nil: none.
	ConductorOf func(mac net.HardwareAddr) string
	assigned    atomic.Pointer[map[string]Assignment]
}

// Assignment is what Ironic's API says of a node, by its MAC: the root of
// its conductor and its boot interface.
type Assignment struct {
	// Root names the root: the one named as the node's conductor group,
	// else as its conductor.
	Root string
	// BootInterface is the node's (ipxe or pxe); empty keeps the root's.
	BootInterface string
}

// Assign replaces the nodes' assignments, by MAC (net.HardwareAddr's
// String); safe while serving. A MAC assigned a root that does not exist
// is answered as if unassigned.
func (s *Set) Assign(a map[string]Assignment) { s.assigned.Store(&a) }

// Assigned is mac's assignment.
func (s *Set) Assigned(mac net.HardwareAddr) (Assignment, bool) {
	m := s.assigned.Load()
	if m == nil || len(mac) == 0 {
		return Assignment{}, false
	}
	a, ok := (*m)[mac.String()]
	return a, ok
}

// ForConductor is the root of a node Ironic's API puts in conductor
// group group with conductor host: one that lists the group, else one
// that lists the host, else one named as either.
func (s *Set) ForConductor(group, host string) (Root, bool) {
	// Ironic keeps conductor groups in lower case.
	for _, r := range s.roots {
		if group != "" && slices.ContainsFunc(r.ConductorGroups, func(g string) bool { return strings.EqualFold(g, group) }) {
			return r, true
		}
	}
	for _, r := range s.roots {
		if host != "" && slices.Contains(r.Conductors, host) {
			return r, true
		}
	}
	for _, name := range []string{group, host} {
		if r, ok := s.Root(name); ok && name != "" {
			return r, true
		}
	}
	return Root{}, false
}

// Root is the root named name.
func (s *Set) Root(name string) (Root, bool) {
	for _, r := range s.roots {
		if r.Name == name {
			return r, true
		}
	}
	return Root{}, false
}

// rootFor is the root of the node with MAC mac by its conductor's files
// (ConductorOf), else by its assignment, else the one of the client's
// address (For).
func (s *Set) rootFor(addr netip.Addr, mac net.HardwareAddr) (Root, bool) {
	if s.ConductorOf != nil && len(mac) > 0 {
		if r, ok := s.Root(s.ConductorOf(mac)); ok {
			return r, true
		}
	}
	if a, ok := s.Assigned(mac); ok {
		if r, ok := s.Root(a.Root); ok {
			return r, true
		}
	}
	return s.For(addr)
}

// New checks the roots: names that are unique path elements, absolute
// directories, subnets that are valid. The directories need not exist
// yet: Ironic makes them when it first boots a node.
func New(list []Root) (*Set, error) {
	seen := map[string]bool{}
	for i, r := range list {
		switch {
		case !nameRE.MatchString(r.Name):
			return nil, fmt.Errorf("ironic root %d: name %q: want lower-case letters, digits, - and _ (it is a path element)", i+1, r.Name)
		case seen[r.Name]:
			return nil, fmt.Errorf("ironic root %q: named twice", r.Name)
		case r.TFTPRoot == "" && r.HTTPRoot == "" && r.HTTPURL == "" && !r.TFTPServer.IsValid():
			return nil, fmt.Errorf("ironic root %q: neither tftp_root nor http_root (nor the conductor's http_url or tftp_server)", r.Name)
		case r.BootInterface != "" && r.BootInterface != BootIPXE && r.BootInterface != BootPXE:
			return nil, fmt.Errorf("ironic root %q: boot interface %q: rackboot answers for ipxe and pxe", r.Name, r.BootInterface)
		case r.TFTPServer.IsValid() && !r.TFTPServer.Is4():
			return nil, fmt.Errorf("ironic root %q: tftp_server %s is not an IPv4 address", r.Name, r.TFTPServer)
		}
		if r.HTTPURL != "" {
			u, err := url.Parse(r.HTTPURL)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return nil, fmt.Errorf("ironic root %q: http_url %q: want http://HOST[:PORT][/PATH]", r.Name, r.HTTPURL)
			}
		}
		for fw, name := range r.BootFiles {
			if _, ok := defaultBootFiles[BootIPXE][fw]; !ok {
				return nil, fmt.Errorf("ironic root %q: bootfile for %q: want bios, uefi or aarch64", r.Name, fw)
			}
			if name == "" || len(name) > 255 || strings.ContainsAny(name, "\x00\n") {
				return nil, fmt.Errorf("ironic root %q: bootfile for %s: %q is no file name", r.Name, fw, name)
			}
		}
		seen[r.Name] = true
		for _, d := range []string{r.TFTPRoot, r.HTTPRoot} {
			if d != "" && !filepath.IsAbs(d) {
				return nil, fmt.Errorf("ironic root %q: %s is not an absolute path", r.Name, d)
			}
		}
		for _, p := range r.Subnets {
			if !p.IsValid() {
				return nil, fmt.Errorf("ironic root %q: invalid subnet", r.Name)
			}
		}
	}
	return &Set{roots: append([]Root(nil), list...)}, nil
}

// Roots lists the roots in their configured order.
func (s *Set) Roots() []Root { return append([]Root(nil), s.roots...) }

// For is the root that answers the client at addr: the first whose
// subnets hold it, else the first without subnets.
func (s *Set) For(addr netip.Addr) (Root, bool) {
	addr = addr.Unmap()
	for _, r := range s.roots {
		for _, p := range r.Subnets {
			if p.Contains(addr) {
				return r, true
			}
		}
	}
	for _, r := range s.roots {
		if len(r.Subnets) == 0 {
			return r, true
		}
	}
	return Root{}, false
}

// ForNetwork is For by a client's subnet, as a DHCP request gives it
// before the client has an address.
func (s *Set) ForNetwork(p netip.Prefix) (Root, bool) {
	if p.IsValid() {
		for _, r := range s.roots {
			for _, q := range r.Subnets {
				if q.Overlaps(p) && q.Bits() <= p.Bits() {
					return r, true
				}
			}
		}
	}
	return s.For(netip.Addr{})
}

// HTTPURL is where the conductor's nodes fetch its http_root: its
// http_url, or rackboot's own.
func (s *Set) HTTPURL(r Root) string {
	if r.HTTPURL != "" {
		return strings.TrimSuffix(r.HTTPURL, "/")
	}
	return strings.TrimSuffix(s.Base, "/") + "/" + r.Prefix()
}

// Offer is the DHCP answer Ironic's conductor would have its DHCP server
// give a client of one of its nodes ([dhcp]dhcp_provider = none, where
// no dnsmasq files say it): the loader named for the client's firmware
// on the conductor's tftp_server, and once iPXE runs (boot interface
// ipxe), the conductor's boot.ipxe. The conductor is the node's by its
// assignment (Ironic's API), else the root of its subnet. ok is false
// when no root answers the client, and for firmware Ironic's loaders do
// not serve (32-bit UEFI) or that boots by URL (UEFI HTTP boot).
func (s *Set) Offer(cl boot.Client) (o boot.Offer, ok bool) {
	r, ok := s.ForNetwork(cl.Network)
	if a, assigned := s.Assigned(cl.MAC); assigned {
		if ar, found := s.Root(a.Root); found {
			r, ok = ar, true
		}
		switch a.BootInterface {
		case BootIPXE, BootPXE:
			r.BootInterface = a.BootInterface
		case "":
		default:
			// Virtual media, HTTP boot: nothing a loader from DHCP
			// should answer.
			return boot.Offer{}, false
		}
	}
	if !ok {
		return boot.Offer{}, false
	}
	if r.bootInterface() == BootIPXE && cl.IPXE {
		if r.HTTPURL == "" && r.HTTPRoot == "" {
			return boot.Offer{}, false
		}
		return boot.Offer{File: s.HTTPURL(r) + "/boot.ipxe"}, true
	}
	var fw Firmware
	switch {
	case cl.Arch.HTTP():
		// Ironic's http boot interface gives these a URL of its own
		// making; rackboot does not guess it.
		return boot.Offer{}, false
	case cl.Arch.Arch() == boot.ArchAArch64:
		fw = FirmwareAArch64
	case cl.Arch.Arch() == boot.ArchX86_64 && cl.Arch.Firmware() == boot.FirmwareBIOS:
		fw = FirmwareBIOS
	case cl.Arch.Arch() == boot.ArchX86_64:
		fw = FirmwareUEFI
	default:
		return boot.Offer{}, false
	}
	file := r.BootFiles[fw]
	if file == "" {
		file = defaultBootFiles[r.bootInterface()][fw]
	}
	return boot.Offer{File: file, NextServer: r.TFTPServer}, true
}

// ConductorFromOptions names the root that the boot options of an
// Ironic node point at: the one whose tftp_root is the TFTP path prefix
// Ironic writes for GRUB and PXELINUX nodes (option 210, its conductor's
// tftp_root), or whose prefix is in the path of the iPXE script URL
// (option 67, http_url/boot.ipxe with http_url rackboot's
// .../ironic/NAME). "" when neither says.
func (s *Set) ConductorFromOptions(opt func(code uint8) ([]byte, bool)) string {
	if v, ok := opt(210); ok {
		p := filepath.Clean(strings.TrimRight(string(v), "\x00"))
		for _, r := range s.roots {
			if r.TFTPRoot != "" && filepath.Clean(r.TFTPRoot) == p {
				return r.Name
			}
		}
	}
	if v, ok := opt(67); ok {
		if u, err := url.Parse(strings.TrimRight(string(v), "\x00")); err == nil && u.Host != "" {
			for _, r := range s.roots {
				if strings.Contains(u.Path+"/", "/"+r.Prefix()+"/") {
					return r.Name
				}
			}
		}
	}
	return ""
}

// Owned says whether the client at addr is a node Ironic boots, and its
// MAC when known; the appliance asks its lease, its nodes and Ironic's
// hosts files.
type Owned func(ctx context.Context, addr netip.Addr) (mac net.HardwareAddr, ironic bool)

// TFTP returns own with the roots in front:
//
//   - ironic/NAME/PATH is PATH in that root's tftp_root, for any client;
//   - tftpboot/PATH is PATH in the tftp_root of the root that answers the
//     client (For), for any client: no rackboot path starts so;
//   - every other path of a client owned says is Ironic's comes from its
//     root too, so that its loader's and GRUB's fixed names (snponly.efi,
//     grub/grub.cfg, grub.cfg-01-MAC) are the conductor's files, not
//     rackboot's;
//   - everything else is own's.
func (s *Set) TFTP(own tftp.Files, owned Owned) tftp.Files {
	return tftp.FilesFunc(func(ctx context.Context, client netip.AddrPort, name string) (tftp.File, error) {
		p, err := tftp.CleanPath(name)
		if err != nil {
			return nil, err
		}
		if rest, ok := strings.CutPrefix(p, "ironic/"); ok {
			rname, path, _ := strings.Cut(rest, "/")
			for _, r := range s.roots {
				if r.Name == rname {
					return openTFTP(ctx, r, client, path)
				}
			}
			return nil, fmt.Errorf("open %s: no Ironic root %q: %w", p, rname, fs.ErrNotExist)
		}
		var mac net.HardwareAddr
		ironic := false
		if owned != nil {
			mac, ironic = owned(ctx, client.Addr())
		}
		if rest, ok := strings.CutPrefix(p, TFTPBootPrefix); ok {
			r, ok := s.rootFor(client.Addr(), mac)
			if !ok {
				return nil, fmt.Errorf("open %s: no Ironic root answers %s: %w", p, client.Addr(), fs.ErrNotExist)
			}
			return openTFTP(ctx, r, client, rest)
		}
		if ironic {
			if r, ok := s.rootFor(client.Addr(), mac); ok && r.TFTPRoot != "" {
				return openTFTP(ctx, r, client, p)
			}
		}
		if own == nil {
			return nil, fmt.Errorf("open %s: %w", p, fs.ErrNotExist)
		}
		return own.Open(ctx, client, p)
	})
}

func openTFTP(ctx context.Context, r Root, client netip.AddrPort, path string) (tftp.File, error) {
	if r.TFTPRoot == "" {
		return nil, fmt.Errorf("open %s/%s: root has no tftp_root: %w", r.Prefix(), path, fs.ErrNotExist)
	}
	if path == "" {
		return nil, fmt.Errorf("open %s/: %w", r.Prefix(), fs.ErrNotExist)
	}
	// Ironic makes the tree on its first boot: until then, no file (the
	// error wraps fs.ErrNotExist).
	d, err := tftp.NewDir(r.TFTPRoot)
	if err != nil {
		return nil, fmt.Errorf("open %s/%s: %w", r.Prefix(), path, err)
	}
	f, err := d.Open(ctx, client, path)
	if err != nil {
		return nil, fmt.Errorf("ironic root %s: %w", r.Name, err)
	}
	return f, nil
}
