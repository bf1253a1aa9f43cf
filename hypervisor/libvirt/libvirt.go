// Package libvirt is rackboot's client of a hypervisor's libvirt daemon:
// it defines, starts, stops and removes QEMU domains, makes their disks in
// storage pools and streams their serial consoles. It speaks libvirt's RPC
// protocol directly (go-libvirt), so the appliance needs no libvirt C
// library and no cgo, and reaches a daemon over its local unix socket,
// plain TCP, TLS or SSH.
//
// The package takes domain XML as written by its caller (libvirtxml) and
// does not interpret it.
package libvirt

import (
	"context"
	"crypto/tls"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	lv "github.com/digitalocean/go-libvirt"
	"github.com/digitalocean/go-libvirt/socket/dialers"
	"github.com/google/uuid"
	"golang.org/x/crypto/ssh"
)

// ErrNotFound is matched (errors.Is) by errors about a domain, storage
// pool or volume the daemon does not have, so that removing one can be
// idempotent.
var ErrNotFound = errors.New("not found")

// ErrExists is matched by errors about creating a volume or domain whose
// name is taken.
var ErrExists = errors.New("already exists")

// Options carry what a transport needs beyond the URI. The zero value is
// enough for qemu+unix and qemu+tcp.
type Options struct {
	// TLS is the client side of qemu+tls: RootCAs holds the CA that signed
	// the daemon's certificate and Certificates the client certificate
	// the daemon's tls_allowed_dn_list checks. An empty ServerName is
	// taken from the URI's host.
	TLS *tls.Config

	// SSHKey logs into the hypervisor for qemu+ssh.
	SSHKey ssh.Signer
	// SSHHostKey is the one host key the SSH server may present. When it
	// is nil, the key must be listed for the URI's host (and port, if not
	// 22) in SSHKnownHosts, OpenSSH known_hosts lines. Any other key is
	// refused with ErrUnknownHostKey: nothing is learnt on first use.
	SSHHostKey    ssh.PublicKey
	SSHKnownHosts []byte
}

// Conn is a connection to one libvirt daemon's system QEMU driver. Its
// methods may be called concurrently.
//
// go-libvirt's calls take no context: when ctx ends first, a method
// returns ctx's error at once and stops waiting, and the daemon may still
// carry the operation out.
type Conn struct {
	link *link
	rpc  *lv.Libvirt
	raw  net.Conn

	closeOnce sync.Once
	closeErr  error
}

// closeGrace bounds how long Close waits for the daemon to acknowledge
// the end of the connection before cutting it.
const closeGrace = 5 * time.Second

// Dial connects to the daemon named by uri:
//
//	qemu+unix:///system[?socket=/path]   (also qemu:///system)
//	qemu+tcp://HOST[:16509]/system
//	qemu+tls://HOST[:16514]/system       (Options.TLS)
//	qemu+ssh://USER@HOST[:22]/system[?socket=/path]  (Options.SSHKey and a pinned host key)
//
// The socket defaults to DefaultSocket. ctx bounds dialing and the
// protocol handshake, not the life of the connection.
func Dial(ctx context.Context, uri string, opt Options) (*Conn, error) {
	t, err := parseURI(uri)
	if err != nil {
		return nil, err
	}
	lk, err := newLink(ctx, t, opt)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", uri, err)
	}
	rpc, raw, err := connect(ctx, lk)
	if err != nil {
		lk.close()
		return nil, fmt.Errorf("dial %s: %w", uri, err)
	}
	return &Conn{link: lk, rpc: rpc, raw: raw}, nil
}

// connect opens one RPC connection over lk and opens the QEMU driver on
// it. The daemon's own name for its driver is sent whatever the
// transport, since the daemon is local to itself.
func connect(ctx context.Context, lk *link) (*lv.Libvirt, net.Conn, error) {
	nc, err := lk.open(ctx)
	if err != nil {
		return nil, nil, err
	}
	raw := &recordingConn{Conn: nc}
	rpc := lv.NewWithDialer(dialers.NewAlreadyConnected(raw))
	stop := context.AfterFunc(ctx, func() { raw.Close() })
	err = rpc.ConnectToURI(lv.QEMUSystem)
	if !stop() {
		raw.Close()
		return nil, nil, ctx.Err()
	}
	if err != nil {
		raw.Close()
		// go-libvirt reports a lost connection as EINVAL or an
		// interrupted call; why it was lost (a TLS alert about the
		// client certificate, the daemon hanging up) is the read error.
		if rerr := raw.readErr(); rerr != nil {
			err = fmt.Errorf("connection lost: %w", rerr)
		}
		return nil, nil, fmt.Errorf("open qemu:///system: %w", err)
	}
	return rpc, raw, nil
}

