// Package ipxe writes iPXE scripts: the chain script every iPXE client
// gets first, and the per-node script that boots a kernel and initrds or
// leaves for the local disk. iPXE has no quoting and expands ${...}
// everywhere, so every value that came from a node or an operator is
// checked against a strict alphabet before it is written.
package ipxe

import (
	"bytes"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/rackboot/rackboot/boot"
)

// ErrUnsafe is returned for a value that could change what a script does.
var ErrUnsafe = errors.New("unsafe value for an iPXE script")

// Chain is the script served at /boot.ipxe: it sends iPXE to the
// per-node script, named by the MAC of the interface iPXE booted from
// (${net0/mac} is not always that one) and its build architecture.
func Chain(baseURL string) []byte {
	return []byte(fmt.Sprintf(`#!ipxe
# rackboot: find this node's own script
chain --autofree %s/ipxe/${mac:hexhyp}?arch=${buildarch} || goto failed
:failed
echo rackboot: could not fetch the node script, retrying in 10 seconds
sleep 10
chain --autofree %s/boot.ipxe
`, baseURL, baseURL))
}

// Script writes the per-node script for a plan.
func Script(p boot.Plan) ([]byte, error) {
	var b bytes.Buffer
	b.WriteString("#!ipxe\n")
	name, err := safeText(p.Hostname)
	if err != nil {
		return nil, fmt.Errorf("ipxe script: hostname: %w", err)
	}
	node, err := safeText(p.Node)
	if err != nil {
		return nil, fmt.Errorf("ipxe script: node: %w", err)
	}
	fmt.Fprintf(&b, "echo rackboot: node %s (%s)\n", name, node)
	switch p.Action {
	case boot.ActionLocal:
		b.WriteString("echo rackboot: booting from local disk\nexit 0\n")
		return b.Bytes(), nil
	case boot.ActionNetboot:
	default:
		return nil, fmt.Errorf("ipxe script: unknown action %q", p.Action)
	}
	kernel, err := safeURL(p.Kernel)
	if err != nil {
		return nil, fmt.Errorf("ipxe script: kernel: %w", err)
	}
	cmdline, err := safeCmdline(p.Cmdline)
	if err != nil {
		return nil, fmt.Errorf("ipxe script: cmdline: %w", err)
	}
	b.WriteString(":retry\nimgfree\n")
	fmt.Fprintf(&b, "kernel %s initrd=initrd0 %s || goto failed\n", kernel, cmdline)
	for i, u := range p.Initrds {
		iu, err := safeURL(u)
		if err != nil {
			return nil, fmt.Errorf("ipxe script: initrd: %w", err)
		}
		fmt.Fprintf(&b, "initrd --name initrd%d %s || goto failed\n", i, iu)
	}
	b.WriteString("boot || goto failed\n:failed\necho rackboot: boot failed, retrying in 5 seconds\nsleep 5\ngoto retry\n")
	return fixInitrdNames(b.Bytes(), len(p.Initrds)), nil
}

// fixInitrdNames drops the initrd= argument when there are no initrds and
// lists them all when there are several, as EFI kernels need to be told.
func fixInitrdNames(script []byte, n int) []byte {
	var names []string
	for i := 0; i < n; i++ {
		names = append(names, fmt.Sprintf("initrd=initrd%d", i))
	}
	return bytes.Replace(script, []byte("initrd=initrd0 "), []byte(strings.Join(append(names, ""), " ")), 1)
}

// safeText allows what a hostname or an id holds.
func safeText(s string) (string, error) {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_.:", r)) {
			return "", fmt.Errorf("%q: %w", s, ErrUnsafe)
		}
	}
	return s, nil
}

// safeURL accepts http(s) URLs and writes them with every character
// iPXE could read as syntax percent-encoded.
func safeURL(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		return "", fmt.Errorf("%q is not an http(s) URL: %w", s, ErrUnsafe)
	}
	out := u.String()
	for _, r := range out {
		if r <= ' ' || r > '~' || strings.ContainsRune("$|&;{}\"'`\\", r) {
			return "", fmt.Errorf("%q: %w", s, ErrUnsafe)
		}
	}
	return out, nil
}

// safeCmdline refuses what iPXE would expand or split: settings
// expansion, command separators, line breaks.
func safeCmdline(s string) (string, error) {
	for _, r := range s {
		if r < ' ' || r > '~' || strings.ContainsRune("$|&;{}\\`", r) {
			return "", fmt.Errorf("%q: %w", s, ErrUnsafe)
		}
	}
	return s, nil
}
