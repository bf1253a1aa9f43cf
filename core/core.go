// Package core decides what each machine boots. It implements the seams
// the protocol servers ask through (boot.Booter for DHCP, the planner for
// boot-time HTTP and TFTP's GRUB configs, the MAC behind a client's
// address, boot.Recorder for all of them) on top of the store: it enrolls
// every network-boot client as a node, picks its loader from the firmware
// catalog, plans its kernel and initrd (or local boot) from its state, and
// keeps its boot trace. Script and config syntax (ipxe, grub) is not its
// business: the appliance hands those generators to the servers.
package core

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/firmware"
	secretpkg "github.com/rackboot/rackboot/internal/secret"
	"github.com/rackboot/rackboot/lease"
	"github.com/rackboot/rackboot/store"
	"github.com/rackboot/rackboot/trace"
)

// Config is what the core needs to know of the appliance.
type Config struct {
	// BaseURL is the boot-time HTTP server as clients reach it,
	// e.g. "http://10.0.0.1:8080" (no trailing slash).
	BaseURL string
	// SecureBoot sends every x86-64 UEFI node down the shim → GRUB path
	// instead of iPXE; SecureBootSubnets does it for nodes on those
	// subnets only. A node's own setting overrides both.
	SecureBoot        bool
	SecureBootSubnets []netip.Prefix
	// Artifacts is the directory served under /artifacts/: the kernel of
	// each architecture is <arch>/vmlinuz, its initrds <arch>/initrd*.
	Artifacts string
	// Cmdline is appended to every kernel command line; Console is the
	// console= part per architecture (defaults: ttyS0, ttyAMA0).
	Cmdline string
	Console map[boot.Arch]string
	// APIURL is what the agent is told to talk to (defaults to BaseURL).
	APIURL string
	// APIPins are the fingerprints of the certificates an https APIURL
	// may present (rackboot.ca=): the agent trusts nothing else.
	APIPins []string
	// EnrollOnBoot enrolls a MAC rackboot has never seen when its boot
	// request comes from the address the neighbour table gives that MAC:
	// with DHCP off rackboot sees no firmware DHCP to enroll by. Otherwise
	// only a firmware DHCP exchange enrolls a node.
	EnrollOnBoot bool
	// Subnets are the networks rackboot leases on, where a node's lease
	// tells its address.
	Subnets []netip.Prefix
	// BootSecretTTL is how long a boot's secret may wait for its agent's
	// lookup (default 24h).
	BootSecretTTL time.Duration
	// RoutedNetworks are where nodes sit behind routers that rackboot's
	// leases and neighbour table cannot see through (proxy mode across
	// routers): a request from an address in them that rackboot cannot
	// attribute to any MAC still gets its node's boot secret, unless
	// rackboot knows the node's own address and it is another. Any other
	// unattributable address (IPv6, an unknown static address) never does.
	RoutedNetworks []netip.Prefix
	// EnrollKnownOnly boots only MACs that are nodes already (rackboot
	// node add): a client that is not one gets no boot offer and is not
	// enrolled ("enroll: known", proxy mode's default, so an office PC
	// that happens to PXE-boot is left alone).
	EnrollKnownOnly bool
}

// Core is the appliance's decision maker.
type Core struct {
	Store  Store
	Config Config
	Logger *slog.Logger
	// Neighbors maps an address to a MAC when no lease knows it (proxy
	// mode, where another server leases the addresses), NeighborAddrs a
	// MAC to its addresses. Nil reads the kernel's neighbour table.
	Neighbors     func(ip netip.Addr) net.HardwareAddr
	NeighborAddrs func(mac net.HardwareAddr) []netip.Addr
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Ironic answers the firmware of the nodes Ironic owns as Ironic's
	// conductor would have its DHCP server answer them ([dhcp]
	// dhcp_provider = none; ironic/roots). Nil, or no answer, leaves
	// them without a boot offer.
	Ironic IronicBooter
}

// IronicBooter is the boot offer of a node Ironic owns.
type IronicBooter interface {
	Offer(boot.Client) (boot.Offer, bool)
}

