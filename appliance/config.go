package appliance

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/rackboot/rackboot/ironic/roots"
)

// DHCP modes.
const (
	DHCPAuthoritative = "authoritative"
	DHCPProxy         = "proxy"
	DHCPOff           = "off"
)

// Config is the appliance's configuration, as the YAML file (--config)
// spells it. Flags override single fields.
type Config struct {
	// DataDir holds the database, the admin token, the fetched boot
	// loaders (firmware/) and the kernels and initrds (artifacts/).
	DataDir string `yaml:"data_dir"`
	// DB is the database: empty for SQLite in the data dir, or a
	// postgres:// URL shared by several rackboot servers.
	DB string `yaml:"db"`
	// Interface is where DHCP listens and whose IPv4 address goes into
	// replies and URLs unless ServerIP says otherwise.
	Interface string `yaml:"interface"`
	ServerIP  string `yaml:"server_ip"`
	// HTTPAddr is the listen address of boot-time HTTP, and of the API
	// and web UI too unless APIAddr is set.
	HTTPAddr string `yaml:"http_addr"`
	// APIAddr, when set, is where the API and the web UI are served, over
	// TLS; the boot port then serves boot files only.
	APIAddr string    `yaml:"api_addr"`
	TLS     TLSConfig `yaml:"tls"`
	// TFTPAddr is the listen address of TFTP (default ServerIP:69).
	TFTPAddr string `yaml:"tftp_addr"`
	// SecureBoot sends every x86-64 UEFI node down shim → GRUB.
	SecureBoot bool         `yaml:"secure_boot"`
	DHCP       DHCPConfig   `yaml:"dhcp"`
	TFTP       TFTPConfig   `yaml:"tftp"`
	Images     ImagesConfig `yaml:"images"`
	// RoutedNetworks are networks of nodes behind routers that rackboot
	// sees no lease or neighbour entry for (proxy mode across routers):
	// their boot requests still get the node's boot secret. Empty by
	// default: an address rackboot cannot tie to the node's MAC gets none.
	RoutedNetworks []string `yaml:"routed_networks"`
	// Cmdline is appended to every kernel command line rackboot hands out.
	Cmdline  string `yaml:"kernel_cmdline"`
	LogLevel string `yaml:"log_level"`
	// AgentTimeout fails a node whose agent has not called in (and that
	// has not network-booted) for this long while it should be working
	// (default 30 minutes).
	AgentTimeout time.Duration `yaml:"agent_timeout"`
	// AgentHeartbeat is how often agents call in, idle or busy: the
	// longest a new task waits for its agent (default 10 seconds).
	AgentHeartbeat time.Duration `yaml:"agent_heartbeat"`
	// Retention bounds how long boot events and audit events are kept.
	Retention RetentionConfig `yaml:"retention"`
	// GPUPeers says when a GPU's burn-in figures are below its peers'
	// (the other cards of its model across the fleet).
	GPUPeers GPUPeersConfig `yaml:"gpu_peers"`
	// SecretKeyFile holds the keys BMC passwords are encrypted with. Every
	// server sharing a database needs the same file. Empty means
	// DATA_DIR/secret.key, written (0600) on first start; a file named
	// here must exist.
	SecretKeyFile string `yaml:"secret_key_file"`
	// BMCCAFile is the PEM CA bundle that verifies Redfish BMCs'
	// certificates that have no fingerprint pinned (default: the
	// system's roots).
	BMCCAFile string `yaml:"bmc_ca_file"`
	// Power configures the power-state poller, the power-on limit, and
	// how the lifecycle drives the BMCs of nodes that have one.
	Power PowerConfig `yaml:"power"`
	// BMC configures what the agent does to nodes' BMCs.
	BMC BMCConfig `yaml:"bmc"`
	// Ironic serves the nodes an OpenStack Ironic provisions, through the
	// files of Ironic's dnsmasq DHCP provider.
	Ironic IronicConfig `yaml:"ironic"`
	// Ramdisk configures the agent ramdisks rackboot ramdisk build makes
	// (it reads this section from the same --config file).
	Ramdisk RamdiskConfig `yaml:"ramdisk"`
	// Version is the binary's version, reported by the API.
	Version string `yaml:"-"`
}

// GPUPeersConfig: a GPU is below its peers when its TFLOP/s or memory
// bandwidth is under Threshold of their median, judged once MinPeers
// other cards of its model were measured. Zero means the default (0.9,
// 3).
type GPUPeersConfig struct {
	Threshold float64 `yaml:"threshold"`
	MinPeers  int     `yaml:"min_peers"`
}

