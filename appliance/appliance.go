// Package appliance puts rackboot together: from a Config it opens the
// store, builds the parts (the event broker, the lifecycle machine, the
// core, the reaper, the servers), hands each the others it needs, and
// runs DHCP, TFTP and the HTTP server (boot files and the API) until its
// context ends. cmd/rackboot and the end-to-end tests both start rackboot
// through Run.
package appliance

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/rackboot/rackboot/api"
	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/core"
	"github.com/rackboot/rackboot/dhcp"
	"github.com/rackboot/rackboot/firmware"
	"github.com/rackboot/rackboot/gpufleet"
	"github.com/rackboot/rackboot/grub"
	"github.com/rackboot/rackboot/httpboot"
	"github.com/rackboot/rackboot/hypervisor"
	"github.com/rackboot/rackboot/images/catalog"
	"github.com/rackboot/rackboot/internal/httpserve"
	"github.com/rackboot/rackboot/internal/tlspin"
	"github.com/rackboot/rackboot/ipxe"
	"github.com/rackboot/rackboot/ironic/dnsmasq"
	"github.com/rackboot/rackboot/ironic/handover"
	"github.com/rackboot/rackboot/lifecycle"
	"github.com/rackboot/rackboot/nodepower"
	"github.com/rackboot/rackboot/power"
	"github.com/rackboot/rackboot/power/poll"
	"github.com/rackboot/rackboot/store"
	"github.com/rackboot/rackboot/tftp"
	"github.com/rackboot/rackboot/web"
)

// Paths inside the data dir.
const (
	DBFile    = "rackboot.db"
	TokenFile = "admin.token"
	// SecretKeyFile is the key file (package sealbox) that BMC passwords
	// are encrypted with, unless Config.SecretKeyFile names another.
	SecretKeyFile = "secret.key"
	ImagesDir     = "images"
	FirmwareDir   = "firmware"
	ArtifactsDir  = "artifacts"
	// TLSDir holds the CA and server certificate rackboot makes for its
	// API; APICAFile and APIURLFile tell a client on the appliance which
	// certificate to trust and where the API is.
	TLSDir     = "tls"
	APICAFile  = "api-ca.pem"
	APIURLFile = "api.url"
)

// Defaults.
const (
	DefaultHTTPPort  = "8080"
	DefaultLeaseTime = time.Hour
)

// resolved is a Config with every default applied and every address parsed.
type resolved struct {
	Config
	serverIP  netip.Addr
	baseURL   string
	apiURL    string // set when the API has a port of its own, over TLS
	pins      []string
	subnets   []dhcp.Subnet
	sbNets    []netip.Prefix
	imageNets []netip.Prefix
	// imageReserve is images.reserve in bytes (-1: none).
	imageReserve int64
	routed       []netip.Prefix
}

