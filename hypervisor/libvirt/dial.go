package libvirt

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// link opens connections to one daemon. Each libvirt connection, and each
// console stream, is its own net.Conn; over SSH they share one SSH session.
type link struct {
	open  func(ctx context.Context) (net.Conn, error)
	close func() error
}

func newLink(ctx context.Context, t target, opt Options) (*link, error) {
	var d net.Dialer
	switch t.transport {
	case transportUnix:
		return &link{open: func(ctx context.Context) (net.Conn, error) {
			return d.DialContext(ctx, "unix", t.socket)
		}, close: func() error { return nil }}, nil
	case transportTCP:
		return &link{open: func(ctx context.Context) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", t.addr)
		}, close: func() error { return nil }}, nil
	case transportTLS:
		if opt.TLS == nil {
			return nil, errors.New("qemu+tls needs Options.TLS with the CA and the client certificate")
		}
		cfg := opt.TLS.Clone()
		if cfg.ServerName == "" {
			cfg.ServerName = t.host
		}
		td := tls.Dialer{NetDialer: &d, Config: cfg}
		return &link{open: func(ctx context.Context) (net.Conn, error) {
			c, err := td.DialContext(ctx, "tcp", t.addr)
			if err != nil {
				return nil, err
			}
			if err := readTLSVerdict(ctx, c); err != nil {
				c.Close()
				return nil, err
			}
			return c, nil
		}, close: func() error { return nil }}, nil
	case transportSSH:
		return dialSSH(ctx, t, opt)
	}
	return nil, fmt.Errorf("transport %q is not supported", t.transport)
}

