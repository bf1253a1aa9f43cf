package tftp

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"strings"

	"github.com/rackboot/rackboot/boot"
)

// Planner says what a node boots now; an unknown MAC is the planner's
// business (it may enroll it). It is the seam httpboot asks through too.
type Planner interface {
	// Plan's from is the requester's address: a node's boot secret goes
	// only into a plan asked for from the node's own address.
	Plan(ctx context.Context, mac net.HardwareAddr, arch boot.Arch, from netip.Addr) (boot.Plan, error)
}

// GRUBConfigPath is where Debian's network GRUB looks for its config: its
// prefix is /grub on the TFTP server it was loaded from.
const GRUBConfigPath = "grub/grub.cfg"

// BootFiles is what a boot server serves over TFTP: the loaders, the
// kernels and initrds under artifacts/ (GRUB fetches them over TFTP), and
// a GRUB config per node. What a node boots comes from Planner, the
// config text from generators the caller passes in (grub.Config,
// grub.Bootstrap), as httpboot.Server takes them, so this package knows
// neither the store nor GRUB's syntax.
type BootFiles struct {
	// Loaders serves every path the others do not; Artifacts serves the
	// paths under artifacts/ (with that prefix taken off). Nil answers
	// file not found.
	Loaders, Artifacts Files
	// Planner decides the GRUB configs; nil turns them off, and their
	// paths are looked up in Loaders like any other.
	Planner Planner
	// ClientMAC finds the MAC behind a client's address (its lease, the
	// neighbour table); nil, or a nil answer, means the client is not
	// known by address.
	ClientMAC func(ctx context.Context, ip netip.Addr) net.HardwareAddr
	// GRUBConfig writes a plan as a GRUB config (grub.Config). A client
	// known by address gets its node's at GRUBConfigPath; any client gets
	// the config of the node owning MAC at grub/MAC.cfg.
	GRUBConfig func(boot.Plan) ([]byte, error)
	// GRUBBootstrap is what a client not known by address gets at
	// GRUBConfigPath: a config that fetches grub/MAC.cfg with its own MAC
	// (grub.Bootstrap).
	GRUBBootstrap []byte
}

// Open implements Files.
func (b *BootFiles) Open(ctx context.Context, client netip.AddrPort, name string) (File, error) {
	p, err := CleanPath(name)
	if err != nil {
		return nil, err
	}
	if rest, ok := strings.CutPrefix(p, "artifacts/"); ok {
		return open(ctx, b.Artifacts, client, rest)
	}
	if b.Planner != nil && b.GRUBConfig != nil {
		if p == GRUBConfigPath {
			if b.ClientMAC != nil {
				if mac := b.ClientMAC(ctx, client.Addr()); len(mac) > 0 {
					return b.grubConfig(ctx, mac, client.Addr())
				}
			}
			if b.GRUBBootstrap != nil {
				return NewBytes(b.GRUBBootstrap), nil
			}
		}
		// grub/<MAC>.cfg: what the bootstrap asks for.
		if name, ok := strings.CutPrefix(p, "grub/"); ok && strings.HasSuffix(name, ".cfg") {
			if mac, err := net.ParseMAC(strings.TrimSuffix(name, ".cfg")); err == nil {
				return b.grubConfig(ctx, mac, client.Addr())
			}
		}
	}
	return open(ctx, b.Loaders, client, p)
}

func open(ctx context.Context, f Files, client netip.AddrPort, name string) (File, error) {
	if f == nil {
		return nil, fmt.Errorf("open %s: %w", name, fs.ErrNotExist)
	}
	return f.Open(ctx, client, name)
}

func (b *BootFiles) grubConfig(ctx context.Context, mac net.HardwareAddr, from netip.Addr) (File, error) {
	plan, err := b.Planner.Plan(ctx, mac, boot.ArchUnknown, from)
	if errors.Is(err, boot.ErrUnknownNode) || errors.Is(err, boot.ErrOtherOwner) {
		return nil, fmt.Errorf("grub config for %s: %w: %w", mac, fs.ErrNotExist, err)
	}
	if err != nil {
		return nil, fmt.Errorf("grub config for %s: %w", mac, err)
	}
	c, err := b.GRUBConfig(plan)
	if err != nil {
		return nil, fmt.Errorf("grub config for %s: %w", mac, err)
	}
	return NewBytes(c), nil
}
