// Package grub writes GRUB configs for network GRUB: the bootstrap it
// reads from its prefix, grub/grub.cfg, and the per-node config that boots
// a kernel and initrds or exits to the firmware so it boots the local
// disk.
//
// Config is for Debian's signed network GRUB (grubnetx64.efi,
// grubnetaa64.efi), which fetches everything over TFTP: the signed image
// (2.06, bookworm) has tftp built in but no http module, and under Secure
// Boot it may load no module from the network, so an http:// URL in a plan
// is rewritten to the same path on the same host's TFTP server: rackboot's
// TFTP and HTTP servers serve one tree. HTTPConfig is for the GRUB that
// rackboot builds with http (firmware.GRUBHTTPAA64), which asks for its
// configs over HTTP and fetches the kernel and initrds there too.
//
// Every value is single-quoted; anything that could end a line is
// refused.
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

// Bootstrap is the config at grub/grub.cfg. GRUB finds it under its
// prefix, (tftp,SERVER)/grub, and it loads the node's own config from the
// same place: grub/MAC.cfg, where MAC is ${net_default_mac}, the address
// of the interface GRUB booted from, lower-case and colon-separated
// (52:54:00:12:34:56). If that config is missing or returns, the node
// waits a little and exits to the firmware, which goes on to its next boot
// entry, instead of sitting at a GRUB prompt.
func Bootstrap() []byte {
	return []byte(`# rackboot bootstrap: load this node's own config
set timeout=0
echo "rackboot: loading ${prefix}/${net_default_mac}.cfg"
configfile "${prefix}/${net_default_mac}.cfg"
echo 'rackboot: no boot config for this node; returning to the firmware in 10 seconds'
sleep 10
exit
`)
}

// Config writes the per-node config for a plan. Kernel and initrds are
// http:// URLs (served again over TFTP, see the package comment) or
// absolute paths on the TFTP server GRUB booted from.
func Config(p boot.Plan) ([]byte, error) { return config(p, false) }

// HTTPConfig is Config for a GRUB with the http module: an http:// URL
// stays HTTP, (http,HOST:PORT)/path; an absolute path is read from the
// server GRUB booted from, over HTTP.
func HTTPConfig(p boot.Plan) ([]byte, error) { return config(p, true) }

func config(p boot.Plan, http bool) ([]byte, error) {
	var b bytes.Buffer
	b.WriteString("# rackboot node config\n")
	switch p.Action {
	case boot.ActionLocal:
		msg, err := quote("rackboot: node " + p.Node + " (" + p.Hostname + "): booting from local disk")
		if err != nil {
			return nil, fmt.Errorf("grub config: %w", err)
		}
		// GRUB starts the disk's loader itself: the firmware's boot
		// order after the network entry is not to be trusted (AAVMF
		// falls to its setup menu, not to the disk). The removable-media
		// path comes first, as a whole-disk image carries no NVRAM entry
		// and that is the path its firmware would use.
		suffix := "x64"
		if p.Arch == boot.ArchAArch64 {
			suffix = "aa64"
		}
		b.WriteString("echo " + msg + "\n")
		b.WriteString("for f in /EFI/BOOT/BOOT" + strings.ToUpper(suffix) + ".EFI")
		for _, d := range []string{"debian", "ubuntu", "redhat", "centos", "rocky", "sles"} {
			fmt.Fprintf(&b, " /EFI/%s/shim%s.efi /EFI/%s/grub%s.efi", d, suffix, d, suffix)
		}
		b.WriteString("; do\n  if search --no-floppy --set=root --file $f; then\n    chainloader $f\n    boot\n  fi\ndone\n")
		// Else the boot manager tries its next entry.
		b.WriteString("echo 'rackboot: no boot loader found on the local disks; returning to the firmware'\nexit\n")
		return b.Bytes(), nil
	case boot.ActionNetboot:
	default:
		return nil, fmt.Errorf("grub config: unknown action %q", p.Action)
	}
	title, err := quote("rackboot " + p.Node + " " + p.Hostname)
	if err != nil {
		return nil, fmt.Errorf("grub config: title: %w", err)
	}
	if p.Kernel == "" {
		return nil, fmt.Errorf("grub config: netboot plan for node %q has no kernel", p.Node)
	}
	kernel, err := file(p.Kernel, http)
	if err != nil {
		return nil, fmt.Errorf("grub config: kernel: %w", err)
	}
	if strings.ContainsAny(p.Cmdline, "\n\r") {
		return nil, fmt.Errorf("grub config: cmdline %q: %w", p.Cmdline, ErrUnsafe)
	}
	// One quoted word per kernel parameter: GRUB passes a word that holds
	// a space to the kernel in double quotes, as one value.
	words := []string{kernel}
	for _, w := range kernelArgs(p.Cmdline) {
		q, err := quote(w)
		if err != nil {
			return nil, fmt.Errorf("grub config: cmdline: %w", err)
		}
		words = append(words, q)
	}
	var initrds []string
	for _, u := range p.Initrds {
		f, err := file(u, http)
		if err != nil {
			return nil, fmt.Errorf("grub config: initrd: %w", err)
		}
		initrds = append(initrds, f)
	}
	// Entry 0 boots; if it fails, GRUB runs the fallback entry, which
	// leaves for the firmware rather than waiting at a menu.
	b.WriteString("set timeout=0\nset default=0\nset fallback=1\n")
	fmt.Fprintf(&b, "menuentry %s {\n", title)
	b.WriteString("  echo 'rackboot: loading kernel'\n")
	fmt.Fprintf(&b, "  linux %s\n", strings.Join(words, " "))
	if len(initrds) > 0 {
		b.WriteString("  echo 'rackboot: loading initrd'\n")
		fmt.Fprintf(&b, "  initrd %s\n", strings.Join(initrds, " "))
	}
	b.WriteString("}\n")
	b.WriteString("menuentry 'rackboot: netboot failed' {\n")
	b.WriteString("  echo 'rackboot: netboot failed; returning to the firmware in 10 seconds'\n")
	b.WriteString("  sleep 10\n  exit\n}\n")
	return b.Bytes(), nil
}

