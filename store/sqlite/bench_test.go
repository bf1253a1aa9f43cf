package sqlite

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/dhcp/dhcptest"
	"github.com/rackboot/rackboot/store"
)

// BenchmarkDORA measures one DISCOVER and one REQUEST through the DHCP
// server on the SQLite lease store: the cost of a new client on a
// rackboot with an embedded database.
func BenchmarkDORA(b *testing.B) {
	st, err := Open(context.Background(), filepath.Join(b.TempDir(), "db"))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	dhcptest.DORA(b, st)
}

// BenchmarkDORAParallel is BenchmarkDORA with many clients at once.
func BenchmarkDORAParallel(b *testing.B) {
	st, err := Open(context.Background(), filepath.Join(b.TempDir(), "db"))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	dhcptest.DORAParallel(b, st)
}

// BenchmarkBindParallel measures durable binds from 32 goroutines at
// once, as the DHCP server's workers make them under load: each returns
// only once its lease is on disk, so this is the ACK rate the disk's
// fsyncs allow.
func BenchmarkBindParallel(b *testing.B) {
	ctx := context.Background()
	st, err := Open(ctx, filepath.Join(b.TempDir(), "db"))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	sub := netip.MustParsePrefix("10.0.0.0/8")
	var n atomic.Uint32
	b.SetParallelism(16) // times GOMAXPROCS
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			mac := net.HardwareAddr{2, 0, byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)}
			a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
			if _, err := st.Bind(ctx, sub, mac, a, "", time.Now().Add(time.Hour)); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkByIP measures the lookup behind every boot request that
// names no node: which lease, and so which MAC, holds a client's
// address, among 1,000 leases, from 4 goroutines at once.
func BenchmarkByIP(b *testing.B) {
	ctx := context.Background()
	st, err := Open(ctx, filepath.Join(b.TempDir(), "db"))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	sub := netip.MustParsePrefix("10.0.0.0/8")
	const n = 1000
	for i := range n {
		mac := net.HardwareAddr{2, 0, 0, 0, byte(i >> 8), byte(i)}
		a := netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})
		if _, err := st.Bind(ctx, sub, mac, a, "", time.Now().Add(time.Hour)); err != nil {
			b.Fatal(err)
		}
	}
	var k atomic.Uint32
	b.SetParallelism(2) // times GOMAXPROCS
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := k.Add(1) % n
			if _, err := st.ByIP(ctx, netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkHeartbeatParallel measures what an agent's heartbeat asks of
// the store (its last_seen written, a task claimed if one is queued),
// from 32 goroutines at once over 1,000 idle nodes.
func BenchmarkHeartbeatParallel(b *testing.B) {
	ctx := context.Background()
	st, err := Open(ctx, filepath.Join(b.TempDir(), "db"))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	const n = 1000
	ids := make([]string, n)
	for i := range n {
		node, _, err := st.EnrollClient(ctx, boot.Client{MAC: net.HardwareAddr{2, 0, 0, 0, byte(i >> 8), byte(i)}, Arch: boot.ClientX64UEFI}, time.Now())
		if err != nil {
			b.Fatal(err)
		}
		ids[i] = node.ID
	}
	var k atomic.Uint32
	b.SetParallelism(16) // times GOMAXPROCS
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			id := ids[k.Add(1)%n]
			if err := st.TouchNode(ctx, id, time.Now()); err != nil {
				b.Error(err)
				return
			}
			if _, err := st.ClaimTask(ctx, id, time.Now()); !errors.Is(err, store.ErrNotFound) {
				b.Errorf("claim: %v", err)
				return
			}
		}
	})
}

// BenchmarkTokenParallel: boot secrets written by many boot-script
// requests at once, each durable when it returns, as a boot storm's are.
func BenchmarkTokenParallel(b *testing.B) {
	ctx := context.Background()
	st, err := Open(ctx, filepath.Join(b.TempDir(), "db"))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	var k atomic.Uint64
	b.SetParallelism(16) // times GOMAXPROCS
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := k.Add(1)
			if _, err := st.CreateToken(ctx, store.Token{ID: fmt.Sprint("t", i), Hash: fmt.Sprint("h", i), Kind: store.TokenBoot,
				Expires: time.Now().Add(time.Hour)}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
