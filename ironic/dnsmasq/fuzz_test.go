package dnsmasq

import (
	"bytes"
	"errors"
	"net"
	"testing"
)

func FuzzParseHosts(f *testing.F) {
	for _, s := range []string{
		"52:54:00:12:34:56,set:8f2c0a3e-1111-4222-8333-944445555666,set:ironic\n",
		"52:54:00:12:34:56,ignore\n",
		"01-52:54:00:ab:cd:ef,net:a,\"quoted, tag\" # c\n[2001:db8::1]\n",
		"52:54:00:*:*:*,10.0.0.1,host,12h,id:01:02\n\"",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		hosts, problems, err := ParseHosts("f", bytes.NewReader(b))
		if err != nil {
			return
		}
		for _, h := range hosts {
			if len(h.MACs) == 0 || h.Line < 1 {
				t.Fatalf("host %+v", h)
			}
			for _, m := range h.MACs {
				if len(m) < 2 || len(m) > 16 {
					t.Fatalf("MAC %v", m)
				}
			}
		}
		checkFuzzProblems(t, problems)
		newTable([]source{{hosts: hosts}}).lookup(nil, nil)
	})
}

func FuzzParseOpts(f *testing.F) {
	for _, s := range []string{
		"tag:8f2c0a3e-1111-4222-8333-944445555666,tag:!ipxe,67,snponly.efi\n",
		"tag:t,tag:ipxe,67,http://192.0.2.1:8080/boot.ipxe\ntag:t,66,192.0.2.1\ntag:t,150,192.0.2.1\ntag:t,255,192.0.2.1\n",
		"tag:t,210,/tftpboot/\ntag:t,tag:!ipxe6,59,tftp://[2001:db8::1]/x\n",
		"option:bootfile-name,\"a,\\\"b\"\noption6:bootfile-url,x\nvendor:PXEClient,1,0.0.0.0\n#x\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		opts, problems, err := ParseOpts("f", bytes.NewReader(b))
		if err != nil {
			return
		}
		for _, o := range opts {
			if len(o.Option.Value) == 0 || len(o.Option.Value) > 255 {
				t.Fatalf("line %+v", o)
			}
			if _, ok := options[o.Option.Code]; !ok {
				t.Fatalf("code %d sent", o.Option.Code)
			}
			for _, tag := range o.Tags {
				if tag.Name == "" {
					t.Fatalf("empty tag in %+v", o)
				}
			}
		}
		checkFuzzProblems(t, problems)
		host := Host{MACs: []net.HardwareAddr{{1, 2, 3, 4, 5, 6}}}
		tab := newTable([]source{{hosts: []Host{host}, opts: opts}})
		if r, ok := tab.lookup(host.MACs[0], []string{"ipxe"}); ok {
			for _, o := range r.Options {
				if o.Code == OptServerIPAddress {
					t.Fatal("server-ip-address sent as an option")
				}
			}
		}
	})
}

func checkFuzzProblems(t *testing.T, problems []*LineError) {
	for _, p := range problems {
		if p.Line < 1 || !(errors.Is(p, ErrSyntax) || errors.Is(p, ErrUnsupported) || errors.Is(p, ErrNotDHCPv4)) {
			t.Fatalf("problem %v", p)
		}
	}
}
