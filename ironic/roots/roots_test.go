package roots

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/tftp"
)

// tree writes files (name → content; "->target" makes a symlink) under a
// new directory.
func tree(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if target, ok := strings.CutPrefix(content, "->"); ok {
			if err := os.Symlink(target, p); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func read(t *testing.T, f tftp.File) string {
	t.Helper()
	defer f.Close()
	b, err := io.ReadAll(io.NewSectionReader(f, 0, f.Size()))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestTFTP(t *testing.T) {
	outside := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(outside, []byte("SECRET"), 0o644)
	c1 := tree(t, map[string]string{
		"snponly.efi":             "c1 loader",
		"grub/grub.cfg":           "c1 master grub",
		"1234/config":             "c1 node config",
		"pxelinux.cfg/aa-bb":      "->../1234/config", // as Ironic links, relative
		"aa:bb:cc:dd:ee:ff.conf":  "->1234/config",
		"leak":                    "->" + outside,
		"grub.cfg-01-aa-bb-cc-dd": "c1 grub per mac",
	})
	c2 := tree(t, map[string]string{"grub/grub.cfg": "c2 master grub", "x.conf": "c2 x"})
	own := tftp.FilesFunc(func(_ context.Context, _ netip.AddrPort, name string) (tftp.File, error) {
		return tftp.NewBytes([]byte("rackboot " + name)), nil
	})
	s, err := New([]Root{
		{Name: "c2", TFTPRoot: c2, Subnets: []netip.Prefix{netip.MustParsePrefix("10.2.0.0/16")}},
		{Name: "c1", TFTPRoot: c1},
	})
	if err != nil {
		t.Fatal(err)
	}
	ironicClients := map[netip.Addr]bool{netip.MustParseAddr("10.1.0.9"): true, netip.MustParseAddr("10.2.0.9"): true}
	files := s.TFTP(own, func(_ context.Context, a netip.Addr) (net.HardwareAddr, bool) { return nil, ironicClients[a] })

	rackNode := netip.MustParseAddrPort("10.1.0.5:1000")
	ironicNode := netip.MustParseAddrPort("10.1.0.9:1000")
	ironicNode2 := netip.MustParseAddrPort("10.2.0.9:1000")
	for _, tc := range []struct {
		client netip.AddrPort
		path   string
		want   string
		err    error
	}{
		// rackboot's own nodes keep rackboot's names.
		{rackNode, "grub/grub.cfg", "rackboot grub/grub.cfg", nil},
		{rackNode, "/snponly.efi", "rackboot snponly.efi", nil},
		// The prefixes, for anyone.
		{rackNode, "ironic/c1/snponly.efi", "c1 loader", nil},
		{rackNode, "/ironic/c1/pxelinux.cfg/aa-bb", "c1 node config", nil},
		{rackNode, "ironic/c2/x.conf", "c2 x", nil},
		{rackNode, "/tftpboot/aa:bb:cc:dd:ee:ff.conf", "c1 node config", nil},
		// Ironic's nodes get their conductor's tree for every name.
		{ironicNode, "grub/grub.cfg", "c1 master grub", nil},
		{ironicNode, "snponly.efi", "c1 loader", nil},
		{ironicNode, "grub.cfg-01-aa-bb-cc-dd", "c1 grub per mac", nil},
		{ironicNode2, "grub/grub.cfg", "c2 master grub", nil},
		{ironicNode2, "/tftpboot/x.conf", "c2 x", nil},
		// Refusals.
		{rackNode, "ironic/c1/leak", "", tftp.ErrOutsideRoot},
		{ironicNode, "leak", "", tftp.ErrOutsideRoot},
		{rackNode, "ironic/c1/../../secret", "", tftp.ErrOutsideRoot},
		{rackNode, "ironic/c3/snponly.efi", "", fs.ErrNotExist},
		{rackNode, "ironic/c1/", "", fs.ErrNotExist},
		{rackNode, "ironic/c1/grub", "", tftp.ErrNotRegular},
		{ironicNode, "missing.efi", "", fs.ErrNotExist},
	} {
		f, err := files.Open(context.Background(), tc.client, tc.path)
		if tc.err != nil {
			if !errors.Is(err, tc.err) {
				t.Errorf("%s %s: err %v, want %v", tc.client, tc.path, err, tc.err)
			}
			if err == nil {
				f.Close()
			}
			continue
		}
		if err != nil {
			t.Errorf("%s %s: %v", tc.client, tc.path, err)
			continue
		}
		if got := read(t, f); got != tc.want {
			t.Errorf("%s %s: %q, want %q", tc.client, tc.path, got, tc.want)
		}
	}
}

// TestTFTPReadsEachTime: Ironic rewrites a node's config in place as it
// moves between deploy stages; the next request sees the new bytes.
func TestTFTPReadsEachTime(t *testing.T) {
	dir := tree(t, map[string]string{"1234/config": "deploy"})
	s, err := New([]Root{{Name: "c1", TFTPRoot: dir}})
	if err != nil {
		t.Fatal(err)
	}
	files := s.TFTP(nil, nil)
	client := netip.MustParseAddrPort("10.0.0.1:9")
	for _, want := range []string{"deploy", "rescue"} {
		os.WriteFile(filepath.Join(dir, "1234", "config"), []byte(want), 0o644)
		f, err := files.Open(context.Background(), client, "ironic/c1/1234/config")
		if err != nil {
			t.Fatal(err)
		}
		if got := read(t, f); got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
	// A tree Ironic has not made yet is no file, not a failure.
	os.RemoveAll(dir)
	if _, err := files.Open(context.Background(), client, "ironic/c1/1234/config"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing tree: %v, want not exist", err)
	}
}

func TestNew(t *testing.T) {
	for _, tc := range []struct {
		name  string
		roots []Root
		err   string
	}{
		{"ok", []Root{{Name: "c1", TFTPRoot: "/tftpboot", HTTPRoot: "/httpboot"}, {Name: "conductor-2_b", HTTPRoot: "/srv/h"}}, ""},
		{"none", nil, ""},
		{"upper", []Root{{Name: "C1", TFTPRoot: "/t"}}, "name"},
		{"slash", []Root{{Name: "a/b", TFTPRoot: "/t"}}, "name"},
		{"dots", []Root{{Name: "..", TFTPRoot: "/t"}}, "name"},
		{"empty", []Root{{TFTPRoot: "/t"}}, "name"},
		{"twice", []Root{{Name: "c1", TFTPRoot: "/t"}, {Name: "c1", TFTPRoot: "/u"}}, "twice"},
		{"no trees", []Root{{Name: "c1"}}, "neither"},
		{"relative", []Root{{Name: "c1", TFTPRoot: "tftpboot"}}, "absolute"},
		{"bad subnet", []Root{{Name: "c1", TFTPRoot: "/t", Subnets: []netip.Prefix{{}}}}, "subnet"},
	} {
		_, err := New(tc.roots)
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%s: err %v, want one naming %q", tc.name, err, tc.err)
		}
	}
}

func TestFor(t *testing.T) {
	s, _ := New([]Root{
		{Name: "a", TFTPRoot: "/a", Subnets: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/24")}},
		{Name: "b", TFTPRoot: "/b"},
		{Name: "c", TFTPRoot: "/c", Subnets: []netip.Prefix{netip.MustParsePrefix("10.3.0.0/24")}},
	})
	for addr, want := range map[string]string{"10.1.0.7": "a", "10.3.0.7": "c", "10.9.0.1": "b", "::ffff:10.1.0.7": "a"} {
		if r, ok := s.For(netip.MustParseAddr(addr)); !ok || r.Name != want {
			t.Errorf("For(%s) = %q, %v; want %q", addr, r.Name, ok, want)
		}
	}
	only, _ := New([]Root{{Name: "a", TFTPRoot: "/a", Subnets: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/24")}}})
	if r, ok := only.For(netip.MustParseAddr("10.2.0.1")); ok {
		t.Errorf("a client of no root's subnet got %q", r.Name)
	}
}

// TestOffer: the answers Ironic's conductor has its DHCP server give
// ([dhcp]dhcp_provider = none), by firmware, iPXE and subnet.
func TestOffer(t *testing.T) {
	s, err := New([]Root{
		{Name: "c1", HTTPRoot: "/httpboot", TFTPRoot: "/tftpboot"},
		{Name: "c2", Subnets: []netip.Prefix{netip.MustParsePrefix("10.2.0.0/16")}, BootInterface: BootPXE,
			TFTPServer: netip.MustParseAddr("10.2.0.5"), BootFiles: map[Firmware]string{FirmwareUEFI: "shimx64.efi"}},
		{Name: "c3", Subnets: []netip.Prefix{netip.MustParsePrefix("10.3.0.0/24")}, HTTPURL: "http://10.3.0.5:8080/",
			TFTPServer: netip.MustParseAddr("10.3.0.5"), BootFiles: map[Firmware]string{FirmwareAArch64: "snponly-arm64.efi"}},
		{Name: "c4", Subnets: []netip.Prefix{netip.MustParsePrefix("10.4.0.0/24")}, TFTPRoot: "/t4"},
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Base = "http://10.1.0.1:8080"
	net1, net2, net3 := netip.MustParsePrefix("10.1.0.0/24"), netip.MustParsePrefix("10.2.7.0/24"), netip.MustParsePrefix("10.3.0.0/24")
	c5 := netip.MustParseAddr("10.2.0.5")
	c6 := netip.MustParseAddr("10.3.0.5")
	for _, tc := range []struct {
		name string
		cl   boot.Client
		want boot.Offer
		ok   bool
	}{
		{"uefi", boot.Client{Arch: boot.ClientX64UEFI, Network: net1}, boot.Offer{File: "snponly.efi"}, true},
		{"bios", boot.Client{Arch: boot.ClientX86BIOS, Network: net1}, boot.Offer{File: "undionly.kpxe"}, true},
		{"arm", boot.Client{Arch: boot.ClientARM64UEFI, Network: net1}, boot.Offer{File: "snponly.efi"}, true},
		{"ipxe on rackboot's http", boot.Client{Arch: boot.ClientX64UEFI, IPXE: true, Network: net1}, boot.Offer{File: "http://10.1.0.1:8080/ironic/c1/boot.ipxe"}, true},
		{"no network: the default root", boot.Client{Arch: boot.ClientX64UEFI, IPXE: true}, boot.Offer{File: "http://10.1.0.1:8080/ironic/c1/boot.ipxe"}, true},
		{"pxe uefi, named", boot.Client{Arch: boot.ClientX64UEFI, Network: net2}, boot.Offer{File: "shimx64.efi", NextServer: c5}, true},
		{"pxe arm default", boot.Client{Arch: boot.ClientARM64UEFI, Network: net2}, boot.Offer{File: "grubaa64.efi", NextServer: c5}, true},
		{"pxe bios", boot.Client{Arch: boot.ClientX86BIOS, Network: net2}, boot.Offer{File: "pxelinux.0", NextServer: c5}, true},
		// GRUB is no iPXE: a client that is iPXE on a pxe conductor still
		// gets the loader.
		{"pxe and ipxe", boot.Client{Arch: boot.ClientX64UEFI, IPXE: true, Network: net2}, boot.Offer{File: "shimx64.efi", NextServer: c5}, true},
		{"own conductor http_url", boot.Client{Arch: boot.ClientARM64UEFI, IPXE: true, Network: net3}, boot.Offer{File: "http://10.3.0.5:8080/boot.ipxe"}, true},
		{"own conductor arm loader", boot.Client{Arch: boot.ClientARM64UEFI, Network: net3}, boot.Offer{File: "snponly-arm64.efi", NextServer: c6}, true},
		{"ipxe with no http", boot.Client{Arch: boot.ClientX64UEFI, IPXE: true, Network: netip.MustParsePrefix("10.4.0.0/24")}, boot.Offer{}, false},
		{"http boot", boot.Client{Arch: boot.ClientX64UEFIHTTP, Network: net1}, boot.Offer{}, false},
		{"ia32", boot.Client{Arch: boot.ClientIA32UEFI, Network: net1}, boot.Offer{}, false},
	} {
		got, ok := s.Offer(tc.cl)
		if ok != tc.ok || got != tc.want {
			t.Errorf("%s: %+v, %v; want %+v, %v", tc.name, got, ok, tc.want, tc.ok)
		}
	}
	// Ironic's API names the node's conductor and boot interface: they
	// win over the subnet's root.
	m, _ := net.ParseMAC("52:54:00:00:00:09")
	s.Assign(map[string]Assignment{m.String(): {Root: "c3", BootInterface: BootPXE}})
	if got, ok := s.Offer(boot.Client{MAC: m, Arch: boot.ClientARM64UEFI, Network: net1}); !ok || got != (boot.Offer{File: "snponly-arm64.efi", NextServer: c6}) {
		t.Errorf("assigned to c3, pxe: %+v %v", got, ok)
	}
	s.Assign(map[string]Assignment{m.String(): {Root: "c3", BootInterface: BootIPXE}})
	if got, ok := s.Offer(boot.Client{MAC: m, Arch: boot.ClientX64UEFI, IPXE: true, Network: net1}); !ok || got.File != "http://10.3.0.5:8080/boot.ipxe" {
		t.Errorf("assigned to c3, ipxe: %+v %v", got, ok)
	}
	s.Assign(map[string]Assignment{m.String(): {Root: "c3", BootInterface: "redfish-virtual-media"}})
	if got, ok := s.Offer(boot.Client{MAC: m, Arch: boot.ClientX64UEFI, Network: net1}); ok {
		t.Errorf("a virtual-media node got %+v", got)
	}
	s.Assign(map[string]Assignment{m.String(): {Root: "gone"}})
	if got, ok := s.Offer(boot.Client{MAC: m, Arch: boot.ClientX64UEFI, IPXE: true, Network: net1}); !ok || got.File != "http://10.1.0.1:8080/ironic/c1/boot.ipxe" {
		t.Errorf("assigned to a root that is not: %+v %v", got, ok)
	}
	bad := []Root{
		{Name: "c1", HTTPURL: "ftp://x"},
		{Name: "c1", HTTPURL: "http://"},
		{Name: "c1", TFTPRoot: "/t", BootInterface: "redfish-virtual-media"},
		{Name: "c1", TFTPRoot: "/t", TFTPServer: netip.MustParseAddr("fd00::1")},
		{Name: "c1", TFTPRoot: "/t", BootFiles: map[Firmware]string{"arm": "x.efi"}},
		{Name: "c1", TFTPRoot: "/t", BootFiles: map[Firmware]string{FirmwareUEFI: ""}},
	}
	for _, r := range bad {
		if _, err := New([]Root{r}); err == nil {
			t.Errorf("New(%+v) took it", r)
		}
	}
	// A conductor serving its own files needs no tree here.
	if _, err := New([]Root{{Name: "c1", HTTPURL: "http://10.0.0.5:8080", TFTPServer: c5}}); err != nil {
		t.Errorf("a conductor's own servers: %v", err)
	}
}

// TestConductorOf: two conductors on one subnet are told apart by what
// each wrote for its node: the TFTP path prefix (210) of a GRUB node, the
// iPXE script URL (67) of an iPXE one.
func TestConductorOf(t *testing.T) {
	c1 := tree(t, map[string]string{"grubaa64.efi": "c1 grub"})
	c2 := tree(t, map[string]string{"grubaa64.efi": "c2 grub"})
	s, err := New([]Root{{Name: "c1", TFTPRoot: c1, HTTPRoot: "/h1"}, {Name: "c2", TFTPRoot: c2, HTTPRoot: "/h2"}})
	if err != nil {
		t.Fatal(err)
	}
	opts := func(m map[uint8]string) func(uint8) ([]byte, bool) {
		return func(c uint8) ([]byte, bool) {
			v, ok := m[c]
			return []byte(v), ok
		}
	}
	for _, tc := range []struct {
		opts map[uint8]string
		want string
	}{
		{map[uint8]string{210: c2 + "/", 67: "grubaa64.efi"}, "c2"},
		{map[uint8]string{210: c1}, "c1"},
		{map[uint8]string{67: "http://10.0.0.1:8080/ironic/c2/boot.ipxe"}, "c2"},
		{map[uint8]string{67: "http://10.0.0.1:8080/ironic/c22/boot.ipxe"}, ""},
		{map[uint8]string{67: "snponly.efi"}, ""},
		{map[uint8]string{210: "/elsewhere/"}, ""},
	} {
		if got := s.ConductorFromOptions(opts(tc.opts)); got != tc.want {
			t.Errorf("%v: %q, want %q", tc.opts, got, tc.want)
		}
	}
	arm, _ := net.ParseMAC("52:54:00:00:00:20")
	s.ConductorOf = func(mac net.HardwareAddr) string {
		if mac.String() == arm.String() {
			return "c2"
		}
		return ""
	}
	files := s.TFTP(nil, func(context.Context, netip.Addr) (net.HardwareAddr, bool) { return arm, true })
	f, err := files.Open(context.Background(), netip.MustParseAddrPort("10.0.0.5:1"), "grubaa64.efi")
	if err != nil {
		t.Fatal(err)
	}
	if got := read(t, f); got != "c2 grub" {
		t.Errorf("the node of c2 got %q", got)
	}
}
