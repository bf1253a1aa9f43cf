//go:build integration

package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	_ "modernc.org/sqlite"

	"github.com/rackboot/rackboot/appliance"
	"github.com/rackboot/rackboot/dhcp"
	"github.com/rackboot/rackboot/lab"
	"github.com/rackboot/rackboot/lease"
	"github.com/rackboot/rackboot/store/sqlite"
)

// The segment of the kill tests: a /16, so that the churn of new clients
// never runs the pool dry, with a 20 s lease, so that the clients renew
// every 10 s.
const (
	killPrefix    = "10.61.0.0/16"
	killRange     = "10.61.0.10-10.61.255.250"
	killLeaseTime = 20 * time.Second
	// killSlack is how much earlier than its client the server may date
	// a lease's expiry: the server stamps it when the REQUEST arrives,
	// the client when the ACK does.
	killSlack = 2 * time.Second
	// The MACs of the steady clients and of the churn begin so.
	steadyMACs = "02:61:00:"
	churnMACs  = "02:61:01:"
)

// TestKill9UnderDHCPLoad kills rackboot serve with SIGKILL, at random
// moments while it serves real DHCP clients, and starts it again on the
// same data dir, over and over. 24 busybox udhcpc clients hold leases and
// renew them; 4 more take a lease with a new MAC each time and quit, so
// DORAs run through every kill; after every start a probe asks for its
// last lease as a rebooting client does and then takes a new one, which
// tells when the server serves again; every tenth start is killed once
// before that, within 150 ms of the process starting. Between a
// kill and the next start the database must hold every lease a client
// was ACKed and that has not expired, bound to that client's MAC; no
// address is ACKed to two MACs, no MAC holds two leases, and no client is
// ever NAKed. Then the same with tens of thousands of leases seeded in
// the database, for the restart time with a big table. RACKBOOT_SOAK=1
// runs more kills.
func TestKill9UnderDHCPLoad(t *testing.T) {
	lab.RequireRoot(t)
	lab.Require(t, "ip", "busybox", "date")
	cycles, bigCycles := 200, 10
	if os.Getenv("RACKBOOT_SOAK") != "" {
		cycles, bigCycles = 1000, 100
	}
	bin := buildRackboot(t)
	t.Run("clients", func(t *testing.T) { killLoop(t, bin, 0, cycles) })
	t.Run("40000 leases", func(t *testing.T) { killLoop(t, bin, 40000, bigCycles) })
}

// buildRackboot builds the rackboot the kill tests run.
func buildRackboot(t *testing.T) string {
	bin := filepath.Join(t.TempDir(), "rackboot")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build rackboot: %v\n%s", err, out)
	}
	return bin
}

// udhcpcScript is the clients' script: each event a line "EVENT MAC IP
// LEASE TIME SERVER" in the client's record, stamped first thing (SERVER
// is the server identifier of the ACK, - for events without one); bound and
// renew also put the address on the interface, where a renewal is sent
// from and its ACK comes to.
const udhcpcScript = `#!/bin/sh
now=$(date +%s.%N)
case "$1" in
bound|renew)
	[ "$1" = bound ] && ip addr flush dev "$interface"
	ip addr replace "$ip/$mask" dev "$interface"
	;;
deconfig)
	ip addr flush dev "$interface"
	;;
esac
echo "$1 $RB_MAC ${ip:--} ${lease:-0} $now ${serverid:--}" >> "$RB_RECORD"
exit 0
`

// acked is a lease a client was ACKed: the truth the database is held to.
type acked struct {
	mac   string
	ip    netip.Addr
	at    time.Time
	lease time.Duration
	// server is the server identifier of the ACK, where the record has
	// it.
	server string
}

func (a acked) expires() time.Time { return a.at.Add(a.lease) }

// dbLease is a row of the leases table.
type dbLease struct {
	mac, state string
	expires    time.Time
}

