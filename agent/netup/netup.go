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
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/rackboot/rackboot/boot"
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
const UserClass = boot.AgentUserClass

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
	if !CRNGReady() {
		log.Warn("the kernel's random pool is not seeded: this machine has no hardware RNG; DHCP goes ahead without it")
	}
	type result struct {
		name, addr string
		err        error
	}
	results := make(chan result, len(links))
	var wg sync.WaitGroup
	for _, l := range links {
		wg.Go(func() {
			name := l.Attrs().Name
			addr, err := lease(ctx, name, linkWait, dhcpWait)
			results <- result{name, addr, err}
		})
	}
	go func() { wg.Wait(); close(results) }()
	got := map[string]string{}
	for r := range results {
		if r.err != nil {
			log.Info("no DHCP lease", "iface", r.name, "err", r.err)
			continue
		}
		got[r.name] = r.addr
		log.Info("network up", "iface", r.name, "addr", r.addr)
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

// lease waits for the link of one interface, gets a DHCPv4 lease on it
// and configures it, returning the address with its prefix length.
func lease(ctx context.Context, name string, linkWait, dhcpWait time.Duration) (string, error) {
	link, err := dhclient.IfUp(name, linkWait)
	if err != nil {
		return "", err
	}
	const try = 5 * time.Second
	c, err := nclient4.New(name, nclient4.WithTimeout(try), nclient4.WithRetry(max(1, int(dhcpWait/try))))
	if err != nil {
		return "", fmt.Errorf("dhcp on %s: %w", name, err)
	}
	defer c.Close()
	ack, err := dora(ctx, c, link.Attrs().HardwareAddr, nonblockingRandom)
	if err != nil {
		return "", fmt.Errorf("dhcp on %s: %w", name, err)
	}
	if err := dhclient.NewPacket4(link, ack).Configure(); err != nil {
		return "", fmt.Errorf("configure the lease on %s: %w", name, err)
	}
	ones, _ := ack.SubnetMask().Size()
	return fmt.Sprintf("%s/%d", ack.YourIPAddr, ones), nil
}