// Store is what the core reads and writes; store.Store implements it.
type Store interface {
	// EnrollClient and NodeByMAC find (or create) the node of a client.
	EnrollClient(ctx context.Context, c boot.Client, now time.Time) (n store.Node, created bool, err error)
	NodeByMAC(ctx context.Context, mac net.HardwareAddr) (store.Node, error)
	// ByIP finds the lease, and so the MAC, behind a client's address.
	ByIP(ctx context.Context, ip netip.Addr) (lease.Lease, error)
	// AddTrace keeps a node's boot trace.
	AddTrace(ctx context.Context, nodeID string, e boot.Event) error
	// AddTraces keeps many events of boot traces at once.
	AddTraces(ctx context.Context, es []store.TraceEvent) error
	// ByMAC finds a node's lease, and so its address, on a subnet.
	ByMAC(ctx context.Context, subnet netip.Prefix, mac net.HardwareAddr) (lease.Lease, error)
	// CreateToken and DeleteToken keep each node's boot secret.
	CreateToken(ctx context.Context, t store.Token) (store.Token, error)
	DeleteToken(ctx context.Context, id string) error
}

func (c *Core) log() *slog.Logger {
	if c.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.Logger
}

func (c *Core) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

// BootOffer implements boot.Booter: it enrolls the client and names the
// file its firmware (or iPXE) should fetch next.
func (c *Core) BootOffer(ctx context.Context, cl boot.Client) (boot.Offer, error) {
	if c.Config.EnrollKnownOnly && !c.Known(ctx, cl.MAC) {
		return boot.Offer{}, fmt.Errorf("boot offer for %s: %w", cl.MAC, boot.ErrUnknownNode)
	}
	n, created, err := c.Store.EnrollClient(ctx, cl, c.now())
	if err != nil {
		return boot.Offer{}, fmt.Errorf("boot offer for %s: %w", cl.MAC, err)
	}
	if created {
		c.log().Info("node enrolled", "node", n.ID, "mac", cl.MAC.String(), "arch", cl.Arch.String())
	}
	if n.Owner == store.OwnerIronic {
		if c.Ironic != nil {
			if o, ok := c.Ironic.Offer(cl); ok {
				o.Node = n.ID
				return o, nil
			}
		}
		return boot.Offer{}, fmt.Errorf("boot offer for %s: %w", cl.MAC, boot.ErrOtherOwner)
	}
	if cl.IPXE {
		// iPXE never gets a loader again: that is the chainload loop.
		return boot.Offer{File: c.Config.BaseURL + "/boot.ipxe", Node: n.ID}, nil
	}
	loader, err := firmware.Loader(cl.Arch, c.secureBoot(n, cl))
	if err != nil {
		return boot.Offer{}, fmt.Errorf("boot offer for %s: %w", cl.MAC, err)
	}
	if cl.Arch.HTTP() {
		return boot.Offer{File: c.Config.BaseURL + "/firmware/" + loader, HTTPClient: true, Node: n.ID}, nil
	}
	return boot.Offer{File: loader, Node: n.ID}, nil
}

func (c *Core) secureBoot(n store.Node, cl boot.Client) bool {
	if n.SecureBoot != nil {
		return *n.SecureBoot
	}
	if c.Config.SecureBoot {
		return true
	}
	for _, p := range c.Config.SecureBootSubnets {
		if cl.Network.IsValid() && p.Overlaps(cl.Network) {
			return true
		}
	}
	return false
}

// Plan says what the node owning mac boots now, for a request from the
// address from. A boot request changes no node's state, revokes no token
// and fails no task: anyone on the network can make one.
//
// A plan that boots the agent carries a fresh per-boot secret on the
// kernel command line (rackboot.boot=), which the agent's lookup must
// show, and which replaces the node's previous one. It is given only to
// a request that comes from the node itself, as far as rackboot can tell
// (see fromNode); anyone else gets the same script without it, so an
// agent started from it can never get the node's token.
func (c *Core) Plan(ctx context.Context, mac net.HardwareAddr, arch boot.Arch, from netip.Addr) (boot.Plan, error) {
	n, err := c.Store.NodeByMAC(ctx, mac)
	if errors.Is(err, store.ErrNotFound) {
		if !c.Config.EnrollOnBoot || !sameMAC(c.neighbor(from), mac) {
			return boot.Plan{}, fmt.Errorf("plan boot of %s: %w", mac, boot.ErrUnknownNode)
		}
		n, _, err = c.Store.EnrollClient(ctx, boot.Client{MAC: mac, Arch: clientArchOf(arch)}, c.now())
		if err == nil {
			c.log().Info("node enrolled by its first boot request", "node", n.ID, "mac", mac.String(), "peer", from.String())
		}
	}
	if err != nil {
		return boot.Plan{}, fmt.Errorf("plan boot of %s: %w", mac, err)
	}
	if n.Owner == store.OwnerIronic {
		return boot.Plan{}, fmt.Errorf("plan boot of %s: %w", mac, boot.ErrOtherOwner)
	}
	if arch == boot.ArchUnknown {
		arch = n.Arch
	}
	p := boot.Plan{Node: n.ID, Hostname: n.Name, Arch: arch}
	if p.Hostname == "" {
		p.Hostname = n.ID
	}
	secret := ""
	if n.State == store.StateActive {
		p.Action = boot.ActionLocal
	} else {
		p.Action = boot.ActionNetboot
		if c.fromNode(ctx, from, n) {
			if secret, err = c.bootSecret(ctx, n.ID); err != nil {
				return boot.Plan{}, fmt.Errorf("plan boot of node %s: %w", n.ID, err)
			}
		} else {
			c.log().Warn("boot script asked for a node from another address: served without the boot secret",
				"node", n.ID, "mac", mac.String(), "peer", from.String())
		}
		if err := c.netboot(&p, n, secret); err != nil {
			return boot.Plan{}, fmt.Errorf("plan boot of node %s: %w", n.ID, err)
		}
	}
	c.recordPlan(ctx, n.ID, mac, p, from, p.Action == boot.ActionNetboot && secret == "")
	return p, nil
}