// killRig is the segment, its clients and the server's data dir.
type killRig struct {
	t       *testing.T
	bin     string
	dir     string
	data    string
	cfg     string
	n       *lab.Net
	records string // the clients' record files
	// readDB reads the leases table.
	readDB   func() (map[netip.Addr]dbLease, error)
	probe    net.PacketConn
	probeMAC int

	mu     sync.Mutex
	probed map[string]acked // the probe's ACKs, by MAC
	last   acked            // the probe's last new lease
	began  time.Time
	naks   int // the probe's

	server  *exec.Cmd
	log     *os.File
	clients []*exec.Cmd
	stop    context.CancelFunc
	churned sync.WaitGroup
}

func killLoop(t *testing.T, bin string, seed, cycles int) {
	r := newKillRig(t, bin)
	if seed > 0 {
		start := time.Now()
		seedLeases(t, filepath.Join(r.data, "rackboot.db"), seed)
		t.Logf("seeded %d bound leases in %.1f s", seed, time.Since(start).Seconds())
	}
	r.startClients(24, 4)
	defer r.stopClients()
	if seed > 0 {
		// With tens of thousands of leases, each check between two
		// kills keeps the server down for long, and ten short lives may
		// not see every client through a DORA: the clients take their
		// leases first, and renew them through the kills.
		r.launch("before the kills")
		for deadline := time.Now().Add(time.Minute); r.events(steadyMACs)["bound"] < 24 || r.events(churnMACs)["bound"] == 0; {
			if time.Now().After(deadline) {
				t.Fatalf("the clients did not bind in a minute of service: steady %v, churn %v; server log:\n%s", r.events(steadyMACs), r.events(churnMACs), lab.Tail(r.serverLog(), 3000))
			}
			time.Sleep(200 * time.Millisecond)
		}
		r.kill()
	}

	began := r.began
	var agains, freshes []time.Duration
	var live []int
	checked, failures, wals, early := 0, 0, 0, 0
	for cycle := 0; cycle < cycles; cycle++ {
		if cycle%10 == 9 {
			// A kill while it starts: opening, checking and migrating
			// the database, writing the admin user, opening sockets.
			r.launch(fmt.Sprintf("%d, killed while it starts", cycle+1))
			time.Sleep(mrand.N(150 * time.Millisecond))
			r.kill()
			early++
		}
		again, fresh := r.start(cycle)
		if cycle > 0 {
			agains = append(agains, again)
		}
		freshes = append(freshes, fresh)
		time.Sleep(20*time.Millisecond + mrand.N(980*time.Millisecond))
		r.kill()
		if fi, err := os.Stat(filepath.Join(r.data, "rackboot.db-wal")); err == nil && fi.Size() > 0 {
			wals++
		}
		c, problems, rows := r.check()
		checked += c
		live = append(live, rows)
		if len(problems) > 0 {
			failures++
			for _, p := range problems {
				t.Errorf("after kill %d: %s", cycle+1, p)
			}
			if failures >= 3 {
				t.Fatalf("stopping after %d failed checks; server log %s:\n%s", failures, r.log.Name(), lab.Tail(r.serverLog(), 3000))
			}
		}
		if (cycle+1)%50 == 0 {
			t.Logf("%d kills: served again in %.0f ms, a new client in %.0f ms, with %d live leases", cycle+1, ms(again), ms(fresh), rows)
		}
	}
	// A last start: it serves, and the clients are still served.
	r.start(cycles)
	r.stopClients()
	r.kill()
	c, problems, rows := r.check()
	checked += c
	for _, p := range problems {
		t.Errorf("at the end: %s", p)
	}
	if seed > 0 {
		if n := r.seededBound(t); n != seed {
			t.Errorf("%d of the %d seeded leases are bound after the kills", n, seed)
		}
	}
	steady, churn := r.events(steadyMACs), r.events(churnMACs)
	step := clockStep(began)
	if n := steady["nak"] + churn["nak"] + r.naks; n > 0 {
		// A clock that steps forward expires leases early: the server
		// may then give a client's address to another, by the rules.
		if step > killSlack {
			t.Logf("clients were NAKed %d times after the wall clock stepped %.1f s", n, step.Seconds())
		} else {
			t.Errorf("clients were NAKed %d times: a lease they held was gone or another's", n)
		}
	}
	// The steady clients renew at half their lease.
	if steady["bound"] < 24 || (time.Since(began) > killLeaseTime && steady["renew"] == 0) || churn["bound"] == 0 {
		t.Errorf("the clients' events: steady %v, churn %v: the load did not run", steady, churn)
	}
	t.Logf("wall clock against the monotonic one: %.1f s", step.Seconds())
	t.Logf("%d kills in %.0f s and %d more while it started, a WAL left by %d; %d ACKed leases checked, %d checks failed; script events of the steady clients %v, of the churn %v; probe leases %d; live leases at a kill %d to %d (%d at the end)",
		cycles, time.Since(began).Seconds(), early, wals, checked, failures, steady, churn, len(r.probedCopy()), slices.Min(live), slices.Max(live), rows)
	t.Logf("from start to an ACK of the last probe's lease (INIT-REBOOT): %s", spread(agains))
	t.Logf("from start to the first OFFER to a new client: %s", spread(freshes))
}

