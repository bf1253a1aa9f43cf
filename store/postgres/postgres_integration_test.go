//go:build integration

package postgres

import (
	"context"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/dhcp/dhcptest"
	"github.com/rackboot/rackboot/internal/pgtest"
	"github.com/rackboot/rackboot/lease"
	"github.com/rackboot/rackboot/store"
	"github.com/rackboot/rackboot/store/storetest"
)

var (
	serverOnce sync.Once
	serverDSN  string
	serverErr  error
	// stopServer stops the server testServer started, if it did.
	stopServer = func() {}
)

func TestMain(m *testing.M) {
	code := m.Run()
	stopServer()
	os.Exit(code)
}

// testServer returns the DSN of a PostgreSQL server to test against (see
// pgtest.Server). It never skips: a test that cannot get a server fails
// and says how to give it one.
func testServer(t testing.TB) string {
	t.Helper()
	serverOnce.Do(func() {
		serverDSN, stopServer, serverErr = pgtest.Server(filepath.Join("..", "..", "scripts", "postgres.sh"))
	})
	if serverErr != nil {
		t.Fatal(serverErr)
	}
	return serverDSN
}

// freshDatabase creates an empty database on the test server, dropped
// when the test ends, and returns its DSN.
func freshDatabase(t testing.TB) string {
	t.Helper()
	return pgtest.Database(t, testServer(t))
}

func openTest(t testing.TB, dsn string) *Store {
	t.Helper()
	s, err := Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) (store.Store, func() store.Store) {
		dsn := freshDatabase(t)
		return openTest(t, dsn), func() store.Store { return openTest(t, dsn) }
	})
}

// TestMigrateConcurrently starts eight stores on one empty database at
// once, as servers of one cluster booting together do: each migration
// runs once and every store opens.
func TestMigrateConcurrently(t *testing.T) {
	dsn := freshDatabase(t)
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := Open(context.Background(), dsn)
			if err == nil {
				s.Close()
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("open %d: %v", i, err)
		}
	}
	db, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(context.Background())
	var n, max int
	if err := db.QueryRow(context.Background(), `SELECT COUNT(*), MAX(version) FROM schema_migrations`).Scan(&n, &max); err != nil {
		t.Fatal(err)
	}
	if n != max || max < 1 {
		t.Fatalf("%d migrations recorded, up to version %d; want each once", n, max)
	}
}

