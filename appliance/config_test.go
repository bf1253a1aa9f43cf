package appliance

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoadConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(s string) string {
		p := filepath.Join(dir, "c.yaml")
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	c, err := LoadConfig(write(`
data_dir: /var/lib/rackboot
interface: br0
dhcp:
  mode: authoritative
  subnets:
    - prefix: 10.20.0.0/24
      range: 10.20.0.100-10.20.0.199
      lease_time: 30m
      secure_boot: true
      reservations:
        - {mac: "52:54:00:12:34:56", ip: 10.20.0.10, hostname: gpu-01}
retention:
  boot_events: 720h
  events: -1s
power:
  soft_off_timeout: 90s
ramdisk:
  nonfree_firmware: false
`))
	if err != nil {
		t.Fatal(err)
	}
	if c.Retention.BootEvents != 720*time.Hour || c.Retention.Events != -time.Second {
		t.Errorf("retention = %+v", c.Retention)
	}
	if c.Power.SoftOffTimeout != 90*time.Second {
		t.Errorf("power = %+v", c.Power)
	}
	if c.Ramdisk.NonfreeFirmware == nil || *c.Ramdisk.NonfreeFirmware {
		t.Errorf("ramdisk.nonfree_firmware: false read as %v", c.Ramdisk.NonfreeFirmware)
	}
	if c.DataDir != "/var/lib/rackboot" || c.DHCP.Mode != "authoritative" || len(c.DHCP.Subnets) != 1 ||
		c.DHCP.Subnets[0].LeaseTime != 30*time.Minute || c.DHCP.Subnets[0].Reservations[0].Hostname != "gpu-01" {
		t.Fatalf("config = %+v", c)
	}
	if _, err := LoadConfig(write("dhcp:\n  mdoe: proxy\n")); err == nil || !strings.Contains(err.Error(), "mdoe") {
		t.Errorf("a misspelt key loaded without error: %v", err)
	}
	if c, err := LoadConfig(write("")); err != nil || c.Ramdisk.NonfreeFirmware != nil {
		t.Errorf("an empty config: %v, ramdisk.nonfree_firmware %v", err, c.Ramdisk.NonfreeFirmware)
	}
	if _, err := LoadConfig(filepath.Join(dir, "missing.yaml")); err == nil {
		t.Error("a missing file loaded")
	}
}

func TestResolve(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		err  string
	}{
		{"proxy by default with a server ip", Config{ServerIP: "10.0.0.1", DHCP: DHCPConfig{Mode: "off"}}, ""},
		{"bad mode", Config{ServerIP: "10.0.0.1", DHCP: DHCPConfig{Mode: "rogue"}}, "want authoritative, proxy or off"},
		{"proxy needs an interface", Config{ServerIP: "10.0.0.1"}, "needs --interface"},
		{"authoritative needs a range", Config{Interface: "lo", DHCP: DHCPConfig{Mode: "authoritative"}}, "needs a lease range"},
		{"range on the interface", Config{Interface: "lo", DHCP: DHCPConfig{Mode: "authoritative", Range: "127.0.0.100-127.0.0.200"}}, ""},
		{"range outside", Config{Interface: "lo", DHCP: DHCPConfig{Mode: "authoritative", Range: "10.0.0.1-10.0.0.2"}}, "not inside it"},
		{"range backwards", Config{Interface: "lo", DHCP: DHCPConfig{Mode: "authoritative", Range: "127.0.0.9-127.0.0.1"}}, "lowest first"},
		{"no subnet holds the server", Config{Interface: "lo", DHCP: DHCPConfig{Mode: "authoritative",
			Subnets: []SubnetConfig{{Prefix: "10.9.0.0/24", Range: "10.9.0.10-10.9.0.20"}}}}, "no dhcp subnet contains"},
		{"bad reservation", Config{Interface: "lo", DHCP: DHCPConfig{Mode: "authoritative",
			Subnets: []SubnetConfig{{Prefix: "127.0.0.0/8", Range: "127.0.0.10-127.0.0.20", Reservations: []ReservationConfig{{MAC: "zz", IP: "127.0.0.5"}}}}}}, "reservation"},
		{"bad relay", Config{Interface: "lo", DHCP: DHCPConfig{Mode: "authoritative",
			Subnets: []SubnetConfig{{Prefix: "127.0.0.0/8", Range: "127.0.0.10-127.0.0.20", Relays: []string{"10.0.0.1", "somewhere"}}}}}, `relay "somewhere"`},
		{"relays", Config{Interface: "lo", DHCP: DHCPConfig{Mode: "authoritative",
			Subnets: []SubnetConfig{{Prefix: "127.0.0.0/8", Range: "127.0.0.10-127.0.0.20", Relays: []string{"10.0.0.1", "10.1.0.0/16", "any"}}}}}, ""},
		{"unknown interface", Config{Interface: "nosuchif0"}, "nosuchif0"},
		{"bad http addr", Config{ServerIP: "10.0.0.1", HTTPAddr: "8080", DHCP: DHCPConfig{Mode: "off"}}, "http addr"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := resolve(tt.cfg)
			if tt.err == "" {
				if err != nil {
					t.Fatalf("resolve: %v", err)
				}
				if !r.serverIP.IsValid() || !strings.HasPrefix(r.baseURL, "http://") {
					t.Errorf("resolved = %+v", r)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("resolve err = %v, want %q", err, tt.err)
			}
		})
	}
}

