package dnsmasq

import (
	"bytes"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestWriteLeases(t *testing.T) {
	exp := time.Unix(1764612345, 0)
	for _, tc := range []struct {
		name   string
		leases []Lease
		want   string
		err    bool
	}{
		{
			name: "dnsmasq's format",
			leases: []Lease{
				{Expires: exp, MAC: mac("52:54:00:12:34:56"), Addr: netip.MustParseAddr("192.0.2.50"), Hostname: "node-1", ClientID: []byte{1, 0x52, 0x54, 0, 0x12, 0x34, 0x56}},
				{MAC: mac("52:54:00:AB:CD:EF"), Addr: netip.MustParseAddr("192.0.2.51")},
				{Expires: exp, MAC: net.HardwareAddr{1, 2, 3, 4, 5, 6, 7, 8}, HWType: 32, Addr: netip.MustParseAddr("192.0.2.52")},
			},
			want: "1764612345 52:54:00:12:34:56 192.0.2.50 node-1 01:52:54:00:12:34:56\n" +
				"0 52:54:00:ab:cd:ef 192.0.2.51 * *\n" +
				"1764612345 20-01:02:03:04:05:06:07:08 192.0.2.52 * *\n",
		},
		{
			name: "a client's host name cannot forge a line",
			leases: []Lease{
				{Expires: exp, MAC: mac("52:54:00:00:00:01"), Addr: netip.MustParseAddr("192.0.2.60"), Hostname: "x *\n0 52:54:00:00:00:02 6.6.6.6"},
				{Expires: exp, MAC: mac("52:54:00:00:00:03"), Addr: netip.MustParseAddr("192.0.2.61"), Hostname: "-bad"},
			},
			want: "1764612345 52:54:00:00:00:01 192.0.2.60 * *\n1764612345 52:54:00:00:00:03 192.0.2.61 * *\n",
		},
		{name: "IPv6", leases: []Lease{{MAC: mac("52:54:00:00:00:01"), Addr: netip.MustParseAddr("2001:db8::1")}}, err: true},
		{name: "no MAC", leases: []Lease{{Addr: netip.MustParseAddr("192.0.2.1")}}, err: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			err := WriteLeases(&b, tc.leases)
			if (err != nil) != tc.err {
				t.Fatalf("err %v, want error %v", err, tc.err)
			}
			if tc.err {
				return
			}
			if d := cmp.Diff(tc.want, b.String()); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
}

// TestLeaseFileAsIronicReadsIt reads the file the way Ironic's provider
// does: split each line on white space, the address is the third field of
// the line whose second is the port's MAC.
func TestLeaseFileAsIronicReadsIt(t *testing.T) {
	p := filepath.Join(t.TempDir(), "dnsmasq.leases")
	leases := []Lease{
		{Expires: time.Now().Add(time.Hour), MAC: mac("52:54:00:12:34:56"), Addr: netip.MustParseAddr("192.0.2.50"), Hostname: "a b"},
		{Expires: time.Now().Add(time.Hour), MAC: mac("52:54:00:12:34:57"), Addr: netip.MustParseAddr("192.0.2.51")},
	}
	for range 2 {
		if err := WriteLeaseFile(p, leases); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, line := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		f := strings.Fields(line)
		if len(f) != 5 {
			t.Fatalf("line %q has %d fields", line, len(f))
		}
		got[f[1]] = f[2]
	}
	want := map[string]string{"52:54:00:12:34:56": "192.0.2.50", "52:54:00:12:34:57": "192.0.2.51"}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
	if ents, _ := os.ReadDir(filepath.Dir(p)); len(ents) != 1 {
		t.Errorf("left behind: %v", ents)
	}
}