// TestAllocateAcrossStores is the shared-database promise at the store's
// level: several stores (several servers) on one database allocate in one
// small pool at once, and every DISCOVER is seen by two of them as
// broadcasts are. No address goes to two MACs, each MAC gets one address
// whichever store answers, and the pool is used to the last address.
func TestAllocateAcrossStores(t *testing.T) {
	ctx := context.Background()
	dsn := freshDatabase(t)
	const servers, clients, pool = 4, 96, 64
	stores := make([]*Store, servers)
	for i := range stores {
		stores[i] = openTest(t, dsn)
	}
	sub := netip.MustParsePrefix("10.3.0.0/24")
	first := netip.MustParseAddr("10.3.0.10")
	last := first
	for i := 1; i < pool; i++ {
		last = last.Next()
	}
	type grant struct {
		mac net.HardwareAddr
		ip  netip.Addr
	}
	var mu sync.Mutex
	var grants []grant
	exhausted := 0
	var wg sync.WaitGroup
	for c := 0; c < clients; c++ {
		for k := 0; k < 2; k++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s := stores[(c+k)%servers]
				mac := net.HardwareAddr{0x52, 0x54, 0, 3, byte(c >> 8), byte(c)}
				l, err := s.Allocate(ctx, sub, first, last, mac, netip.Addr{}, nil, time.Now().Add(time.Minute))
				if err != nil {
					if strings.Contains(err.Error(), lease.ErrPoolExhausted.Error()) {
						mu.Lock()
						exhausted++
						mu.Unlock()
						return
					}
					t.Error(err)
					return
				}
				b, err := s.Bind(ctx, sub, mac, l.IP, "", time.Now().Add(time.Hour))
				if err != nil {
					t.Errorf("bind %s to %s: %v", l.IP, mac, err)
					return
				}
				mu.Lock()
				grants = append(grants, grant{mac, b.IP})
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	byIP := map[netip.Addr]string{}
	byMAC := map[string]netip.Addr{}
	for _, g := range grants {
		if m, ok := byIP[g.ip]; ok && m != g.mac.String() {
			t.Errorf("%s bound to both %s and %s", g.ip, m, g.mac)
		}
		if ip, ok := byMAC[g.mac.String()]; ok && ip != g.ip {
			t.Errorf("%s bound both %s and %s", g.mac, ip, g.ip)
		}
		byIP[g.ip], byMAC[g.mac.String()] = g.mac.String(), g.ip
	}
	if len(byIP) != pool {
		t.Errorf("%d addresses bound, want the whole pool of %d (%d allocations found it exhausted)", len(byIP), pool, exhausted)
	}
	for ip, m := range byIP {
		l, err := stores[0].ByIP(ctx, ip)
		if err != nil || l.MAC.String() != m || l.State != lease.Bound {
			t.Errorf("lease on %s = %+v, %v; want bound to %s", ip, l, err, m)
		}
	}
}

// TestEnrollAcrossStores enrolls one MAC from two stores at once, as two
// servers do when a client's broadcast reaches both: one node results,
// and exactly one caller created it.
func TestEnrollAcrossStores(t *testing.T) {
	ctx := context.Background()
	dsn := freshDatabase(t)
	stores := []*Store{openTest(t, dsn), openTest(t, dsn)}
	for round := 0; round < 8; round++ {
		mac := net.HardwareAddr{0x52, 0x54, 0, 4, 0, byte(round)}
		var mu sync.Mutex
		ids := map[string]bool{}
		created := 0
		var wg sync.WaitGroup
		for i := 0; i < 8; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				n, c, err := stores[i%2].EnrollClient(ctx, boot.Client{MAC: mac, Arch: boot.ClientX64UEFI}, time.Now())
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				defer mu.Unlock()
				ids[n.ID] = true
				if c {
					created++
				}
			}()
		}
		wg.Wait()
		if len(ids) != 1 || created != 1 {
			t.Fatalf("%s: %d node ids, %d creators; want 1 and 1", mac, len(ids), created)
		}
	}
	nodes, err := stores[0].Nodes(ctx)
	if err != nil || len(nodes) != 8 {
		t.Fatalf("%d nodes, %v; want 8", len(nodes), err)
	}
}

// BenchmarkDORA measures one DISCOVER and one REQUEST through the DHCP
// server on this store: the cost of a new client when the leases are in
// PostgreSQL. Compare with the SQLite store's BenchmarkDORA.
func BenchmarkDORA(b *testing.B) {
	dhcptest.DORA(b, openTest(b, freshDatabase(b)))
}

// BenchmarkAllocateTwoStores measures Allocate and Bind of new clients
// through two stores on one database at once, as two servers would do
// them: the cluster's lease throughput, lock contention included.
func BenchmarkAllocateTwoStores(b *testing.B) {
	ctx := context.Background()
	dsn := freshDatabase(b)
	stores := []*Store{openTest(b, dsn), openTest(b, dsn)}
	sub := netip.MustParsePrefix("10.0.0.0/8")
	first, last := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.255.255.254")
	var mu sync.Mutex
	next := 0
	b.SetParallelism(4)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			mu.Lock()
			i := next
			next++
			mu.Unlock()
			s := stores[i%2]
			mac := net.HardwareAddr{0x52, 0x54, byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)}
			l, err := s.Allocate(ctx, sub, first, last, mac, netip.Addr{}, nil, time.Now().Add(time.Minute))
			if err != nil {
				b.Error(err)
				return
			}
			if _, err := s.Bind(ctx, sub, mac, l.IP, "", time.Now().Add(time.Hour)); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
