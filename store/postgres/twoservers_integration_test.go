//go:build integration

package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/jackc/pgx/v5"

	"github.com/rackboot/rackboot/dhcp"
	"github.com/rackboot/rackboot/internal/syncbuf"
	"github.com/rackboot/rackboot/lab"
	"github.com/rackboot/rackboot/lease"
)

// TestTwoServers runs two real rackboot servers, authoritative for one
// subnet with one small pool, on one PostgreSQL database, and a crowd of
// DHCP clients on the same segment, twice as many as the pool has
// addresses, all at once. Some broadcast their DISCOVER, which both
// servers answer with an offer for the same MAC; the others send it to
// one server, so the servers allocate for different MACs at the same
// moment; every REQUEST is broadcast, so each server sees the REQUESTs
// that name the other. No address may be ACKed to two MACs, no offered
// address may be NAKed, the whole pool must be handed out, and every ACK
// must be a bound lease of its MAC in the database. A lease store that
// does not allocate transactionally across servers fails it.
//
// The segment is a bridge in a namespace of its own, where the clients
// are; each server runs in another namespace, joined to the bridge by a
// veth pair. PostgreSQL is reached over its unix socket, which every
// namespace shares.
func TestTwoServers(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("TestTwoServers needs root (network namespaces, DHCP ports): run go test -tags integration as root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatal("ip not found: apt-get install -y iproute2")
	}
	dsn := freshDatabase(t)
	if strings.Contains(dsn, "@127.0.0.1") || strings.Contains(dsn, "@localhost") {
		t.Fatalf("RACKBOOT_TEST_POSTGRES=%s is on this host's loopback, which the servers' namespaces cannot reach: use the unix-socket DSN that scripts/postgres.sh prints", dsn)
	}

	bin := filepath.Join(t.TempDir(), "rackboot")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/rackboot/rackboot/cmd/rackboot").CombinedOutput(); err != nil {
		t.Fatalf("go build rackboot: %v\n%s", err, out)
	}

	const (
		clients  = 96
		poolSize = 48
	)
	first := netip.MustParseAddr("10.79.0.100")
	last := first
	for i := 1; i < poolSize; i++ {
		last = last.Next()
	}
	n := newSegment(t, 2)

	servers := make([]*server, 2)
	for i := range servers {
		servers[i] = startServer(t, n, i, bin, dsn, first.String()+"-"+last.String())
	}
	for _, s := range servers {
		s.waitServing(t, 30*time.Second)
	}

	// The clients' own address lets them send to one server's address.
	ipCmd(t, "-n", n.bridgeNS, "addr", "add", "10.79.0.254/24", "dev", "br0")
	conn := listenIn(t, n.bridgeNS, "br0", 68)
	bcast := &net.UDPAddr{IP: net.IPv4bcast, Port: 67}
	cl := newCrowd(conn)
	go cl.read()

	start := time.Now()
	results := make([]result, clients)
	var wg sync.WaitGroup
	gate := make(chan struct{})
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-gate
			// A third of the clients broadcast, so both servers
			// allocate for the same MAC at once, and half of those
			// take the second server's offer; the others reach one
			// server only, as through a relay with one helper address,
			// so the two servers allocate for different MACs at once.
			mac := net.HardwareAddr{0x52, 0x54, 0x00, 0x79, byte(i >> 8), byte(i)}
			to := bcast
			if i%3 != 0 {
				to = &net.UDPAddr{IP: n.serverIP(i%3 - 1).AsSlice(), Port: 67}
			}
			results[i] = cl.dora(mac, to, i%6 == 3)
		}()
	}
	close(gate)
	wg.Wait()
	conn.Close()
	var lastACK time.Time
	for _, r := range results {
		if r.at.After(lastACK) {
			lastACK = r.at
		}
	}
	elapsed := max(lastACK.Sub(start), time.Millisecond)

	ackedTo := map[netip.Addr]string{}
	perServer := map[netip.Addr]int{}
	acks, naks, noOffer := 0, cl.naks(), 0
	for _, r := range results {
		switch {
		case r.err != nil:
			t.Errorf("client %s: %v", r.mac, r.err)
		case r.ack.IsValid():
			acks++
			perServer[r.server]++
			if other, ok := ackedTo[r.ack]; ok && other != r.mac.String() {
				t.Errorf("%s ACKed to both %s and %s", r.ack, other, r.mac)
			}
			ackedTo[r.ack] = r.mac.String()
			if r.ack.Compare(first) < 0 || r.ack.Compare(last) > 0 {
				t.Errorf("%s ACKed %s, outside the pool", r.mac, r.ack)
			}
		case r.nak:
			t.Errorf("client %s: NAKed three times", r.mac)
		default:
			noOffer++
		}
	}
	offers := cl.offersBy()
	t.Logf("%d clients, pool of %d: %d ACKs (%v by server), %d NAKs, %d without an offer; offers by server %v; last ACK after %.0f ms: %.0f DORA/s",
		clients, poolSize, acks, perServer, naks, noOffer, offers, float64(elapsed.Milliseconds()), float64(acks)/elapsed.Seconds())
	for _, s := range []netip.Addr{n.serverIP(0), n.serverIP(1)} {
		if offers[s] == 0 {
			t.Errorf("server %s sent no offer: the test did not make the two servers compete", s)
		}
	}
	// An offer holds its address for the client for a minute: a REQUEST
	// for it is never NAKed unless the address went to someone else.
	if naks > 0 {
		t.Errorf("%d NAKs: an offered address was given to another client before its REQUEST", naks)
	}
	if acks != poolSize {
		t.Errorf("%d ACKs, want one for each of the %d addresses of the pool", acks, poolSize)
	}

	// Every ACK is a bound lease, of that MAC, in the database.
	ctx := context.Background()
	db, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(ctx)
	rows, err := db.Query(ctx, `SELECT ip, mac, state FROM leases`)
	if err != nil {
		t.Fatal(err)
	}
	type row struct{ mac, state string }
	inDB := map[netip.Addr]row{}
	for rows.Next() {
		var ip, mac, state string
		if err := rows.Scan(&ip, &mac, &state); err != nil {
			t.Fatal(err)
		}
		inDB[netip.MustParseAddr(ip)] = row{mac, state}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	for ip, mac := range ackedTo {
		if got := inDB[ip]; got.mac != mac || got.state != string(lease.Bound) {
			t.Errorf("%s was ACKed to %s; the database has %+v", ip, mac, got)
		}
	}
	if t.Failed() {
		for _, s := range servers {
			t.Logf("server %s log:\n%s", s.ip, s.log())
		}
	}
}

