// Package grub writes GRUB configs for Debian's signed network GRUB
// (grubnetx64.efi, grubnetaa64.efi): the bootstrap it reads from its
// prefix, grub/grub.cfg, and the per-node config that boots a kernel and
// initrds or exits to the firmware so it boots the local disk.
//
// Everything is fetched over TFTP: Debian's signed network image has no
// http module built in, and under Secure Boot it may load no module from
// the network. Values are single-quoted and anything that could end a
// quote or a line is refused.
package grub

import (
	"bytes"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/rackboot/rackboot/boot"
)

// ErrUnsafe is returned for a value that could change what a config does.
var ErrUnsafe = errors.New("unsafe value for a GRUB config")

// Bootstrap is the config for clients rackboot cannot tell apart by
// address (proxy DHCP, no lease): it loads the node's own config, named by
// the MAC GRUB booted from, from the same place GRUB loaded this one.
func Bootstrap() []byte {
	return []byte(`# rackboot: load this node's own config
set timeout=0
configfile ${prefix}/${net_default_mac}.cfg
echo 'rackboot: could not load the node config; returning to the firmware in 10 seconds'
sleep 10
exit
`)
}

// Config writes the per-node config for a plan.
func Config(p boot.Plan) ([]byte, error) {
	var b bytes.Buffer
	name, err := quote(p.Hostname)
	if err != nil {
		return nil, fmt.Errorf("grub config: hostname: %w", err)
	}
	b.WriteString("# rackboot node config\nset timeout=0\nset default=0\n")
	switch p.Action {
	case boot.ActionLocal:
		fmt.Fprintf(&b, "echo 'rackboot: node '%s': booting from local disk'\nexit\n", name)
		return b.Bytes(), nil
	case boot.ActionNetboot:
	default:
		return nil, fmt.Errorf("grub config: unknown action %q", p.Action)
	}
	kdev, kpath, err := device(p.Kernel)
	if err != nil {
		return nil, fmt.Errorf("grub config: kernel: %w", err)
	}
	// One quoted word per kernel parameter: GRUB wraps an argument that
	// holds spaces in double quotes, which the kernel reads as one value.
	var words []string
	for _, w := range strings.Fields(p.Cmdline) {
		q, err := quote(w)
		if err != nil {
			return nil, fmt.Errorf("grub config: cmdline: %w", err)
		}
		words = append(words, q)
	}
	cmdline := strings.Join(words, " ")
	fmt.Fprintf(&b, "menuentry %s {\n", name)
	fmt.Fprintf(&b, "  echo 'rackboot: loading kernel'\n  linux %s%s %s\n", kdev, kpath, cmdline)
	if len(p.Initrds) > 0 {
		b.WriteString("  echo 'rackboot: loading initrd'\n  initrd")
		for _, u := range p.Initrds {
			dev, path, err := device(u)
			if err != nil {
				return nil, fmt.Errorf("grub config: initrd: %w", err)
			}
			fmt.Fprintf(&b, " %s%s", dev, path)
		}
		b.WriteString("\n")
	}
	b.WriteString("}\n")
	return b.Bytes(), nil
}

// device turns the http URL of a file rackboot serves into GRUB's
// (tftp,host)/path form: rackboot's TFTP server serves the same tree.
func device(raw string) (dev, path string, err error) {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "http" || u.Host == "" || u.User != nil || u.RawQuery != "" {
		return "", "", fmt.Errorf("%q is not a plain http URL: %w", raw, ErrUnsafe)
	}
	host := u.Hostname()
	path = u.EscapedPath()
	for _, r := range host + path {
		if r <= ' ' || r > '~' || strings.ContainsRune("'\"$;{}()\\`#|&<>", r) {
			return "", "", fmt.Errorf("%q: %w", raw, ErrUnsafe)
		}
	}
	return "(tftp," + host + ")", path, nil
}

// quote single-quotes a value; GRUB has no escape inside single quotes, so
// a quote is closed, escaped and reopened. Line breaks are refused.
func quote(s string) (string, error) {
	for _, r := range s {
		if r < ' ' || r == 0x7f {
			return "", fmt.Errorf("%q: %w", s, ErrUnsafe)
		}
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'", nil
}
