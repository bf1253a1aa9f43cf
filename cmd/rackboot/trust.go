package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/rackboot/rackboot/appliance"
	"github.com/rackboot/rackboot/internal/tlspin"
)

const trustHelp = `An https server is trusted by --ca-file (a CA bundle, checked as browsers
do), else by --accept-fingerprint sha256:HEX (for scripts; saved), else by
the fingerprint saved for it in RACKBOOT_KNOWN_HOSTS (default
~/.config/rackboot/known_hosts) on first use, after asking, else, on the
appliance itself, by DATA_DIR/api-ca.pem. rackboot serve logs the
fingerprint ("API certificate").
`

// asker asks the person at the terminal a yes/no question; nil when
// nobody is there to answer.
type asker func(question string) bool

func terminalAsker(stderr io.Writer) asker {
	if !term.IsTerminal(int(os.Stdin.Fd())) {
		return nil
	}
	return func(q string) bool {
		fmt.Fprint(stderr, q)
		line, _ := bufio.NewReader(os.Stdin).ReadString('\n')
		return strings.EqualFold(strings.TrimSpace(line), "yes") || strings.EqualFold(strings.TrimSpace(line), "y")
	}
}

func knownHostsFile() string {
	if p := os.Getenv("RACKBOOT_KNOWN_HOSTS"); p != "" {
		return p
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return ""
	}
	return filepath.Join(home, ".config", "rackboot", "known_hosts")
}

// knownPins are the pins saved for hostport ("host:port sha256:HEX" lines).
func knownPins(path, hostport string) ([]string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("known hosts: %w", err)
	}
	var pins []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == hostport {
			p, err := tlspin.ParsePins(f[1])
			if err != nil {
				return nil, fmt.Errorf("known hosts %s: %s: %w", path, hostport, err)
			}
			pins = append(pins, p...)
		}
	}
	return pins, nil
}

func saveKnown(path, hostport, pin string) error {
	if path == "" {
		return errors.New("known hosts: no home directory; set RACKBOOT_KNOWN_HOSTS")
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("known hosts: %w", err)
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("known hosts: %w", err)
	}
	if _, err := fmt.Fprintf(f, "%s %s\n", hostport, pin); err != nil {
		f.Close()
		return fmt.Errorf("known hosts: %w", err)
	}
	return f.Close()
}

// presented connects to hostport and returns the fingerprint a client
// would pin: that of the root-most certificate of the chain it sends.
// Nothing is sent over the connection.
func presented(ctx context.Context, hostport string) (string, error) {
	d := tls.Dialer{Config: &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", hostport)
	if err != nil {
		return "", fmt.Errorf("connect to %s: %w", hostport, err)
	}
	defer c.Close()
	chain := c.(*tls.Conn).ConnectionState().PeerCertificates
	return tlspin.Fingerprint(chain[len(chain)-1].Raw), nil
}

// trust gives c.http the TLS configuration for an https server, by the
// first of the ways trustHelp lists that applies.
func (c *client) trust(ctx context.Context) error {
	u, err := url.Parse(c.server)
	if err != nil || u.Host == "" {
		return fmt.Errorf("--server %q: want a URL like https://10.0.0.1:8443", c.server)
	}
	if u.Scheme != "https" {
		return nil
	}
	hostport := u.Host
	if u.Port() == "" {
		hostport = net.JoinHostPort(u.Hostname(), "443")
	}
	var cfg *tls.Config
	switch {
	case c.caFile != "":
		b, err := os.ReadFile(c.caFile)
		if err != nil {
			return fmt.Errorf("--ca-file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return fmt.Errorf("--ca-file %s: no PEM certificate in it", c.caFile)
		}
		cfg = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	case c.acceptPin != "":
		pins, err := tlspin.ParsePins(c.acceptPin)
		if err != nil {
			return fmt.Errorf("--accept-fingerprint: %w", err)
		}
		path := knownHostsFile()
		known, err := knownPins(path, hostport)
		if err != nil {
			return err
		}
		cfg = tlspin.ClientConfig(pins)
		if len(known) == 0 || known[0] != pins[0] {
			// Saved once the server has shown it, on the first call.
			c.saveOnSuccess = func() error { return saveKnown(path, hostport, pins[0]) }
		}
	default:
		path := knownHostsFile()
		known, err := knownPins(path, hostport)
		if err != nil {
			return err
		}
		if len(known) > 0 {
			cfg = tlspin.ClientConfig(known)
			c.mismatch = fmt.Sprintf("the certificate of %s does not match the fingerprint saved for it in %s: an impostor, or a new certificate; if you know the server's certificate changed, check its new fingerprint in rackboot serve's log and run again with --accept-fingerprint", hostport, path)
			break
		}
		if b, err := os.ReadFile(filepath.Join(c.dataDir, appliance.APICAFile)); err == nil {
			if p, _ := pemFingerprint(b); p != "" {
				cfg = tlspin.ClientConfig([]string{p})
				break
			}
		}
		fp, err := presented(ctx, hostport)
		if err != nil {
			return err
		}
		if c.ask == nil || !c.ask(fmt.Sprintf("The server %s is not known. Its certificate's fingerprint is\n  %s\nCompare it with rackboot serve's log (\"API certificate\"). Trust it and remember it? [y/N] ", hostport, fp)) {
			return fmt.Errorf("the server %s is not known: its certificate is %s; check that against rackboot serve's log, then pass --accept-fingerprint %s (or --ca-file)", hostport, fp, fp)
		}
		if err := saveKnown(path, hostport, fp); err != nil {
			return err
		}
		cfg = tlspin.ClientConfig([]string{fp})
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = cfg
	c.http.Transport = tr
	return nil
}

func pemFingerprint(b []byte) (string, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return "", errors.New("no PEM certificate")
	}
	return tlspin.Fingerprint(blk.Bytes), nil
}
