package dnsmasq

import (
	"net"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// src parses in-memory files, in the order given, into table sources.
func src(t *testing.T, hosts, opts string) source {
	t.Helper()
	h, _ := parseHosts("hosts", []byte(hosts))
	o, _ := parseOpts("opts", []byte(opts))
	return source{hosts: h, opts: o}
}

func TestLookup(t *testing.T) {
	const (
		nodeA = "aaaaaaaa-0000-4000-8000-000000000001"
		nodeB = "bbbbbbbb-0000-4000-8000-000000000002"
	)
	macA, macB, macC := mac("52:54:00:00:00:0a"), mac("52:54:00:00:00:0b"), mac("52:54:00:00:00:0c")
	// Two conductors: A with its TFTP server on .1 and iPXE, B on .2 and
	// plain PXE, each writing into its own directories.
	conductorA := src(t, "52:54:00:00:00:0a,set:"+nodeA+",set:ironic\n",
		"tag:"+nodeA+",tag:!ipxe,67,snponly.efi\n"+
			"tag:"+nodeA+",tag:ipxe,67,http://192.0.2.1:8080/boot.ipxe\n"+
			"tag:"+nodeA+",66,192.0.2.1\n"+
			"tag:"+nodeA+",150,192.0.2.1\n"+
			"tag:"+nodeA+",255,192.0.2.1\n"+
			"tag:"+nodeA+",tag:!ipxe6,59,tftp://192.0.2.1/snponly.efi\n")
	conductorB := src(t, "52:54:00:00:00:0b,set:"+nodeB+",set:ironic\n52:54:00:00:00:0c,ignore\n",
		"tag:"+nodeB+",67,pxelinux.0\n"+
			"tag:"+nodeB+",210,/tftpboot/\n"+
			"tag:"+nodeB+",66,192.0.2.2\n"+
			"tag:"+nodeB+",150,192.0.2.2\n"+
			"tag:"+nodeB+",255,192.0.2.2\n")
	two := []source{conductorA, conductorB}

	text := func(s string) []byte { return []byte(s) }
	ip := func(s string) []byte { b := netip.MustParseAddr(s).As4(); return b[:] }
	for _, tc := range []struct {
		name    string
		sources []source
		mac     net.HardwareAddr
		tags    []string
		want    Reply
		ok      bool
	}{
		{
			name: "node A from firmware", sources: two, mac: macA, ok: true,
			want: Reply{
				Tags:       []string{nodeA, "ironic", "known"},
				Options:    []Option{{66, text("192.0.2.1")}, {67, text("snponly.efi")}, {150, ip("192.0.2.1")}},
				NextServer: netip.MustParseAddr("192.0.2.1"),
			},
		},
		{
			name: "node A from iPXE", sources: two, mac: macA, tags: []string{"ipxe"}, ok: true,
			want: Reply{
				Tags:       []string{nodeA, "ipxe", "ironic", "known"},
				Options:    []Option{{66, text("192.0.2.1")}, {67, text("http://192.0.2.1:8080/boot.ipxe")}, {150, ip("192.0.2.1")}},
				NextServer: netip.MustParseAddr("192.0.2.1"),
			},
		},
		{
			name: "node B, the other conductor", sources: two, mac: macB, tags: []string{"ipxe"}, ok: true,
			want: Reply{
				Tags:       []string{nodeB, "ipxe", "ironic", "known"},
				Options:    []Option{{66, text("192.0.2.2")}, {67, text("pxelinux.0")}, {150, ip("192.0.2.2")}, {210, text("/tftpboot/")}},
				NextServer: netip.MustParseAddr("192.0.2.2"),
			},
		},
		{name: "ignored", sources: two, mac: macC, want: Reply{Ignore: true}, ok: true},
		{name: "not listed", sources: two, mac: mac("52:54:00:00:00:0d")},
		{
			name:    "later ignore overrides",
			sources: []source{conductorA, src(t, "52:54:00:00:00:0a,ignore\n", "")},
			mac:     macA, want: Reply{Ignore: true}, ok: true,
		},
		{
			name:    "later host line overrides",
			sources: []source{src(t, "52:54:00:00:00:0a,ignore\n", ""), conductorA},
			mac:     macA, ok: true,
			want: Reply{
				Tags:       []string{nodeA, "ironic", "known"},
				Options:    []Option{{66, text("192.0.2.1")}, {67, text("snponly.efi")}, {150, ip("192.0.2.1")}},
				NextServer: netip.MustParseAddr("192.0.2.1"),
			},
		},
		{
			name: "last line read wins among tagged",
			sources: []source{
				src(t, "52:54:00:00:00:0a,set:n\n", "tag:n,67,first\ntag:n,67,second\n"),
				src(t, "", "tag:n,67,third\ntag:other,67,never\n"),
			},
			mac: macA, ok: true,
			want: Reply{Tags: []string{"known", "n"}, Options: []Option{{67, text("third")}}},
		},
		{
			name: "tagged beats untagged read later",
			sources: []source{
				src(t, "52:54:00:00:00:0a,set:n\n", "tag:n,67,tagged\n"),
				src(t, "", "67,untagged\n66,untagged\n"),
			},
			mac: macA, ok: true,
			want: Reply{Tags: []string{"known", "n"}, Options: []Option{{66, text("untagged")}, {67, text("tagged")}}},
		},
		{
			name:    "negated only, and known",
			sources: []source{src(t, "52:54:00:00:00:0a\n", "tag:!ironic,67,not-ironic\ntag:known,66,known\ntag:!known,150,10.0.0.1\n")},
			mac:     macA, ok: true,
			want: Reply{Tags: []string{"known"}, Options: []Option{{66, text("known")}, {67, text("not-ironic")}}},
		},
		{
			name:    "every tag must hold",
			sources: []source{src(t, "52:54:00:00:00:0a,set:a\n", "tag:a,tag:b,67,ab\ntag:b,tag:a,66,ba\ntag:a,tag:!b,150,10.0.0.1\n")},
			mac:     macA, tags: []string{"b"}, ok: true,
			want: Reply{Tags: []string{"a", "b", "known"}, Options: []Option{{66, text("ba")}, {67, text("ab")}}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := newTable(tc.sources).lookup(tc.mac, tc.tags)
			if ok != tc.ok {
				t.Fatalf("ok %v, want %v", ok, tc.ok)
			}
			if d := cmp.Diff(tc.want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); d != "" {
				t.Errorf("reply (-want +got):\n%s", d)
			}
		})
	}
}