// readTLSVerdict reads the byte a libvirt daemon sends after the TLS
// handshake: 1 when it accepts the client's certificate and address (its
// tls_allowed_dn_list), anything else when it refuses them.
func readTLSVerdict(ctx context.Context, c net.Conn) error {
	stop := context.AfterFunc(ctx, func() { c.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	if dl, ok := ctx.Deadline(); ok {
		c.SetReadDeadline(dl)
	}
	var b [1]byte
	_, err := io.ReadFull(c, b[:])
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err != nil {
		return fmt.Errorf("tls: reading the daemon's verdict on the client: %w", err)
	}
	if b[0] != 1 {
		return errors.New("tls: the daemon refused the client certificate or address")
	}
	return c.SetReadDeadline(time.Time{})
}

// dialSSH logs into the hypervisor and tunnels each connection to the
// daemon's unix socket through OpenSSH's direct-streamlocal channel, so
// the hypervisor needs sshd and nothing else (no netcat, no virt-ssh-helper).
func dialSSH(ctx context.Context, t target, opt Options) (*link, error) {
	if opt.SSHKey == nil {
		return nil, errors.New("qemu+ssh needs Options.SSHKey")
	}
	check, err := hostKeyCallback(opt)
	if err != nil {
		return nil, err
	}
	cfg := &ssh.ClientConfig{
		User:            t.user,
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(opt.SSHKey)},
		HostKeyCallback: check,
	}
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", t.addr)
	if err != nil {
		return nil, fmt.Errorf("ssh %s: %w", t.addr, err)
	}
	// The SSH handshake has no context of its own: closing the socket is
	// what ends it when ctx does.
	stop := context.AfterFunc(ctx, func() { raw.Close() })
	sc, chans, reqs, err := ssh.NewClientConn(raw, t.addr, cfg)
	if !stop() {
		if err == nil {
			sc.Close()
		}
		return nil, fmt.Errorf("ssh %s: %w", t.addr, ctx.Err())
	}
	if err != nil {
		raw.Close()
		return nil, fmt.Errorf("ssh %s: %w", t.addr, err)
	}
	client := ssh.NewClient(sc, chans, reqs)
	var once sync.Once
	var closeErr error
	return &link{
		open: func(ctx context.Context) (net.Conn, error) {
			// Opening a channel waits for the server's answer with no
			// deadline of its own; a late answer is closed unused rather
			// than cutting off the SSH connection the others share.
			type opened struct {
				c   net.Conn
				err error
			}
			ch := make(chan opened, 1)
			go func() {
				c, err := client.Dial("unix", t.socket)
				ch <- opened{c, err}
			}()
			select {
			case o := <-ch:
				if o.err != nil {
					return nil, fmt.Errorf("ssh %s: socket %s: %w", t.addr, t.socket, o.err)
				}
				return o.c, nil
			case <-ctx.Done():
				go func() {
					if o := <-ch; o.c != nil {
						o.c.Close()
					}
				}()
				return nil, fmt.Errorf("ssh %s: socket %s: %w", t.addr, t.socket, ctx.Err())
			}
		},
		close: func() error {
			once.Do(func() {
				closeErr = client.Close()
				if errors.Is(closeErr, net.ErrClosed) {
					closeErr = nil
				}
			})
			return closeErr
		},
	}, nil
}

// ErrUnknownHostKey is returned when an SSH server presents a key that
// Options does not list for it.
var ErrUnknownHostKey = errors.New("ssh host key not known")

func hostKeyCallback(opt Options) (ssh.HostKeyCallback, error) {
	if opt.SSHHostKey != nil {
		want := opt.SSHHostKey.Marshal()
		return func(host string, _ net.Addr, key ssh.PublicKey) error {
			if bytes.Equal(key.Marshal(), want) {
				return nil
			}
			return fmt.Errorf("%s presented %s %s: %w", host, key.Type(), ssh.FingerprintSHA256(key), ErrUnknownHostKey)
		}, nil
	}
	if len(opt.SSHKnownHosts) == 0 {
		return nil, errors.New("qemu+ssh needs the host's key: Options.SSHHostKey or Options.SSHKnownHosts")
	}
	entries, err := parseKnownHosts(opt.SSHKnownHosts)
	if err != nil {
		return nil, err
	}
	return func(host string, _ net.Addr, key ssh.PublicKey) error {
		name := knownhosts.Normalize(host)
		got := key.Marshal()
		for _, e := range entries {
			if e.matches(name) && bytes.Equal(e.key.Marshal(), got) {
				return nil
			}
		}
		return fmt.Errorf("%s presented %s %s: %w", host, key.Type(), ssh.FingerprintSHA256(key), ErrUnknownHostKey)
	}, nil
}

type knownHost struct {
	hosts []string
	key   ssh.PublicKey
}

// parseKnownHosts reads OpenSSH known_hosts lines. Plain and hashed host
// names are understood; wildcard patterns, negations, @revoked and
// @cert-authority are refused, because treating them as plain names
// would pin less than the line says.
func parseKnownHosts(b []byte) ([]knownHost, error) {
	var out []knownHost
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		marker, hosts, key, _, _, err := ssh.ParseKnownHosts([]byte(line))
		if err != nil {
			return nil, fmt.Errorf("known_hosts line %d: %w", n, err)
		}
		if marker != "" {
			return nil, fmt.Errorf("known_hosts line %d: @%s is not supported", n, marker)
		}
		for _, h := range hosts {
			if strings.ContainsAny(h, "*?!") {
				return nil, fmt.Errorf("known_hosts line %d: pattern %q is not supported", n, h)
			}
		}
		out = append(out, knownHost{hosts: hosts, key: key})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("known_hosts: %w", err)
	}
	if len(out) == 0 {
		return nil, errors.New("known_hosts: no host keys")
	}
	return out, nil
}

// matches compares an entry with a host as knownhosts.Normalize writes it
// ("host" on port 22, "[host]:port" elsewhere).
func (k knownHost) matches(name string) bool {
	for _, h := range k.hosts {
		if salt, sum, ok := hashedHost(h); ok {
			m := hmac.New(sha1.New, salt)
			m.Write([]byte(name))
			if hmac.Equal(m.Sum(nil), sum) {
				return true
			}
			continue
		}
		if knownhosts.Normalize(h) == name {
			return true
		}
	}
	return false
}

// hashedHost splits OpenSSH's "|1|salt|hmac" form.
func hashedHost(h string) (salt, sum []byte, ok bool) {
	rest, found := strings.CutPrefix(h, "|1|")
	if !found {
		return nil, nil, false
	}
	s, m, found := strings.Cut(rest, "|")
	if !found {
		return nil, nil, false
	}
	salt, err1 := base64.StdEncoding.DecodeString(s)
	sum, err2 := base64.StdEncoding.DecodeString(m)
	if err1 != nil || err2 != nil {
		return nil, nil, false
	}
	return salt, sum, true
}
