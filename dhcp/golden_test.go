package dhcp

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/insomniacslk/dhcp/dhcpv4"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata")

// golden renders a reply as the client would read it: header fields that
// matter and every option, sorted by code.
func golden(m *dhcpv4.DHCPv4, dst net.Addr) string {
	if m == nil {
		return "no reply\n"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s to %v\n", m.OpCode, m.MessageType(), dst)
	fmt.Fprintf(&b, "  ciaddr %s yiaddr %s siaddr %s giaddr %s\n", m.ClientIPAddr, m.YourIPAddr, m.ServerIPAddr, m.GatewayIPAddr)
	fmt.Fprintf(&b, "  chaddr %s file %q sname %q\n", m.ClientHWAddr, m.BootFileName, m.ServerHostName)
	b.WriteString(m.Options.String())
	return b.String()
}

// step is one packet sent to a server in a golden scenario.
type step struct {
	note   string
	server *Server
	req    *dhcpv4.DHCPv4
	peer   net.Addr
}

func TestGolden(t *testing.T) {
	ipxe := dhcpv4.WithOption(dhcpv4.OptUserClass("iPXE"))
	tests := []struct {
		name  string
		steps func(t *testing.T) []step
	}{}
	for _, arch := range []uint16{0, 7, 9, 11, 16, 19} {
		tests = append(tests, struct {
			name  string
			steps func(t *testing.T) []step
		}{fmt.Sprintf("arch-%d", arch), func(t *testing.T) []step {
			s, _ := newServer(ModeAuthoritative)
			return []step{
				{"discover", s, discover(t, mac1, pxe(arch)...), nil},
				{"request", s, request(t, mac1, "10.0.0.100", "10.0.0.1", pxe(arch)...), nil},
			}
		}})
	}
	add := func(name string, f func(t *testing.T) []step) {
		tests = append(tests, struct {
			name  string
			steps func(t *testing.T) []step
		}{name, f})
	}
	add("ipxe-user-class", func(t *testing.T) []step {
		s, _ := newServer(ModeAuthoritative)
		return []step{{"ipxe discover", s, discover(t, mac1, append(pxe(7), ipxe)...), nil}}
	})
	add("not-a-boot-client", func(t *testing.T) []step {
		s, _ := newServer(ModeAuthoritative)
		return []step{{"plain discover", s, discover(t, mac1), nil}}
	})
	add("proxy-discover", func(t *testing.T) []step {
		s, _ := newServer(ModeProxy)
		return []step{
			{"pxe discover", s, discover(t, mac1, pxe(7)...), nil},
			{"plain discover", s, discover(t, mac2), nil},
			{"request to the site's server", s, request(t, mac1, "10.0.0.77", "10.0.0.250", pxe(7)...), nil},
		}
	})
	add("proxy-4011-request", func(t *testing.T) []step {
		s, _ := newServer(ModeProxy)
		s.ProxyPort = true
		peer := &net.UDPAddr{IP: net.ParseIP("10.0.0.77"), Port: 68}
		req := request(t, mac1, "", "", append(pxe(11), dhcpv4.WithClientIP(net.ParseIP("10.0.0.77")))...)
		return []step{
			{"pxe request", s, req, peer},
			{"pxe discover on 4011", s, discover(t, mac1, pxe(11)...), peer},
		}
	})
	add("relayed-second-subnet", func(t *testing.T) []step {
		s, _ := newServer(ModeAuthoritative)
		relay := dhcpv4.WithRelay(net.ParseIP("10.5.0.1"))
		from := &net.UDPAddr{IP: net.ParseIP("10.5.0.1"), Port: 67}
		return []step{
			{"relayed discover", s, discover(t, mac1, append(pxe(7), relay)...), from},
			{"relayed request", s, request(t, mac1, "10.5.0.100", "10.0.0.1", append(pxe(7), relay)...), from},
			{"relay on an unknown subnet", s, discover(t, mac2, dhcpv4.WithRelay(net.ParseIP("172.16.0.1"))), &net.UDPAddr{IP: net.ParseIP("172.16.0.1"), Port: 67}},
			{"forged relay from a host that is not a relay", s, discover(t, mac2, append(pxe(7), relay)...), &net.UDPAddr{IP: net.ParseIP("10.0.0.66"), Port: 68}},
		}
	})
	add("reservation", func(t *testing.T) []step {
		s, _ := newServer(ModeAuthoritative)
		return []step{
			{"reserved discover", s, discover(t, resMAC, pxe(0)...), nil},
			{"reserved request", s, request(t, resMAC, "10.0.0.9", "10.0.0.1", pxe(0)...), nil},
			{"another MAC asks for the reserved address", s, request(t, mac2, "10.0.0.9", ""), nil},
		}
	})
	add("nak-other-subnet", func(t *testing.T) []step {
		s, _ := newServer(ModeAuthoritative)
		return []step{{"init-reboot from another subnet", s, request(t, mac1, "192.168.1.5", ""), nil}}
	})
	add("decline-then-discover", func(t *testing.T) []step {
		s, _ := newServer(ModeAuthoritative)
		dec, err := dhcpv4.New(dhcpv4.WithMessageType(dhcpv4.MessageTypeDecline), dhcpv4.WithHwAddr(mac1),
			dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP("10.0.0.100"))),
			dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.ParseIP("10.0.0.1"))))
		if err != nil {
			t.Fatal(err)
		}
		return []step{
			{"discover", s, discover(t, mac1), nil},
			{"request", s, request(t, mac1, "10.0.0.100", "10.0.0.1"), nil},
			{"decline", s, dec, nil},
			{"discover again", s, discover(t, mac1), nil},
		}
	})
	add("release-frees", func(t *testing.T) []step {
		s, _ := newServer(ModeAuthoritative)
		rel, err := dhcpv4.New(dhcpv4.WithMessageType(dhcpv4.MessageTypeRelease), dhcpv4.WithHwAddr(mac1),
			dhcpv4.WithClientIP(net.ParseIP("10.0.0.100")))
		if err != nil {
			t.Fatal(err)
		}
		return []step{
			{"discover", s, discover(t, mac1), nil},
			{"request", s, request(t, mac1, "10.0.0.100", "10.0.0.1"), nil},
			{"another client", s, discover(t, mac2), nil},
			{"release", s, rel, nil},
			{"a third client gets the released address", s, request(t, net.HardwareAddr{0x52, 0x54, 0, 0, 0, 3}, "10.0.0.100", ""), nil},
		}
	})
	add("inform", func(t *testing.T) []step {
		s, _ := newServer(ModeAuthoritative)
		inf, err := dhcpv4.New(dhcpv4.WithMessageType(dhcpv4.MessageTypeInform), dhcpv4.WithHwAddr(mac2),
			dhcpv4.WithClientIP(net.ParseIP("10.0.0.50")))
		if err != nil {
			t.Fatal(err)
		}
		return []step{{"inform", s, inf, &net.UDPAddr{IP: net.ParseIP("10.0.0.50"), Port: 68}}}
	})
	add("init-reboot-after-restart", func(t *testing.T) []step {
		before, _ := newServer(ModeAuthoritative)
		after, _ := newServer(ModeAuthoritative) // a fresh store: the leases were lost
		renew := request(t, mac1, "", "", dhcpv4.WithClientIP(net.ParseIP("10.0.0.100")))
		return []step{
			{"discover", before, discover(t, mac1), nil},
			{"request", before, request(t, mac1, "10.0.0.100", "10.0.0.1"), nil},
			{"init-reboot after the restart", after, request(t, mac1, "10.0.0.100", ""), nil},
			{"renewing", after, renew, &net.UDPAddr{IP: net.ParseIP("10.0.0.100"), Port: 68}},
			{"another MAC wants it", after, request(t, mac2, "10.0.0.100", ""), nil},
		}
	})
	add("request-other-server", func(t *testing.T) []step {
		s, _ := newServer(ModeAuthoritative)
		return []step{
			{"discover", s, discover(t, mac1), nil},
			{"request naming another server", s, request(t, mac1, "10.0.0.150", "10.0.0.2"), nil},
			{"the offer was released: another client gets it", s, discover(t, mac2), nil},
		}
	})
	add("pool-exhaustion", func(t *testing.T) []step {
		s, _ := newServer(ModeAuthoritative)
		return []step{
			{"first", s, discover(t, mac1), nil},
			{"second", s, discover(t, mac2), nil},
			{"third: the pool of two is empty", s, discover(t, net.HardwareAddr{0x52, 0x54, 0, 0, 0, 3}), nil},
			{"the first asks again and keeps its offer", s, discover(t, mac1), nil},
		}
	})

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b strings.Builder
			for _, st := range tt.steps(t) {
				fmt.Fprintf(&b, "# %s: %s from %s\n", st.note, st.req.MessageType(), st.req.ClientHWAddr)
				reply, dst := st.server.Handle(context.Background(), st.req, st.peer)
				b.WriteString(golden(reply, dst))
			}
			path := filepath.Join("testdata", "golden", tt.name+".txt")
			if *update {
				if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if diff := cmp.Diff(string(want), b.String()); diff != "" {
				t.Errorf("reply differs from %s (-want +got):\n%s", path, diff)
			}
		})
	}
}
