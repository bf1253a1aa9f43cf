package dnsmasq

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// MaxFileSize bounds what is read of one file: Ironic's are one line per
// port or a handful per node.
const MaxFileSize = 1 << 20

// Host is one dhcp-host line.
type Host struct {
	Line int
	MACs []net.HardwareAddr
	// Tags are the line's set: tags, set on every request from its MACs.
	Tags []string
	// Ignore: dnsmasq answers nothing to these MACs.
	Ignore bool
}

// Tag is one tag: condition of a dhcp-option line.
type Tag struct {
	Name string
	// Not: the line applies only when the tag is not set (tag:!name).
	Not bool
}

// Option is a DHCPv4 option as it goes on the wire, without code and
// length bytes.
type Option struct {
	Code  uint8
	Value []byte
}

// OptLine is one dhcp-option line.
type OptLine struct {
	Line int
	// Tags must all hold for the line to apply.
	Tags   []Tag
	Option Option
}

// ParseHosts reads a dhcp-hostsdir file. Lines that have no effect come
// back as problems; the error is for reading only.
func ParseHosts(file string, r io.Reader) ([]Host, []*LineError, error) {
	b, err := readAll(r)
	if err != nil {
		return nil, nil, err
	}
	hosts, problems := parseHosts(file, b)
	return hosts, problems, nil
}

// ParseOpts reads a dhcp-optsdir file. Lines that have no effect come
// back as problems; the error is for reading only.
func ParseOpts(file string, r io.Reader) ([]OptLine, []*LineError, error) {
	b, err := readAll(r)
	if err != nil {
		return nil, nil, err
	}
	opts, problems := parseOpts(file, b)
	return opts, problems, nil
}

func readAll(r io.Reader) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, MaxFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > MaxFileSize {
		return nil, fmt.Errorf("read: larger than %d bytes", MaxFileSize)
	}
	return b, nil
}

func parseHosts(file string, b []byte) ([]Host, []*LineError) {
	var hosts []Host
	var problems []*LineError
	eachLine(b, func(n int, l text) {
		h, err := parseHost(l)
		if err != nil {
			problems = append(problems, &LineError{File: file, Line: n, Err: err})
			return
		}
		h.Line = n
		hosts = append(hosts, h)
	})
	return hosts, problems
}

func parseOpts(file string, b []byte) ([]OptLine, []*LineError) {
	var opts []OptLine
	var problems []*LineError
	eachLine(b, func(n int, l text) {
		o, err := parseOpt(l)
		if err != nil {
			problems = append(problems, &LineError{File: file, Line: n, Err: err})
			return
		}
		o.Line = n
		opts = append(opts, o)
	})
	return opts, problems
}

// eachLine lexes each line that is not blank or a comment.
func eachLine(b []byte, fn func(int, text)) {
	for n := 1; len(b) > 0; n++ {
		line := b
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		l, err := lex(line)
		if err != nil {
			fn(n, text{err: err})
			continue
		}
		if len(l.b) > 0 {
			fn(n, l)
		}
	}
}

// text is a line after dnsmasq's quoting rules: q[i] marks a byte that was
// inside double quotes, which splits nothing and is never a separator.
type text struct {
	b   []byte
	q   []bool
	err error
}

func (t *text) add(c byte, quoted bool) {
	t.b = append(t.b, c)
	t.q = append(t.q, quoted)
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'
}

