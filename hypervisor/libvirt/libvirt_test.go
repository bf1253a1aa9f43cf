package libvirt

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	lv "github.com/digitalocean/go-libvirt"
	"github.com/google/go-cmp/cmp"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

func TestParseURI(t *testing.T) {
	for _, tc := range []struct {
		uri  string
		want target
		err  string // part of the error; "" for success
	}{
		{uri: "qemu+unix:///system", want: target{transport: transportUnix, socket: DefaultSocket}},
		{uri: "qemu:///system", want: target{transport: transportUnix, socket: DefaultSocket}},
		{uri: "qemu+unix:///system?socket=/tmp/x/libvirt-sock", want: target{transport: transportUnix, socket: "/tmp/x/libvirt-sock"}},
		{uri: "qemu+tcp://hv1.example.net/system", want: target{transport: transportTCP, host: "hv1.example.net", addr: "hv1.example.net:16509"}},
		{uri: "qemu+tcp://10.0.0.5:1234/system", want: target{transport: transportTCP, host: "10.0.0.5", addr: "10.0.0.5:1234"}},
		{uri: "qemu+tls://hv1/system", want: target{transport: transportTLS, host: "hv1", addr: "hv1:16514"}},
		{uri: "qemu+tls://[2001:db8::5]/system", want: target{transport: transportTLS, host: "2001:db8::5", addr: "[2001:db8::5]:16514"}},
		{uri: "qemu+ssh://root@hv1/system", want: target{transport: transportSSH, host: "hv1", addr: "hv1:22", user: "root", socket: DefaultSocket}},
		{uri: "qemu+ssh://ops@hv1:2222/system?socket=/run/libvirt/virtqemud-sock", want: target{transport: transportSSH, host: "hv1", addr: "hv1:2222", user: "ops", socket: "/run/libvirt/virtqemud-sock"}},

		{uri: "xen+tcp://hv1/system", err: `driver "xen" is not supported`},
		{uri: "qemu+libssh2://root@hv1/system", err: `transport "libssh2" is not supported`},
		{uri: "qemu+ext://hv1/system", err: `transport "ext" is not supported`},
		{uri: "qemu+tcp:///system", err: "qemu+tcp needs a host"},
		{uri: "qemu+tls:///system", err: "qemu+tls needs a host"},
		{uri: "qemu+ssh://root@/system", err: "qemu+ssh needs a host"},
		{uri: "qemu+ssh://hv1/system", err: "qemu+ssh needs a user"},
		{uri: "qemu+ssh://0@]/system", err: `host "]" is neither`},
		{uri: "qemu+tcp://hv!1/system", err: `host "hv!1" is neither`},
		{uri: "qemu+ssh://root:secret@hv1/system", err: "passwords in the uri are refused"},
		{uri: "qemu+tcp://root@hv1/system", err: "a user is only meaningful for qemu+ssh"},
		{uri: "qemu+unix://hv1/system", err: "qemu+unix is local"},
		{uri: "qemu://hv1/system", err: "a remote host needs a transport"},
		{uri: "qemu+tcp://hv1/session", err: "only /system"},
		{uri: "qemu+tcp://hv1/", err: `path "/" is not supported`},
		{uri: "qemu+tcp://hv1", err: `path "" is not supported`},
		{uri: "qemu+tcp://hv1/system/", err: `path "/system/" is not supported`},
		{uri: "qemu+tls://hv1/system?no_verify=1", err: `parameter "no_verify" is not supported with qemu+tls`},
		{uri: "qemu+tcp://hv1/system?socket=/x", err: `parameter "socket" is not supported with qemu+tcp`},
		{uri: "qemu+unix:///system?socket=relative", err: "not a clean absolute path"},
		{uri: "qemu+unix:///system?socket=/a/../b", err: "not a clean absolute path"},
		{uri: "qemu+unix:///system?socket=/a&socket=/b", err: "given 2 times"},
		{uri: "qemu+unix:///system#x", err: "fragment"},
		{uri: "qemu:system", err: "not of the form"},
		{uri: "", err: `driver "" is not supported`},
	} {
		t.Run(tc.uri, func(t *testing.T) {
			got, err := parseURI(tc.uri)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tc.want, got, cmp.AllowUnexported(target{})); d != "" {
				t.Errorf("target (-want +got):\n%s", d)
			}
		})
	}
}