// IronicConfig is the file contract of Ironic's dnsmasq DHCP provider
// ([dhcp]dhcp_provider = dnsmasq), which rackboot honours in place of a
// dnsmasq: each conductor writes its nodes' MACs into a hostsdir and their
// boot options into an optsdir; rackboot gives those MACs addresses from
// its own pools and exactly Ironic's boot options, and writes their leases
// into the lease file, where Ironic reads their addresses back. Several
// conductors may share the directories or each have their own.
type IronicConfig struct {
	HostsDirs []string `yaml:"hostsdir"`
	OptsDirs  []string `yaml:"optsdir"`
	LeaseFile string   `yaml:"leasefile"`
	// Roots are conductors' tftp_root and http_root, served read-only
	// under ironic/NAME/ for conductors whose tftp_server and http_url
	// name rackboot (package ironic/roots).
	Roots []IronicRootConfig `yaml:"roots"`
	// MACs are nodes Ironic owns that no dnsmasq file lists (dhcp_provider
	// = none): rackboot makes them nodes owned by Ironic at its start.
	MACs []string `yaml:"macs"`
	// APIURL is Ironic's API (http://ironic:6385), through which rackboot
	// node handover creates nodes there and deletes them again; Auth its
	// Keystone credentials (none: standalone Ironic without
	// authentication); Driver the hardware type of a node without a BMC
	// (default manual-management); ConductorGroup the conductor group of
	// a node handed over without one named.
	APIURL         string           `yaml:"api_url"`
	Auth           IronicAuthConfig `yaml:"auth"`
	Driver         string           `yaml:"driver"`
	ConductorGroup string           `yaml:"conductor_group"`
	// APIInterval is how often rackboot reads Ironic's nodes and ports
	// (default 30s).
	APIInterval time.Duration `yaml:"api_interval"`
}

// apiInterval is APIInterval, defaulted.
func (c IronicConfig) apiInterval() time.Duration {
	if c.APIInterval <= 0 {
		return 30 * time.Second
	}
	return c.APIInterval
}

// IronicAuthConfig is Keystone v3: a password (username, password,
// project_name and the domains, default "Default") or an application
// credential.
type IronicAuthConfig struct {
	AuthURL                     string `yaml:"auth_url"`
	Username                    string `yaml:"username"`
	Password                    string `yaml:"password"`
	UserDomainName              string `yaml:"user_domain_name"`
	ProjectName                 string `yaml:"project_name"`
	ProjectDomainName           string `yaml:"project_domain_name"`
	ApplicationCredentialID     string `yaml:"application_credential_id"`
	ApplicationCredentialSecret string `yaml:"application_credential_secret"`
}

// IronicRootConfig is one conductor's trees.
type IronicRootConfig struct {
	Name     string `yaml:"name"`
	TFTPRoot string `yaml:"tftp_root"`
	HTTPRoot string `yaml:"http_root"`
	// Subnets are the clients whose /tftpboot/ paths (and the fixed names
	// of the loaders of nodes Ironic boots) this conductor answers; the
	// first root without any answers the rest.
	Subnets []string `yaml:"subnets"`
	// For nodes Ironic's dnsmasq files do not list (dhcp_provider =
	// none): the conductor's boot interface (ipxe or pxe), http_url
	// (default: rackboot's own URL of http_root) and tftp_server
	// (default: rackboot), and loader names by firmware (bios, uefi,
	// aarch64; defaults: Ironic's).
	BootInterface string            `yaml:"boot_interface"`
	HTTPURL       string            `yaml:"http_url"`
	TFTPServer    string            `yaml:"tftp_server"`
	BootFiles     map[string]string `yaml:"bootfiles"`
	// ConductorGroups and Conductors (their [DEFAULT]host) are the
	// conductors whose nodes, as Ironic's API lists them (api_url), this
	// root answers; a root named as a group or conductor answers it too.
	ConductorGroups []string `yaml:"conductor_groups"`
	Conductors      []string `yaml:"conductors"`
}

// checkRootKeys refuses a misspelt setting in ironic.roots, which would
// otherwise leave a root silently without its tree.
func checkRootKeys(n *yaml.Node) error {
	if n.Kind != yaml.SequenceNode {
		return nil
	}
	for j, e := range n.Content {
		if err := checkKeys(e, fmt.Sprintf("ironic.roots[%d]", j), "name", "tftp_root", "http_root", "subnets",
			"boot_interface", "http_url", "tftp_server", "bootfiles", "conductor_groups", "conductors"); err != nil {
			return err
		}
	}
	return nil
}

