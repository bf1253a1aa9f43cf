package dnsmasq

import (
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func mac(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

func TestParseHosts(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     []Host
		errs     []error // per problem, in order
	}{
		{
			name: "ironic",
			in:   "52:54:00:12:34:56,set:8f2c0a3e-1111-4222-8333-944445555666,set:ironic\n",
			want: []Host{{Line: 1, MACs: []net.HardwareAddr{mac("52:54:00:12:34:56")}, Tags: []string{"8f2c0a3e-1111-4222-8333-944445555666", "ironic"}}},
		},
		{
			name: "ignore",
			in:   "52:54:00:12:34:56,ignore\n",
			want: []Host{{Line: 1, MACs: []net.HardwareAddr{mac("52:54:00:12:34:56")}, Ignore: true}},
		},
		{
			name: "dnsmasq spellings",
			in: "# comment\n\n  01-52:54:00:AB:cd:e , net:a ,set:b   # trailing\n" +
				"5:4:0:0:0:1,52:54:00:00:00:02,set:\"two words\"\r\n" +
				"52:54:00:00:00:03,[2001:db8::3],set:c\n" +
				"5254:0000:0004,set:d\n",
			want: []Host{
				{Line: 3, MACs: []net.HardwareAddr{mac("52:54:00:ab:cd:0e")}, Tags: []string{"a", "b"}},
				{Line: 4, MACs: []net.HardwareAddr{mac("05:04:00:00:00:01"), mac("52:54:00:00:00:02")}, Tags: []string{"two words"}},
				{Line: 5, MACs: []net.HardwareAddr{mac("52:54:00:00:00:03")}, Tags: []string{"c"}},
				{Line: 6, MACs: []net.HardwareAddr{mac("52:54:00:00:00:04")}, Tags: []string{"d"}},
			},
		},
		{
			name: "malformed and unsupported, the rest kept",
			in: "52:54:00:zz:00:01,set:x\n" +
				"52:54:00:00:00:02,10.0.0.2\n" +
				"52:54:00:00:00:03,node3\n" +
				"52:54:00:00:00:04,12h\n" +
				"52:54:00:00:00:05,id:01:02\n" +
				"52:54:00:*:*:*,set:x\n" +
				"06-52:54:00:00:00:07\n" +
				"set:x\n" +
				"52:54:00:00:00:09,tag:y\n" +
				"52:54:00:00:00:0a,set:\n" +
				"52:54:00:00:00:0b,\"unclosed\n" +
				"52:54:00:00:00:0c,set:ok\n" +
				"52:54:00:00:00",
			want: []Host{
				{Line: 12, MACs: []net.HardwareAddr{mac("52:54:00:00:00:0c")}, Tags: []string{"ok"}},
				{Line: 13, MACs: []net.HardwareAddr{{0x52, 0x54, 0, 0, 0}}},
			},
			errs: []error{ErrSyntax, ErrUnsupported, ErrUnsupported, ErrUnsupported, ErrUnsupported, ErrUnsupported, ErrUnsupported, ErrUnsupported, ErrUnsupported, ErrSyntax, ErrSyntax},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, problems, err := ParseHosts("hosts.conf", strings.NewReader(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("hosts (-want +got):\n%s", d)
			}
			checkProblems(t, problems, tc.errs)
		})
	}
}

func checkProblems(t *testing.T, problems []*LineError, want []error) {
	t.Helper()
	if len(problems) != len(want) {
		t.Fatalf("problems %v, want %d", problems, len(want))
	}
	for i, p := range problems {
		if !errors.Is(p, want[i]) {
			t.Errorf("problem %d: %v, want %v", i, p, want[i])
		}
		if !strings.HasPrefix(p.Error(), "hosts.conf:") && !strings.HasPrefix(p.Error(), "opts.conf:") {
			t.Errorf("problem %q does not name its file", p)
		}
	}
}

func TestParseOpts(t *testing.T) {
	const tag = "8f2c0a3e-1111-4222-8333-944445555666"
	for _, tc := range []struct {
		name, in string
		want     []OptLine
		errs     []error
	}{
		{
			name: "ironic pxe",
			in: "tag:" + tag + ",67,pxelinux.0\n" +
				"tag:" + tag + ",210,/tftpboot/\n" +
				"tag:" + tag + ",66,192.0.2.10\n" +
				"tag:" + tag + ",150,192.0.2.10\n" +
				"tag:" + tag + ",255,192.0.2.10\n" +
				"tag:" + tag + ",59,tftp://192.0.2.10/pxelinux.0\n",
			want: []OptLine{
				{Line: 1, Tags: []Tag{{Name: tag}}, Option: Option{67, []byte("pxelinux.0")}},
				{Line: 2, Tags: []Tag{{Name: tag}}, Option: Option{210, []byte("/tftpboot/")}},
				{Line: 3, Tags: []Tag{{Name: tag}}, Option: Option{66, []byte("192.0.2.10")}},
				{Line: 4, Tags: []Tag{{Name: tag}}, Option: Option{150, []byte{192, 0, 2, 10}}},
				{Line: 5, Tags: []Tag{{Name: tag}}, Option: Option{255, []byte{192, 0, 2, 10}}},
			},
			errs: []error{ErrNotDHCPv4},
		},
		{
			name: "ironic ipxe",
			in: "tag:" + tag + ",tag:!ipxe,67,snponly.efi\n" +
				"tag:" + tag + ",tag:ipxe,67,http://192.0.2.10:8080/boot.ipxe\n" +
				"tag:" + tag + ",tag:!ipxe6,59,tftp://[2001:db8::10]/snponly.efi\n",
			want: []OptLine{
				{Line: 1, Tags: []Tag{{Name: tag}, {Name: "ipxe", Not: true}}, Option: Option{67, []byte("snponly.efi")}},
				{Line: 2, Tags: []Tag{{Name: tag}, {Name: "ipxe"}}, Option: Option{67, []byte("http://192.0.2.10:8080/boot.ipxe")}},
			},
			errs: []error{ErrNotDHCPv4},
		},
		{
			name: "names, bare tags, quoting",
			in: "x,option:bootfile-name,\"a,b\"\n" +
				"net:y,#z,option:tftp-server,\"10.0.0.1\"\n" +
				"option:tftp-server-address, 10.0.0.1 , 10.0.0.2\n" +
				"option:server-ip-address,0.0.0.0 # self\n" +
				"67,a , b\n" +
				"67,\"q\\\"\\tx\"\n",
			want: []OptLine{
				{Line: 1, Tags: []Tag{{Name: "x"}}, Option: Option{67, []byte("a,b")}},
				{Line: 2, Tags: []Tag{{Name: "y"}, {Name: "z", Not: true}}, Option: Option{66, []byte("10.0.0.1")}},
				{Line: 3, Option: Option{150, []byte{10, 0, 0, 1, 10, 0, 0, 2}}},
				{Line: 4, Option: Option{255, []byte{0, 0, 0, 0}}},
				{Line: 5, Option: Option{67, []byte("a , b")}},
				{Line: 6, Option: Option{67, []byte("q\"\tx")}},
			},
		},
		{
			name: "malformed and unsupported, the rest kept",
			in: "tag:a\n" +
				"tag:a,67\n" +
				"tag:a,67,\n" +
				"tag:a,150,not-an-address\n" +
				"tag:a,150,\"10.0.0.1\"\n" +
				"tag:a,255,10.0.0.1,10.0.0.2\n" +
				"tag:a,3,10.0.0.1\n" +
				"tag:a,54,10.0.0.1\n" +
				"tag:a,option:router,10.0.0.1\n" +
				"tag:a,option6:bootfile-url,http://[2001:db8::1]/x\n" +
				"tag:a,vendor:PXEClient,1,0.0.0.0\n" +
				"tag:,67,x\n" +
				"tag:a,300,x\n" +
				"tag:a,67," + strings.Repeat("x", 256) + "\n" +
				"tag:a,67,ok\n",
			want: []OptLine{
				{Line: 15, Tags: []Tag{{Name: "a"}}, Option: Option{67, []byte("ok")}},
			},
			errs: []error{ErrSyntax, ErrSyntax, ErrSyntax, ErrSyntax, ErrSyntax, ErrSyntax, ErrUnsupported, ErrUnsupported, ErrUnsupported, ErrNotDHCPv4, ErrUnsupported, ErrSyntax, ErrSyntax, ErrSyntax},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, problems, err := ParseOpts("opts.conf", strings.NewReader(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("lines (-want +got):\n%s", d)
			}
			checkProblems(t, problems, tc.errs)
		})
	}
}

func TestParseTooLarge(t *testing.T) {
	_, _, err := ParseOpts("opts.conf", strings.NewReader(strings.Repeat("#\n", MaxFileSize)))
	if err == nil {
		t.Fatal("no error for a file over MaxFileSize")
	}
}