// segment is a bridge in a namespace of its own, with servers attached
// through veth pairs from namespaces of their own.
type segment struct {
	id       string
	bridgeNS string
	serverNS []string
}

func (s *segment) serverIP(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, 79, 0, byte(1 + i)})
}

func (s *segment) serverIf(i int) string { return fmt.Sprintf("rb%d%s", i, s.id) }

func ipCmd(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func newSegment(t *testing.T, servers int) *segment {
	t.Helper()
	b := make([]byte, 4)
	rand.Read(b)
	s := &segment{id: hex.EncodeToString(b)}
	s.bridgeNS = "rbpg-br-" + s.id
	addNS := func(name string) {
		ipCmd(t, "netns", "add", name)
		// The servers in it are stopped by their own cleanups, which
		// run before this one.
		t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
		ipCmd(t, "-n", name, "link", "set", "lo", "up")
	}
	addNS(s.bridgeNS)
	ipCmd(t, "-n", s.bridgeNS, "link", "add", "br0", "type", "bridge", "forward_delay", "0", "stp_state", "0")
	ipCmd(t, "-n", s.bridgeNS, "link", "set", "br0", "up")
	for i := 0; i < servers; i++ {
		ns := fmt.Sprintf("rbpg-s%d-%s", i, s.id)
		s.serverNS = append(s.serverNS, ns)
		addNS(ns)
		port := fmt.Sprintf("rp%d%s", i, s.id)
		ipCmd(t, "link", "add", s.serverIf(i), "netns", ns, "type", "veth", "peer", "name", port, "netns", s.bridgeNS)
		ipCmd(t, "-n", s.bridgeNS, "link", "set", port, "master", "br0", "up")
		ipCmd(t, "-n", ns, "addr", "add", s.serverIP(i).String()+"/24", "dev", s.serverIf(i))
		ipCmd(t, "-n", ns, "link", "set", s.serverIf(i), "up")
	}
	return s
}

type server struct {
	ip  netip.Addr
	cmd *exec.Cmd
	syncbuf.Buffer
}

func (s *server) log() string { return s.String() }

func startServer(t *testing.T, n *segment, i int, bin, dsn, pool string) *server {
	t.Helper()
	s := &server{ip: n.serverIP(i)}
	s.cmd = exec.Command("ip", "netns", "exec", n.serverNS[i], bin, "serve",
		"--data-dir", t.TempDir(), "--interface", n.serverIf(i), "--dhcp-mode", "authoritative", "--dhcp-range", pool,
		"--http-addr", "127.0.0.1:8080", "--db", dsn, "--log-level", "info")
	s.cmd.Stdout, s.cmd.Stderr = s, s
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { s.cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		s.cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			s.cmd.Process.Kill()
			<-done
		}
	})
	return s
}