// spread is the median, 90th percentile and maximum of ds.
func spread(ds []time.Duration) string {
	if len(ds) == 0 {
		return "none"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return fmt.Sprintf("median %.0f ms, 90th %.0f ms, max %.0f ms (n = %d)", ms(s[len(s)/2]), ms(s[len(s)*9/10]), ms(s[len(s)-1]), len(s))
}

// wallNow is the time by the wall clock alone, which the server dates
// leases by: when the clock steps, a lease expires by it, early or late,
// for the server and for the check alike.
func wallNow() time.Time { return time.Now().Round(0) }

// clockStep is how far the wall clock moved against the monotonic one
// since since: a step a time service made.
func clockStep(since time.Time) time.Duration {
	now := time.Now()
	d := now.Round(0).Sub(since.Round(0)) - now.Sub(since)
	return max(d, -d)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func newKillRig(t *testing.T, bin string) *killRig {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b := make([]byte, 3)
	rand.Read(b)
	dir := t.TempDir()
	r := &killRig{t: t, bin: bin, dir: dir, data: filepath.Join(dir, "data"), cfg: filepath.Join(dir, "rackboot.yaml"),
		records: filepath.Join(dir, "records"), probed: map[string]acked{}, began: time.Now()}
	r.readDB = func() (map[netip.Addr]dbLease, error) { return readLeases(filepath.Join(r.data, "rackboot.db")) }
	for _, d := range []string{r.data, r.records} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	// No limit on unknown clients: the probe asks every 25 ms, and a
	// throttled answer would be counted as the restart's time.
	cfg := fmt.Sprintf("dhcp:\n  unknown_rate: -1\n  subnets:\n    - prefix: %s\n      lease_time: %s\n", killPrefix, killLeaseTime)
	if err := os.WriteFile(r.cfg, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "udhcpc.sh"), []byte(udhcpcScript), 0o755); err != nil {
		t.Fatal(err)
	}
	n, err := lab.NewNet(ctx, "rbkill-"+hex.EncodeToString(b), netip.MustParsePrefix(killPrefix))
	if err != nil {
		t.Fatal(err)
	}
	r.n = n
	t.Cleanup(func() { n.Close() })
	if r.log, err = os.Create(filepath.Join(dir, "rackboot.log")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.log.Close() })
	ns, err := n.AddHost("p", "")
	if err != nil {
		t.Fatal(err)
	}
	if err := lab.InNamespace(ns, func() (err error) {
		r.probe, err = dhcp.ListenUDP("eth0", 68)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.probe.Close() })
	return r
}

func (r *killRig) host(name string, mac net.HardwareAddr) string {
	r.t.Helper()
	ns, err := r.n.AddHost(name, "")
	if err != nil {
		r.t.Fatal(err)
	}
	if mac != nil {
		setMAC(r.t, ns, mac)
	}
	return ns
}