func resolve(c Config) (resolved, error) {
	r := resolved{Config: c}
	if r.DataDir == "" {
		r.DataDir = "data"
	}
	if r.HTTPAddr == "" {
		r.HTTPAddr = ":" + DefaultHTTPPort
	}
	if r.DHCP.Mode == "" {
		r.DHCP.Mode = DHCPProxy
	}
	switch r.DHCP.Mode {
	case DHCPAuthoritative, DHCPProxy, DHCPOff:
	default:
		return r, fmt.Errorf("dhcp mode %q: want authoritative, proxy or off", r.DHCP.Mode)
	}
	if err := checkPower(r.Power); err != nil {
		return r, err
	}
	if err := checkGPUPeers(r.GPUPeers); err != nil {
		return r, err
	}
	var local netip.Prefix
	if r.Interface != "" {
		p, err := InterfaceIPv4(r.Interface)
		if err != nil {
			return r, err
		}
		local = p.Masked()
		r.serverIP = p.Addr()
	} else if r.DHCP.Mode != DHCPOff {
		return r, fmt.Errorf("dhcp mode %s needs --interface", r.DHCP.Mode)
	}
	if r.ServerIP != "" {
		ip, err := netip.ParseAddr(r.ServerIP)
		if err != nil || !ip.Is4() {
			return r, fmt.Errorf("server ip %q: want an IPv4 address", r.ServerIP)
		}
		r.serverIP = ip
	}
	if !r.serverIP.IsValid() {
		return r, errors.New("no server address: give --interface or --server-ip")
	}
	_, port, err := net.SplitHostPort(r.HTTPAddr)
	if err != nil {
		return r, fmt.Errorf("http addr %q: %w", r.HTTPAddr, err)
	}
	r.baseURL = "http://" + net.JoinHostPort(r.serverIP.String(), port)
	if r.APIAddr != "" {
		_, aport, err := net.SplitHostPort(r.APIAddr)
		if err != nil {
			return r, fmt.Errorf("api addr %q: %w", r.APIAddr, err)
		}
		if aport == port && port != "0" {
			return r, fmt.Errorf("api addr %q: the boot port %s is plain HTTP; give the API a port of its own", r.APIAddr, port)
		}
		r.apiURL = "https://" + net.JoinHostPort(r.serverIP.String(), aport)
		if (r.TLS.Cert == "") != (r.TLS.Key == "") {
			return r, errors.New("tls: give both a certificate and its key, or neither (rackboot then makes its own)")
		}
		for _, p := range r.TLS.Pins {
			pins, err := tlspin.ParsePins(p)
			if err != nil {
				return r, fmt.Errorf("tls pins: %w", err)
			}
			r.pins = append(r.pins, pins...)
		}
	} else if r.TLS.Cert != "" || r.TLS.Key != "" || len(r.TLS.Pins) > 0 {
		return r, errors.New("tls settings need api_addr (--api-addr): the API is served over TLS only on a port of its own")
	}
	if r.TFTPAddr == "" {
		r.TFTPAddr = net.JoinHostPort(r.serverIP.String(), "69")
	}
	subs := r.DHCP.Subnets
	if r.DHCP.Range != "" {
		if !local.IsValid() {
			return r, errors.New("--dhcp-range needs --interface: it is a range of the interface's subnet")
		}
		found := false
		for i := range subs {
			if p, err := netip.ParsePrefix(subs[i].Prefix); err == nil && p.Masked() == local {
				subs[i].Range, found = r.DHCP.Range, true
			}
		}
		if !found {
			subs = append(subs, SubnetConfig{Prefix: local.String(), Range: r.DHCP.Range})
		}
	}
	for _, sc := range subs {
		s, err := subnet(sc)
		if err != nil {
			return r, err
		}
		r.subnets = append(r.subnets, s)
		if sc.SecureBoot {
			r.sbNets = append(r.sbNets, s.Prefix)
		}
	}
	if r.routed, err = prefixes("routed_networks", r.RoutedNetworks); err != nil {
		return r, err
	}
	r.imageReserve = catalog.DefaultReserve
	if r.Images.Reserve != "" {
		if r.imageReserve, err = ParseSize(r.Images.Reserve); err != nil {
			return r, fmt.Errorf("images.reserve: %w", err)
		}
		if r.imageReserve == 0 {
			r.imageReserve = -1 // none
		}
	}
	if r.Images.MaxImports < 0 {
		return r, fmt.Errorf("images.max_imports %d: want 1 or more (0 for the default)", r.Images.MaxImports)
	}
	if r.imageNets, err = prefixes("images.allow_networks", r.Images.AllowNetworks); err != nil {
		return r, err
	}
	if r.DHCP.KnownReserve < 0 || r.DHCP.KnownReserve > 0.5 {
		return r, fmt.Errorf("dhcp known_reserve %v: want a share from 0 to 0.5", r.DHCP.KnownReserve)
	}
	switch r.DHCP.Enroll {
	case "":
		r.DHCP.Enroll = "any"
		if r.DHCP.Mode == DHCPProxy {
			r.DHCP.Enroll = "known"
		}
	case "any", "known":
	default:
		return r, fmt.Errorf("dhcp enroll %q: want any or known", r.DHCP.Enroll)
	}
	if err := checkIronic(r.Ironic, r.DHCP.Mode, r.DataDir); err != nil {
		return r, err
	}
	if r.DHCP.Mode == DHCPAuthoritative {
		if len(r.subnets) == 0 {
			return r, errors.New("authoritative dhcp needs a lease range: --dhcp-range FIRST-LAST or dhcp.subnets in the config")
		}
		ok := false
		for _, s := range r.subnets {
			ok = ok || s.Prefix.Contains(r.serverIP)
		}
		if !ok {
			return r, fmt.Errorf("no dhcp subnet contains the server address %s", r.serverIP)
		}
	}
	return r, nil
}

