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
	"net/netip"
	"path/filepath"
	"regexp"
	"strings"

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
		case r.TFTPRoot == "" && r.HTTPRoot == "":
			return nil, fmt.Errorf("ironic root %q: neither tftp_root nor http_root", r.Name)
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

// Owned says whether the client at addr is a node Ironic boots; the
// appliance asks its lease and Ironic's hosts files.
type Owned func(ctx context.Context, addr netip.Addr) bool

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
		if rest, ok := strings.CutPrefix(p, TFTPBootPrefix); ok {
			r, ok := s.For(client.Addr())
			if !ok {
				return nil, fmt.Errorf("open %s: no Ironic root answers %s: %w", p, client.Addr(), fs.ErrNotExist)
			}
			return openTFTP(ctx, r, client, rest)
		}
		if owned != nil && owned(ctx, client.Addr()) {
			if r, ok := s.For(client.Addr()); ok && r.TFTPRoot != "" {
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