// FuzzParseURI checks that what parseURI accepts is complete: a remote
// transport has a host and address, a socket is absolute.
func FuzzParseURI(f *testing.F) {
	for _, s := range []string{
		"qemu+unix:///system?socket=/run/x", "qemu:///system", "qemu+tcp://h:1/system",
		"qemu+tls://[::1]/system", "qemu+ssh://u@h:2/system?socket=/s", "qemu+ssh://u@[fe80::1%25eth0]/system",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tg, err := parseURI(s)
		if err != nil {
			return
		}
		switch tg.transport {
		case transportUnix:
			if !strings.HasPrefix(tg.socket, "/") || tg.host != "" || tg.addr != "" {
				t.Fatalf("%q: %+v", s, tg)
			}
		case transportTCP, transportTLS, transportSSH:
			if tg.host == "" || tg.addr == "" || (tg.transport == transportSSH) != (tg.user != "" && strings.HasPrefix(tg.socket, "/")) {
				t.Fatalf("%q: %+v", s, tg)
			}
			if _, _, err := net.SplitHostPort(tg.addr); err != nil {
				t.Fatalf("%q: address %q: %v", s, tg.addr, err)
			}
		default:
			t.Fatalf("%q: transport %q", s, tg.transport)
		}
	})
}

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		code     lv.ErrorNumber
		notFound bool
		exists   bool
	}{
		{code: lv.ErrNoDomain, notFound: true},
		{code: lv.ErrNoStoragePool, notFound: true},
		{code: lv.ErrNoStorageVol, notFound: true},
		{code: lv.ErrStorageVolExist, exists: true},
		{code: lv.ErrDomExist, exists: true},
		{code: lv.ErrOperationInvalid},
	} {
		err := wrap("start", "vm1", lv.Error{Code: uint32(tc.code), Message: "from the daemon"})
		if errors.Is(err, ErrNotFound) != tc.notFound || errors.Is(err, ErrExists) != tc.exists {
			t.Errorf("code %d: %v: not found %v, exists %v", tc.code, err, errors.Is(err, ErrNotFound), errors.Is(err, ErrExists))
		}
		var le lv.Error
		if !errors.As(err, &le) || le.Code != uint32(tc.code) {
			t.Errorf("code %d: the daemon's error is not reachable from %v", tc.code, err)
		}
		if err.Error() != "start vm1: from the daemon" {
			t.Errorf("code %d: message %q", tc.code, err)
		}
	}
	if wrap("start", "vm1", nil) != nil {
		t.Error("wrap(nil) is not nil")
	}
}

func TestCheckVolumeName(t *testing.T) {
	for _, name := range []string{"", ".", "..", "a/b", "../x", "x\x00"} {
		if checkVolumeName(name) == nil {
			t.Errorf("%q accepted", name)
		}
	}
	for _, name := range []string{"vm1.raw", "vm-1_disk0", ".hidden"} {
		if err := checkVolumeName(name); err != nil {
			t.Errorf("%q: %v", name, err)
		}
	}
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// exercise checks a connection to the fake daemon end to end.
func exercise(t *testing.T, c *Conn) {
	t.Helper()
	ctx := testContext(t)
	caps, err := c.Capabilities(ctx)
	if err != nil || caps != fakeCapabilities {
		t.Fatalf("capabilities: %q, %v", caps, err)
	}
	s, err := c.State(ctx, "vm1")
	if err != nil || s != StateRunning {
		t.Fatalf("state: %q, %v", s, err)
	}
	_, err = c.State(ctx, "gone")
	if !errors.Is(err, ErrNotFound) || !strings.HasPrefix(err.Error(), "state of gone: Domain not found") {
		t.Fatalf("state of a missing domain: %v", err)
	}
	if err := c.Destroy(ctx, "gone"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("destroy of a missing domain: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Done not closed after Close")
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
}

func unixListener(t *testing.T) (net.Listener, string) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "sock")
	l, err := net.Listen("unix", p)
	if err != nil {
		t.Fatal(err)
	}
	return l, p
}