// prefixes parses a config list of networks; an address alone is its
// own /32 (or /128).
func prefixes(key string, list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, n := range list {
		p, err := netip.ParsePrefix(n)
		if err != nil {
			a, aerr := netip.ParseAddr(n)
			if aerr != nil {
				return nil, fmt.Errorf("%s %q: want an address or a prefix like 10.40.0.0/16", key, n)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

func subnet(sc SubnetConfig) (dhcp.Subnet, error) {
	var s dhcp.Subnet
	p, err := netip.ParsePrefix(sc.Prefix)
	if err != nil || !p.Addr().Is4() {
		return s, fmt.Errorf("subnet %q: want an IPv4 prefix like 10.0.0.0/24", sc.Prefix)
	}
	s.Prefix = p.Masked()
	if s.First, s.Last, err = ParseRange(sc.Range); err != nil {
		return s, fmt.Errorf("subnet %s: %w", p, err)
	}
	if !s.Prefix.Contains(s.First) || !s.Prefix.Contains(s.Last) {
		return s, fmt.Errorf("subnet %s: range %s is not inside it", p, sc.Range)
	}
	parse := func(what, v string) (netip.Addr, error) {
		a, err := netip.ParseAddr(v)
		if err != nil {
			return a, fmt.Errorf("subnet %s: %s %q: %w", p, what, v, err)
		}
		return a, nil
	}
	if sc.Router != "" {
		if s.Router, err = parse("router", sc.Router); err != nil {
			return s, err
		}
	}
	for _, d := range sc.DNS {
		a, err := parse("dns", d)
		if err != nil {
			return s, err
		}
		s.DNS = append(s.DNS, a)
	}
	s.Domain = sc.Domain
	relays := slices.DeleteFunc(slices.Clone(sc.Relays), func(r string) bool { return r == "any" })
	s.AnyRelay = len(relays) < len(sc.Relays)
	if s.Relays, err = prefixes(fmt.Sprintf("subnet %s: relay", p), relays); err != nil {
		return s, err
	}
	s.LeaseTime = sc.LeaseTime
	if s.LeaseTime <= 0 {
		s.LeaseTime = DefaultLeaseTime
	}
	for _, rc := range sc.Reservations {
		mac, err := net.ParseMAC(rc.MAC)
		if err != nil {
			return s, fmt.Errorf("subnet %s: reservation %q: %w", p, rc.MAC, err)
		}
		ip, err := parse("reservation", rc.IP)
		if err != nil {
			return s, err
		}
		if !s.Prefix.Contains(ip) {
			return s, fmt.Errorf("subnet %s: reservation %s for %s is outside the subnet", p, ip, mac)
		}
		s.Reservations = append(s.Reservations, dhcp.Reservation{MAC: mac, IP: ip, Hostname: rc.Hostname})
	}
	return s, nil
}

// adminToken returns the admin token, writing a new one (mode 0600) on
// first start.
func adminToken(dir string, log *slog.Logger) (string, error) {
	path := filepath.Join(dir, TokenFile)
	if b, err := os.ReadFile(path); err == nil && len(strings.TrimSpace(string(b))) > 0 {
		return strings.TrimSpace(string(b)), nil
	}
	buf := make([]byte, 24)
	if _, err := rand.Read(buf); err != nil {
		return "", fmt.Errorf("admin token: %w", err)
	}
	tok := hex.EncodeToString(buf)
	if err := os.WriteFile(path, []byte(tok+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("admin token: %w", err)
	}
	log.Info("wrote the admin API token", "file", path)
	return tok, nil
}

// apiTLS loads or makes the API's certificate and writes what a client
// on the appliance needs to find and trust it: DATA_DIR/api.url and
// DATA_DIR/api-ca.pem.
func apiTLS(r *resolved, log *slog.Logger) (*tls.Config, error) {
	var b tlspin.Bundle
	var err error
	if r.TLS.Cert != "" {
		b, err = tlspin.FromFiles(r.TLS.Cert, r.TLS.Key)
	} else {
		// Every address of the machine: operators reach the API by a
		// management address as often as by the provisioning one.
		hosts := []string{r.serverIP.String(), "localhost"}
		if h, herr := os.Hostname(); herr == nil && h != "" {
			hosts = append(hosts, h)
		}
		if addrs, aerr := net.InterfaceAddrs(); aerr == nil {
			for _, a := range addrs {
				if n, ok := a.(*net.IPNet); ok && !n.IP.IsLinkLocalUnicast() && !n.IP.IsMulticast() {
					hosts = append(hosts, n.IP.String())
				}
			}
		}
		hosts = append(hosts, r.TLS.Names...)
		b, err = tlspin.Generated(filepath.Join(r.DataDir, TLSDir), hosts)
	}
	if err != nil {
		return nil, err
	}
	if err := tlspin.WriteCA(filepath.Join(r.DataDir, APICAFile), b); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(r.DataDir, APIURLFile), []byte(r.apiURL+"\n"), 0o644); err != nil {
		return nil, fmt.Errorf("api url file: %w", err)
	}
	r.pins = append(slices.Clone(b.Pins), slices.DeleteFunc(r.pins, func(p string) bool { return slices.Contains(b.Pins, p) })...)
	log.Info("API certificate", "fingerprint", b.Pins[0], "ca_file", filepath.Join(r.DataDir, APICAFile))
	return b.ServerConfig(), nil
}

// misdirected answers API and UI requests that reach the boot port when
// the API has a TLS port of its own: a browser is sent there, anyone else
// told where it is.
func misdirected(apiURL string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && (r.URL.Path == "/" || strings.HasPrefix(r.URL.Path, web.Prefix)) {
			http.Redirect(w, r, apiURL+r.URL.Path, http.StatusFound)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusMisdirectedRequest)
		fmt.Fprintf(w, `{"error":{"code":"use_tls","message":"the API and the web UI are served over TLS at %s, not on the boot port"}}`+"\n", apiURL)
	})
}

// Run runs the appliance until ctx ends. It returns nil after a clean
// shutdown, or the first error of any server.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	return run(ctx, cfg, log, hooks{})
}

// hooks are what tests change in a run; zero fields change nothing.
type hooks struct {
	// serving is told the address the HTTP server listens on (the port
	// chosen, for 127.0.0.1:0) once every socket is open; apiServing the
	// TLS API's, when there is one.
	serving, apiServing func(addr net.Addr)
	// tftpServing is told the TFTP server's address, as serving is.
	tftpServing func(tftpAddr net.Addr)
	// wrapStore stands between the appliance and its database (one that
	// fails, say).
	wrapStore func(store.Store) store.Store
	// reapEvery is the reaper's interval (default a minute), pruneEvery
	// the retention's (default an hour).
	reapEvery, pruneEvery time.Duration
	// now is the retention's clock (default time.Now).
	now func() time.Time
}

// run is Run with hooks.
func run(ctx context.Context, cfg Config, log *slog.Logger, h hooks) (err error) {
	parent := ctx
	defer func() {
		// Stopped while it was still starting (a signal, a test's end):
		// a clean stop, not a failure to report.
		if err != nil && parent.Err() != nil && errors.Is(err, context.Canceled) {
			err = nil
		}
	}()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r, err := resolve(cfg)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if err := privateDataDir(r.DataDir); err != nil {
		return err
	}
	for _, d := range []string{filepath.Join(r.DataDir, FirmwareDir), filepath.Join(r.DataDir, ArtifactsDir)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("data dir: %w", err)
		}
	}
	if r.DB == "" {
		// One server on a SQLite database, and no restore under it.
		unlock, err := lockDataDir(r.DataDir)
		if err != nil {
			return err
		}
		defer unlock()
	}
	token, err := adminToken(r.DataDir, log)
	if err != nil {
		return err
	}
	var tlsCfg *tls.Config
	var apiLn net.Listener
	if r.apiURL != "" {
		if apiLn, err = net.Listen("tcp", r.APIAddr); err != nil {
			return fmt.Errorf("api: %w", err)
		}
		defer apiLn.Close()
		// The port chosen, for :0.
		r.apiURL = "https://" + net.JoinHostPort(r.serverIP.String(), fmt.Sprint(apiLn.Addr().(*net.TCPAddr).Port))
		if tlsCfg, err = apiTLS(&r, log); err != nil {
			return err
		}
	} else {
		// No stale pointer to a TLS API this start does not serve.
		os.Remove(filepath.Join(r.DataDir, APIURLFile))
	}
	st, err := OpenStore(ctx, r.DB, r.DataDir)
	if err != nil {
		return err
	}
	defer st.Close()
	if h.wrapStore != nil {
		st = h.wrapStore(st)
	}
	if err := SetBootstrapToken(ctx, st, r.DataDir, token); err != nil {
		return err
	}
	secrets, err := LoadSecrets(r.DataDir, r.SecretKeyFile, log)
	if err != nil {
		return err
	}

	// The parts that several servers share: the broker wakes the API's
	// live event streams whenever the lifecycle (on behalf of the API,
	// the core or the reaper) writes an event.
	broker := api.NewBroker()
	// One power-on limiter for the server: the API's actions, bulk
	// actions and the lifecycle's power-ons all wait their turn at it.
	powerOn := &power.Limiter{MaxConcurrent: r.Power.MaxConcurrentOn, Rate: r.Power.OnRate}
	// The lifecycle opens BMCs as the API does (nodepower), and drives
	// them after each state change is stored.
	machine := &lifecycle.Machine{Store: st, Notify: func(store.Event) { broker.Publish() },
		Power:          &nodepower.Opener{Store: st, Secrets: secrets, CAFile: r.BMCCAFile, Logger: log.With("proto", "power")},
		PowerOn:        powerOn,
		SoftOffTimeout: r.Power.SoftOffTimeout, BMCEnroll: r.BMC.Enroll, Logger: log.With("proto", "power")}
	var leased []netip.Prefix
	for _, sn := range r.subnets {
		leased = append(leased, sn.Prefix)
	}
	c := &core.Core{Store: st, Logger: log, Config: core.Config{
		BaseURL:           r.baseURL,
		APIURL:            r.apiURL,
		APIPins:           r.pins,
		SecureBoot:        r.SecureBoot,
		SecureBootSubnets: r.sbNets,
		Artifacts:         filepath.Join(r.DataDir, ArtifactsDir),
		Cmdline:           r.Cmdline,
		// With DHCP off rackboot sees no firmware DHCP to enroll by.
		EnrollOnBoot:    r.DHCP.Mode == DHCPOff,
		EnrollKnownOnly: r.DHCP.Enroll == "known",
		RoutedNetworks:  r.routed,
		Subnets:         leased,
	}}
	// The protocol servers record boot events through a queue, never
	// waiting for the store's write on their serving path.
	traces := &boot.Queue{Next: c}

	g, ctx := errgroup.WithContext(ctx)

	// Sockets are opened before anything is served, so a port in use or a
	// missing privilege fails the start instead of one server later.
	var dhcpConns []net.PacketConn
	var dhcpServers []*dhcp.Server
	var extern dhcp.Extern
	var ironicDir *dnsmasq.Dir
	if len(r.Ironic.HostsDirs) > 0 {
		ironicDir = &dnsmasq.Dir{HostsDirs: r.Ironic.HostsDirs, OptsDirs: r.Ironic.OptsDirs, Logger: log.With("proto", "ironic")}
		if err := ironicDir.Load(); err != nil {
			return fmt.Errorf("ironic: %w", err)
		}
		extern = ironicExtern{d: ironicDir, rackbootOwns: c.OwnedByRackboot}
		log.Info("serving Ironic's nodes through its dnsmasq files", "hostsdir", r.Ironic.HostsDirs, "optsdir", r.Ironic.OptsDirs, "leasefile", r.Ironic.LeaseFile)
	}
	if r.DHCP.Mode != DHCPOff {
		ports := []int{67}
		if r.DHCP.Mode == DHCPProxy {
			ports = append(ports, 4011)
		}
		for _, port := range ports {
			conn, err := dhcp.ListenUDP(r.Interface, port)
			if err != nil {
				return fmt.Errorf("dhcp: %w", err)
			}
			dhcpConns = append(dhcpConns, conn)
			dhcpServers = append(dhcpServers, &dhcp.Server{
				Mode: dhcp.Mode(r.DHCP.Mode), ServerIP: r.serverIP, Subnets: r.subnets, ProxyPort: port == 4011,
				Booter: c, Extern: extern, Leases: st, Recorder: traces, Logger: log.With("proto", "dhcp"), DeclineTime: r.DHCP.DeclineTime,
				Known: c.Known, UnknownRate: r.DHCP.UnknownRate, KnownReserve: r.DHCP.KnownReserve,
			})
		}
	}
	tftpConn, err := net.ListenPacket("udp4", r.TFTPAddr)
	if err != nil {
		return fmt.Errorf("tftp: %w", err)
	}
	loaders, err := tftp.NewDir(filepath.Join(r.DataDir, FirmwareDir))
	if err != nil {
		return err
	}
	artifacts, err := tftp.NewDir(filepath.Join(r.DataDir, ArtifactsDir))
	if err != nil {
		return err
	}
	// TFTP and boot-time HTTP get the same planner (the core) and GRUB
	// generators that differ only in where GRUB fetches the kernel from;
	// neither they nor the core know each other.
	var files tftp.Files = &tftp.BootFiles{Loaders: loaders, Artifacts: artifacts, Planner: c, ClientMAC: c.MACOf,
		GRUBConfig: grub.Config, GRUBBootstrap: grub.Bootstrap()}
	ironicRoots, err := r.Ironic.roots()
	if err != nil {
		return err
	}
	var trees []httpboot.Tree
	var apiHandover api.Handover
	for _, rt := range ironicRoots.Roots() {
		if rt.HTTPRoot != "" {
			trees = append(trees, httpboot.Tree{Prefix: rt.Prefix(), Dir: rt.HTTPRoot})
		}
		log.Info("serving an Ironic conductor's trees", "root", rt.Name, "tftp_root", rt.TFTPRoot, "http_root", rt.HTTPRoot,
			"http", r.baseURL+"/"+rt.Prefix()+"/", "tftp", rt.Prefix()+"/")
	}
	if len(ironicRoots.Roots()) > 0 {
		ironicRoots.Base = r.baseURL
		if ironicDir != nil {
			ironicRoots.ConductorOf = ironicConductorOf(ironicDir, ironicRoots)
		}
		files = ironicRoots.TFTP(files, ironicOwned(c, ironicDir))
		c.Ironic = ironicRoots
	}
	if macs, _ := r.Ironic.macs(); len(macs) > 0 {
		enrollIronic(ctx, st, macs, map[string]bool{}, log.With("proto", "ironic"))
	}
	tftpServer := &tftp.Server{Files: files, Recorder: traces, Logger: log.With("proto", "tftp"),
		MaxBlockSize: r.TFTP.MaxBlockSize, MaxWindowSize: r.TFTP.MaxWindowSize,
		MaxTransfers: r.TFTP.MaxTransfers, MaxPerSource: r.TFTP.MaxPerSource}
	httpLn, err := net.Listen("tcp", r.HTTPAddr)
	if err != nil {
		return fmt.Errorf("http: %w", err)
	}

	hb := &httpboot.Server{
		Planner:     c,
		IPXEScript:  ipxe.Script,
		ChainScript: ipxe.Chain(r.baseURL),
		// Only the GRUB with http asks for its configs over HTTP.
		GRUBConfig:    grub.HTTPConfig,
		GRUBBootstrap: grub.Bootstrap(),
		Firmware:      filepath.Join(r.DataDir, FirmwareDir),
		Artifacts:     filepath.Join(r.DataDir, ArtifactsDir),
		Trees:         trees,
		Recorder:      traces,
		Logger:        log.With("proto", "http"),
	}
	var handoverSecrets handover.Secrets
	if secrets != nil {
		handoverSecrets = secrets
	}
	if h := ironicHandover(r.Ironic, st, handoverSecrets, log.With("proto", "ironic")); h != nil {
		apiHandover = h
		log.Info("handing nodes over through Ironic's API", "api_url", r.Ironic.APIURL, "keystone", r.Ironic.Auth.AuthURL != "")
	}
	if err := ensureAdminUser(ctx, st, r.DataDir, log); err != nil {
		return err
	}
	var bootHTTP httpCounter
	poller := &poll.Poller{Store: st, Interval: pollInterval(r.Power), Concurrency: r.Power.PollConcurrency,
		Logger: log.With("proto", "power"), Changed: func(store.PowerState) { broker.Publish() }}
	lvCA, err := libvirtPKI(r.DataDir)
	if err != nil {
		return err
	}
	lvOpt, err := libvirtOptions(r.DataDir)
	if err != nil {
		return err
	}
	agentSums, err := publishAgents(r.DataDir, log)
	if err != nil {
		return err
	}
	vms := &hypervisor.Service{Store: st, Dial: hypervisor.LibvirtDialer(lvOpt), Logger: log.With("proto", "libvirt")}
	apiServer := &api.Server{Handover: apiHandover, VMs: vms, HypervisorTLS: hypervisorTLS(r.DataDir, lvCA),
		HypervisorAgent: hypervisorAgent(r.baseURL, r.apiURL, r.pins, agentSums), PowerOn: powerOn, Power: poller, Store: st, Lifecycle: machine, Broker: broker, SecureCookies: tlsCfg != nil, Secrets: secrets, BMCCAFile: r.BMCCAFile,
		Logger: log.With("proto", "api"), Version: r.Version, AgentHeartbeat: r.AgentHeartbeat,
		GPUPeers: gpufleet.Options{Threshold: r.GPUPeers.Threshold, MinPeers: r.GPUPeers.MinPeers},
		Catalog: &catalog.Catalog{Dir: filepath.Join(r.DataDir, ImagesDir), Logger: log.With("proto", "images"), AllowNetworks: r.imageNets,
			Reserve: r.imageReserve, MaxImports: r.Images.MaxImports},
		Metrics: func(w io.Writer) { writeMetrics(w, dhcpServers, tftpServer, &bootHTTP, poller, traces) }}
	// A poll is one attempt of one timeout: a silent BMC holds a worker
	// for the driver's timeout, and waits for a later round.
	poller.Dial = func(b store.BMC) (power.Driver, error) {
		return apiServer.DialBMC(b, power.Config{Attempts: 1, Timeout: poll.DefaultTimeout / 2})
	}
	apiHandler := apiServer.Handler()
	// The boot port: boot files, and the API and UI too unless they have
	// a TLS port of their own. There, disk images go only to the image
	// keys of deploys, never to a credential that would cross in clear.
	mux := http.NewServeMux()
	hc := &health{ping: st.Ping, log: log}
	mux.HandleFunc("GET "+HealthPath, hc.healthz)
	mux.HandleFunc("GET "+ReadyPath, hc.readyz)
	apiMux := mux
	if tlsCfg != nil {
		apiMux = http.NewServeMux()
		apiMux.HandleFunc("GET "+HealthPath, hc.healthz)
		apiMux.HandleFunc("GET "+ReadyPath, hc.readyz)
		mux.Handle("/images/", bootHTTP.wrap(apiServer.ImageFiles(true)))
		for _, p := range []string{"/api/", "/metrics", web.Prefix, "GET /{$}"} {
			mux.Handle(p, misdirected(r.apiURL))
		}
		apiMux.Handle("/images/", apiServer.ImageFiles(false))
	} else {
		mux.Handle("/images/", bootHTTP.wrap(apiServer.ImageFiles(false)))
	}
	apiMux.Handle("/api/", apiHandler)
	apiMux.Handle("/metrics", apiHandler)
	apiMux.Handle(web.Prefix, web.Handler())
	apiMux.Handle("GET /{$}", http.RedirectHandler(web.Prefix, http.StatusFound))
	mux.Handle("/", bootHTTP.wrap(hb.Handler()))

	for i := range dhcpServers {
		s, conn := dhcpServers[i], dhcpConns[i]
		name := "dhcp"
		if s.ProxyPort {
			name = "dhcp 4011"
		}
		g.Go(hc.add(name).run(func() error { return s.Serve(ctx, conn) }))
	}
	g.Go(hc.add("tftp").run(func() error { return tftpServer.Serve(ctx, tftpConn) }))
	g.Go(func() error { return traces.Run(ctx) })
	if ic := ironicClient(r.Ironic); ic != nil {
		g.Go(func() error {
			return syncIronicAPI(ctx, ic, ironicRoots, st, r.Ironic.apiInterval(), log.With("proto", "ironic"))
		})
	}
	if ironicDir != nil {
		g.Go(func() error { return ironicDir.Watch(ctx) })
		g.Go(func() error {
			return writeIronicLeases(ctx, ironicDir, st, r.subnets, r.Ironic.LeaseFile, 2*time.Second, log.With("proto", "ironic"))
		})
	}
	g.Go(hc.add("http").run(func() error { return httpserve.Serve(ctx, httpLn, mux, log.With("proto", "http")) }))
	if apiLn != nil {
		g.Go(hc.add("api").run(func() error {
			return httpserve.ServeTLS(ctx, apiLn, apiMux, log.With("proto", "api"), httpserve.DefaultLimits, tlsCfg)
		}))
	}
	timeout := r.AgentTimeout
	if timeout == 0 {
		timeout = 30 * time.Minute
	}
	g.Go(func() error {
		// A reap that fails (the database did not answer) is logged and
		// tried again later: it never stops DHCP, TFTP or HTTP.
		return machine.RunReaper(ctx, timeout, cmp.Or(h.reapEvery, time.Minute), func(n store.Node) {
			broker.Publish()
			log.Warn("node failed: its agent went quiet", "node", n.ID, "reason", n.LastError)
		}, func(err error, retry time.Duration) {
			log.Warn("reaper: store error, trying again", "err", err, "retry_in", retry)
		})
	})

	// BMC work in flight ends with the appliance: cancelled, then waited
	// for, before the store closes.
	g.Go(func() error { return machine.RunPower(ctx) })

	clock := h.now
	if clock == nil {
		clock = time.Now
	}
	g.Go(func() error {
		return retain(ctx, st, r.Retention, cmp.Or(h.pruneEvery, pruneEvery), clock, log)
	})

	if poller.Interval > 0 {
		// A store error is logged and tried again inside Run: polling
		// never ends the servers.
		g.Go(func() error { return poller.Run(ctx) })
	}

	warnMissing(log, r.DataDir)
	if h.tftpServing != nil {
		h.tftpServing(tftpConn.LocalAddr())
	}
	if h.apiServing != nil && apiLn != nil {
		h.apiServing(apiLn.Addr())
	}
	if h.serving != nil {
		h.serving(httpLn.Addr())
	}
	apiBase := r.baseURL
	attrs := []any{}
	if r.apiURL != "" {
		apiBase = r.apiURL
		attrs = append(attrs, "tls_fingerprint", r.pins[0])
	}
	log.Info("rackboot serving", append([]any{"dhcp", r.DHCP.Mode, "interface", r.Interface, "server_ip", r.serverIP.String(),
		"tftp", r.TFTPAddr, "http", r.baseURL, "ui", apiBase + "/ui/", "api", apiBase + "/api/v1",
		"token_file", filepath.Join(r.DataDir, TokenFile), "password_file", filepath.Join(r.DataDir, PasswordFile)}, attrs...)...)
	err = g.Wait()
	log.Info("rackboot stopped")
	return err
}

