// Package virttest is an in-memory libvirt daemon for the tests of what
// drives hypervisors: it keeps domains, volumes and their states, records
// every call, and fails the calls a test asks it to fail. It proves the
// callers' logic; a real libvirtd proves the wire (package libvirt's
// integration test and the end-to-end VM test).
package virttest

import (
	"context"
	"encoding/xml"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"

	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/hypervisor"
)

// Daemon is one fake libvirt daemon; its zero value is not ready, use New.
type Daemon struct {
	mu      sync.Mutex
	caps    string
	domains map[string]*Domain
	volumes map[string]int64 // "pool/name"
	calls   []string
	fail    map[string]error
	before  map[string]func()
	// Unreachable makes every dial fail.
	Unreachable bool
}

// Domain is a defined domain.
type Domain struct {
	XML   string
	State string
}

// New is a daemon whose host runs native under KVM and emulated under TCG.
func New(native, emulated []boot.Arch) *Daemon {
	return &Daemon{caps: Caps(native, emulated), domains: map[string]*Domain{}, volumes: map[string]int64{}, fail: map[string]error{}, before: map[string]func(){}}
}

// Caps writes a capabilities document as libvirt does, for these guests.
func Caps(native, emulated []boot.Arch) string {
	var b strings.Builder
	b.WriteString("<capabilities>\n  <host><uuid>00000000-0000-0000-0000-000000000001</uuid><cpu><arch>x86_64</arch></cpu></host>\n")
	for _, a := range append(slices.Clone(native), emulated...) {
		fmt.Fprintf(&b, "  <guest>\n    <os_type>hvm</os_type>\n    <arch name='%s'>\n      <wordsize>64</wordsize>\n      <emulator>/usr/bin/qemu-system-%s</emulator>\n      <domain type='qemu'/>\n", a, a)
		if slices.Contains(native, a) {
			b.WriteString("      <domain type='kvm'/>\n")
		}
		b.WriteString("    </arch>\n  </guest>\n")
	}
	b.WriteString("</capabilities>\n")
	return b.String()
}

// Fail makes every later call of op ("define", "start", "create-volume",
// ...) fail with err; nil heals it.
func (d *Daemon) Fail(op string, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err == nil {
		delete(d.fail, op)
		return
	}
	d.fail[op] = err
}

// Before runs f before every later call of a domain's op ("start",
// "destroy", ...), outside the daemon's lock: what the guest does meanwhile.
func (d *Daemon) Before(op string, f func()) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if f == nil {
		delete(d.before, op)
		return
	}
	d.before[op] = f
}

// PowerOff is the guest powering itself off.
func (d *Daemon) PowerOff(name string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if dom, ok := d.domains[name]; ok {
		dom.State = hypervisor.StateShutoff
	}
}

// Calls returns the calls made so far, as "op name".
func (d *Daemon) Calls() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.calls)
}

// Domain returns a defined domain.
func (d *Daemon) Domain(name string) (Domain, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	dom, ok := d.domains[name]
	if !ok {
		return Domain{}, false
	}
	return *dom, true
}

// Volumes lists the volumes as "pool/name".
func (d *Daemon) Volumes() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []string
	for v := range d.volumes {
		out = append(out, v)
	}
	slices.Sort(out)
	return out
}

// Dial is a hypervisor.Dialer to this daemon, whatever the URI.
func (d *Daemon) Dial(ctx context.Context, uri string) (hypervisor.Conn, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.Unreachable {
		return nil, fmt.Errorf("dial %s: connection refused", uri)
	}
	return &conn{d: d}, nil
}

type conn struct{ d *Daemon }

func (c *conn) call(op, name string) error {
	c.d.calls = append(c.d.calls, op+" "+name)
	return c.d.fail[op]
}

func gone(what string) error { return fmt.Errorf("%w: %s", hypervisor.ErrGone, what) }

func (c *conn) Capabilities(ctx context.Context) (string, error) {
	c.d.mu.Lock()
	defer c.d.mu.Unlock()
	if err := c.call("capabilities", ""); err != nil {
		return "", err
	}
	return c.d.caps, nil
}