// OwnedByIronic says whether the node with MAC mac is Ironic's to boot.
// A MAC of no node is not: rackboot would enroll it.
func (c *Core) OwnedByIronic(ctx context.Context, mac net.HardwareAddr) bool {
	n, err := c.Store.NodeByMAC(ctx, mac)
	return err == nil && n.Owner == store.OwnerIronic
}

// OwnedByRackboot says whether the node with MAC mac is one rackboot
// drives. A MAC of no node is not, yet.
func (c *Core) OwnedByRackboot(ctx context.Context, mac net.HardwareAddr) bool {
	n, err := c.Store.NodeByMAC(ctx, mac)
	return err == nil && n.Owner != store.OwnerIronic
}

// Known says whether mac is a node's (the DHCP server's Known): known
// clients are never rate-limited.
func (c *Core) Known(ctx context.Context, mac net.HardwareAddr) bool {
	_, err := c.Store.NodeByMAC(ctx, mac)
	return err == nil
}

// fromNode says whether a request from the address from comes from node
// n. Its address is attributed by lease or neighbour table: it must be
// one of n's MACs. An address rackboot cannot attribute counts as the
// node's only inside RoutedNetworks, and then only if rackboot does not
// know n's own address to be another.
func (c *Core) fromNode(ctx context.Context, from netip.Addr, n store.Node) bool {
	if !from.IsValid() {
		return false
	}
	from = from.Unmap()
	if mac := c.MACOf(ctx, from); len(mac) > 0 {
		return slices.Contains(n.MACs, mac.String())
	}
	routed := false
	for _, p := range c.Config.RoutedNetworks {
		routed = routed || p.Contains(from)
	}
	if !routed {
		return false
	}
	for _, m := range n.MACs {
		hw, err := net.ParseMAC(m)
		if err != nil {
			continue
		}
		for _, sn := range c.Config.Subnets {
			if l, err := c.Store.ByMAC(ctx, sn, hw); err == nil && l.IP.IsValid() && l.IP != from {
				return false
			}
		}
		for _, a := range c.neighborAddrs(hw) {
			if a != from {
				return false
			}
		}
	}
	return true
}

// bootSecret makes the node's secret for this boot, replacing the last
// one: only the newest script's agent can look the node up.
func (c *Core) bootSecret(ctx context.Context, node string) (string, error) {
	ttl := c.Config.BootSecretTTL
	if ttl <= 0 {
		ttl = 24 * time.Hour
	}
	s, hash := secretpkg.New("", 16)
	id := store.BootTokenID(node)
	t := store.Token{ID: id, Hash: hash, Kind: store.TokenBoot, Name: "boot secret of " + node, NodeID: node, Expires: c.now().Add(ttl).UTC()}
	for try := 0; ; try++ {
		if err := c.Store.DeleteToken(ctx, id); err != nil && !errors.Is(err, store.ErrNotFound) {
			return "", fmt.Errorf("boot secret: %w", err)
		}
		_, err := c.Store.CreateToken(ctx, t)
		// Two plans at once: one replaces the other's, and tries again.
		if errors.Is(err, store.ErrConflict) && try < 3 {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("boot secret: %w", err)
		}
		return s, nil
	}
}

func sameMAC(a, b net.HardwareAddr) bool { return len(a) > 0 && a.String() == b.String() }