func setMAC(t *testing.T, ns string, mac net.HardwareAddr) {
	if out, err := exec.Command("ip", "-n", ns, "link", "set", "eth0", "address", mac.String()).CombinedOutput(); err != nil {
		t.Errorf("set the MAC of %s: %v: %s", ns, err, out)
	}
}

func (r *killRig) udhcpc(ctx context.Context, ns string, mac net.HardwareAddr, record string, args ...string) *exec.Cmd {
	args = append([]string{"netns", "exec", ns, "busybox", "udhcpc", "-f", "-i", "eth0", "-s", filepath.Join(r.dir, "udhcpc.sh")}, args...)
	cmd := exec.CommandContext(ctx, "ip", args...)
	cmd.Env = append(os.Environ(), "RB_MAC="+mac.String(), "RB_RECORD="+record)
	return cmd
}

// startClients starts steady clients that hold their lease and renew
// it, and churners that take a lease with a new MAC and quit, again and
// again.
func (r *killRig) startClients(steady, churners int) {
	ctx, cancel := context.WithCancel(context.Background())
	r.stop = cancel
	for i := 0; i < steady; i++ {
		mac := net.HardwareAddr{0x02, 0x61, 0x00, 0x00, 0x00, byte(i)} // steadyMACs
		ns := r.host(fmt.Sprintf("c%d", i), mac)
		// Three DISCOVERs a second apart, then a second's rest, for as
		// long as it takes.
		cmd := r.udhcpc(ctx, ns, mac, filepath.Join(r.records, fmt.Sprintf("c%d", i)), "-t", "3", "-T", "1", "-A", "1")
		if err := cmd.Start(); err != nil {
			r.t.Fatal(err)
		}
		r.clients = append(r.clients, cmd)
	}
	for i := 0; i < churners; i++ {
		ns := r.host(fmt.Sprintf("b%d", i), nil)
		record := filepath.Join(r.records, fmt.Sprintf("b%d", i))
		r.churned.Add(1)
		go func() {
			defer r.churned.Done()
			for k := 0; ctx.Err() == nil; k++ {
				mac := net.HardwareAddr{0x02, 0x61, 0x01, byte(i), byte(k >> 8), byte(k)} // churnMACs
				setMAC(r.t, ns, mac)
				// -n -q: give up after two DISCOVERs, quit once bound.
				r.udhcpc(ctx, ns, mac, record, "-n", "-q", "-t", "2", "-T", "1").Run()
			}
		}()
	}
}

func (r *killRig) stopClients() {
	if r.stop == nil {
		return
	}
	r.stop()
	for _, c := range r.clients {
		c.Process.Kill()
		c.Wait()
	}
	r.churned.Wait()
	r.stop, r.clients = nil, nil
}

// start starts the server and returns how long it took to serve again:
// to ACK the last probe's lease to it, as asked for by a client that
// reboots (INIT-REBOOT), and to OFFER a new client an address, which it
// then ACKs.
func (r *killRig) start(cycle int) (again, fresh time.Duration) {
	r.t.Helper()
	begin := r.launch(fmt.Sprint(cycle + 1))
	again, fresh, err := r.served(begin, begin.Add(60*time.Second))
	if err != nil {
		r.server.Process.Kill()
		r.server.Wait()
		r.t.Fatalf("start %d: %v; server log:\n%s", cycle+1, err, lab.Tail(r.serverLog(), 3000))
	}
	return again, fresh
}

// served asks for the probe's last lease as a client does that reboots
// (INIT-REBOOT), then takes a new lease for a new MAC, and returns how
// long after begin the first was ACKed and the second OFFERed.
func (r *killRig) served(begin, deadline time.Time) (again, fresh time.Duration, err error) {
	if r.last.ip.IsValid() {
		a, err := r.reboot(r.last, deadline)
		switch {
		case errors.Is(err, errNAK) && clockStep(r.began) > killSlack:
			r.naks++ // see killLoop
			again = time.Since(begin)
		case err != nil:
			return 0, 0, err
		default:
			again = time.Since(begin)
			r.record(a)
		}
	}
	r.probeMAC++
	mac := net.HardwareAddr{0x02, 0x61, 0x02, 0x00, byte(r.probeMAC >> 8), byte(r.probeMAC)}
	offered, a, err := r.dora(mac, deadline)
	if err != nil {
		return 0, 0, err
	}
	r.record(a)
	r.last = a
	return again, offered.Sub(begin), nil
}

