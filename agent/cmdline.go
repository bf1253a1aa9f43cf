package agent

import (
	"fmt"
	"net/url"
	"strings"
)

// Cmdline is what the boot script tells the agent on the kernel command
// line: rackboot.api=URL (the server's base URL), rackboot.node=ID and
// rackboot.boot=SECRET (this boot's secret, which the lookup shows).
type Cmdline struct {
	API        string // the API base, ending in /api/v1
	Node       string
	BootSecret string
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
		}
	}
	if c.API == "" {
		return c, fmt.Errorf("kernel command line: no rackboot.api=URL")
	}
	u, err := url.Parse(c.API)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return c, fmt.Errorf("kernel command line: rackboot.api=%q is not an http(s) URL", c.API)
	}
	u.Path = strings.TrimRight(u.Path, "/")
	if !strings.HasSuffix(u.Path, "/api/v1") {
		u.Path += "/api/v1"
	}
	c.API = u.String()
	return c, nil
}