// file turns a URL or path of a file rackboot serves into a quoted GRUB
// file name: (tftp,HOST)/path for an http URL, or (http,HOST:PORT)/path
// with http; /path as it is (GRUB reads it from $root, the server it
// booted from).
func file(raw string, http bool) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("url %q: %w", raw, ErrUnsafe)
	}
	if u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || u.User != nil || !strings.HasPrefix(u.Path, "/") {
		return "", fmt.Errorf("url %q is not a plain http URL or absolute path: %w", raw, ErrUnsafe)
	}
	var dev string
	switch {
	case u.Scheme == "http" && u.Host != "":
		host := u.Hostname()
		for _, r := range host {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == ':') {
				return "", fmt.Errorf("url %q: host: %w", raw, ErrUnsafe)
			}
		}
		if http {
			// Debian's 2.06 takes a port in a device name; Go's URL parser
			// has already refused one that is not a number.
			dev = "(http," + u.Host + ")"
			return quote(dev + u.EscapedPath())
		}
		// The TFTP port is GRUB's default, 69; GRUB 2.06 has no syntax for
		// another one in a tftp device name.
		dev = "(tftp," + host + ")"
	case u.Scheme == "" && u.Host == "" && !strings.HasPrefix(u.Path, "//"):
		if http {
			return quote(u.EscapedPath())
		}
	default:
		return "", fmt.Errorf("url %q is not a plain http URL or absolute path: %w", raw, ErrUnsafe)
	}
	// TFTP takes the name as it is: send the decoded path.
	return quote(dev + u.Path)
}

// quote single-quotes a value. GRUB has no escape inside single quotes, so
// a quote is closed, escaped and reopened. Control characters, line
// breaks among them, are refused.
func quote(s string) (string, error) {
	for _, r := range s {
		if r < ' ' || r == 0x7f || r == '\u0085' || r == '\u2028' || r == '\u2029' {
			return "", fmt.Errorf("%q: %w", s, ErrUnsafe)
		}
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'", nil
}

// kernelArgs splits a command line as the kernel does: at spaces outside
// double quotes. The double quotes go: GRUB puts them back around a
// parameter that holds a space, and would escape any left in it.
func kernelArgs(cmdline string) []string {
	var args []string
	var cur strings.Builder
	quoted, started := false, false
	for _, r := range cmdline {
		switch {
		case r == '"':
			quoted, started = !quoted, true
		case (r == ' ' || r == '\t') && !quoted:
			if started {
				args = append(args, cur.String())
				cur.Reset()
				started = false
			}
		default:
			cur.WriteRune(r)
			started = true
		}
	}
	if started {
		args = append(args, cur.String())
	}
	return args
}
