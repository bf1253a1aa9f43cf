package dnsmasq

import (
	"cmp"
	"net"
	"net/netip"
	"slices"
)

// Reply is what dnsmasq would answer a listed MAC.
type Reply struct {
	// Ignore: the host is disabled ("<mac>,ignore"); send nothing.
	Ignore bool
	// Tags is every tag the request carries: the host's set: tags, the
	// caller's, and "known", which dnsmasq sets for any listed host.
	Tags []string
	// Options are the DHCPv4 options that apply, by code. An address
	// 0.0.0.0 in them means the server's own address, as in dnsmasq.
	Options []Option
	// NextServer is the siaddr server-ip-address asks for, invalid when
	// none applies; 0.0.0.0 means the server's own address.
	NextServer netip.Addr
}

// Option returns the value of the option with code c.
func (r Reply) Option(c uint8) ([]byte, bool) {
	for _, o := range r.Options {
		if o.Code == c {
			return o.Value, true
		}
	}
	return nil, false
}

// table is one consistent view of every file, built whole on each change
// so that lookups never lock.
type table struct {
	hosts map[string]*Host
	// byTag holds the option lines under their first positive tag, which
	// a request must carry for the line to apply; loose holds the rest.
	byTag map[string][]optRef
	loose []optRef
}

// optRef is a line with its place in read order.
type optRef struct {
	seq  int
	line *OptLine
}

// source is one parsed file in the order dnsmasq would have read it.
type source struct {
	hosts []Host
	opts  []OptLine
}

// newTable merges the files, each later source overriding earlier ones:
// dnsmasq puts every line it reads in front of those it has, and takes
// the first that matches.
func newTable(sources []source) *table {
	t := &table{hosts: map[string]*Host{}, byTag: map[string][]optRef{}}
	seq := 0
	for _, s := range sources {
		for i := range s.hosts {
			h := &s.hosts[i]
			for _, mac := range h.MACs {
				t.hosts[string(mac)] = h
			}
		}
		for i := range s.opts {
			l := &s.opts[i]
			r := optRef{seq: seq, line: l}
			seq++
			if tag, ok := firstPositive(l.Tags); ok {
				t.byTag[tag] = append(t.byTag[tag], r)
			} else {
				t.loose = append(t.loose, r)
			}
		}
	}
	return t
}

func firstPositive(tags []Tag) (string, bool) {
	for _, t := range tags {
		if !t.Not {
			return t.Name, true
		}
	}
	return "", false
}

// lookup follows dnsmasq's option_filter: a line applies when its every
// tag:X is set and its every tag:!X is not; for each code a tagged line
// beats an untagged one whatever their order, and among equals the one
// read last wins.
func (t *table) lookup(mac net.HardwareAddr, clientTags []string) (Reply, bool) {
	h, ok := t.hosts[string(mac)]
	if !ok {
		return Reply{}, false
	}
	if h.Ignore {
		return Reply{Ignore: true}, true
	}
	set := map[string]bool{"known": true}
	for _, tag := range h.Tags {
		set[tag] = true
	}
	for _, tag := range clientTags {
		set[tag] = true
	}
	cands := slices.Clone(t.loose)
	for tag := range set {
		cands = append(cands, t.byTag[tag]...)
	}
	slices.SortFunc(cands, func(a, b optRef) int { return cmp.Compare(b.seq, a.seq) })
	chosen := map[uint8]*OptLine{}
	for _, c := range cands {
		if !matches(c.line.Tags, set) {
			continue
		}
		code := c.line.Option.Code
		if prev, ok := chosen[code]; !ok || (len(prev.Tags) == 0 && len(c.line.Tags) > 0) {
			chosen[code] = c.line
		}
	}
	r := Reply{Tags: make([]string, 0, len(set))}
	for tag := range set {
		r.Tags = append(r.Tags, tag)
	}
	slices.Sort(r.Tags)
	for code, l := range chosen {
		if code == OptServerIPAddress {
			r.NextServer = netip.AddrFrom4([4]byte(l.Option.Value))
			continue
		}
		r.Options = append(r.Options, Option{Code: code, Value: slices.Clone(l.Option.Value)})
	}
	slices.SortFunc(r.Options, func(a, b Option) int { return cmp.Compare(a.Code, b.Code) })
	return r, true
}

func matches(tags []Tag, set map[string]bool) bool {
	for _, t := range tags {
		if set[t.Name] == t.Not {
			return false
		}
	}
	return true
}