func (c *conn) CreateVolume(ctx context.Context, pool, name string, bytes int64) (string, error) {
	c.d.mu.Lock()
	defer c.d.mu.Unlock()
	if err := c.call("create-volume", pool+"/"+name); err != nil {
		return "", err
	}
	k := pool + "/" + name
	if _, ok := c.d.volumes[k]; ok {
		return "", fmt.Errorf("volume %s already exists", k)
	}
	c.d.volumes[k] = bytes
	return "/var/lib/libvirt/images/" + name, nil
}

func (c *conn) DeleteVolume(ctx context.Context, pool, name string) error {
	c.d.mu.Lock()
	defer c.d.mu.Unlock()
	if err := c.call("delete-volume", pool+"/"+name); err != nil {
		return err
	}
	k := pool + "/" + name
	if _, ok := c.d.volumes[k]; !ok {
		return gone("volume " + k)
	}
	delete(c.d.volumes, k)
	return nil
}

func (c *conn) Define(ctx context.Context, doc string) error {
	c.d.mu.Lock()
	defer c.d.mu.Unlock()
	var dom struct {
		Name string `xml:"name"`
	}
	if err := xml.Unmarshal([]byte(doc), &dom); err != nil || dom.Name == "" {
		return fmt.Errorf("define: bad domain XML: %v", err)
	}
	if err := c.call("define", dom.Name); err != nil {
		return err
	}
	if old, ok := c.d.domains[dom.Name]; ok {
		old.XML = doc
		return nil
	}
	c.d.domains[dom.Name] = &Domain{XML: doc, State: hypervisor.StateShutoff}
	return nil
}

func (c *conn) set(op, name string, from []string, to string) error {
	c.d.mu.Lock()
	f := c.d.before[op]
	c.d.mu.Unlock()
	if f != nil {
		f()
	}
	c.d.mu.Lock()
	defer c.d.mu.Unlock()
	if err := c.call(op, name); err != nil {
		return err
	}
	dom, ok := c.d.domains[name]
	if !ok {
		return gone("domain " + name)
	}
	if from != nil && !slices.Contains(from, dom.State) {
		return fmt.Errorf("%s %s: domain is %s", op, name, dom.State)
	}
	dom.State = to
	return nil
}

func (c *conn) Start(ctx context.Context, name string) error {
	return c.set("start", name, []string{hypervisor.StateShutoff}, "running")
}

func (c *conn) Shutdown(ctx context.Context, name string) error {
	return c.set("shutdown", name, []string{"running"}, hypervisor.StateShutoff)
}

func (c *conn) Reboot(ctx context.Context, name string) error {
	return c.set("reboot", name, []string{"running"}, "running")
}

func (c *conn) Destroy(ctx context.Context, name string) error {
	return c.set("destroy", name, []string{"running", "paused"}, hypervisor.StateShutoff)
}

func (c *conn) Undefine(ctx context.Context, name string) error {
	c.d.mu.Lock()
	defer c.d.mu.Unlock()
	if err := c.call("undefine", name); err != nil {
		return err
	}
	if _, ok := c.d.domains[name]; !ok {
		return gone("domain " + name)
	}
	delete(c.d.domains, name)
	return nil
}

func (c *conn) State(ctx context.Context, name string) (string, error) {
	c.d.mu.Lock()
	defer c.d.mu.Unlock()
	if err := c.call("state", name); err != nil {
		return "", err
	}
	dom, ok := c.d.domains[name]
	if !ok {
		return "", gone("domain " + name)
	}
	return dom.State, nil
}

func (c *conn) Console(ctx context.Context, name string, w io.Writer) error {
	c.d.mu.Lock()
	err := c.call("console", name)
	_, ok := c.d.domains[name]
	c.d.mu.Unlock()
	if err != nil {
		return err
	}
	if !ok {
		return gone("domain " + name)
	}
	fmt.Fprintf(w, "console of %s\n", name)
	<-ctx.Done()
	return nil
}

func (c *conn) Close() error { return nil }
