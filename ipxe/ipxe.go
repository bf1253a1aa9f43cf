// Package ipxe writes iPXE scripts: the chain script every iPXE client
// gets first, and the per-node script that boots a kernel and initrds or
// leaves for the local disk.
//
// iPXE has no quoting: it splits a line at spaces, treats "||", "&&" and
// ";" as command separators anywhere, and expands ${...} everywhere. So a
// value that came from a node or an operator is either reduced to a strict
// alphabet (text that is only shown) or refused (URLs and the kernel
// command line, where a silent change would boot something else).
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

// Chain is the script served at /boot.ipxe. It sends iPXE on to the
// per-node script, named by the MAC of the interface iPXE booted from
// (${netX}, not ${net0}: a machine may boot from its second port) in
// hyphen form, which needs no escaping in a URL, and by iPXE's build
// architecture (i386, x86_64, arm64). A node script that returns is a
// local boot: iPXE then exits with a failure status, as UEFI's boot
// manager moves on to its next boot option (the disk) only after a
// failed one; after a success it stops at its setup menu. A failed
// fetch is retried rather
// than left at a prompt no one watches. baseURL is http://host[:port],
// without a trailing slash.
func Chain(baseURL string) []byte {
	base := strings.TrimRight(baseURL, "/")
	return []byte(`#!ipxe
:retry
chain --autofree ` + base + `/ipxe/${netX/mac:hexhyp}?arch=${buildarch} || goto failed
isset ${rackboot_local} && exit 1 ||
exit
:failed
echo rackboot: could not fetch the node script, retrying in 5 seconds
sleep 5
goto retry
`)
}

// Script writes the per-node script for a plan. Hostname and node id are
// only shown, so characters outside [A-Za-z0-9._:-] become "_"; an unsafe
// kernel or initrd URL, or kernel command line, is an error wrapping
// ErrUnsafe.
func Script(p boot.Plan) ([]byte, error) {
	var b bytes.Buffer
	b.WriteString("#!ipxe\n")
	fmt.Fprintf(&b, "echo rackboot: node %s host %s\n", showable(p.Node), showable(p.Hostname))
	switch p.Action {
	case boot.ActionLocal:
		// The chain script that fetched this one ends iPXE with a
		// failure status when it sees rackboot_local, so the firmware
		// tries its next boot device, the local disk.
		b.WriteString("echo rackboot: booting from local disk\nset rackboot_local 1\nexit\n")
		return b.Bytes(), nil
	case boot.ActionNetboot:
	default:
		return nil, fmt.Errorf("ipxe script: unknown action %q", p.Action)
	}
	if p.Kernel == "" {
		return nil, fmt.Errorf("ipxe script: netboot plan for node %q has no kernel", showable(p.Node))
	}
	kernel, err := safeURL(p.Kernel)
	if err != nil {
		return nil, fmt.Errorf("ipxe script: kernel: %w", err)
	}
	cmdline, err := safeCmdline(p.Cmdline)
	if err != nil {
		return nil, fmt.Errorf("ipxe script: cmdline: %w", err)
	}
	var initrds []string
	for _, u := range p.Initrds {
		iu, err := safeURL(u)
		if err != nil {
			return nil, fmt.Errorf("ipxe script: initrd: %w", err)
		}
		initrds = append(initrds, iu)
	}
	// An EFI kernel finds its initrds through initrd=NAME arguments; a
	// BIOS kernel gets every loaded initrd regardless. Naming them serves
	// both.
	args := make([]string, 0, len(initrds)+1)
	for i := range initrds {
		args = append(args, fmt.Sprintf("initrd=initrd%d", i))
	}
	if cmdline != "" {
		args = append(args, cmdline)
	}
	b.WriteString(":retry\nimgfree\n")
	fmt.Fprintf(&b, "kernel %s", kernel)
	if len(args) > 0 {
		fmt.Fprintf(&b, " %s", strings.Join(args, " "))
	}
	b.WriteString(" || goto failed\n")
	for i, u := range initrds {
		fmt.Fprintf(&b, "initrd --name initrd%d %s || goto failed\n", i, u)
	}
	b.WriteString("boot || goto failed\n")
	b.WriteString(":failed\necho rackboot: boot failed, retrying in 5 seconds\nsleep 5\ngoto retry\n")
	return b.Bytes(), nil
}

// showable keeps what a hostname or an id normally holds and replaces the
// rest, so that a shown value can never expand a setting or end a command.
func showable(s string) string {
	if s == "" {
		return "-"
	}
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_.:", r) {
			return r
		}
		return '_'
	}, s)
}

// safeURL accepts an http(s) URL, or an absolute path that iPXE resolves
// against the script's own URL, and writes it with every character iPXE
// could read as syntax percent-encoded.
func safeURL(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil {
		return "", fmt.Errorf("url %q: %w", s, ErrUnsafe)
	}
	switch {
	case (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" && u.User == nil:
	case u.Scheme == "" && u.Host == "" && strings.HasPrefix(u.Path, "/") && !strings.HasPrefix(u.Path, "//"):
	default:
		return "", fmt.Errorf("url %q is not an http(s) URL or an absolute path: %w", s, ErrUnsafe)
	}
	u.Fragment, u.RawFragment = "", ""
	out := u.String()
	hostEnd := 0
	if u.Host != "" {
		hostEnd = len(u.Scheme) + len("://") + len(u.Host)
	}
	// url.String leaves some sub-delimiters as they are; iPXE would read
	// them as syntax, so encode them too. A host is never encoded: one
	// that holds such a character is refused.
	var b strings.Builder
	for i := 0; i < len(out); i++ {
		c := out[i]
		switch {
		case c < ' ' || c == 0x7f:
			return "", fmt.Errorf("url %q: %w", s, ErrUnsafe)
		case c == ' ' || c > 0x7f || strings.IndexByte("$|;{}\"'`\\<>^", c) >= 0:
			if i < hostEnd {
				return "", fmt.Errorf("url %q: %w", s, ErrUnsafe)
			}
			// "&" is left alone: it separates query parameters, and iPXE
			// ends a command only at a whole "&&" word, which a URL with
			// no spaces can never be.
			fmt.Fprintf(&b, "%%%02X", c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), nil
}

// safeCmdline refuses what iPXE would expand or split: settings
// expansion, command separators, line breaks, and anything not printable
// ASCII. A kernel command line has no use for any of them that is worth
// the risk.
func safeCmdline(s string) (string, error) {
	for _, r := range s {
		if r < ' ' || r > '~' || strings.ContainsRune("$|&;{}\\`", r) {
			return "", fmt.Errorf("command line %q: %w", s, ErrUnsafe)
		}
	}
	return strings.Join(strings.Fields(s), " "), nil
}