func tcpListener(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestDialUnix(t *testing.T) {
	l, p := unixListener(t)
	(&fakeDaemon{}).serve(t, l)
	c, err := Dial(testContext(t), "qemu+unix:///system?socket="+p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	exercise(t, c)
}

func TestDialTCP(t *testing.T) {
	l := tcpListener(t)
	(&fakeDaemon{}).serve(t, l)
	c, err := Dial(testContext(t), "qemu+tcp://"+l.Addr().String()+"/system", Options{})
	if err != nil {
		t.Fatal(err)
	}
	exercise(t, c)
}

func TestDialHonoursContext(t *testing.T) {
	l := tcpListener(t)
	(&fakeDaemon{silent: true}).serve(t, l)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := Dial(ctx, "qemu+tcp://"+l.Addr().String()+"/system", Options{})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("dial to a daemon that never answers: %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("dial took %v past a 200ms deadline", d)
	}
}

func TestCallHonoursContext(t *testing.T) {
	l := tcpListener(t)
	(&fakeDaemon{}).serve(t, l)
	c, err := Dial(testContext(t), "qemu+tcp://"+l.Addr().String()+"/system", Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.State(ctx, "vm1"); !errors.Is(err, context.Canceled) {
		t.Fatalf("state with a cancelled context: %v", err)
	}
}

// pki is a CA with a server certificate for 127.0.0.1 and a client
// certificate.
type pki struct {
	ca             *x509.Certificate
	pool           *x509.CertPool
	server, client tls.Certificate
}

func newPKI(t *testing.T) pki {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "rackboot test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	leaf := func(serial int64, usage x509.ExtKeyUsage, ips []net.IP) tls.Certificate {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: "leaf"},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(time.Hour),
			// libvirtd (GnuTLS) also wants key encipherment, whatever the key.
			KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
			ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: ips,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	}
	p := pki{ca: ca, pool: x509.NewCertPool()}
	p.pool.AddCert(ca)
	p.server = leaf(2, x509.ExtKeyUsageServerAuth, []net.IP{net.IPv4(127, 0, 0, 1)})
	p.client = leaf(3, x509.ExtKeyUsageClientAuth, nil)
	return p
}

func TestDialTLS(t *testing.T) {
	p := newPKI(t)
	l := tls.NewListener(tcpListener(t), &tls.Config{
		Certificates: []tls.Certificate{p.server},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    p.pool,
	})
	(&fakeDaemon{tlsVerdict: 1}).serve(t, l)
	uri := "qemu+tls://" + l.Addr().String() + "/system"

	c, err := Dial(testContext(t), uri, Options{TLS: &tls.Config{RootCAs: p.pool, Certificates: []tls.Certificate{p.client}}})
	if err != nil {
		t.Fatal(err)
	}
	exercise(t, c)

	// The certificate names 127.0.0.1 only: the URI's host is what it is
	// checked against.
	_, port, _ := net.SplitHostPort(l.Addr().String())
	_, err = Dial(testContext(t), "qemu+tls://localhost:"+port+"/system", Options{TLS: &tls.Config{RootCAs: p.pool, Certificates: []tls.Certificate{p.client}}})
	if err == nil || !strings.Contains(err.Error(), "wanted to match localhost") {
		t.Fatalf("dial by another name of the host: %v", err)
	}

	// A daemon whose tls_allowed_dn_list leaves the client out.
	lr := tls.NewListener(tcpListener(t), &tls.Config{
		Certificates: []tls.Certificate{p.server},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    p.pool,
	})
	(&fakeDaemon{tlsVerdict: 2}).serve(t, lr)
	_, err = Dial(testContext(t), "qemu+tls://"+lr.Addr().String()+"/system", Options{TLS: &tls.Config{RootCAs: p.pool, Certificates: []tls.Certificate{p.client}}})
	if err == nil || !strings.Contains(err.Error(), "the daemon refused the client") {
		t.Fatalf("dial to a daemon refusing the client: %v", err)
	}

	other := newPKI(t)
	for _, tc := range []struct {
		name string
		opt  Options
		err  string
	}{
		{"unknown CA", Options{TLS: &tls.Config{RootCAs: other.pool, Certificates: []tls.Certificate{p.client}}}, "certificate signed by unknown authority"},
		{"no client certificate", Options{TLS: &tls.Config{RootCAs: p.pool}}, "remote error: tls: certificate required"},
		{"foreign client certificate", Options{TLS: &tls.Config{RootCAs: p.pool, Certificates: []tls.Certificate{other.client}}}, "remote error: tls: unknown certificate authority"},
		{"another server name", Options{TLS: &tls.Config{RootCAs: p.pool, Certificates: []tls.Certificate{p.client}, ServerName: "hv9"}}, "wanted to match hv9"},
		{"no TLS options", Options{}, "needs Options.TLS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Dial(testContext(t), uri, tc.opt)
			if err == nil {
				c.Close()
				t.Fatal("dial succeeded")
			}
			if !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("error %v, want one containing %q", err, tc.err)
			}
		})
	}
}

