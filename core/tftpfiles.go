package core

import (
	"context"
	"fmt"
	"net/netip"
	"strings"

	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/grub"
	"github.com/rackboot/rackboot/tftp"
)

// grubConfigPath is where Debian's network GRUB looks for its config:
// its prefix is /grub on the TFTP server it was loaded from.
const grubConfigPath = "grub/grub.cfg"

// tftpFiles serves the loaders, and generates grub/grub.cfg per client.
type tftpFiles struct {
	c   *Core
	dir *tftp.Dir
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
	return &tftpFiles{c: c, dir: d}, nil
}

func (f *tftpFiles) Open(ctx context.Context, client netip.AddrPort, name string) (tftp.File, error) {
	p, err := tftp.CleanPath(name)
	if err != nil {
		return nil, err
	}
	if p != grubConfigPath {
		return f.dir.Open(ctx, client, p)
	}
	if mac := f.c.macOf(ctx, client.Addr()); len(mac) > 0 {
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
	return tftp.NewBytes(grub.Bootstrap(strings.TrimRight(f.c.Config.BaseURL, "/"))), nil
}
