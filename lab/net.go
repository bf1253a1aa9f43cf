// Package lab builds virtual racks on one Linux machine: a network
// namespace with a bridge that rackboot serves on, tap devices on it, and
// QEMU machines with real firmware (SeaBIOS, OVMF, AAVMF) that network-boot
// through it, their serial consoles captured; and the payload (a Debian
// kernel and a tiny initrd) that such a machine boots last. The end-to-end
// tests and `make lab` both use it. Everything it creates, it removes on
// Close. It needs root and iproute2.
package lab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Net is a network namespace holding a bridge: the rack's one segment.
// Its address on the bridge is where rackboot serves.
type Net struct {
	name   string
	prefix netip.Prefix
	server netip.Addr

	mu     sync.Mutex
	closed bool
	// cmds are the commands Command made, killed by Close: one started
	// a moment before may not have entered the namespace yet, where
	// "ip netns pids" would find it.
	cmds []*exec.Cmd
	// hosts are the namespaces AddHost made, deleted by Close.
	hosts []string
}

// bridge is the bridge's name inside every namespace; namespaces keep
// their interface names apart, so one name suffices.
const bridge = "br0"

// maxIfName is the longest Linux interface name (IFNAMSIZ less the NUL).
const maxIfName = 15

func ip(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// NewNet creates namespace name with loopback up and a bridge whose
// address is the prefix's first host. A leftover namespace of the same
// name (from a killed earlier run) is removed first, so callers must pick
// names no one else uses: tests derive them from t.Name().
func NewNet(ctx context.Context, name string, prefix netip.Prefix) (*Net, error) {
	if name == "" || strings.ContainsAny(name, "/ \t\n") || len(name) > 64 {
		return nil, fmt.Errorf("lab network %q: not a usable namespace name", name)
	}
	if !prefix.Addr().Is4() || prefix.Bits() > 30 {
		return nil, fmt.Errorf("lab network %s: need an IPv4 prefix of /30 or wider, not %s", name, prefix)
	}
	p := prefix.Masked()
	n := &Net{name: name, prefix: p, server: p.Addr().Next()}
	n.removeNamespace(ctx)
	steps := [][]string{
		{"netns", "add", name},
		{"-n", name, "link", "set", "lo", "up"},
		// No STP and no forwarding delay: a firmware's first DHCP
		// request must not fall into a learning period.
		{"-n", name, "link", "add", bridge, "type", "bridge", "forward_delay", "0", "stp_state", "0"},
		{"-n", name, "addr", "add", fmt.Sprintf("%s/%d", n.server, p.Bits()), "dev", bridge},
		{"-n", name, "link", "set", bridge, "up"},
	}
	for _, s := range steps {
		if err := ip(ctx, s...); err != nil {
			n.Close()
			return nil, fmt.Errorf("lab network %s: %w", name, err)
		}
	}
	return n, nil
}

// Name is the namespace's name.
func (n *Net) Name() string { return n.name }

// Bridge is the bridge's interface name inside the namespace: the
// interface rackboot serves on.
func (n *Net) Bridge() string { return bridge }

// ServerIP is the bridge's address.
func (n *Net) ServerIP() netip.Addr { return n.server }

// Prefix is the segment's prefix.
func (n *Net) Prefix() netip.Prefix { return n.prefix }

// AddTap creates a tap device on the bridge, up, for one VM NIC. QEMU
// opens it by name from inside the namespace.
func (n *Net) AddTap(name string) (string, error) {
	if name == "" || len(name) > maxIfName || strings.ContainsAny(name, "/ \t\n") {
		return "", fmt.Errorf("lab tap %q: interface names are 1 to %d characters", name, maxIfName)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := ip(ctx, "-n", n.name, "tuntap", "add", "dev", name, "mode", "tap"); err != nil {
		return "", fmt.Errorf("lab tap %s: %w", name, err)
	}
	if err := ip(ctx, "-n", n.name, "link", "set", name, "master", bridge, "up"); err != nil {
		return "", fmt.Errorf("lab tap %s: %w", name, err)
	}
	return name, nil
}

// AddHost puts another machine on the bridge: a namespace of its own
// (the segment's name followed by name) whose eth0 is cabled to the
// bridge, with the address cidr when one is given. Close deletes it.
func (n *Net) AddHost(name, cidr string) (ns string, err error) {
	ns = n.name + name
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ip(ctx, "netns", "del", ns) // a leftover of a killed run
	if err := ip(ctx, "netns", "add", ns); err != nil {
		return "", fmt.Errorf("lab host %s: %w", name, err)
	}
	n.mu.Lock()
	n.hosts = append(n.hosts, ns)
	n.mu.Unlock()
	steps := [][]string{
		{"-n", n.name, "link", "add", "v" + name, "type", "veth", "peer", "name", "eth0", "netns", ns},
		{"-n", n.name, "link", "set", "v" + name, "master", bridge, "up"},
		{"-n", ns, "link", "set", "lo", "up"},
	}
	if cidr != "" {
		steps = append(steps, []string{"-n", ns, "addr", "add", cidr, "dev", "eth0"})
	}
	steps = append(steps, []string{"-n", ns, "link", "set", "eth0", "up"})
	for _, s := range steps {
		if err := ip(ctx, s...); err != nil {
			return "", fmt.Errorf("lab host %s: %w", name, err)
		}
	}
	return ns, nil
}

// Command returns a command that runs prog inside the namespace. `ip
// netns exec` execs prog in place, so the process is prog itself and
// signals reach it.
func (n *Net) Command(ctx context.Context, prog string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.name, prog}, args...)...)
	n.mu.Lock()
	n.cmds = append(n.cmds, cmd)
	n.mu.Unlock()
	return cmd
}

// Close deletes the namespace with its bridge and taps. Programs still
// running inside it are killed first: a namespace lives on while any
// process holds it, and the next run would find its taps. Close is safe to
// call more than once.
func (n *Net) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil
	}
	n.closed = true
	for _, c := range n.cmds {
		// "ip netns exec" becomes the program: the same process.
		if c.Process != nil {
			c.Process.Kill()
		}
	}
	n.cmds = nil
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, h := range n.hosts {
		ip(ctx, "netns", "del", h)
	}
	n.hosts = nil
	if err := n.removeNamespace(ctx); err != nil {
		return fmt.Errorf("lab network %s: %w", n.name, err)
	}
	return nil
}

// removeNamespace kills what runs in the namespace and deletes it; a
// namespace that does not exist is not an error.
func (n *Net) removeNamespace(ctx context.Context) error {
	if _, err := os.Stat("/run/netns/" + n.name); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if out, err := exec.CommandContext(ctx, "ip", "netns", "pids", n.name).Output(); err == nil {
		for _, f := range strings.Fields(string(out)) {
			if pid, err := strconv.Atoi(f); err == nil && pid > 1 {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	return ip(ctx, "netns", "del", n.name)
}