// macs is ironic.macs, parsed.
func (c IronicConfig) macs() ([]net.HardwareAddr, error) {
	var out []net.HardwareAddr
	for _, s := range c.MACs {
		m, err := net.ParseMAC(s)
		if err != nil || len(m) != 6 {
			return nil, fmt.Errorf("ironic.macs: %q is not an Ethernet MAC address", s)
		}
		out = append(out, m)
	}
	return out, nil
}

// checkKeys refuses a mapping key not in keys.
func checkKeys(n *yaml.Node, where string, keys ...string) error {
	if n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if k := n.Content[i].Value; !slices.Contains(keys, k) {
			return fmt.Errorf("%s: unknown setting %q (%s)", where, k, strings.Join(keys, ", "))
		}
	}
	return nil
}

// roots is the config as package roots takes it.
func (c IronicConfig) roots() (*roots.Set, error) {
	var list []roots.Root
	for i, rc := range c.Roots {
		r := roots.Root{Name: rc.Name, TFTPRoot: rc.TFTPRoot, HTTPRoot: rc.HTTPRoot, BootInterface: rc.BootInterface, HTTPURL: rc.HTTPURL,
			ConductorGroups: rc.ConductorGroups, Conductors: rc.Conductors}
		if rc.TFTPServer != "" {
			a, err := netip.ParseAddr(rc.TFTPServer)
			if err != nil {
				return nil, fmt.Errorf("ironic.roots[%d].tftp_server: %w", i, err)
			}
			r.TFTPServer = a
		}
		for k, v := range rc.BootFiles {
			if r.BootFiles == nil {
				r.BootFiles = map[roots.Firmware]string{}
			}
			r.BootFiles[roots.Firmware(k)] = v
		}
		for _, s := range rc.Subnets {
			p, err := netip.ParsePrefix(s)
			if err != nil {
				return nil, fmt.Errorf("ironic.roots[%d].subnets: %w", i, err)
			}
			r.Subnets = append(r.Subnets, p.Masked())
		}
		list = append(list, r)
	}
	return roots.New(list)
}

// UnmarshalYAML takes hostsdir and optsdir as one directory or a list.
func (c *IronicConfig) UnmarshalYAML(n *yaml.Node) error {
	var raw struct {
		HostsDirs yaml.Node          `yaml:"hostsdir"`
		OptsDirs  yaml.Node          `yaml:"optsdir"`
		LeaseFile string             `yaml:"leasefile"`
		Roots     []IronicRootConfig `yaml:"roots"`
		MACs      []string           `yaml:"macs"`
		APIURL    string             `yaml:"api_url"`
		Auth      IronicAuthConfig   `yaml:"auth"`
		Driver    string             `yaml:"driver"`
		Group     string             `yaml:"conductor_group"`
		Interval  time.Duration      `yaml:"api_interval"`
	}
	if err := checkKeys(n, "ironic", "hostsdir", "optsdir", "leasefile", "roots", "macs", "api_url", "auth", "driver", "conductor_group", "api_interval"); err != nil {
		return err
	}
	for i := 0; n.Kind == yaml.MappingNode && i+1 < len(n.Content); i += 2 {
		var err error
		switch n.Content[i].Value {
		case "auth":
			err = checkKeys(n.Content[i+1], "ironic.auth", "auth_url", "username", "password", "user_domain_name",
				"project_name", "project_domain_name", "application_credential_id", "application_credential_secret")
		case "roots":
			err = checkRootKeys(n.Content[i+1])
		}
		if err != nil {
			return err
		}
	}
	if err := n.Decode(&raw); err != nil {
		return err
	}
	list := func(n yaml.Node) ([]string, error) {
		switch n.Kind {
		case 0:
			return nil, nil
		case yaml.ScalarNode:
			return []string{n.Value}, nil
		}
		var out []string
		err := n.Decode(&out)
		return out, err
	}
	var err error
	if c.HostsDirs, err = list(raw.HostsDirs); err != nil {
		return fmt.Errorf("ironic.hostsdir: %w", err)
	}
	if c.OptsDirs, err = list(raw.OptsDirs); err != nil {
		return fmt.Errorf("ironic.optsdir: %w", err)
	}
	c.LeaseFile, c.Roots, c.MACs = raw.LeaseFile, raw.Roots, raw.MACs
	c.APIURL, c.Auth, c.Driver, c.ConductorGroup, c.APIInterval = raw.APIURL, raw.Auth, raw.Driver, raw.Group, raw.Interval
	return nil
}

