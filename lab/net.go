// Package lab builds virtual racks on one Linux machine: a network
// namespace with a bridge that rackboot serves on, tap devices on it, and
// QEMU machines with real firmware (OVMF, SeaBIOS, AAVMF) that network-boot
// through it, their serial consoles captured. The end-to-end tests and
// `make lab` both use it. Everything it creates, it removes on Close.
package lab

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"sync"
)

// Net is a network namespace holding a bridge, the rack's one segment.
type Net struct {
	name   string
	prefix netip.Prefix
	server netip.Addr
	once   sync.Once
}

const bridge = "br0"

func ip(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// NewNet creates namespace name with a bridge whose address is the
// prefix's first host: where rackboot serves. A leftover namespace of the
// same name (a killed earlier run) is removed first.
func NewNet(ctx context.Context, name string, prefix netip.Prefix) (*Net, error) {
	n := &Net{name: name, prefix: prefix.Masked(), server: prefix.Masked().Addr().Next()}
	exec.CommandContext(ctx, "ip", "netns", "del", name).Run()
	steps := [][]string{
		{"netns", "add", name},
		{"-n", name, "link", "set", "lo", "up"},
		{"-n", name, "link", "add", bridge, "type", "bridge", "forward_delay", "0", "stp_state", "0"},
		{"-n", name, "addr", "add", fmt.Sprintf("%s/%d", n.server, prefix.Bits()), "dev", bridge},
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

// Bridge is the bridge's interface name inside the namespace.
func (n *Net) Bridge() string { return bridge }

// ServerIP is the bridge's address.
func (n *Net) ServerIP() netip.Addr { return n.server }

// Prefix is the segment's prefix.
func (n *Net) Prefix() netip.Prefix { return n.prefix }

// AddTap creates a tap device on the bridge for a VM.
func (n *Net) AddTap(name string) (string, error) {
	ctx := context.Background()
	if err := ip(ctx, "-n", n.name, "tuntap", "add", "dev", name, "mode", "tap"); err != nil {
		return "", fmt.Errorf("lab tap %s: %w", name, err)
	}
	if err := ip(ctx, "-n", n.name, "link", "set", name, "master", bridge, "up"); err != nil {
		return "", fmt.Errorf("lab tap %s: %w", name, err)
	}
	return name, nil
}

// Command runs a program inside the namespace.
func (n *Net) Command(ctx context.Context, prog string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.name, prog}, args...)...)
}

// Close deletes the namespace and everything in it.
func (n *Net) Close() error {
	var err error
	n.once.Do(func() { err = ip(context.Background(), "netns", "del", n.name) })
	return err
}