// sshServer is an SSH server on 127.0.0.1 that lets one key in and
// forwards direct-streamlocal channels to unix sockets, like OpenSSH's
// sshd with AllowStreamLocalForwarding.
type sshServer struct {
	addr    string
	hostKey ssh.Signer
	mu      sync.Mutex
	paths   []string // sockets asked for
}

func newSigner(t *testing.T) ssh.Signer {
	t.Helper()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func startSSHServer(t *testing.T, client ssh.PublicKey) *sshServer {
	t.Helper()
	s := &sshServer{hostKey: newSigner(t)}
	cfg := &ssh.ServerConfig{
		PublicKeyCallback: func(_ ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			if bytes.Equal(key.Marshal(), client.Marshal()) {
				return nil, nil
			}
			return nil, errors.New("key not authorized")
		},
	}
	cfg.AddHostKey(s.hostKey)
	l := tcpListener(t)
	s.addr = l.Addr().String()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []io.Closer
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			nc, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, nc)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.handle(nc, cfg, &mu, &conns)
			}()
		}
	}()
	return s
}

func (s *sshServer) handle(nc net.Conn, cfg *ssh.ServerConfig, mu *sync.Mutex, conns *[]io.Closer) {
	defer nc.Close()
	_, chans, reqs, err := ssh.NewServerConn(nc, cfg)
	if err != nil {
		return
	}
	go ssh.DiscardRequests(reqs)
	for nch := range chans {
		if nch.ChannelType() != "direct-streamlocal@openssh.com" {
			nch.Reject(ssh.UnknownChannelType, "only streamlocal")
			continue
		}
		var req struct {
			SocketPath string
			Reserved0  string
			Reserved1  uint32
		}
		if err := ssh.Unmarshal(nch.ExtraData(), &req); err != nil {
			nch.Reject(ssh.ConnectionFailed, err.Error())
			continue
		}
		s.mu.Lock()
		s.paths = append(s.paths, req.SocketPath)
		s.mu.Unlock()
		uc, err := net.Dial("unix", req.SocketPath)
		if err != nil {
			nch.Reject(ssh.ConnectionFailed, err.Error())
			continue
		}
		ch, creqs, err := nch.Accept()
		if err != nil {
			uc.Close()
			continue
		}
		mu.Lock()
		*conns = append(*conns, uc)
		mu.Unlock()
		go ssh.DiscardRequests(creqs)
		go func() { io.Copy(uc, ch); uc.Close() }()
		go func() { io.Copy(ch, uc); ch.Close() }()
	}
}

func (s *sshServer) uri(socket string) string {
	return "qemu+ssh://ops@" + s.addr + "/system?socket=" + socket
}

func TestSSHTunnel(t *testing.T) {
	// A real unix listener that echoes stands in for the daemon.
	l, p := unixListener(t)
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	key := newSigner(t)
	srv := startSSHServer(t, key.PublicKey())
	tg, err := parseURI(srv.uri(p))
	if err != nil {
		t.Fatal(err)
	}
	ctx := testContext(t)
	lk, err := newLink(ctx, tg, Options{SSHKey: key, SSHHostKey: srv.hostKey.PublicKey()})
	if err != nil {
		t.Fatal(err)
	}
	defer lk.close()
	for i := range 2 {
		c, err := lk.open(ctx)
		if err != nil {
			t.Fatalf("channel %d: %v", i, err)
		}
		msg := []byte("through the tunnel")
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("echo %q, %v", got, err)
		}
		c.Close()
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if d := cmp.Diff([]string{p, p}, srv.paths); d != "" {
		t.Errorf("sockets asked for (-want +got):\n%s", d)
	}
}