// DHCPConfig configures the DHCP server.
type DHCPConfig struct {
	// Mode is authoritative, proxy (the default: PXE answers only, beside
	// the network's own DHCP server) or off.
	Mode string `yaml:"mode"`
	// Range is a shorthand for the lease range (FIRST-LAST) of the
	// interface's own subnet, which needs no subnets entry then.
	Range   string         `yaml:"range"`
	Subnets []SubnetConfig `yaml:"subnets"`
	// DeclineTime is how long an address a client DECLINEd (found in use
	// on the network) rests before it is offered again; default 10m.
	DeclineTime time.Duration `yaml:"decline_time"`
	// Enroll is "any" (every client that PXE-boots becomes a node; the
	// default in authoritative mode, on a provisioning network) or
	// "known" (only nodes added beforehand boot; proxy mode's default,
	// beside an office's DHCP server).
	Enroll string `yaml:"enroll"`
	// UnknownRate is how many requests a second of clients rackboot does
	// not know it handles per relay and on its own segment (default 100;
	// -1 for no limit); known nodes are never limited.
	UnknownRate float64 `yaml:"unknown_rate"`
	// KnownReserve is the share of each pool (0 to 0.5, default 0) never
	// offered to clients rackboot does not know, kept for known nodes.
	KnownReserve float64 `yaml:"known_reserve"`
}

// PowerConfig configures power control through nodes' BMCs.
type PowerConfig struct {
	// PollInterval is how often every power-managed node's BMC is asked
	// for its power state, the polls spread over the interval (default
	// 5m; 0 disables polling).
	PollInterval *time.Duration `yaml:"poll_interval"`
	// PollConcurrency bounds the BMCs asked at once (default 32).
	PollConcurrency int `yaml:"poll_concurrency"`
	// MaxConcurrentOn bounds the power-ons (on, cycle, reset) in progress
	// at once, from the API, bulk actions and the lifecycle (default 10).
	MaxConcurrentOn int `yaml:"max_concurrent_on"`
	// OnRate is how many power-ons start per second, spaced evenly
	// (default 2).
	OnRate float64 `yaml:"on_rate"`
	// SoftOffTimeout is how long a release of an active node waits for
	// its OS to shut down (IPMI soft off, Redfish GracefulShutdown)
	// before it forces the node off: default 2 minutes.
	SoftOffTimeout time.Duration `yaml:"soft_off_timeout"`
}

// RamdiskConfig configures the agent ramdisks.
type RamdiskConfig struct {
	// NonfreeFirmware puts the firmware files the ramdisk's drivers ask
	// for, from Debian's non-free-firmware component, into the initrd;
	// unset means true. False leaves them out: NICs and controllers that
	// need firmware then stay down in the agent.
	NonfreeFirmware *bool `yaml:"nonfree_firmware"`
}

// BMCConfig configures the agent's work on nodes' BMCs.
type BMCConfig struct {
	// Enroll makes every inspection create (or refresh) a "rackboot"
	// user with a random password on the node's BMC through its in-band
	// interface, and use it: a newly racked node becomes power-managed
	// with nobody typing a password. It replaces the user of an ipmi://
	// BMC already set (keeping its host) and leaves a Redfish one alone.
	// Default false.
	Enroll bool `yaml:"enroll"`
}

// Power defaults.
const (
	DefaultPollInterval = 5 * time.Minute
)

// RetentionConfig says how long old rows are kept; the appliance prunes
// older ones every hour. Zero is the default; a negative value keeps
// them forever.
type RetentionConfig struct {
	// BootEvents is how long a node's boot trace (every DHCP, TFTP and
	// HTTP step of its boots) is kept: default 90 days (2160h).
	BootEvents time.Duration `yaml:"boot_events"`
	// Events is how long the audit log is kept: default 365 days
	// (8760h). The events that put a node into maintenance are kept
	// whatever their age: taking it out again needs them.
	Events time.Duration `yaml:"events"`
}

// Retention defaults.
const (
	DefaultBootEventsRetention = 90 * 24 * time.Hour
	DefaultEventsRetention     = 365 * 24 * time.Hour
	pruneEvery                 = time.Hour
)

// SubnetConfig is one subnet rackboot leases addresses on.
type SubnetConfig struct {
	Prefix    string        `yaml:"prefix"`
	Range     string        `yaml:"range"` // FIRST-LAST
	Router    string        `yaml:"router"`
	DNS       []string      `yaml:"dns"`
	Domain    string        `yaml:"domain"`
	LeaseTime time.Duration `yaml:"lease_time"`
	// SecureBoot sends this subnet's x86-64 UEFI nodes down shim → GRUB.
	SecureBoot   bool                `yaml:"secure_boot"`
	Reservations []ReservationConfig `yaml:"reservations"`
	// Relays lists the DHCP relay agents (addresses or prefixes) that may
	// forward this subnet's requests; "any" admits every sender (a lab).
	// A relayed request from anyone else is dropped and counted.
	Relays []string `yaml:"relays"`
}

