package dnsmasq

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// Ironic's provider, for a node with one PXE-enabled port, writes
// hostsdir/ironic-<mac>.conf and optsdir/ironic-<node uuid>.conf: one
// "tag:<tag>,<opt_name>,<opt_value>" line per option, for the DHCPv4 list
// and then the DHCPv6 list, since the conductor asks for both and the
// provider writes them alike.
const (
	ironicMAC  = "52:54:00:12:34:56"
	ironicNode = "1be26c0b-03f2-4d2e-ae87-c02d7f33c123"
	ironicTFTP = "192.0.2.10"
)

func ironicOptions(ipxe bool) [][2]string {
	if ipxe {
		return [][2]string{
			{"tag:!ipxe,67", "snponly.efi"},
			{"tag:ipxe,67", "http://192.0.2.10:8080/boot.ipxe"},
			{"66", ironicTFTP},
			{"150", ironicTFTP},
			{"255", ironicTFTP},
			{"tag:!ipxe6,59", "tftp://192.0.2.10/snponly.efi"},
			{"tag:ipxe6,59", "http://192.0.2.10:8080/boot.ipxe"},
		}
	}
	return [][2]string{
		{"67", "pxelinux.0"},
		{"210", "/tftpboot/"},
		{"66", ironicTFTP},
		{"150", ironicTFTP},
		{"255", ironicTFTP},
		{"59", "tftp://192.0.2.10/pxelinux.0"},
	}
}

// writeLikeIronic does what update_dhcp_opts does.
func writeLikeIronic(t *testing.T, hostsdir, optsdir, tag string, ipxe bool) {
	t.Helper()
	f, err := os.Create(filepath.Join(optsdir, "ironic-"+ironicNode+".conf"))
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range ironicOptions(ipxe) {
		fmt.Fprintf(f, "tag:%s,%s,%s\n", tag, o[0], o[1])
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	writeInPlace(t, filepath.Join(hostsdir, "ironic-"+ironicMAC+".conf"), fmt.Sprintf("%s,set:%s,set:ironic\n", ironicMAC, tag))
}

// cleanLikeIronic does what clean_dhcp_opts does.
func cleanLikeIronic(t *testing.T, hostsdir, optsdir string) {
	t.Helper()
	writeInPlace(t, filepath.Join(hostsdir, "ironic-"+ironicMAC+".conf"), ironicMAC+",ignore\n")
	if err := os.Remove(filepath.Join(optsdir, "ironic-"+ironicNode+".conf")); err != nil {
		t.Fatal(err)
	}
}

// checkIronicNode checks what a node prepared by Ironic gets, from its
// firmware and from iPXE.
func checkIronicNode(t *testing.T, d *Dir, tag string, ipxe bool) {
	t.Helper()
	tftp := netip.MustParseAddr(ironicTFTP).As4()
	for _, fromIPXE := range []bool{false, true} {
		var tags []string
		want := Reply{Tags: []string{tag, "ironic", "known"}, NextServer: netip.MustParseAddr(ironicTFTP)}
		if fromIPXE {
			tags = []string{"ipxe"}
			want.Tags = []string{tag, "ipxe", "ironic", "known"}
		}
		boot := "pxelinux.0"
		switch {
		case ipxe && fromIPXE:
			boot = "http://192.0.2.10:8080/boot.ipxe"
		case ipxe:
			boot = "snponly.efi"
		}
		want.Options = []Option{{66, []byte(ironicTFTP)}, {67, []byte(boot)}, {150, tftp[:]}}
		if !ipxe {
			want.Options = append(want.Options, Option{210, []byte("/tftpboot/")})
		}
		got, ok := d.Lookup(mac(ironicMAC), tags...)
		if !ok {
			t.Fatalf("%s not listed", ironicMAC)
		}
		if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
			t.Errorf("ipxe=%v, from iPXE=%v (-want +got):\n%s", ipxe, fromIPXE, diff)
		}
	}
	// Only the DHCPv6 lines have no effect, and they are no fault.
	for _, p := range d.Problems() {
		if !errors.Is(p, ErrNotDHCPv4) {
			t.Errorf("problem: %v", p)
		}
	}
}

func TestIronicFiles(t *testing.T) {
	const tag = "54e90002-6d61-48e2-b002-91812e5b933c"
	for _, ipxe := range []bool{false, true} {
		t.Run(fmt.Sprintf("ipxe=%v", ipxe), func(t *testing.T) {
			hostsdir, optsdir := t.TempDir(), t.TempDir()
			d := &Dir{HostsDirs: []string{hostsdir}, OptsDirs: []string{optsdir}}
			writeLikeIronic(t, hostsdir, optsdir, tag, ipxe)
			if err := d.Load(); err != nil {
				t.Fatal(err)
			}
			checkIronicNode(t, d, tag, ipxe)
			cleanLikeIronic(t, hostsdir, optsdir)
			if err := d.Load(); err != nil {
				t.Fatal(err)
			}
			if r, ok := d.Lookup(mac(ironicMAC)); !ok || !r.Ignore {
				t.Errorf("after cleaning: %+v, %v; want ignored", r, ok)
			}
		})
	}
}