func clientArchOf(a boot.Arch) boot.ClientArch {
	switch a {
	case boot.ArchX86_64:
		return boot.ClientX64UEFI
	case boot.ArchAArch64:
		return boot.ClientARM64UEFI
	}
	return 0xffff
}

func (c *Core) netboot(p *boot.Plan, n store.Node, secret string) error {
	if p.Arch == boot.ArchUnknown {
		return fmt.Errorf("architecture unknown")
	}
	dir := filepath.Join(c.Config.Artifacts, string(p.Arch))
	if _, err := os.Stat(filepath.Join(dir, "vmlinuz")); err != nil {
		return fmt.Errorf("no kernel for %s: %w", p.Arch, err)
	}
	initrds, err := filepath.Glob(filepath.Join(dir, "initrd*"))
	if err != nil {
		return err
	}
	sort.Strings(initrds)
	base := c.Config.BaseURL + "/artifacts/" + string(p.Arch) + "/"
	p.Kernel = base + "vmlinuz"
	for _, f := range initrds {
		p.Initrds = append(p.Initrds, base+url.PathEscape(filepath.Base(f)))
	}
	console := c.Config.Console[p.Arch]
	if console == "" {
		console = map[boot.Arch]string{boot.ArchX86_64: "ttyS0", boot.ArchAArch64: "ttyAMA0"}[p.Arch]
	}
	api := c.Config.APIURL
	if api == "" {
		api = c.Config.BaseURL
	}
	p.Cmdline = fmt.Sprintf("console=%s rackboot.api=%s rackboot.node=%s", console, api, n.ID)
	if api != c.Config.BaseURL {
		// Disk images and boot files stay on the boot port (sendfile).
		p.Cmdline += " rackboot.files=" + c.Config.BaseURL
	}
	if len(c.Config.APIPins) > 0 {
		p.Cmdline += " rackboot.ca=" + strings.Join(c.Config.APIPins, ",")
	}
	if secret != "" {
		p.Cmdline += " rackboot.boot=" + secret
	}
	p.Cmdline = strings.TrimSpace(p.Cmdline + " " + c.Config.Cmdline)
	return nil
}

func (c *Core) recordPlan(ctx context.Context, nodeID string, mac net.HardwareAddr, p boot.Plan, from netip.Addr, withheld bool) {
	e := boot.Event{Time: c.now(), MAC: mac, IP: from, Proto: trace.ProtoCore, Kind: trace.KindPlan, Size: -1,
		Options: map[string]string{trace.OptAction: string(p.Action)}}
	if withheld {
		e.Error = "asked for from " + from.String() + ", not the node's address: served without the boot secret"
	}
	if p.Action == boot.ActionNetboot {
		e.Options[trace.OptKernel] = p.Kernel
		e.Options[trace.OptInitrds] = strings.Join(p.Initrds, " ")
	}
	if err := c.Store.AddTrace(ctx, nodeID, e); err != nil {
		c.log().Warn("record boot plan", "node", nodeID, "err", err)
	}
}

// Record implements boot.Recorder: the event joins the trace of the node
// it belongs to, found by MAC, else by the address's lease, else by the
// neighbour table. Events of machines rackboot does not know are dropped.
func (c *Core) Record(ctx context.Context, e boot.Event) {
	te, ok := c.resolve(ctx, e, nil)
	if !ok {
		return
	}
	if err := c.Store.AddTraces(ctx, []store.TraceEvent{te}); err != nil {
		c.log().Warn("record boot event", "node", te.NodeID, "err", err)
	}
}

// RecordBatch implements boot.BatchRecorder: Record for many events, in
// one write. A boot storm's events are many per node (every TFTP and
// HTTP request), so the lookups behind them are made once per client
// address and MAC in a batch.
func (c *Core) RecordBatch(ctx context.Context, es []boot.Event) {
	memo := &traceMemo{macs: map[netip.Addr]net.HardwareAddr{}, nodes: map[string]string{}}
	tes := make([]store.TraceEvent, 0, len(es))
	for _, e := range es {
		if te, ok := c.resolve(ctx, e, memo); ok {
			tes = append(tes, te)
		}
	}
	if err := c.Store.AddTraces(ctx, tes); err != nil {
		// One event of a node deleted meanwhile fails the whole write:
		// the others are kept one by one.
		c.log().Warn("record boot events", "events", len(tes), "err", err)
		for _, te := range tes {
			if err := c.Store.AddTrace(ctx, te.NodeID, te.Event); err != nil {
				c.log().Warn("record boot event", "node", te.NodeID, "err", err)
			}
		}
	}
}