// ReservationConfig pins an address to a MAC.
type ReservationConfig struct {
	MAC      string `yaml:"mac"`
	IP       string `yaml:"ip"`
	Hostname string `yaml:"hostname"`
}

// TLSConfig is the API's certificate. Without Cert and Key, rackboot
// makes a CA and a server certificate of its own in DATA_DIR/tls.
type TLSConfig struct {
	Cert string `yaml:"cert"` // PEM: the certificate, then the chain to trust it by
	Key  string `yaml:"key"`
	// Names are more DNS names the certificate rackboot makes is valid
	// for, beside the machine's addresses and host name.
	Names []string `yaml:"names"`
	// Pins are more fingerprints (sha256:HEX) agents accept beside the
	// current certificate's: during a rotation, the next one's, so that
	// agents booted before the switch still trust the server after it.
	Pins []string `yaml:"pins"`
}

// ImagesConfig governs image imports.
type ImagesConfig struct {
	// AllowNetworks are the private networks (10/8, 172.16/12,
	// 192.168/16, fc00::/7, 100.64/10) that URL imports may fetch from;
	// none by default. Loopback, link-local, multicast and the
	// appliance's own addresses are refused always.
	AllowNetworks []string `yaml:"allow_networks"`
	// Reserve is the free space an import must leave in the data dir's
	// file system, so the database always has room: "2GiB" by default,
	// "0" for none.
	Reserve string `yaml:"reserve"`
	// MaxImports bounds the imports running at once (default 2).
	MaxImports int `yaml:"max_imports"`
}

// ParseSize reads a size as people write it: 2GiB, 500MiB, 64KiB, 10GB,
// or a number of bytes.
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	for _, u := range []struct {
		suffix string
		mul    int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"TB", 1e12}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}, {"B", 1}} {
		if num, ok := strings.CutSuffix(t, u.suffix); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(num), 10, 64)
			if err != nil || n < 0 || n > (1<<62)/u.mul {
				return 0, fmt.Errorf("size %q: want a whole number and a unit, e.g. 2GiB", s)
			}
			return n * u.mul, nil
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("size %q: want a whole number and a unit, e.g. 2GiB", s)
	}
	return n, nil
}

// TFTPConfig tunes TFTP transfers; zero means the server's default.
type TFTPConfig struct {
	MaxBlockSize  int `yaml:"max_block_size"`
	MaxWindowSize int `yaml:"max_window_size"`
	// MaxTransfers and MaxPerSource cap the transfers running at once,
	// overall (default 1024) and from one address (default 16).
	MaxTransfers int `yaml:"max_transfers"`
	MaxPerSource int `yaml:"max_per_source"`
}

// LoadConfig reads a YAML config file; unknown keys are an error so a typo
// does not silently fall back to a default.
func LoadConfig(path string) (Config, error) {
	var c Config
	b, err := os.ReadFile(path)
	if err != nil {
		return c, fmt.Errorf("load config: %w", err)
	}
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return c, fmt.Errorf("load config %s: %w", path, err)
	}
	return c, nil
}

// ParseRange parses "FIRST-LAST".
func ParseRange(s string) (first, last netip.Addr, err error) {
	a, b, ok := strings.Cut(s, "-")
	if !ok {
		return first, last, fmt.Errorf("range %q: want FIRST-LAST", s)
	}
	if first, err = netip.ParseAddr(strings.TrimSpace(a)); err != nil {
		return first, last, fmt.Errorf("range %q: %w", s, err)
	}
	if last, err = netip.ParseAddr(strings.TrimSpace(b)); err != nil {
		return first, last, fmt.Errorf("range %q: %w", s, err)
	}
	if !first.Is4() || !last.Is4() || last.Less(first) {
		return first, last, fmt.Errorf("range %q: want two IPv4 addresses, lowest first", s)
	}
	return first, last, nil
}

// InterfaceIPv4 returns the first IPv4 address of an interface and its prefix.
func InterfaceIPv4(name string) (netip.Prefix, error) {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("interface %s: %w", name, err)
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("addresses of %s: %w", name, err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip4 := n.IP.To4(); ip4 != nil {
				ones, _ := n.Mask.Size()
				addr, _ := netip.AddrFromSlice(ip4)
				return netip.PrefixFrom(addr, ones), nil
			}
		}
	}
	return netip.Prefix{}, fmt.Errorf("interface %s has no IPv4 address", name)
}