// waitServing waits for the log line rackboot writes once every socket
// is open.
func (s *server) waitServing(t *testing.T, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if strings.Contains(s.log(), "rackboot serving") {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("rackboot on %s did not start serving:\n%s", s.ip, s.log())
}

func listenIn(t *testing.T, ns, ifname string, port int) net.PacketConn {
	t.Helper()
	var conn net.PacketConn
	if err := lab.InNamespace(ns, func() (err error) {
		conn, err = dhcp.ListenUDP(ifname, port)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// crowd is many DHCP clients sharing one socket: replies are broadcast,
// and each goes to the client whose transaction id it carries.
type crowd struct {
	conn net.PacketConn

	mu       sync.Mutex
	waiting  map[dhcpv4.TransactionID]chan *dhcpv4.DHCPv4
	offers   map[netip.Addr]int // OFFERs by server identifier
	nakCount int
}

func (c *crowd) naks() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nakCount
}

func newCrowd(conn net.PacketConn) *crowd {
	return &crowd{conn: conn, waiting: map[dhcpv4.TransactionID]chan *dhcpv4.DHCPv4{}, offers: map[netip.Addr]int{}}
}

func (c *crowd) read() {
	buf := make([]byte, 1500)
	for {
		n, _, err := c.conn.ReadFrom(buf)
		if err != nil {
			return
		}
		m, err := dhcpv4.FromBytes(buf[:n])
		if err != nil || m.OpCode != dhcpv4.OpcodeBootReply {
			continue
		}
		c.mu.Lock()
		if m.MessageType() == dhcpv4.MessageTypeNak {
			c.nakCount++
		}
		if m.MessageType() == dhcpv4.MessageTypeOffer {
			sid, _ := netip.AddrFromSlice(m.ServerIdentifier().To4())
			c.offers[sid]++
		}
		ch := c.waiting[m.TransactionID]
		c.mu.Unlock()
		if ch != nil {
			select {
			case ch <- m:
			default:
			}
		}
	}
}

func (c *crowd) offersBy() map[netip.Addr]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[netip.Addr]int{}
	for k, v := range c.offers {
		out[k] = v
	}
	return out
}

type result struct {
	mac    net.HardwareAddr
	ack    netip.Addr // the address ACKed, if any
	server netip.Addr // who ACKed it
	at     time.Time  // when the ACK came
	nak    bool
	err    error
}

// dora runs one client: DISCOVER (to discoverTo: the broadcast address
// or one server's), take the first OFFER, REQUEST it (broadcast), wait
// for the ACK or NAK of the server it chose. With pickSecond it takes the
// second server's OFFER if one comes. A NAK starts it over, as it does a
// real client, up to three times. Each step is sent again,
// as clients do, when nothing answers within a second. No OFFER at all
// means the pool is exhausted.
func (c *crowd) dora(mac net.HardwareAddr, discoverTo net.Addr, pickSecond bool) result {
	var res result
	for try := 0; try < 3; try++ {
		res = c.doraOnce(mac, discoverTo, pickSecond)
		if !res.nak {
			break
		}
	}
	return res
}

func (c *crowd) doraOnce(mac net.HardwareAddr, discoverTo net.Addr, pickSecond bool) result {
	res := result{mac: mac}
	d, err := dhcpv4.NewDiscovery(mac)
	if err != nil {
		res.err = err
		return res
	}
	ch := make(chan *dhcpv4.DHCPv4, 16)
	c.mu.Lock()
	c.waiting[d.TransactionID] = ch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.waiting, d.TransactionID)
		c.mu.Unlock()
	}()
	await := func(m *dhcpv4.DHCPv4, to net.Addr, want func(*dhcpv4.DHCPv4) bool) (*dhcpv4.DHCPv4, error) {
		for try := 0; try < 3; try++ {
			if _, err := c.conn.WriteTo(m.ToBytes(), to); err != nil {
				return nil, fmt.Errorf("send %s: %w", m.MessageType(), err)
			}
			timeout := time.After(time.Second)
			for {
				select {
				case r := <-ch:
					if want(r) {
						return r, nil
					}
					continue
				case <-timeout:
				}
				break
			}
		}
		return nil, nil
	}
	offer, err := await(d, discoverTo, func(r *dhcpv4.DHCPv4) bool { return r.MessageType() == dhcpv4.MessageTypeOffer })
	if err != nil || offer == nil {
		res.err = err
		return res
	}
	if pickSecond {
		// Take the other server's offer when it comes soon: both
		// servers then ACK, and each sees REQUESTs for the other.
		timeout := time.After(500 * time.Millisecond)
	wait:
		for {
			select {
			case r := <-ch:
				if r.MessageType() == dhcpv4.MessageTypeOffer && !r.ServerIdentifier().Equal(offer.ServerIdentifier()) {
					offer = r
					break wait
				}
			case <-timeout:
				break wait
			}
		}
	}
	req, err := dhcpv4.NewRequestFromOffer(offer)
	if err != nil {
		res.err = err
		return res
	}
	sid := offer.ServerIdentifier()
	reply, err := await(req, &net.UDPAddr{IP: net.IPv4bcast, Port: 67}, func(r *dhcpv4.DHCPv4) bool {
		mt := r.MessageType()
		return (mt == dhcpv4.MessageTypeAck || mt == dhcpv4.MessageTypeNak) && r.ServerIdentifier().Equal(sid)
	})
	switch {
	case err != nil:
		res.err = err
	case reply == nil:
		res.err = fmt.Errorf("no answer to the REQUEST for %s from %s", offer.YourIPAddr, sid)
	case reply.MessageType() == dhcpv4.MessageTypeNak:
		res.nak = true
	default:
		res.ack, _ = netip.AddrFromSlice(reply.YourIPAddr.To4())
		res.server, _ = netip.AddrFromSlice(sid.To4())
		res.at = time.Now()
	}
	return res
}