// launch starts rackboot serve, and returns when.
func (r *killRig) launch(name string) time.Time {
	r.t.Helper()
	fmt.Fprintf(r.log, "--- start %s\n", name)
	r.server = r.n.Command(context.Background(), r.bin, "serve", "--config", r.cfg, "--data-dir", r.data,
		"--interface", r.n.Bridge(), "--dhcp-mode", "authoritative", "--dhcp-range", killRange, "--http-addr", ":8080")
	r.server.Stdout, r.server.Stderr = r.log, r.log
	begin := time.Now()
	if err := r.server.Start(); err != nil {
		r.t.Fatal(err)
	}
	return begin
}

func (r *killRig) record(a acked) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.probed[a.mac] = a
}

// exchange sends m again every 25 ms, as no real client does, until an
// answer of a type in want comes, so that the time of the answer tells
// when the server began to serve.
func (r *killRig) exchange(m *dhcpv4.DHCPv4, deadline time.Time, want ...dhcpv4.MessageType) (*dhcpv4.DHCPv4, error) {
	bcast := &net.UDPAddr{IP: net.IPv4bcast, Port: 67}
	buf := make([]byte, 1500)
	for time.Now().Before(deadline) {
		if _, err := r.probe.WriteTo(m.ToBytes(), bcast); err != nil {
			return nil, err
		}
		r.probe.SetReadDeadline(time.Now().Add(25 * time.Millisecond))
		for {
			n, _, err := r.probe.ReadFrom(buf)
			if err != nil {
				break
			}
			rep, err := dhcpv4.FromBytes(buf[:n])
			if err == nil && rep.TransactionID == m.TransactionID && rep.OpCode == dhcpv4.OpcodeBootReply && slices.Contains(want, rep.MessageType()) {
				return rep, nil
			}
		}
	}
	return nil, fmt.Errorf("no answer to the %s of %s", m.MessageType(), m.ClientHWAddr)
}

var errNAK = errors.New("NAKed")

// reboot asks for the lease a as a client does that reboots: a REQUEST
// naming no server, the address in option 50.
func (r *killRig) reboot(a acked, deadline time.Time) (acked, error) {
	mac, _ := net.ParseMAC(a.mac)
	req, err := dhcpv4.New(dhcpv4.WithHwAddr(mac), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(a.ip.AsSlice())))
	if err != nil {
		return a, err
	}
	ack, err := r.exchange(req, deadline, dhcpv4.MessageTypeAck, dhcpv4.MessageTypeNak)
	if err != nil {
		return a, err
	}
	if ack.MessageType() == dhcpv4.MessageTypeNak {
		return a, fmt.Errorf("%w: %s for %s, ACKed to it at %s: %s", errNAK, mac, a.ip, a.at.Format(time.StampMilli), ack.Message())
	}
	return acked{mac: a.mac, ip: a.ip, at: wallNow(), lease: ack.IPAddressLeaseTime(0)}, nil
}