// checkPower refuses power settings that make no sense.
func checkPower(pc PowerConfig) error {
	switch {
	case pc.PollInterval != nil && *pc.PollInterval < 0:
		return fmt.Errorf("power.poll_interval %v: want 0 (off) or more", *pc.PollInterval)
	case pc.PollConcurrency < 0:
		return fmt.Errorf("power.poll_concurrency %d: want 1 or more", pc.PollConcurrency)
	case pc.MaxConcurrentOn < 0:
		return fmt.Errorf("power.max_concurrent_on %d: want 1 or more", pc.MaxConcurrentOn)
	case pc.OnRate < 0:
		return fmt.Errorf("power.on_rate %v: want more than 0 a second", pc.OnRate)
	}
	return nil
}

// checkGPUPeers refuses a comparison that could never or would always
// find a card below its peers.
func checkGPUPeers(g GPUPeersConfig) error {
	switch {
	case g.Threshold < 0 || g.Threshold > 1:
		return fmt.Errorf("gpu_peers.threshold %v: want a fraction of the peers' median, above 0 and at most 1 (0.9)", g.Threshold)
	case g.MinPeers < 0:
		return fmt.Errorf("gpu_peers.min_peers %d: want 1 or more", g.MinPeers)
	}
	return nil
}

// pollInterval is the poller's interval, 0 when polling is off.
func pollInterval(pc PowerConfig) time.Duration {
	if pc.PollInterval == nil {
		return DefaultPollInterval
	}
	return *pc.PollInterval
}