// lex applies what dnsmasq does to a configuration line before parsing it:
// quotes are removed and hide what they enclose (with \" \\ \t \n \r \b
// \e escapes), a '#' at the start or after white space starts a comment,
// white space becomes blanks, and leading and trailing blanks go.
func lex(line []byte) (text, error) {
	var t text
	white := true
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == 0:
			return text{}, fmt.Errorf("%w: NUL byte", ErrSyntax)
		case c == '"':
			closed := false
			for i++; i < len(line); i++ {
				c = line[i]
				if c == '"' {
					closed = true
					break
				}
				if c == '\\' && i+1 < len(line) && strings.IndexByte(`"tnebr\`, line[i+1]) >= 0 {
					i++
					c = unescape(line[i])
				}
				t.add(c, true)
			}
			if !closed {
				return text{}, fmt.Errorf("%w: missing \"", ErrSyntax)
			}
			white = false
		case isSpace(c):
			t.add(' ', false)
			white = true
		case white && c == '#':
			return t.trim(), nil
		default:
			white = false
			t.add(c, false)
		}
	}
	return t.trim(), nil
}

func unescape(c byte) byte {
	switch c {
	case 't':
		return '\t'
	case 'n':
		return '\n'
	case 'b':
		return '\b'
	case 'r':
		return '\r'
	case 'e':
		return 0x1b
	}
	return c
}

func (t text) trim() text {
	i, j := 0, len(t.b)
	for i < j && t.b[i] == ' ' && !t.q[i] {
		i++
	}
	for j > i && t.b[j-1] == ' ' && !t.q[j-1] {
		j--
	}
	return text{b: t.b[i:j], q: t.q[i:j]}
}

// next splits off the first field at an unquoted comma, with the blanks
// around that comma, as dnsmasq's split does.
func (t text) next() (field text, rest text, more bool) {
	for i, c := range t.b {
		if c == ',' && !t.q[i] {
			return text{b: t.b[:i], q: t.q[:i]}.trim(), text{b: t.b[i+1:], q: t.q[i+1:]}.trim(), true
		}
	}
	return t, text{}, false
}

func (t text) String() string { return string(t.b) }

// quoted reports whether any byte came from inside quotes.
func (t text) quoted() bool {
	for _, q := range t.q {
		if q {
			return true
		}
	}
	return false
}

// has reports whether c occurs outside quotes, as dnsmasq's strchr on a
// line with hidden metacharacters does.
func (t text) has(c byte) bool {
	for i, b := range t.b {
		if b == c && !t.q[i] {
			return true
		}
	}
	return false
}

// parseHost reads a dhcp-host line as dnsmasq does: a field with a colon
// is a client id, a tag or a hardware address; one with a dot that parses
// is an IPv4 address; digits are a lease time; "ignore" disables the host;
// anything else is a host name.
func parseHost(l text) (Host, error) {
	if l.err != nil {
		return Host{}, l.err
	}
	var h Host
	for rest, more := l, true; more; {
		var f text
		f, rest, more = rest.next()
		s := f.String()
		switch {
		case f.has(':'):
			switch {
			case hasPrefixFold(s, "id:"):
				return Host{}, fmt.Errorf("%w: client identifiers (%q)", ErrUnsupported, s)
			case strings.HasPrefix(s, "set:"), strings.HasPrefix(s, "net:"):
				if len(s) == 4 {
					return Host{}, fmt.Errorf("%w: empty tag", ErrSyntax)
				}
				h.Tags = append(h.Tags, s[4:])
			case strings.HasPrefix(s, "tag:"):
				return Host{}, fmt.Errorf("%w: host lines conditional on tags (%q)", ErrUnsupported, s)
			case len(s) > 1 && s[0] == '[' && s[len(s)-1] == ']':
				// A DHCPv6 address: nothing to DHCPv4.
				a, _, _ := strings.Cut(s[1:len(s)-1], "/")
				if ip, err := netip.ParseAddr(a); err != nil || !ip.Is6() {
					return Host{}, fmt.Errorf("%w: bad IPv6 address %q", ErrSyntax, s)
				}
			default:
				mac, err := parseMAC(s)
				if err != nil {
					return Host{}, err
				}
				h.MACs = append(h.MACs, mac)
			}
		case f.has('.') && isIPv4(s):
			return Host{}, fmt.Errorf("%w: fixed addresses (%s)", ErrUnsupported, s)
		case s == "ignore":
			h.Ignore = true
		case s == "infinite" || isLeaseTime(s):
			return Host{}, fmt.Errorf("%w: lease times (%s)", ErrUnsupported, s)
		case s == "":
			// dnsmasq lets empty fields pass.
		default:
			return Host{}, fmt.Errorf("%w: host names (%q)", ErrUnsupported, s)
		}
	}
	if len(h.MACs) == 0 {
		return Host{}, fmt.Errorf("%w: host lines without a MAC address", ErrUnsupported)
	}
	return h, nil
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

func isIPv4(s string) bool {
	a, err := netip.ParseAddr(s)
	return err == nil && a.Is4()
}

// isLeaseTime matches dnsmasq's lease time field: digits with an optional
// unit letter.
func isLeaseTime(s string) bool {
	if len(s) > 1 && strings.IndexByte("wWdDhHmMsS", s[len(s)-1]) >= 0 {
		s = s[:len(s)-1]
	}
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if (s[i] < '0' || s[i] > '9') && s[i] != ' ' {
			return false
		}
	}
	return true
}

// parseMAC reads a hardware address as dnsmasq's parse_hex does: groups
// of hex digits between colons (or dashes), two digits to a byte, after
// an optional "<type>-" (only Ethernet's 01 is taken). Wildcards are not.
func parseMAC(s string) (net.HardwareAddr, error) {
	bad := fmt.Errorf("%w: bad hardware address %q", ErrSyntax, s)
	if t, rest, ok := strings.Cut(s, "-"); ok && !strings.Contains(t, ":") {
		n, err := strconv.ParseUint(t, 16, 8)
		if err != nil || len(t) > 2 {
			return nil, bad
		}
		if n != 1 {
			return nil, fmt.Errorf("%w: hardware type %s (only Ethernet, 01)", ErrUnsupported, t)
		}
		s = rest
	}
	if strings.Contains(s, "*") {
		return nil, fmt.Errorf("%w: wildcard hardware addresses (%q)", ErrUnsupported, s)
	}
	var mac net.HardwareAddr
	for _, g := range strings.FieldsFunc(s, func(r rune) bool { return r == ':' || r == '-' }) {
		for len(g) > 0 {
			n := min(2, len(g))
			b, err := strconv.ParseUint(g[:n], 16, 8)
			if err != nil || g[0] == '+' {
				return nil, bad
			}
			mac = append(mac, byte(b))
			g = g[n:]
		}
	}
	if len(mac) < 2 || len(mac) > 16 {
		return nil, bad
	}
	return mac, nil
}

// parseOpt reads a dhcp-option line as dnsmasq does: fields up to the
// first that is a number or option:<name> are tags (with or without tag:,
// a leading ! negates), the rest of the line is the value.
func parseOpt(l text) (OptLine, error) {
	if l.err != nil {
		return OptLine{}, l.err
	}
	var o OptLine
	for rest, more := l, true; ; {
		if !more {
			return OptLine{}, fmt.Errorf("%w: no option number or option:<name>", ErrSyntax)
		}
		var f text
		f, rest, more = rest.next()
		s := f.String()
		switch {
		case s != "" && strings.Trim(s, "0123456789") == "":
			n, err := strconv.Atoi(s)
			if err != nil || n > 255 {
				return OptLine{}, fmt.Errorf("%w: option %s is not a DHCPv4 option number", ErrSyntax, s)
			}
			return encodeOpt(o, optionType(uint8(n)), rest, more)
		case strings.HasPrefix(s, "option:"):
			t, ok := optionByName(s[len("option:"):])
			if !ok {
				return OptLine{}, fmt.Errorf("%w: %s (rackboot takes %s)", ErrUnsupported, s, supportedNames())
			}
			return encodeOpt(o, t, rest, more)
		case strings.HasPrefix(s, "option6:"):
			return OptLine{}, fmt.Errorf("%w: %s", ErrNotDHCPv4, s)
		case strings.HasPrefix(s, "vendor:"), strings.HasPrefix(s, "encap:"), strings.HasPrefix(s, "vi-encap:"):
			return OptLine{}, fmt.Errorf("%w: encapsulated options (%q)", ErrUnsupported, s)
		default:
			name := s
			switch {
			case strings.HasPrefix(name, "tag:"), strings.HasPrefix(name, "net:"), strings.HasPrefix(name, "set:"):
				name = name[4:]
			}
			var t Tag
			if name != "" && (name[0] == '!' || name[0] == '#') {
				t.Not, name = true, name[1:]
			}
			if name == "" {
				return OptLine{}, fmt.Errorf("%w: empty tag in %q", ErrSyntax, s)
			}
			t.Name = name
			o.Tags = append(o.Tags, t)
		}
	}
}

func encodeOpt(o OptLine, t optType, value text, more bool) (OptLine, error) {
	if t.refuse != nil {
		return OptLine{}, t.refuse
	}
	if !more || len(value.b) == 0 {
		return OptLine{}, fmt.Errorf("%w: option %d has no value", ErrSyntax, t.code)
	}
	v, err := t.encode(value)
	if err != nil {
		return OptLine{}, fmt.Errorf("%w: option %d (%s): %v", ErrSyntax, t.code, t.name, err)
	}
	if len(v) > 255 {
		return OptLine{}, fmt.Errorf("%w: option %d longer than 255 bytes", ErrSyntax, t.code)
	}
	o.Option = Option{Code: t.code, Value: v}
	return o, nil
}