func TestParseRange(t *testing.T) {
	if f, l, err := ParseRange("10.0.0.5 - 10.0.0.9"); err != nil || f.String() != "10.0.0.5" || l.String() != "10.0.0.9" {
		t.Errorf("ParseRange = %v %v %v", f, l, err)
	}
	for _, bad := range []string{"", "10.0.0.5", "10.0.0.9-10.0.0.5", "::1-::2", "a-b"} {
		if _, _, err := ParseRange(bad); err == nil {
			t.Errorf("ParseRange(%q) accepted", bad)
		}
	}
}

func TestSubnetRelays(t *testing.T) {
	s, err := subnet(SubnetConfig{Prefix: "10.30.0.0/24", Range: "10.30.0.10-10.30.0.20", Relays: []string{"10.0.0.1", "10.1.0.0/16"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(s.Relays, s.AnyRelay); got != "[10.0.0.1/32 10.1.0.0/16] false" {
		t.Errorf("relays = %s", got)
	}
	if s, err = subnet(SubnetConfig{Prefix: "10.30.0.0/24", Range: "10.30.0.10-10.30.0.20", Relays: []string{"any"}}); err != nil || !s.AnyRelay {
		t.Errorf("relays: any = %+v, %v", s, err)
	}
}

func TestPowerConfig(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.yaml")
	load := func(s string) Config {
		t.Helper()
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		c, err := LoadConfig(p)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	c := load("power:\n  poll_interval: 0s\n  poll_concurrency: 64\n  max_concurrent_on: 4\n  on_rate: 0.5\n")
	if pollInterval(c.Power) != 0 || c.Power.PollConcurrency != 64 || c.Power.MaxConcurrentOn != 4 || c.Power.OnRate != 0.5 {
		t.Errorf("power = %+v", c.Power)
	}
	if got := pollInterval(load("").Power); got != DefaultPollInterval {
		t.Errorf("default poll interval %v", got)
	}
	if got := pollInterval(load("power:\n  poll_interval: 90s\n").Power); got != 90*time.Second {
		t.Errorf("poll interval %v", got)
	}
	for _, s := range []string{"power:\n  poll_interval: -1s\n", "power:\n  on_rate: -1\n", "power:\n  max_concurrent_on: -2\n", "power:\n  poll_concurrency: -1\n"} {
		if err := checkPower(load(s).Power); err == nil {
			t.Errorf("%q: no error", s)
		}
	}
}

func TestGPUPeersConfig(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.yaml")
	for _, tc := range []struct {
		yaml string
		want GPUPeersConfig
		bad  bool
	}{
		{yaml: "", want: GPUPeersConfig{}},
		{yaml: "gpu_peers:\n  threshold: 0.95\n  min_peers: 5\n", want: GPUPeersConfig{Threshold: 0.95, MinPeers: 5}},
		{yaml: "gpu_peers:\n  threshold: 1.5\n", bad: true},
		{yaml: "gpu_peers:\n  threshold: -0.1\n", bad: true},
		{yaml: "gpu_peers:\n  min_peers: -1\n", bad: true},
	} {
		if err := os.WriteFile(p, []byte(tc.yaml), 0o644); err != nil {
			t.Fatal(err)
		}
		c, err := LoadConfig(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := checkGPUPeers(c.GPUPeers); (err != nil) != tc.bad || (!tc.bad && c.GPUPeers != tc.want) {
			t.Errorf("%q: %+v, %v", tc.yaml, c.GPUPeers, err)
		}
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"2GiB": 2 << 30, "500MiB": 500 << 20, "64KiB": 64 << 10, "10GB": 10e9, "1TiB": 1 << 40, "0": 0, "4096": 4096, " 3 GiB ": 3 << 30} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "GiB", "-1GiB", "1.5GiB", "2XB", "99999999999TiB", "two"} {
		if _, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q): no error", in)
		}
	}
}

func TestIronicConfig(t *testing.T) {
	dir := t.TempDir()
	load := func(s string) (Config, error) {
		p := filepath.Join(dir, "c.yaml")
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		return LoadConfig(p)
	}
	c, err := load(`
ironic:
  hostsdir: /etc/dnsmasq.d/hostsdir.d
  optsdir: [/a, /b]
  leasefile: /var/lib/dnsmasq/dnsmasq.leases
  roots:
    - {name: c1, tftp_root: /tftpboot, http_root: /httpboot}
    - {name: c2, http_root: /srv/c2/httpboot, subnets: [10.2.0.0/16]}
`)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Ironic.HostsDirs) != 1 || len(c.Ironic.OptsDirs) != 2 || len(c.Ironic.Roots) != 2 {
		t.Fatalf("ironic = %+v", c.Ironic)
	}
	set, err := c.Ironic.roots()
	if err != nil {
		t.Fatal(err)
	}
	rs := set.Roots()
	if rs[0].Prefix() != "ironic/c1" || rs[0].TFTPRoot != "/tftpboot" || rs[1].Subnets[0].String() != "10.2.0.0/16" {
		t.Errorf("roots = %+v", rs)
	}
	if err := checkIronic(c.Ironic, DHCPAuthoritative, dir); err != nil {
		t.Errorf("check: %v", err)
	}
	for _, tc := range []struct{ yaml, want string }{
		{"ironic:\n  roots:\n    - {name: c1, tftproot: /t}\n", `"tftproot"`},
	} {
		if _, err := load(tc.yaml); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: err %v, want one naming %s", tc.yaml, err, tc.want)
		}
	}
	// Roots alone (a conductor with DHCP of its own) need no dnsmasq
	// settings, but a bad one is refused at the start.
	for _, tc := range []struct{ yaml, want string }{
		{"ironic:\n  roots:\n    - {name: C1, tftp_root: /t}\n", "name"},
		{"ironic:\n  roots:\n    - {name: c1, tftp_root: /t, subnets: [10.0.0.0/33]}\n", "subnets"},
	} {
		c, err := load(tc.yaml)
		if err != nil {
			t.Fatal(err)
		}
		if err := checkIronic(c.Ironic, DHCPProxy, dir); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: err %v, want one naming %s", tc.yaml, err, tc.want)
		}
	}
	c, _ = load("ironic:\n  roots:\n    - {name: c1, tftp_root: /t}\n")
	if err := checkIronic(c.Ironic, DHCPProxy, dir); err != nil {
		t.Errorf("roots alone: %v", err)
	}
	// A tree that would serve rackboot's own data dir (its database, its
	// tokens, its keys) to anyone, or the whole machine, is refused.
	data := filepath.Join(dir, "data")
	os.MkdirAll(filepath.Join(data, "tftp"), 0o755)
	for _, root := range []string{"/", data, filepath.Join(data, "tftp"), dir} {
		c, _ = load("ironic:\n  roots:\n    - {name: c1, http_root: " + root + "}\n")
		if err := checkIronic(c.Ironic, DHCPProxy, data); err == nil || !strings.Contains(err.Error(), "data") && !strings.Contains(err.Error(), "whole") {
			t.Errorf("http_root %s: %v", root, err)
		}
	}
}