// recordingConn keeps the first error a read returned.
type recordingConn struct {
	net.Conn
	mu  sync.Mutex
	err error
}

func (c *recordingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil {
		c.mu.Lock()
		if c.err == nil {
			c.err = err
		}
		c.mu.Unlock()
	}
	return n, err
}

func (c *recordingConn) readErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Done is closed when the connection to the daemon is lost or closed.
func (c *Conn) Done() <-chan struct{} { return c.rpc.Disconnected() }

// Close ends the connection, and the SSH session under it. Domains keep
// running. A Console still streaming has a connection of its own and goes
// on, unless it shares the SSH session, which ends it.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() {
		done := make(chan error, 1)
		go func() { done <- c.rpc.Disconnect() }()
		var err error
		select {
		case err = <-done:
		case <-time.After(closeGrace):
			c.raw.Close()
			err = <-done
		}
		c.raw.Close()
		if errors.Is(err, lv.ErrInterrupted) || errors.Is(err, net.ErrClosed) {
			err = nil
		}
		c.closeErr = errors.Join(err, c.link.close())
	})
	return c.closeErr
}

// do runs fn, one or more go-libvirt calls, and stops waiting for it when
// ctx ends.
func (c *Conn) do(ctx context.Context, fn func(l *lv.Libvirt) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- fn(c.rpc) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// daemonError is an error the daemon reported, matched by errors.Is
// against the sentinel its code stands for.
type daemonError struct {
	err  error
	kind error
}

func (e *daemonError) Error() string   { return e.err.Error() }
func (e *daemonError) Unwrap() []error { return []error{e.err, e.kind} }

func classify(err error) error {
	var le lv.Error
	if !errors.As(err, &le) {
		return err
	}
	switch lv.ErrorNumber(le.Code) {
	case lv.ErrNoDomain, lv.ErrNoStoragePool, lv.ErrNoStorageVol:
		return &daemonError{err, ErrNotFound}
	case lv.ErrDomExist, lv.ErrStorageVolExist:
		return &daemonError{err, ErrExists}
	}
	return err
}

// wrap says what was done to which object; err == nil stays nil.
func wrap(op, object string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s %s: %w", op, object, classify(err))
}

// Capabilities returns the daemon's capabilities XML: the host's CPU and
// the guest architectures and domain types (kvm, qemu) it can run.
func (c *Conn) Capabilities(ctx context.Context) (string, error) {
	var caps string
	err := c.do(ctx, func(l *lv.Libvirt) (err error) {
		caps, err = l.ConnectGetCapabilities()
		return err
	})
	if err != nil {
		return "", fmt.Errorf("capabilities: %w", classify(err))
	}
	return caps, nil
}

// Domain names a defined domain.
type Domain struct {
	Name string
	// UUID is in its canonical text form.
	UUID string
}

func domainOf(d lv.Domain) Domain {
	return Domain{Name: d.Name, UUID: uuid.UUID(d.UUID).String()}
}

// Define makes domainXML a persistent domain, or updates the definition
// of the domain with that name and UUID. The daemon validates the XML
// against its schema, so a typo is an error rather than an ignored
// element.
func (c *Conn) Define(ctx context.Context, domainXML string) (Domain, error) {
	var d lv.Domain
	err := c.do(ctx, func(l *lv.Libvirt) (err error) {
		d, err = l.DomainDefineXMLFlags(domainXML, lv.DomainDefineValidate)
		return err
	})
	if err != nil {
		return Domain{}, wrap("define", domainName(domainXML), err)
	}
	return domainOf(d), nil
}

// domainName reads the name of a domain XML for error messages only.
func domainName(domainXML string) string {
	var v struct {
		Name string `xml:"name"`
	}
	if xml.Unmarshal([]byte(domainXML), &v) != nil || v.Name == "" {
		return "domain"
	}
	return v.Name
}

// onDomain looks the domain up by name and runs fn on it.
func (c *Conn) onDomain(ctx context.Context, op, name string, fn func(l *lv.Libvirt, d lv.Domain) error) error {
	return wrap(op, name, c.do(ctx, func(l *lv.Libvirt) error {
		d, err := l.DomainLookupByName(name)
		if err != nil {
			return err
		}
		return fn(l, d)
	}))
}

// Start powers a defined domain on.
func (c *Conn) Start(ctx context.Context, name string) error {
	return c.onDomain(ctx, "start", name, func(l *lv.Libvirt, d lv.Domain) error {
		return l.DomainCreate(d)
	})
}

// Shutdown presses the domain's ACPI power button; the guest decides
// whether and when to power off.
func (c *Conn) Shutdown(ctx context.Context, name string) error {
	return c.onDomain(ctx, "shutdown", name, func(l *lv.Libvirt, d lv.Domain) error {
		return l.DomainShutdownFlags(d, lv.DomainShutdownAcpiPowerBtn)
	})
}

// Reboot asks the guest, through ACPI, to restart.
func (c *Conn) Reboot(ctx context.Context, name string) error {
	return c.onDomain(ctx, "reboot", name, func(l *lv.Libvirt, d lv.Domain) error {
		return l.DomainReboot(d, lv.DomainRebootAcpiPowerBtn)
	})
}

// Destroy powers the domain off at once, like pulling its plug.
func (c *Conn) Destroy(ctx context.Context, name string) error {
	return c.onDomain(ctx, "destroy", name, func(l *lv.Libvirt, d lv.Domain) error {
		return l.DomainDestroyFlags(d, lv.DomainDestroyDefault)
	})
}

// Undefine removes the domain's definition with its UEFI variable store,
// managed save image and snapshot and checkpoint metadata, any of which
// would otherwise make libvirt refuse. A running domain keeps running
// until it stops, and is then gone. Disks are not touched.
func (c *Conn) Undefine(ctx context.Context, name string) error {
	return c.onDomain(ctx, "undefine", name, func(l *lv.Libvirt, d lv.Domain) error {
		return l.DomainUndefineFlags(d, lv.DomainUndefineNvram|lv.DomainUndefineManagedSave|
			lv.DomainUndefineSnapshotsMetadata|lv.DomainUndefineCheckpointsMetadata)
	})
}

// State is a domain's state in virsh's words.
type State string

// The states libvirt reports.
const (
	StateNoState     State = "no state"
	StateRunning     State = "running"
	StateBlocked     State = "idle"
	StatePaused      State = "paused"
	StateShutdown    State = "in shutdown"
	StateShutoff     State = "shut off"
	StateCrashed     State = "crashed"
	StatePMSuspended State = "pmsuspended"
)

func stateOf(s lv.DomainState) (State, bool) {
	switch s {
	case lv.DomainNostate:
		return StateNoState, true
	case lv.DomainRunning:
		return StateRunning, true
	case lv.DomainBlocked:
		return StateBlocked, true
	case lv.DomainPaused:
		return StatePaused, true
	case lv.DomainShutdown:
		return StateShutdown, true
	case lv.DomainShutoff:
		return StateShutoff, true
	case lv.DomainCrashed:
		return StateCrashed, true
	case lv.DomainPmsuspended:
		return StatePMSuspended, true
	}
	return "", false
}

// State reports whether the domain runs, is paused, shut off, and so on.
func (c *Conn) State(ctx context.Context, name string) (State, error) {
	var s State
	err := c.onDomain(ctx, "state of", name, func(l *lv.Libvirt, d lv.Domain) error {
		st, _, err := l.DomainGetState(d, 0)
		if err != nil {
			return err
		}
		var ok bool
		if s, ok = stateOf(lv.DomainState(st)); !ok {
			return fmt.Errorf("unknown state %d", st)
		}
		return nil
	})
	return s, err
}

// Domains lists the daemon's domains, running or not, by name.
func (c *Conn) Domains(ctx context.Context) ([]Domain, error) {
	var ds []lv.Domain
	err := c.do(ctx, func(l *lv.Libvirt) (err error) {
		ds, _, err = l.ConnectListAllDomains(1, lv.ConnectListDomainsActive|lv.ConnectListDomainsInactive)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list domains: %w", classify(err))
	}
	out := make([]Domain, 0, len(ds))
	for _, d := range ds {
		out = append(out, domainOf(d))
	}
	slices.SortFunc(out, func(a, b Domain) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// poolXML is the part of a storage pool's XML that EnsurePool writes and
// checks.
type poolXML struct {
	XMLName xml.Name `xml:"pool"`
	Type    string   `xml:"type,attr"`
	Name    string   `xml:"name"`
	Path    string   `xml:"target>path"`
}

// EnsurePool makes sure a directory pool name exists at dir, is built and
// active, and starts with the daemon. A pool of that name elsewhere, or
// of another type, is an error rather than redefined. Sites with real
// storage define their pools themselves; this is for single hosts and
// tests.
func (c *Conn) EnsurePool(ctx context.Context, name, dir string) error {
	if !path.IsAbs(dir) || path.Clean(dir) != dir {
		return fmt.Errorf("ensure pool %s: directory %q is not a clean absolute path", name, dir)
	}
	return wrap("ensure pool", name, c.do(ctx, func(l *lv.Libvirt) error {
		p, err := l.StoragePoolLookupByName(name)
		if isCode(err, lv.ErrNoStoragePool) {
			def, err := xml.Marshal(poolXML{Type: "dir", Name: name, Path: dir})
			if err != nil {
				return err
			}
			if p, err = l.StoragePoolDefineXML(string(def), 0); err != nil {
				return err
			}
			if err := l.StoragePoolBuild(p, lv.StoragePoolBuildNew); err != nil {
				return err
			}
			if err := l.StoragePoolSetAutostart(p, 1); err != nil {
				return err
			}
		} else if err != nil {
			return err
		} else {
			desc, err := l.StoragePoolGetXMLDesc(p, 0)
			if err != nil {
				return err
			}
			var have poolXML
			if err := xml.Unmarshal([]byte(desc), &have); err != nil {
				return fmt.Errorf("pool XML: %w", err)
			}
			if have.Type != "dir" || have.Path != dir {
				return fmt.Errorf("exists as a %s pool at %s, not a dir pool at %s", have.Type, have.Path, dir)
			}
		}
		active, err := l.StoragePoolIsActive(p)
		if err != nil || active == 1 {
			return err
		}
		return l.StoragePoolCreate(p, 0)
	}))
}

func isCode(err error, code lv.ErrorNumber) bool {
	var le lv.Error
	return errors.As(err, &le) && lv.ErrorNumber(le.Code) == code
}

// volumeXML is a raw volume; no allocation makes it a sparse file in a
// directory pool.
type volumeXML struct {
	XMLName    xml.Name `xml:"volume"`
	Name       string   `xml:"name"`
	Capacity   sizeXML  `xml:"capacity"`
	Allocation sizeXML  `xml:"allocation"`
	Format     struct {
		Type string `xml:"type,attr"`
	} `xml:"target>format"`
}

type sizeXML struct {
	Unit  string `xml:"unit,attr"`
	Bytes int64  `xml:",chardata"`
}

// CreateVolume makes a raw volume of the given size in pool and returns
// its path on the hypervisor, for the domain XML's disk source. A taken
// name is refused (ErrExists), also when the file was made behind the
// daemon's back: nothing is overwritten.
func (c *Conn) CreateVolume(ctx context.Context, pool, name string, bytes int64) (string, error) {
	object := pool + "/" + name
	if err := checkVolumeName(name); err != nil {
		return "", fmt.Errorf("create volume %s: %w", object, err)
	}
	if bytes <= 0 {
		return "", fmt.Errorf("create volume %s: size %d is not positive", object, bytes)
	}
	v := volumeXML{Name: name, Capacity: sizeXML{"bytes", bytes}, Allocation: sizeXML{"bytes", 0}}
	v.Format.Type = "raw"
	def, err := xml.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("create volume %s: %w", object, err)
	}
	var p string
	err = c.do(ctx, func(l *lv.Libvirt) error {
		sp, err := l.StoragePoolLookupByName(pool)
		if err != nil {
			return err
		}
		// A refresh lets the daemon see files it did not make, so that
		// their names count as taken.
		if err := l.StoragePoolRefresh(sp, 0); err != nil {
			return err
		}
		vol, err := l.StorageVolCreateXML(sp, string(def), 0)
		if err != nil {
			return err
		}
		p, err = l.StorageVolGetPath(vol)
		return err
	})
	if err != nil {
		return "", wrap("create volume", object, err)
	}
	return p, nil
}

// checkVolumeName keeps a volume a plain file of its pool's directory.
func checkVolumeName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return fmt.Errorf("name %q is not a plain file name", name)
	}
	return nil
}

// DeleteVolume removes a volume and its data.
func (c *Conn) DeleteVolume(ctx context.Context, pool, name string) error {
	return wrap("delete volume", pool+"/"+name, c.do(ctx, func(l *lv.Libvirt) error {
		sp, err := l.StoragePoolLookupByName(pool)
		if err != nil {
			return err
		}
		vol, err := l.StorageVolLookupByName(sp, name)
		if err != nil {
			return err
		}
		return l.StorageVolDelete(vol, lv.StorageVolDeleteNormal)
	}))
}

// Console copies what the running domain writes to its first serial
// console to w until ctx ends (then it returns nil) or the daemon closes
// the stream, as it does when the domain stops (nil as well). An earlier
// reader of the same console is cut off, since a session left over from a
// crashed client would otherwise keep the console for good. The stream
// has its own connection, so cancelling it leaves c in use.
func (c *Conn) Console(ctx context.Context, name string, w io.Writer) error {
	rpc, raw, err := connect(ctx, c.link)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("console %s: %w", name, err)
	}
	defer raw.Close()
	// go-libvirt has no way to abort a stream but closing its connection.
	stop := context.AfterFunc(ctx, func() { raw.Close() })
	defer stop()
	d, err := rpc.DomainLookupByName(name)
	if err == nil {
		err = rpc.DomainOpenConsole(d, nil, w, uint32(lv.DomainConsoleForce))
	}
	if ctx.Err() != nil {
		return nil
	}
	return wrap("console", name, err)
}