// dora takes a lease for a new client.
func (r *killRig) dora(mac net.HardwareAddr, deadline time.Time) (offered time.Time, a acked, err error) {
	d, err := dhcpv4.NewDiscovery(mac)
	if err != nil {
		return offered, a, err
	}
	offer, err := r.exchange(d, deadline, dhcpv4.MessageTypeOffer)
	if err != nil {
		return offered, a, err
	}
	offered = time.Now()
	req, err := dhcpv4.NewRequestFromOffer(offer)
	if err != nil {
		return offered, a, err
	}
	ack, err := r.exchange(req, deadline, dhcpv4.MessageTypeAck, dhcpv4.MessageTypeNak)
	if err != nil {
		return offered, a, err
	}
	if ack.MessageType() == dhcpv4.MessageTypeNak {
		return offered, a, fmt.Errorf("%s NAKed for the %s it was offered: %s", mac, offer.YourIPAddr, ack.Message())
	}
	ip, _ := netip.AddrFromSlice(ack.YourIPAddr.To4())
	return offered, acked{mac: mac.String(), ip: ip, at: wallNow(), lease: ack.IPAddressLeaseTime(0)}, nil
}

func (r *killRig) kill() {
	r.t.Helper()
	if err := r.server.Process.Signal(syscall.SIGKILL); err != nil {
		r.t.Fatalf("kill rackboot: %v", err)
	}
	r.server.Wait()
	ws, _ := r.server.ProcessState.Sys().(syscall.WaitStatus)
	if !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		r.t.Fatalf("rackboot ended before it was killed (%v); log:\n%s", r.server.ProcessState, lab.Tail(r.serverLog(), 3000))
	}
}

func (r *killRig) serverLog() string {
	b, _ := os.ReadFile(r.log.Name())
	return string(b)
}

func (r *killRig) probedCopy() map[string]acked {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]acked, len(r.probed))
	for k, v := range r.probed {
		out[k] = v
	}
	return out
}

// check holds the database to what the clients were ACKed. A client's
// script may still be writing down an ACK that came just before the
// kill, so a check that fails is made once more, from the records as
// they are a moment later. The records are read before the database: a
// server that still runs (of two on one database) may renew a lease in
// between, which only makes it longer than the record says, but every
// ACK written down was committed before the database is read. It returns
// how many ACKs it checked, the problems, and how many leases are live.
func (r *killRig) check() (int, []string, int) {
	r.t.Helper()
	var db map[netip.Addr]dbLease
	var n int
	var problems []string
	for try := 0; try < 2; try++ {
		if try > 0 {
			time.Sleep(500 * time.Millisecond)
		}
		acks, err := r.lastACKs()
		if err != nil {
			r.t.Fatal(err)
		}
		if db, err = r.readDB(); err != nil {
			r.t.Fatal(err)
		}
		if n, problems = leaseProblems(acks, db, wallNow()); len(problems) == 0 {
			break
		}
	}
	live := 0
	now := wallNow()
	for _, l := range db {
		if l.state == string(lease.Bound) && l.expires.After(now) {
			live++
		}
	}
	return n, problems, live
}

// lastACKs is each MAC's last ACK, from the clients' records and the
// probe.
func (r *killRig) lastACKs() (map[string]acked, error) {
	acks := r.probedCopy()
	err := r.eachRecord(func(f []string) error {
		if f[0] != "bound" && f[0] != "renew" {
			return nil
		}
		ip, err := netip.ParseAddr(f[2])
		if err != nil {
			return err
		}
		secs, err := strconv.Atoi(f[3])
		if err != nil {
			return err
		}
		ts, err := strconv.ParseFloat(f[4], 64)
		if err != nil {
			return err
		}
		at := time.Unix(0, int64(ts*1e9))
		if prev, ok := acks[f[1]]; !ok || at.After(prev.at) {
			acks[f[1]] = acked{mac: f[1], ip: ip, at: at, lease: time.Duration(secs) * time.Second, server: f[5]}
		}
		return nil
	})
	return acks, err
}

// events counts the script events of the clients whose MACs begin
// with macPrefix, by name.
func (r *killRig) events(macPrefix string) map[string]int {
	out := map[string]int{}
	if err := r.eachRecord(func(f []string) error {
		if strings.HasPrefix(f[1], macPrefix) {
			out[f[0]]++
		}
		return nil
	}); err != nil {
		r.t.Fatal(err)
	}
	return out
}

