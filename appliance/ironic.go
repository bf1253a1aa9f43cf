package appliance

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/core"
	"github.com/rackboot/rackboot/dhcp"
	"github.com/rackboot/rackboot/ironic/baremetal"
	"github.com/rackboot/rackboot/ironic/dnsmasq"
	"github.com/rackboot/rackboot/ironic/handover"
	"github.com/rackboot/rackboot/ironic/roots"
	"github.com/rackboot/rackboot/lease"
	"github.com/rackboot/rackboot/nodepower"
	"github.com/rackboot/rackboot/store"
)

// checkIronic refuses an Ironic contract that cannot work: it needs
// rackboot's own pools (authoritative DHCP), a lease file where Ironic
// reads addresses, and directories for both kinds of file.
func checkIronic(ic IronicConfig, mode, dataDir string) error {
	if _, err := ic.roots(); err != nil {
		return err
	}
	for _, rc := range ic.Roots {
		for _, d := range []string{rc.TFTPRoot, rc.HTTPRoot} {
			if err := checkTree(d, dataDir); err != nil {
				return fmt.Errorf("ironic root %q: %w", rc.Name, err)
			}
		}
	}
	if macs, err := ic.macs(); err != nil {
		return err
	} else if len(macs) > 0 && len(ic.Roots) == 0 {
		return errors.New("ironic.macs: these nodes get their conductor's answers, from ironic.roots: list at least one root")
	}
	if ic.APIURL != "" {
		if u, err := url.Parse(ic.APIURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("ironic.api_url %q: want http(s)://HOST:PORT, Ironic's API endpoint", ic.APIURL)
		}
	}
	if a := ic.Auth; a != (IronicAuthConfig{}) {
		switch {
		case ic.APIURL == "":
			return errors.New("ironic.auth: without ironic.api_url there is nothing to authenticate to")
		case a.AuthURL == "":
			return errors.New("ironic.auth: auth_url (Keystone's, e.g. http://keystone:5000/v3) is needed")
		case a.ApplicationCredentialID == "" && a.Username == "":
			return errors.New("ironic.auth: a username and password, or an application_credential_id and secret")
		case a.ApplicationCredentialID != "" && a.ApplicationCredentialSecret == "":
			return errors.New("ironic.auth: application_credential_id needs its application_credential_secret")
		case a.ApplicationCredentialID == "" && (a.Password == "" || a.ProjectName == ""):
			return errors.New("ironic.auth: a username needs its password and a project_name (an unscoped token cannot call Ironic)")
		}
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

// checkTree refuses a conductor tree that would serve, to anyone on the
// network, the whole machine or rackboot's own data dir (its database,
// tokens, keys), which a tree above, at or below it would.
func checkTree(tree, dataDir string) error {
	if tree == "" {
		return nil
	}
	real := func(p string) string {
		p = filepath.Clean(p)
		if r, err := filepath.EvalSymlinks(p); err == nil {
			return r
		}
		return p
	}
	t := real(tree)
	if t == "/" {
		return fmt.Errorf("%s would serve the whole machine", tree)
	}
	if dataDir == "" {
		return nil
	}
	abs, err := filepath.Abs(dataDir)
	if err != nil {
		return nil
	}
	d := real(abs)
	within := func(a, b string) bool { return a == b || strings.HasPrefix(a, b+"/") }
	if within(t, d) || within(d, t) {
		return fmt.Errorf("%s would serve rackboot's data dir %s (its database, tokens and keys): give Ironic a tree of its own", tree, dataDir)
	}
	return nil
}

// ironicExtern is Ironic's files as the DHCP server's Extern. A node
// rackboot owns is rackboot's whatever Ironic's files still say: the
// hosts line Ironic leaves behind (set:, or ignore after its cleanup)
// must not keep a node it handed back from booting.
type ironicExtern struct {
	d *dnsmasq.Dir
	// rackbootOwns says whether mac is a node rackboot owns.
	rackbootOwns func(ctx context.Context, mac net.HardwareAddr) bool
}

func (e ironicExtern) ExternBoot(ctx context.Context, mac net.HardwareAddr, ipxe bool) (dhcp.ExternReply, bool) {
	if !e.d.Listed(mac) && !e.d.Ignored(mac) {
		return dhcp.ExternReply{}, false
	}
	if e.rackbootOwns != nil && e.rackbootOwns(ctx, mac) {
		return dhcp.ExternReply{}, false
	}
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

// ironicClient is the client of ironic.api_url; nil without.
func ironicClient(ic IronicConfig) *baremetal.Client {
	if ic.APIURL == "" {
		return nil
	}
	c := &baremetal.Client{URL: ic.APIURL}
	if a := ic.Auth; a.AuthURL != "" {
		c.Auth = &baremetal.Keystone{AuthURL: a.AuthURL, Username: a.Username, Password: a.Password, UserDomain: a.UserDomainName,
			Project: a.ProjectName, ProjectDomain: a.ProjectDomainName,
			AppCredentialID: a.ApplicationCredentialID, AppCredentialSecret: a.ApplicationCredentialSecret}
	}
	return c
}

// ironicHandover is the handover service of ironic.api_url; nil without.
func ironicHandover(ic IronicConfig, st handover.Store, secrets handover.Secrets, log *slog.Logger) *handover.Service {
	c := ironicClient(ic)
	if c == nil {
		return nil
	}
	return &handover.Service{Store: st, Ironic: c, Secrets: secrets, PasswordAD: nodepower.PasswordAD, Driver: ic.Driver,
		ConductorGroup: ic.ConductorGroup, Logger: log}
}

// ironicConductorOf names the root of a node from the boot options its
// conductor wrote into the opts files, as a client that is iPXE and one
// that is not would get them.
func ironicConductorOf(d *dnsmasq.Dir, set *roots.Set) func(net.HardwareAddr) string {
	return func(mac net.HardwareAddr) string {
		for _, tags := range [][]string{nil, {"ipxe"}} {
			r, ok := d.Lookup(mac, tags...)
			if !ok || r.Ignore {
				continue
			}
			if name := set.ConductorFromOptions(r.Option); name != "" {
				return name
			}
		}
		return ""
	}
}

// ironicOwned says whether the client at an address is a node Ironic
// boots: its MAC (by lease or neighbour table) is a node owned by Ironic,
// or no node yet but listed in Ironic's hosts files.
func ironicOwned(c *core.Core, d *dnsmasq.Dir) roots.Owned {
	return func(ctx context.Context, ip netip.Addr) (net.HardwareAddr, bool) {
		mac := c.MACOf(ctx, ip)
		if len(mac) == 0 {
			return nil, false
		}
		if c.OwnedByIronic(ctx, mac) {
			return mac, true
		}
		return mac, d != nil && d.Listed(mac) && !c.Known(ctx, mac)
	}
}

// ironicNodes is what makes Ironic's MACs nodes.
type ironicNodes interface {
	NodeByMAC(ctx context.Context, mac net.HardwareAddr) (store.Node, error)
	EnrollClient(ctx context.Context, c boot.Client, now time.Time) (store.Node, bool, error)
	SetOwner(ctx context.Context, id, from, to string, states ...store.State) (store.Node, error)
}

// enrollIronic makes each MAC a node owned by Ironic, so that its boots
// are traced and rackboot's lifecycle, agent and reaper leave it alone. A
// MAC of no node becomes a node of Ironic's. A node rackboot owns (the
// config's ironic.macs, Ironic's hosts files or its API list it) is
// handed to Ironic only while rackboot does nothing to it (discovered,
// available or failed): one rackboot is inspecting, deploying or running
// keeps its owner, with a warning, until it is idle or an operator hands
// it over. seen holds the MACs done; one that failed or was busy is tried
// again on the next call.
func enrollIronic(ctx context.Context, st ironicNodes, macs []net.HardwareAddr, seen map[string]bool, log *slog.Logger) {
	ironic := store.OwnerIronic
	for _, mac := range macs {
		if seen[mac.String()] {
			continue
		}
		n, err := st.NodeByMAC(ctx, mac)
		switch {
		case errors.Is(err, store.ErrNotFound):
			// Unknown architecture: the first DHCP request tells it.
			if n, _, err = st.EnrollClient(ctx, boot.Client{MAC: mac, Arch: boot.ClientArch(0xffff)}, time.Now()); err != nil {
				log.Warn("ironic: enroll a node of Ironic's", "mac", mac.String(), "err", err)
				continue
			}
			log.Info("ironic: node enrolled as Ironic's", "node", n.ID, "mac", mac.String())
		case err != nil:
			log.Warn("ironic: look up a node of Ironic's", "mac", mac.String(), "err", err)
			continue
		case n.Owner == store.OwnerIronic:
			seen[mac.String()] = true
			continue
		case !handover.Idle(n.State):
			// Asked again each round, so it goes to Ironic once idle;
			// said once.
			if !seen["warned "+mac.String()] {
				log.Warn("ironic: Ironic lists a node rackboot is busy with; rackboot keeps booting it until it is idle or handed over (rackboot node handover NODE --to ironic)",
					"node", n.ID, "mac", mac.String(), "state", n.State)
				seen["warned "+mac.String()] = true
			}
			continue
		}
		// Only while still idle: an action may have taken it since.
		if _, err := st.SetOwner(ctx, n.ID, store.OwnerRackboot, ironic, handover.IdleStates...); err != nil {
			if !errors.Is(err, store.ErrConflict) {
				log.Warn("ironic: hand a node to Ironic", "node", n.ID, "mac", mac.String(), "err", err)
			}
			continue
		}
		if n.Owner != store.OwnerIronic {
			log.Info("ironic: node handed to Ironic, which lists it", "node", n.ID, "mac", mac.String(), "state", n.State)
		}
		seen[mac.String()] = true
	}
}

// ironicLister reads Ironic's nodes and ports; *baremetal.Client is one.
type ironicLister interface {
	Nodes(ctx context.Context) ([]baremetal.Node, error)
	Ports(ctx context.Context) ([]baremetal.Port, error)
}

// syncIronicAPI reads Ironic's nodes and ports every interval, for the
// nodes no dnsmasq file describes (dhcp_provider = none): each port's MAC
// becomes a node owned by Ironic as from its hosts files (enrollIronic),
// and its node's conductor group, else its conductor, picks the root that
// answers it (roots.Set.ForConductor), with the node's boot interface
// (roots.Set.Assign). An
// Ironic that does not answer keeps the last assignments and is asked
// again.
func syncIronicAPI(ctx context.Context, c ironicLister, set *roots.Set, st ironicNodes, interval time.Duration, log *slog.Logger) error {
	seen := map[string]bool{}
	failing := false
	for {
		macs, assign, err := readIronic(ctx, c, set)
		switch {
		case err != nil && !failing:
			log.Warn("ironic: read nodes and ports from Ironic's API; trying again", "err", err, "every", interval)
			failing = true
		case err == nil:
			if failing {
				log.Info("ironic: Ironic's API answers again")
			}
			failing = false
			enrollIronic(ctx, st, macs, seen, log)
			if set != nil {
				set.Assign(assign)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(interval):
		}
	}
}

// readIronic is Ironic's ports' MACs and what each is assigned.
func readIronic(ctx context.Context, c ironicLister, set *roots.Set) ([]net.HardwareAddr, map[string]roots.Assignment, error) {
	nodes, err := c.Nodes(ctx)
	if err != nil {
		return nil, nil, err
	}
	ports, err := c.Ports(ctx)
	if err != nil {
		return nil, nil, err
	}
	byUUID := map[string]baremetal.Node{}
	for _, n := range nodes {
		byUUID[n.UUID] = n
	}
	var macs []net.HardwareAddr
	assign := map[string]roots.Assignment{}
	for _, p := range ports {
		mac, err := net.ParseMAC(p.Address)
		if err != nil || len(mac) != 6 {
			continue
		}
		n, ok := byUUID[p.NodeUUID]
		if !ok {
			// A node made between the two lists: the next round has it.
			continue
		}
		macs = append(macs, mac)
		a := roots.Assignment{BootInterface: n.BootInterface}
		if set != nil {
			if r, ok := set.ForConductor(n.ConductorGroup, n.Conductor); ok {
				a.Root = r.Name
			}
		}
		assign[mac.String()] = a
	}
	return macs, assign, nil
}

// leaseSource is what the lease file is written from, and Ironic's MACs
// made nodes in.
type leaseSource interface {
	ironicNodes
	ByMAC(ctx context.Context, subnet netip.Prefix, mac net.HardwareAddr) (lease.Lease, error)
}

// writeIronicLeases keeps Ironic's lease file current: the bound leases
// of the MACs its hosts files list, rewritten whole (atomically) when they
// change, checked every interval. Each round also makes the MACs nodes
// owned by Ironic (enrollIronic).
func writeIronicLeases(ctx context.Context, d *dnsmasq.Dir, st leaseSource, subnets []dhcp.Subnet, path string, interval time.Duration, log *slog.Logger) error {
	var last []byte
	seen := map[string]bool{}
	for {
		enrollIronic(ctx, st, d.MACs(), seen, log)
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
