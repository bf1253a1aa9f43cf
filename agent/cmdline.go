package agent

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/rackboot/rackboot/internal/tlspin"
)

// Cmdline is what the boot script tells the agent on the kernel command
// line: rackboot.api=URL (the server's base URL), rackboot.node=ID,
// rackboot.boot=SECRET (this boot's secret, which the lookup shows), and
// for an API over TLS on a port of its own rackboot.files=URL (the boot
// port, where disk images and boot files are) and rackboot.ca=PINS (the
// fingerprints of the certificates the API may present).
type Cmdline struct {
	API        string // the API base, ending in /api/v1
	Node       string
	BootSecret string
	// Files is the base URL of boot files and disk images: the API's
	// server unless rackboot.files= says otherwise.
	Files string
	Pins  []string
}

// ParseCmdline reads a kernel command line.
func ParseCmdline(s string) (Cmdline, error) {
	var c Cmdline
	for _, f := range strings.Fields(s) {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "rackboot.api":
			c.API = v
		case "rackboot.node":
			c.Node = v
		case "rackboot.boot":
			c.BootSecret = v
		case "rackboot.files":
			c.Files = v
		case "rackboot.ca":
			pins, err := tlspin.ParsePins(v)
			if err != nil {
				return c, fmt.Errorf("kernel command line: rackboot.ca: %w", err)
			}
			c.Pins = pins
		}
	}
	if c.API == "" {
		return c, fmt.Errorf("kernel command line: no rackboot.api=URL")
	}
	u, err := url.Parse(c.API)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return c, fmt.Errorf("kernel command line: rackboot.api=%q is not an http(s) URL", c.API)
	}
	if u.Scheme == "https" && len(c.Pins) == 0 {
		// The ramdisk has no CA store and no clock to check one with.
		return c, fmt.Errorf("kernel command line: rackboot.api=%s is https but no rackboot.ca=sha256:... pins its certificate", c.API)
	}
	u.Path = strings.TrimRight(u.Path, "/")
	if !strings.HasSuffix(u.Path, "/api/v1") {
		u.Path += "/api/v1"
	}
	c.API = u.String()
	if c.Files == "" {
		c.Files = strings.TrimSuffix(c.API, "/api/v1")
	} else if f, err := url.Parse(c.Files); err != nil || (f.Scheme != "http" && f.Scheme != "https") || f.Host == "" {
		return c, fmt.Errorf("kernel command line: rackboot.files=%q is not an http(s) URL", c.Files)
	}
	c.Files = strings.TrimRight(c.Files, "/")
	return c, nil
}

// Client is the HTTP client that talks to the API c names: over https,
// it trusts only a certificate chain c's pins name.
func (c Cmdline) Client(timeout time.Duration) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	if len(c.Pins) > 0 {
		tr.TLSClientConfig = tlspin.ClientConfig(c.Pins)
	}
	return &http.Client{Timeout: timeout, Transport: tr}
}
