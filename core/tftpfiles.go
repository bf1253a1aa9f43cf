package core

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/grub"
	"github.com/rackboot/rackboot/tftp"
)

// grubConfigPath is where Debian's network GRUB looks for its config:
// its prefix is /grub on the TFTP server it was loaded from.
const grubConfigPath = "grub/grub.cfg"

// tftpFiles serves the loaders, the artifacts (GRUB fetches kernels and
// initrds over TFTP), and generates GRUB configs.
type tftpFiles struct {
	c         *Core
	dir       *tftp.Dir
	artifacts *tftp.Dir
}

// TFTPFiles returns what the TFTP server serves: the loaders in dir, and
// at grub/grub.cfg the config of the node the client's address belongs
// to (found through its lease or the neighbour table), or, for a client
// not known by address, a bootstrap that fetches its config by MAC.
func (c *Core) TFTPFiles(dir string) (tftp.Files, error) {
	d, err := tftp.NewDir(dir)
	if err != nil {
		return nil, err
	}
	a, err := tftp.NewDir(c.Config.Artifacts)
	if err != nil {
		return nil, err
	}
	return &tftpFiles{c: c, dir: d, artifacts: a}, nil
}

func (f *tftpFiles) Open(ctx context.Context, client netip.AddrPort, name string) (tftp.File, error) {
	p, err := tftp.CleanPath(name)
	if err != nil {
		return nil, err
	}
	if rest, ok := strings.CutPrefix(p, "artifacts/"); ok {
		return f.artifacts.Open(ctx, client, rest)
	}
	if p == grubConfigPath {
		if mac := f.c.macOf(ctx, client.Addr()); len(mac) > 0 {
			return f.grubConfig(ctx, mac)
		}
		return tftp.NewBytes(grub.Bootstrap()), nil
	}
	// grub/<MAC>.cfg: what the bootstrap asks for.
	if name, ok := strings.CutPrefix(p, "grub/"); ok && strings.HasSuffix(name, ".cfg") {
		if mac, err := net.ParseMAC(strings.TrimSuffix(name, ".cfg")); err == nil {
			return f.grubConfig(ctx, mac)
		}
	}
	return f.dir.Open(ctx, client, p)
}

func (f *tftpFiles) grubConfig(ctx context.Context, mac net.HardwareAddr) (tftp.File, error) {
	plan, err := f.c.Plan(ctx, mac, boot.ArchUnknown)
	if err != nil {
		return nil, fmt.Errorf("grub config for %s: %w", mac, err)
	}
	b, err := grub.Config(plan)
	if err != nil {
		return nil, fmt.Errorf("grub config for %s: %w", mac, err)
	}
	return tftp.NewBytes(b), nil
}
