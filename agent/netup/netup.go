// Package netup brings the agent's network up: every physical NIC is set
// up, those that find a link ask DHCP for an address, and the leases are
// configured, so the agent can reach the API whichever port is cabled.
package netup

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/u-root/u-root/pkg/dhclient"
	"github.com/vishvananda/netlink"
)

// NIC is one physical network interface.
type NIC struct {
	Name string
	MAC  string
	// Address is the configured address with its prefix, "" when DHCP
	// gave none.
	Address string
}

// Physical lists the interfaces under root's /sys/class/net that sit on a
// device (a PCI or virtio function), leaving out loopback, bridges,
// bonds and other virtual ones.
func Physical(root string) ([]NIC, error) {
	dir := filepath.Join(root, "sys", "class", "net")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list interfaces: %w", err)
	}
	var out []NIC
	for _, e := range ents {
		if _, err := os.Stat(filepath.Join(dir, e.Name(), "device")); err != nil {
			continue
		}
		mac, err := os.ReadFile(filepath.Join(dir, e.Name(), "address"))
		if err != nil {
			continue
		}
		out = append(out, NIC{Name: e.Name(), MAC: strings.ToLower(strings.TrimSpace(string(mac)))})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// UserClass marks the agent's DHCP requests, so a DHCP server can tell
// the agent from the firmware of the same node.
const UserClass = "rackboot-agent"

// Up configures the physical NICs: it waits up to linkWait for links and
// then tries DHCP on every NIC for up to dhcpWait. It returns every NIC,
// with the addresses the leases gave; an error only when no NIC got one.
func Up(ctx context.Context, log *slog.Logger, linkWait, dhcpWait time.Duration) ([]NIC, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	nics, err := Physical("/")
	if err != nil {
		return nil, err
	}
	if len(nics) == 0 {
		return nil, fmt.Errorf("bring network up: no network interface found (is its driver loaded?)")
	}
	var links []netlink.Link
	for _, n := range nics {
		l, err := netlink.LinkByName(n.Name)
		if err != nil {
			log.Warn("interface vanished", "iface", n.Name, "err", err)
			continue
		}
		if err := netlink.LinkSetUp(l); err != nil {
			log.Warn("set interface up", "iface", n.Name, "err", err)
			continue
		}
		links = append(links, l)
	}
	ctx, cancel := context.WithTimeout(ctx, linkWait+dhcpWait)
	defer cancel()
	cfg := dhclient.Config{Timeout: 5 * time.Second, Retries: int(dhcpWait / (5 * time.Second)),
		Modifiers4: []dhcpv4.Modifier{dhcpv4.WithUserClass(UserClass, false)}}
	got := map[string]string{}
	for r := range dhclient.SendRequests(ctx, links, true, false, cfg, linkWait) {
		name := r.Interface.Attrs().Name
		if r.Err != nil {
			log.Info("no DHCP lease", "iface", name, "err", r.Err)
			continue
		}
		if err := r.Lease.Configure(); err != nil {
			log.Warn("configure lease", "iface", name, "err", err)
			continue
		}
		addr := r.Lease.String()
		if p, ok := r.Lease.(*dhclient.Packet4); ok {
			if m, _ := p.Message(); m != nil {
				ones, _ := m.SubnetMask().Size()
				addr = fmt.Sprintf("%s/%d", m.YourIPAddr, ones)
			}
		}
		got[name] = addr
		log.Info("network up", "iface", name, "addr", addr)
	}
	ok := false
	for i := range nics {
		if a, found := got[nics[i].Name]; found {
			nics[i].Address, ok = a, true
		}
	}
	if !ok {
		return nics, fmt.Errorf("bring network up: no interface got a DHCP lease (%d tried)", len(links))
	}
	return nics, nil
}