func (r *killRig) eachRecord(f func([]string) error) error {
	files, err := filepath.Glob(filepath.Join(r.records, "*"))
	if err != nil {
		return err
	}
	for _, name := range files {
		fh, err := os.Open(name)
		if err != nil {
			return err
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			// A line being written has fewer fields: the next check
			// reads it whole.
			if len(fields) != 6 {
				continue
			}
			if err := f(fields); err != nil {
				fh.Close()
				return fmt.Errorf("%s: %q: %w", name, sc.Text(), err)
			}
		}
		fh.Close()
		if err := sc.Err(); err != nil {
			return err
		}
	}
	return nil
}

// leaseProblems holds the leases table to each MAC's last ACK at now:
// an ACK whose lease has not expired (less the slack the server's clock
// has on the client's) must be a bound lease of that MAC in the table,
// live; no address may be the live ACK of two MACs; no MAC may hold two
// live leases. It returns how many ACKs it held the table to.
func leaseProblems(acks map[string]acked, db map[netip.Addr]dbLease, now time.Time) (int, []string) {
	var problems []string
	checked := 0
	holder := map[netip.Addr]string{}
	macs := slices.Sorted(maps.Keys(acks))
	for _, mac := range macs {
		a := acks[mac]
		if !now.Before(a.expires().Add(-killSlack)) {
			continue
		}
		checked++
		if other, ok := holder[a.ip]; ok {
			problems = append(problems, fmt.Sprintf("%s is ACKed to both %s and %s", a.ip, other, mac))
		}
		holder[a.ip] = mac
		l, ok := db[a.ip]
		switch {
		case !ok:
			problems = append(problems, fmt.Sprintf("%s was ACKed %s at %s for %s; the database has no lease on it", mac, a.ip, a.at.Format(time.StampMilli), a.lease))
		case l.mac != mac || l.state != string(lease.Bound) || !l.expires.After(now) || l.expires.Before(a.expires().Add(-killSlack)):
			problems = append(problems, fmt.Sprintf("%s was ACKed %s at %s for %s; the database has it %s to %q until %s",
				mac, a.ip, a.at.Format(time.StampMilli), a.lease, l.state, l.mac, l.expires.Format(time.StampMilli)))
		}
	}
	held := map[string][]netip.Addr{}
	for ip, l := range db {
		if l.state != string(lease.Declined) && l.expires.After(now) {
			held[l.mac] = append(held[l.mac], ip)
		}
	}
	for mac, ips := range held {
		if len(ips) > 1 {
			problems = append(problems, fmt.Sprintf("%s holds %d live leases: %v", mac, len(ips), ips))
		}
	}
	return checked, problems
}

// readLeases reads the leases table as a crash left it. Read-only, so
// that the next start finds the WAL the kill left and recovers it
// itself.
func readLeases(path string) (map[netip.Addr]dbLease, error) {
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro&_pragma=busy_timeout(10000)")
	if err != nil {
		return nil, err
	}
	defer db.Close()
	return scanLeases(db, path)
}

// scanLeases reads the leases table of db, on either engine; where
// names it in errors.
func scanLeases(db *sql.DB, where string) (map[netip.Addr]dbLease, error) {
	rows, err := db.Query(`SELECT ip, mac, state, expires FROM leases`)
	if err != nil {
		return nil, fmt.Errorf("read leases of %s: %w", where, err)
	}
	defer rows.Close()
	out := map[netip.Addr]dbLease{}
	for rows.Next() {
		var ip string
		var l dbLease
		var expires int64
		if err := rows.Scan(&ip, &l.mac, &l.state, &expires); err != nil {
			return nil, err
		}
		l.expires = time.Unix(0, expires)
		a, err := netip.ParseAddr(ip)
		if err != nil {
			return nil, fmt.Errorf("lease on %q: %w", ip, err)
		}
		if _, dup := out[a]; dup {
			return nil, fmt.Errorf("two rows for %s", a)
		}
		out[a] = l
	}
	return out, rows.Err()
}

// seededMAC is the MAC of seeded lease i.
func seededMAC(i int) net.HardwareAddr {
	return net.HardwareAddr{0x02, 0x61, 0x03, byte(i >> 16), byte(i >> 8), byte(i)}
}