func TestDialSSH(t *testing.T) {
	l, p := unixListener(t)
	(&fakeDaemon{}).serve(t, l)
	key := newSigner(t)
	srv := startSSHServer(t, key.PublicKey())
	host, port, _ := net.SplitHostPort(srv.addr)
	hashed := knownhosts.HashHostname(knownhosts.Normalize(srv.addr))
	for name, opt := range map[string]Options{
		"pinned key":        {SSHKey: key, SSHHostKey: srv.hostKey.PublicKey()},
		"known_hosts":       {SSHKey: key, SSHKnownHosts: []byte("# hypervisors\n" + knownhosts.Line([]string{"[" + host + "]:" + port}, srv.hostKey.PublicKey()) + "\n")},
		"hashed known_host": {SSHKey: key, SSHKnownHosts: []byte(knownhosts.Line([]string{hashed}, srv.hostKey.PublicKey()))},
	} {
		t.Run(name, func(t *testing.T) {
			c, err := Dial(testContext(t), srv.uri(p), opt)
			if err != nil {
				t.Fatal(err)
			}
			exercise(t, c)
		})
	}
}

func TestSSHRefusals(t *testing.T) {
	l, p := unixListener(t)
	(&fakeDaemon{}).serve(t, l)
	key := newSigner(t)
	srv := startSSHServer(t, key.PublicKey())
	host, port, _ := net.SplitHostPort(srv.addr)
	stranger := newSigner(t).PublicKey()
	for _, tc := range []struct {
		name    string
		opt     Options
		unknown bool // refused as ErrUnknownHostKey
		err     string
	}{
		{name: "other pinned key", opt: Options{SSHKey: key, SSHHostKey: stranger}, unknown: true},
		{name: "known_hosts with another key", opt: Options{SSHKey: key, SSHKnownHosts: []byte(knownhosts.Line([]string{"[" + host + "]:" + port}, stranger))}, unknown: true},
		// Port 22's entry does not vouch for the server on another port.
		{name: "known_hosts for another port", opt: Options{SSHKey: key, SSHKnownHosts: []byte(knownhosts.Line([]string{host}, srv.hostKey.PublicKey()))}, unknown: true},
		{name: "known_hosts for another host", opt: Options{SSHKey: key, SSHKnownHosts: []byte(knownhosts.Line([]string{"[hv9]:" + port}, srv.hostKey.PublicKey()))}, unknown: true},
		{name: "wildcard", opt: Options{SSHKey: key, SSHKnownHosts: []byte(knownhosts.Line([]string{"*"}, srv.hostKey.PublicKey()))}, err: "pattern"},
		{name: "no host key", opt: Options{SSHKey: key}, err: "needs the host's key"},
		{name: "no client key", opt: Options{SSHHostKey: srv.hostKey.PublicKey()}, err: "needs Options.SSHKey"},
		{name: "client key not authorized", opt: Options{SSHKey: newSigner(t), SSHHostKey: srv.hostKey.PublicKey()}, err: "unable to authenticate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Dial(testContext(t), srv.uri(p), tc.opt)
			if err == nil {
				c.Close()
				t.Fatal("dial succeeded")
			}
			if errors.Is(err, ErrUnknownHostKey) != tc.unknown || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("error %v; want unknown host key %v, containing %q", err, tc.unknown, tc.err)
			}
		})
	}
	// A socket the server cannot reach fails the dial, not the SSH login.
	_, err := Dial(testContext(t), srv.uri(filepath.Join(t.TempDir(), "none")), Options{SSHKey: key, SSHHostKey: srv.hostKey.PublicKey()})
	if err == nil || !strings.Contains(err.Error(), "socket") {
		t.Fatalf("dial to a missing remote socket: %v", err)
	}
}

// consoleWriter hands each write to the test.
type consoleWriter chan string

func (w consoleWriter) Write(p []byte) (int, error) {
	w <- string(p)
	return len(p), nil
}

func TestConsole(t *testing.T) {
	l, p := unixListener(t)
	(&fakeDaemon{}).serve(t, l)
	c, err := Dial(testContext(t), "qemu+unix:///system?socket="+p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	ctx, cancel := context.WithCancel(testContext(t))
	w := make(consoleWriter, 4)
	done := make(chan error, 1)
	go func() { done <- c.Console(ctx, "vm1", w) }()
	select {
	case got := <-w:
		if got != fakeConsole {
			t.Fatalf("console %q, want %q", got, fakeConsole)
		}
	case err := <-done:
		t.Fatalf("console ended: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("no console output")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("console after cancel: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("console did not end with its context")
	}
	// The stream had its own connection.
	if s, err := c.State(testContext(t), "vm1"); err != nil || s != StateRunning {
		t.Fatalf("state after console: %q, %v", s, err)
	}
	if err := c.Console(testContext(t), "gone", w); !errors.Is(err, ErrNotFound) {
		t.Fatalf("console of a missing domain: %v", err)
	}
}
