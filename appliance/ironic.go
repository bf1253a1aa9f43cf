package appliance

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/rackboot/rackboot/core"
	"github.com/rackboot/rackboot/dhcp"
	"github.com/rackboot/rackboot/ironic/dnsmasq"
	"github.com/rackboot/rackboot/ironic/roots"
	"github.com/rackboot/rackboot/lease"
)

// checkIronic refuses an Ironic contract that cannot work: it needs
// rackboot's own pools (authoritative DHCP), a lease file where Ironic
// reads addresses, and directories for both kinds of file.
func checkIronic(ic IronicConfig, mode string) error {
	if _, err := ic.roots(); err != nil {
		return err
	}
	if len(ic.HostsDirs) == 0 && len(ic.OptsDirs) == 0 && ic.LeaseFile == "" {
		return nil
	}
	switch {
	case len(ic.HostsDirs) == 0 || len(ic.OptsDirs) == 0:
		return errors.New("ironic: hostsdir and optsdir go together (Ironic's [dnsmasq]dhcp_hostsdir and dhcp_optsdir)")
	case ic.LeaseFile == "":
		return errors.New("ironic: leasefile is needed: Ironic reads its nodes' addresses there ([dnsmasq]dhcp_leasefile)")
	case mode != DHCPAuthoritative:
		return fmt.Errorf("ironic: the dnsmasq contract needs authoritative DHCP (addresses come from rackboot's pools), not %s", mode)
	}
	return nil
}

// ironicExtern is Ironic's files as the DHCP server's Extern.
type ironicExtern struct{ d *dnsmasq.Dir }

func (e ironicExtern) ExternBoot(mac net.HardwareAddr, ipxe bool) (dhcp.ExternReply, bool) {
	var tags []string
	if ipxe {
		// What dhcp-match=set:ipxe,175 sets in Ironic's dnsmasq setups.
		tags = append(tags, "ipxe")
	}
	r, ok := e.d.Lookup(mac, tags...)
	if !ok {
		return dhcp.ExternReply{}, false
	}
	out := dhcp.ExternReply{Ignore: r.Ignore, NextServer: r.NextServer}
	for _, o := range r.Options {
		out.Options = append(out.Options, dhcp.ExternOption{Code: o.Code, Value: o.Value})
	}
	return out, true
}

// ironicOwned says whether the client at an address is a node Ironic
// boots: its MAC (by lease or neighbour table) is listed in Ironic's hosts
// files, or its node is owned by Ironic.
func ironicOwned(c *core.Core, d *dnsmasq.Dir) roots.Owned {
	return func(ctx context.Context, ip netip.Addr) bool {
		mac := c.MACOf(ctx, ip)
		if len(mac) == 0 {
			return false
		}
		if d != nil && d.Listed(mac) {
			return true
		}
		return c.OwnedByIronic(ctx, mac)
	}
}

// leaseSource is what the lease file is written from.
type leaseSource interface {
	ByMAC(ctx context.Context, subnet netip.Prefix, mac net.HardwareAddr) (lease.Lease, error)
}

// writeIronicLeases keeps Ironic's lease file current: the bound leases
// of the MACs its hosts files list, rewritten whole (atomically) when they
// change, checked every interval.
func writeIronicLeases(ctx context.Context, d *dnsmasq.Dir, st leaseSource, subnets []dhcp.Subnet, path string, interval time.Duration, log *slog.Logger) error {
	var last []byte
	for {
		var ls []dnsmasq.Lease
		for _, mac := range d.MACs() {
			for _, sn := range subnets {
				l, err := st.ByMAC(ctx, sn.Prefix, mac)
				if err != nil || l.State != lease.Bound {
					continue
				}
				ls = append(ls, dnsmasq.Lease{Expires: l.Expires, MAC: l.MAC, Addr: l.IP, Hostname: l.Hostname})
			}
		}
		var b bytes.Buffer
		if err := dnsmasq.WriteLeases(&b, ls); err != nil {
			log.Warn("ironic lease file", "err", err)
		} else if !bytes.Equal(b.Bytes(), last) || !exists(path) {
			if err := dnsmasq.WriteLeaseFile(path, ls); err != nil {
				log.Warn("ironic lease file", "file", path, "err", err)
			} else {
				last = b.Bytes()
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(interval):
		}
	}
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