// seedLeases writes n bound leases, a day long, from the start of the
// pool on: a restart's first new client walks past them all. The first
// goes through the store's Bind; the rest copy its row in one
// transaction, since n durable Binds would be n waits for the disk.
func seedLeases(t *testing.T, path string, n int) {
	ctx := context.Background()
	st, err := sqlite.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	first, _, err := appliance.ParseRange(killRange)
	if err != nil {
		t.Fatal(err)
	}
	p := netip.MustParsePrefix(killPrefix)
	if _, err := st.Bind(ctx, p, seededMAC(0), first, "", time.Now().Add(24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	st.Close()
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	ip := first
	for i := 1; i < n; i++ {
		ip = ip.Next()
		if _, err := tx.Exec(`INSERT INTO leases (ip, mac, subnet, state, expires, hostname)
			SELECT ?, ?, subnet, state, expires, hostname FROM leases WHERE ip = ?`, ip.String(), seededMAC(i).String(), first.String()); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
}

// seededBound counts the seeded leases still bound to their MACs.
func (r *killRig) seededBound(t *testing.T) int {
	db, err := readLeases(filepath.Join(r.data, "rackboot.db"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, l := range db {
		if strings.HasPrefix(l.mac, "02:61:03:") && l.state == string(lease.Bound) {
			n++
		}
	}
	return n
}

// TestLeaseProblems shows that the kill test's check fails a database
// that lost an ACKed lease, gave it to another MAC, holds it shorter
// than ACKed, or left a MAC two leases, and lets an expired one go.
func TestLeaseProblems(t *testing.T) {
	now := time.Now()
	ip1, ip2 := netip.MustParseAddr("10.61.0.10"), netip.MustParseAddr("10.61.0.11")
	a := acked{mac: "02:61:00:00:00:01", ip: ip1, at: now.Add(-5 * time.Second), lease: 20 * time.Second}
	good := dbLease{mac: a.mac, state: string(lease.Bound), expires: a.expires()}
	tests := []struct {
		name  string
		acks  []acked
		db    map[netip.Addr]dbLease
		wantN int
		want  string
	}{
		{"kept", []acked{a}, map[netip.Addr]dbLease{ip1: good}, 1, ""},
		{"lost", []acked{a}, map[netip.Addr]dbLease{}, 1, "has no lease"},
		{"another's", []acked{a}, map[netip.Addr]dbLease{ip1: {mac: "02:61:00:00:00:02", state: "bound", expires: good.expires}}, 1, "the database has it bound"},
		{"offered only", []acked{a}, map[netip.Addr]dbLease{ip1: {mac: a.mac, state: "offered", expires: good.expires}}, 1, "offered"},
		{"the renewal lost", []acked{a}, map[netip.Addr]dbLease{ip1: {mac: a.mac, state: "bound", expires: now.Add(time.Second)}}, 1, "until"},
		{"two leases", []acked{a}, map[netip.Addr]dbLease{ip1: good, ip2: good}, 1, "holds 2 live leases"},
		{"ACKed twice", []acked{a, {mac: "02:61:00:00:00:02", ip: ip1, at: a.at, lease: a.lease}}, map[netip.Addr]dbLease{ip1: good}, 2, "ACKed to both"},
		{"expired", []acked{{mac: a.mac, ip: ip1, at: now.Add(-19 * time.Second), lease: 20 * time.Second}}, map[netip.Addr]dbLease{}, 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			acks := map[string]acked{}
			for _, a := range tt.acks {
				acks[a.mac] = a
			}
			n, problems := leaseProblems(acks, tt.db, now)
			got := strings.Join(problems, "; ")
			if n != tt.wantN || (tt.want == "") != (got == "") || !strings.Contains(got, tt.want) {
				t.Errorf("checked %d, problems %q; want %d checked and a problem with %q", n, got, tt.wantN, tt.want)
			}
		})
	}
}
