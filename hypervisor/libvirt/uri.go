package libvirt

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"path"
	"strings"
)

// DefaultSocket is where a libvirt daemon of a Debian, Ubuntu or Red Hat
// system listens for local read-write clients.
const DefaultSocket = "/var/run/libvirt/libvirt-sock"

// Default ports of libvirt's remote transports.
const (
	DefaultTCPPort = "16509"
	DefaultTLSPort = "16514"
	DefaultSSHPort = "22"
)

// transport is how a connection reaches the daemon.
type transport string

const (
	transportUnix transport = "unix"
	transportTCP  transport = "tcp"
	transportTLS  transport = "tls"
	transportSSH  transport = "ssh"
)

// target is a parsed connection URI: where the daemon is and how to reach it.
type target struct {
	transport transport
	// host is the URI's host name or address, without brackets or port:
	// TLS checks the daemon's certificate against it.
	host string
	// addr is host:port for tcp, tls and ssh.
	addr string
	// user logs into the SSH server.
	user string
	// socket is the daemon's unix socket, on this machine for unix and
	// on the hypervisor for ssh.
	socket string
}

// parseURI accepts the libvirt URIs of the system QEMU driver that need
// nothing but Go to reach: a local unix socket, plain TCP, TLS and SSH.
// Everything else is refused rather than half-honoured, so that a URI
// option libvirt's own client knows (no_verify, pkipath, command) never
// silently does nothing.
func parseURI(s string) (target, error) {
	u, err := url.Parse(s)
	if err != nil {
		return target{}, fmt.Errorf("libvirt uri %q: %w", s, err)
	}
	fail := func(format string, args ...any) (target, error) {
		return target{}, fmt.Errorf("libvirt uri %q: %s", s, fmt.Sprintf(format, args...))
	}
	if u.Opaque != "" {
		return fail("not of the form driver[+transport]://[user@][host][:port]/system")
	}
	driver, tr, ok := strings.Cut(u.Scheme, "+")
	if !ok {
		// libvirt's own meaning of a URI without a transport: the local
		// daemon if no host is given.
		tr = string(transportUnix)
		if u.Host != "" {
			return fail("a remote host needs a transport: qemu+tcp, qemu+tls or qemu+ssh")
		}
	}
	if driver != "qemu" {
		return fail("driver %q is not supported: only qemu", driver)
	}
	if u.Path != "/system" {
		if u.Path == "/session" {
			return fail("per-user session daemons are not supported: only /system")
		}
		return fail("path %q is not supported: only /system", u.Path)
	}
	if u.Fragment != "" {
		return fail("a fragment is not allowed")
	}
	t := target{transport: transport(tr)}
	allowed := map[string]bool{}
	switch t.transport {
	case transportUnix:
		if u.Host != "" || u.User != nil {
			return fail("qemu+unix is local: no user or host allowed")
		}
		t.socket = DefaultSocket
		allowed["socket"] = true
	case transportTCP, transportTLS, transportSSH:
		t.host = u.Hostname()
		if t.host == "" {
			return fail("qemu+%s needs a host", tr)
		}
		if !validHost(t.host) {
			return fail("host %q is neither an IP address nor a host name", t.host)
		}
		port := u.Port()
		if port == "" {
			port = map[transport]string{transportTCP: DefaultTCPPort, transportTLS: DefaultTLSPort, transportSSH: DefaultSSHPort}[t.transport]
		}
		t.addr = net.JoinHostPort(t.host, port)
		if t.transport == transportSSH {
			if u.User == nil || u.User.Username() == "" {
				return fail("qemu+ssh needs a user: qemu+ssh://USER@HOST/system")
			}
			if _, ok := u.User.Password(); ok {
				return fail("passwords in the uri are refused: qemu+ssh logs in with a key")
			}
			t.user = u.User.Username()
			t.socket = DefaultSocket
			allowed["socket"] = true
		} else if u.User != nil {
			return fail("a user is only meaningful for qemu+ssh")
		}
	default:
		return fail("transport %q is not supported: only unix, tcp, tls and ssh", tr)
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return fail("query: %v", err)
	}
	for k, v := range q {
		if !allowed[k] {
			return fail("parameter %q is not supported with qemu+%s", k, t.transport)
		}
		if len(v) != 1 {
			return fail("parameter %q given %d times", k, len(v))
		}
	}
	if v, ok := q["socket"]; ok {
		p := v[0]
		if !path.IsAbs(p) || path.Clean(p) != p {
			return fail("socket %q is not a clean absolute path", p)
		}
		t.socket = p
	}
	return t, nil
}

// validHost says whether h, a URI's host, is an IP address (an IPv6 one
// with its zone) or a DNS name: letters, digits, hyphens, underscores and
// dots. net/url takes more (a lone "]", say), which no dial can reach.
func validHost(h string) bool {
	if _, err := netip.ParseAddr(h); err == nil {
		return true
	}
	for _, r := range h {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return h != ""
}