// retain prunes boot events and audit events past their retention, at
// start and every interval after, until ctx ends. A prune that fails is
// logged and tried again (an eighth of interval later, doubling up to
// interval): it never stops a server.
func retain(ctx context.Context, st store.Store, rc RetentionConfig, interval time.Duration, now func() time.Time, log *slog.Logger) error {
	keep := func(d, def time.Duration) time.Duration {
		if d == 0 {
			return def
		}
		return max(d, 0) // negative: forever
	}
	bootFor, eventsFor := keep(rc.BootEvents, DefaultBootEventsRetention), keep(rc.Events, DefaultEventsRetention)
	if bootFor == 0 && eventsFor == 0 {
		return nil
	}
	var wait, backoff time.Duration
	for {
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		var bootBefore, eventsBefore time.Time
		if bootFor > 0 {
			bootBefore = now().Add(-bootFor)
		}
		if eventsFor > 0 {
			eventsBefore = now().Add(-eventsFor)
		}
		nb, ne, err := st.Prune(ctx, bootBefore, eventsBefore)
		if ctx.Err() != nil {
			return nil
		}
		if nb > 0 || ne > 0 {
			log.Info("retention: pruned old rows", "boot_events", nb, "events", ne)
		}
		wait = interval
		if err != nil {
			backoff = min(max(2*backoff, interval/8), interval)
			wait = backoff
			log.Warn("retention: store error, trying again", "err", err, "retry_in", wait)
		} else {
			backoff = 0
		}
	}
}

// warnMissing says at start what nodes will not get: loaders that were
// never fetched, kernels that were never put in place.
func warnMissing(log *slog.Logger, dataDir string) {
	if err := firmware.VerifyWanted(filepath.Join(dataDir, FirmwareDir), firmware.Loaders()); err != nil {
		log.Warn("boot loaders missing or changed: run rackboot firmware fetch", "data_dir", dataDir, "err", err)
	}
	if _, err := os.Stat(filepath.Join(dataDir, FirmwareDir, firmware.GRUBHTTPAA64)); err != nil {
		log.Warn("no GRUB for AArch64 UEFI HTTP boot: such nodes fail their HTTP boot and fall back to PXE; install grub-common and run rackboot firmware fetch",
			"file", filepath.Join(dataDir, FirmwareDir, firmware.GRUBHTTPAA64))
	}
	for _, a := range []string{"x86_64", "aarch64"} {
		k := filepath.Join(dataDir, ArtifactsDir, a, "vmlinuz")
		if _, err := os.Stat(k); err != nil {
			log.Warn("no kernel for "+a+": its nodes get no boot script until one is in place", "file", k)
		}
	}
}