// traceMemo is what one batch of events has already looked up: an
// address's MAC, and a MAC's node ("" for none).
type traceMemo struct {
	macs  map[netip.Addr]net.HardwareAddr
	nodes map[string]string
}

// resolve finds the node an event belongs to, by its MAC, else its
// address's lease, else the neighbour table. ok is false for a machine
// rackboot does not know, whose events are dropped.
func (c *Core) resolve(ctx context.Context, e boot.Event, memo *traceMemo) (store.TraceEvent, bool) {
	mac := e.MAC
	if len(mac) == 0 && e.IP.IsValid() {
		var seen bool
		if memo != nil {
			mac, seen = memo.macs[e.IP]
		}
		if !seen {
			mac = c.MACOf(ctx, e.IP)
			if memo != nil {
				memo.macs[e.IP] = mac
			}
		}
	}
	if len(mac) == 0 {
		c.log().Debug("boot event of an unknown client", "peer", e.IP.String(), "file", e.File)
		return store.TraceEvent{}, false
	}
	id, seen := "", false
	if memo != nil {
		id, seen = memo.nodes[string(mac)]
	}
	if !seen {
		n, err := c.Store.NodeByMAC(ctx, mac)
		switch {
		case err == nil:
			id = n.ID
		case !errors.Is(err, store.ErrNotFound):
			c.log().Warn("record boot event", "mac", mac.String(), "err", err)
			return store.TraceEvent{}, false
		}
		if memo != nil {
			memo.nodes[string(mac)] = id
		}
	}
	if id == "" {
		return store.TraceEvent{}, false
	}
	if e.MAC == nil {
		e.MAC = mac
	}
	if e.Time.IsZero() {
		e.Time = c.now()
	}
	return store.TraceEvent{NodeID: id, Event: e}, true
}

// MACOf finds the MAC behind a client address, by lease or neighbour table;
// nil when neither knows it. TFTP asks it whose GRUB config to send.
func (c *Core) MACOf(ctx context.Context, ip netip.Addr) net.HardwareAddr {
	if l, err := c.Store.ByIP(ctx, ip); err == nil && len(l.MAC) > 0 {
		return l.MAC
	}
	return c.neighbor(ip)
}

func (c *Core) neighbor(ip netip.Addr) net.HardwareAddr {
	if !ip.IsValid() {
		return nil
	}
	if c.Neighbors != nil {
		return c.Neighbors(ip)
	}
	return kernelNeighbor(ip)
}

func (c *Core) neighborAddrs(mac net.HardwareAddr) []netip.Addr {
	if c.NeighborAddrs != nil {
		return c.NeighborAddrs(mac)
	}
	b, err := os.ReadFile("/proc/net/arp")
	if err != nil {
		return nil
	}
	return parseARPAddrs(string(b), mac)
}

// kernelNeighbor reads /proc/net/arp: in proxy mode the client's address
// comes from another DHCP server, but it has just talked to us, so the
// kernel knows its MAC.
func kernelNeighbor(ip netip.Addr) net.HardwareAddr {
	b, err := os.ReadFile("/proc/net/arp")
	if err != nil {
		return nil
	}
	return parseARP(string(b), ip)
}

func parseARP(table string, ip netip.Addr) net.HardwareAddr {
	for _, e := range arpEntries(table) {
		if e.ip == ip {
			return e.mac
		}
	}
	return nil
}

// parseARPAddrs lists the addresses of the complete entries for mac.
func parseARPAddrs(table string, mac net.HardwareAddr) []netip.Addr {
	var out []netip.Addr
	for _, e := range arpEntries(table) {
		if sameMAC(e.mac, mac) {
			out = append(out, e.ip)
		}
	}
	return out
}

type arpEntry struct {
	ip  netip.Addr
	mac net.HardwareAddr
}

// arpEntries reads the complete entries of /proc/net/arp's table.
func arpEntries(table string) []arpEntry {
	var out []arpEntry
	for _, line := range strings.Split(table, "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 4 {
			continue
		}
		if flags, err := strconv.ParseUint(strings.TrimPrefix(f[2], "0x"), 16, 32); err != nil || flags&0x2 == 0 {
			continue // not a complete entry
		}
		ip, err1 := netip.ParseAddr(f[0])
		mac, err2 := net.ParseMAC(f[3])
		if err1 == nil && err2 == nil {
			out = append(out, arpEntry{ip, mac})
		}
	}
	return out
}
