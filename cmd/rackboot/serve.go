package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/rackboot/rackboot/appliance"
)

func serve(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "YAML config file (flags override its fields)")
	dataDir := fs.String("data-dir", "", "data dir: database, admin token, boot loaders, kernels (default ./data)")
	iface := fs.String("interface", "", "network interface DHCP and TFTP serve on (required unless --dhcp-mode off and --server-ip given)")
	serverIP := fs.String("server-ip", "", "address put in DHCP replies and boot URLs (default: the interface's IPv4 address)")
	httpAddr := fs.String("http-addr", "", "listen address of boot-time HTTP, and of the API and UI unless --api-addr is given (default :8080)")
	apiAddr := fs.String("api-addr", "", "listen address of the API and web UI over TLS, e.g. :8443 (the boot port then serves boot files only)")
	tlsCert := fs.String("tls-cert", "", "the API's TLS certificate, PEM, with its chain (default: one rackboot makes in DATA_DIR/tls)")
	tlsKey := fs.String("tls-key", "", "the key of --tls-cert")
	tftpAddr := fs.String("tftp-addr", "", "listen address of TFTP (default SERVER-IP:69)")
	dhcpMode := fs.String("dhcp-mode", "", "authoritative, proxy (PXE answers only, beside an existing DHCP server; the default) or off")
	dhcpRange := fs.String("dhcp-range", "", "FIRST-LAST: lease range on the interface's subnet (authoritative mode)")
	enroll := fs.String("enroll", "", "any (every PXE client becomes a node; authoritative's default) or known (only nodes added with rackboot node add boot; proxy's default)")
	secureBoot := fs.Bool("secure-boot", false, "send every x86-64 UEFI node down shim → GRUB instead of iPXE")
	db := fs.String("db", "", "database: a postgres:// URL shared by several servers (default: SQLite in the data dir; env RACKBOOT_DB)")
	logLevel := fs.String("log-level", "", "debug, info, warn or error (default info)")
	secretKeyFile := fs.String("secret-key-file", "", "keys BMC passwords are encrypted with; the same file on every server sharing a database (default DATA_DIR/secret.key, written on first start)")
	bmcEnroll := fs.Bool("bmc-enroll", false, "every inspection creates a rackboot user with a random password on the node's BMC, in-band, and uses it (bmc.enroll)")
	bmcCAFile := fs.String("bmc-ca-file", "", "PEM CA bundle that verifies Redfish BMCs' certificates where none is pinned (default: the system's roots)")
	heartbeat := fs.Duration("agent-heartbeat", 0, "how often agents call in, which is how long a new task can wait for one (default 10s)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: rackboot serve [flags]\n\nRuns DHCP (ports 67 and 4011: needs root or CAP_NET_BIND_SERVICE and CAP_NET_RAW),\nTFTP (port 69), boot-time HTTP and the API.\n\nFlags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("serve: unexpected argument %q", fs.Arg(0))}
	}
	var cfg appliance.Config
	if *configPath != "" {
		c, err := appliance.LoadConfig(*configPath)
		if err != nil {
			return err
		}
		cfg = c
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	override := func(name string, dst *string, v string) {
		if set[name] {
			*dst = v
		}
	}
	override("data-dir", &cfg.DataDir, *dataDir)
	override("interface", &cfg.Interface, *iface)
	override("server-ip", &cfg.ServerIP, *serverIP)
	override("http-addr", &cfg.HTTPAddr, *httpAddr)
	override("tftp-addr", &cfg.TFTPAddr, *tftpAddr)
	override("api-addr", &cfg.APIAddr, *apiAddr)
	override("tls-cert", &cfg.TLS.Cert, *tlsCert)
	override("tls-key", &cfg.TLS.Key, *tlsKey)
	override("dhcp-mode", &cfg.DHCP.Mode, *dhcpMode)
	override("enroll", &cfg.DHCP.Enroll, *enroll)
	override("log-level", &cfg.LogLevel, *logLevel)
	override("secret-key-file", &cfg.SecretKeyFile, *secretKeyFile)
	override("bmc-ca-file", &cfg.BMCCAFile, *bmcCAFile)
	if v := os.Getenv("RACKBOOT_DB"); v != "" && !set["db"] {
		cfg.DB = v
	}
	override("db", &cfg.DB, *db)
	if set["secure-boot"] {
		cfg.SecureBoot = *secureBoot
	}
	if set["bmc-enroll"] {
		cfg.BMC.Enroll = *bmcEnroll
	}
	if set["agent-heartbeat"] {
		if *heartbeat < time.Second {
			return usageError{fmt.Sprintf("serve: --agent-heartbeat %s: want at least 1s", *heartbeat)}
		}
		cfg.AgentHeartbeat = *heartbeat
	}
	if set["dhcp-range"] {
		cfg.DHCP.Range = *dhcpRange
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(strings.ToUpper(orDefault(cfg.LogLevel, "info")))); err != nil {
		return usageError{fmt.Sprintf("serve: --log-level %q: want debug, info, warn or error", cfg.LogLevel)}
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	cfg.Version = version
	return appliance.Run(ctx, cfg, logger)
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}
