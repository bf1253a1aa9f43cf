// Package storetest is the conformance suite every store.Store
// implementation passes. Implementations call Run from their own tests with
// a function that opens a fresh, empty store.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/lease"
	"github.com/rackboot/rackboot/store"
)

// Opener returns a fresh store. reopen, when the implementation supports
// it, closes nothing and opens the same database again (to show state
// survives a restart); it may be nil.
type Opener func(t *testing.T) (s store.Store, reopen func() store.Store)

func mac(i int) net.HardwareAddr {
	return net.HardwareAddr{0x52, 0x54, 0x00, 0x00, byte(i >> 8), byte(i)}
}

// Run runs the whole suite.
func Run(t *testing.T, open Opener) {
	t.Run("Enroll", func(t *testing.T) { testEnroll(t, open) })
	t.Run("Trace", func(t *testing.T) { testTrace(t, open) })
	t.Run("Leases", func(t *testing.T) { testLeases(t, open) })
	t.Run("ConcurrentAllocate", func(t *testing.T) { testConcurrentAllocate(t, open) })
	t.Run("ListNodes", func(t *testing.T) { testListNodes(t, open) })
	t.Run("UpdateNode", func(t *testing.T) { testUpdateNode(t, open) })
	t.Run("SetOwner", func(t *testing.T) { testSetOwner(t, open) })
	t.Run("Transition", func(t *testing.T) { testTransition(t, open) })
	t.Run("ConcurrentTransition", func(t *testing.T) { testConcurrentTransition(t, open) })
	t.Run("Apply", func(t *testing.T) { testApply(t, open) })
	t.Run("Prune", func(t *testing.T) { testPrune(t, open) })
	t.Run("DeleteNode", func(t *testing.T) { testDeleteNode(t, open) })
	t.Run("Events", func(t *testing.T) { testEvents(t, open) })
	t.Run("Images", func(t *testing.T) { testImages(t, open) })
	t.Run("Tasks", func(t *testing.T) { testTasks(t, open) })
	t.Run("LatestTasks", func(t *testing.T) { testLatestTasks(t, open) })
	t.Run("UsersAndTokens", func(t *testing.T) { testUsersAndTokens(t, open) })
	t.Run("BMC", func(t *testing.T) { testBMC(t, open) })
	t.Run("PowerState", func(t *testing.T) { testPowerState(t, open) })
	t.Run("Hypervisors", func(t *testing.T) { testHypervisors(t, open) })
	t.Run("HypervisorFleet", func(t *testing.T) { testHypervisorFleet(t, open) })
	t.Run("VMs", func(t *testing.T) { testVMs(t, open) })
	t.Run("ConcurrentVMs", func(t *testing.T) { testConcurrentVMs(t, open) })
}

func testEnroll(t *testing.T, open Opener) {
	ctx := context.Background()
	s, reopen := open(t)
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	c := boot.Client{MAC: mac(1), Arch: boot.ClientARM64UEFI, UUID: []byte{1, 2, 3}}
	n, created, err := s.EnrollClient(ctx, c, now)
	if err != nil || !created {
		t.Fatalf("first enroll: created=%v err=%v", created, err)
	}
	if n.Arch != boot.ArchAArch64 || n.Firmware != boot.FirmwareUEFI || n.State != store.StateDiscovered || n.UUID != "010203" {
		t.Fatalf("enrolled node = %+v", n)
	}
	if len(n.MACs) != 1 || n.MACs[0] != "52:54:00:00:00:01" {
		t.Fatalf("MACs = %v", n.MACs)
	}
	later := now.Add(time.Minute)
	// iPXE's later request carries no option 93 of interest: the arch stays.
	n2, created, err := s.EnrollClient(ctx, boot.Client{MAC: mac(1), Arch: 0xffff}, later)
	if err != nil || created || n2.ID != n.ID {
		t.Fatalf("second enroll: %+v created=%v err=%v", n2, created, err)
	}
	if !n2.LastSeen.Equal(later) || !n2.FirstSeen.Equal(now) || n2.Arch != boot.ArchAArch64 {
		t.Fatalf("second enroll: %+v", n2)
	}
	for _, ref := range []string{n.ID, "52:54:00:00:00:01", "52-54-00-00-00-01"} {
		if got, err := s.Node(ctx, ref); err != nil || got.ID != n.ID {
			t.Errorf("Node(%q) = %v, %v", ref, got.ID, err)
		}
	}
	if _, err := s.Node(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Node(nope) err = %v, want ErrNotFound", err)
	}
	if err := s.SetState(ctx, n.ID, store.StateActive); err != nil {
		t.Fatal(err)
	}
	on := true
	if err := s.SetSecureBoot(ctx, n.ID, &on); err != nil {
		t.Fatal(err)
	}
	if err := s.SetState(ctx, "nope", store.StateActive); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("SetState(nope) err = %v", err)
	}
	if reopen != nil {
		s = reopen()
	}
	got, err := s.NodeByMAC(ctx, mac(1))
	if err != nil || got.State != store.StateActive || got.SecureBoot == nil || !*got.SecureBoot {
		t.Fatalf("after reopen: %+v %v", got, err)
	}
	if _, _, err := s.EnrollClient(ctx, boot.Client{MAC: mac(2), Arch: boot.ClientX86BIOS}, now); err != nil {
		t.Fatal(err)
	}
	all, err := s.Nodes(ctx)
	if err != nil || len(all) != 2 {
		t.Fatalf("Nodes = %d, %v", len(all), err)
	}
}

func testTrace(t *testing.T, open Opener) {
	ctx := context.Background()
	s, _ := open(t)
	n, _, err := s.EnrollClient(ctx, boot.Client{MAC: mac(7), Arch: boot.ClientX64UEFI}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		e := boot.Event{Time: time.Unix(int64(i), 0), MAC: mac(7), IP: netip.MustParseAddr("10.0.0.9"), Proto: "tftp", Kind: "file",
			File: fmt.Sprintf("f%d", i), Bytes: int64(i), Size: 4, BlockSize: 1468, WindowSize: 16, Complete: i == 4,
			Options: map[string]string{"93": "7"}}
		if err := s.AddTrace(ctx, n.ID, e); err != nil {
			t.Fatal(err)
		}
	}
	tr, err := s.Trace(ctx, n.ID, 3)
	if err != nil || len(tr) != 3 {
		t.Fatalf("Trace = %d events, %v", len(tr), err)
	}
	if tr[0].File != "f2" || tr[2].File != "f4" || !tr[2].Complete || tr[2].Options["93"] != "7" || tr[2].IP.String() != "10.0.0.9" || tr[2].MAC.String() != mac(7).String() {
		t.Fatalf("Trace = %+v", tr)
	}
	// Many events of two nodes in one write, in order.
	n2, _, err := s.EnrollClient(ctx, boot.Client{MAC: mac(8), Arch: boot.ClientX64UEFI}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var batch []store.TraceEvent
	for i := 0; i < 20; i++ {
		id := n.ID
		if i%2 == 1 {
			id = n2.ID
		}
		batch = append(batch, store.TraceEvent{NodeID: id, Event: boot.Event{Time: time.Unix(int64(10+i), 0), Proto: "http", Kind: "file", File: fmt.Sprintf("b%d", i), Size: -1}})
	}
	if err := s.AddTraces(ctx, batch); err != nil {
		t.Fatal(err)
	}
	if err := s.AddTraces(ctx, nil); err != nil {
		t.Fatalf("AddTraces of nothing: %v", err)
	}
	tr1, err1 := s.Trace(ctx, n.ID, 0)
	tr2, err2 := s.Trace(ctx, n2.ID, 0)
	if err1 != nil || err2 != nil || len(tr1) != 15 || len(tr2) != 10 || tr1[5].File != "b0" || tr1[14].File != "b18" || tr2[0].File != "b1" || tr2[9].File != "b19" {
		t.Fatalf("after AddTraces: %d and %d events (%v, %v)", len(tr1), len(tr2), err1, err2)
	}
	// A batch naming a node that is not there is refused whole.
	bad := []store.TraceEvent{{NodeID: n.ID, Event: boot.Event{Time: time.Unix(99, 0), File: "kept?"}}, {NodeID: "no-such-node", Event: boot.Event{Time: time.Unix(99, 0), File: "x"}}}
	if err := s.AddTraces(ctx, bad); err == nil {
		t.Fatal("AddTraces with an unknown node: no error")
	}
	if tr1, _ := s.Trace(ctx, n.ID, 0); len(tr1) != 15 {
		t.Fatalf("a refused batch left %d events, want 15", len(tr1))
	}
}

func testLeases(t *testing.T, open Opener) {
	ctx := context.Background()
	s, reopen := open(t)
	sub := netip.MustParsePrefix("10.1.0.0/24")
	first, last := netip.MustParseAddr("10.1.0.10"), netip.MustParseAddr("10.1.0.12")
	exp := time.Now().Add(time.Hour)
	reserved := []netip.Addr{netip.MustParseAddr("10.1.0.10")}

	l1, err := s.Allocate(ctx, sub, first, last, mac(1), netip.Addr{}, reserved, exp)
	if err != nil || l1.IP.String() != "10.1.0.11" || l1.State != lease.Offered {
		t.Fatalf("allocate 1 = %+v, %v", l1, err)
	}
	again, err := s.Allocate(ctx, sub, first, last, mac(1), netip.MustParseAddr("10.1.0.12"), reserved, exp)
	if err != nil || again.IP != l1.IP {
		t.Fatalf("a MAC keeps its address: %+v, %v", again, err)
	}
	l2, err := s.Allocate(ctx, sub, first, last, mac(2), l1.IP, reserved, exp)
	if err != nil || l2.IP.String() != "10.1.0.12" {
		t.Fatalf("allocate 2 = %+v, %v", l2, err)
	}
	if _, err := s.Allocate(ctx, sub, first, last, mac(3), netip.Addr{}, reserved, exp); !errors.Is(err, lease.ErrPoolExhausted) {
		t.Fatalf("allocate 3 err = %v, want ErrPoolExhausted", err)
	}
	if _, err := s.Bind(ctx, sub, mac(3), l1.IP, "", exp); !errors.Is(err, lease.ErrNoLease) {
		t.Fatalf("bind of another MAC's address err = %v", err)
	}
	b, err := s.Bind(ctx, sub, mac(1), l1.IP, "node1", exp)
	if err != nil || b.State != lease.Bound || b.Hostname != "node1" {
		t.Fatalf("bind = %+v, %v", b, err)
	}
	// Freeing an offer leaves a bound lease alone (another server may have
	// just bound it), and frees an offered one.
	if err := s.ReleaseOffer(ctx, sub, mac(1), netip.Addr{}); err != nil {
		t.Fatal(err)
	}
	if l, err := s.ByMAC(ctx, sub, mac(1)); err != nil || l.State != lease.Bound {
		t.Fatalf("bound lease after ReleaseOffer: %+v %v", l, err)
	}
	// The address the client asks another server for is kept: with a
	// shared database, it is the lease that server is binding.
	if err := s.ReleaseOffer(ctx, sub, mac(2), l2.IP); err != nil {
		t.Fatal(err)
	}
	if l, err := s.ByMAC(ctx, sub, mac(2)); err != nil || l.IP != l2.IP {
		t.Fatalf("offer of the address asked for: %+v %v", l, err)
	}
	if err := s.ReleaseOffer(ctx, sub, mac(2), netip.MustParseAddr("10.1.0.99")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ByMAC(ctx, sub, mac(2)); !errors.Is(err, lease.ErrNoLease) {
		t.Fatalf("offered lease after ReleaseOffer: %v", err)
	}
	if l2, err = s.Allocate(ctx, sub, first, last, mac(2), l2.IP, reserved, exp); err != nil || l2.IP.String() != "10.1.0.12" {
		t.Fatalf("allocate 2 again = %+v, %v", l2, err)
	}
	if err := s.Release(ctx, mac(2), l2.IP); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ByIP(ctx, l2.IP); !errors.Is(err, lease.ErrNoLease) {
		t.Fatalf("released lease still there: %v", err)
	}
	if err := s.Decline(ctx, l2.IP, exp); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Allocate(ctx, sub, first, last, mac(4), l2.IP, reserved, exp); !errors.Is(err, lease.ErrPoolExhausted) {
		t.Fatalf("a declined address was handed out again: %v", err)
	}
	// An expired offer frees its address.
	if err := s.Decline(ctx, l2.IP, time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	l4, err := s.Allocate(ctx, sub, first, last, mac(4), netip.Addr{}, reserved, exp)
	if err != nil || l4.IP != l2.IP {
		t.Fatalf("allocate after expiry = %+v, %v", l4, err)
	}
	if reopen != nil {
		s = reopen()
	}
	got, err := s.ByMAC(ctx, sub, mac(1))
	if err != nil || got.IP != l1.IP || got.State != lease.Bound {
		t.Fatalf("ByMAC after reopen = %+v, %v", got, err)
	}
	got, err = s.ByIP(ctx, l1.IP)
	if err != nil || got.MAC.String() != mac(1).String() || got.Subnet != sub {
		t.Fatalf("ByIP after reopen = %+v, %v", got, err)
	}
}

func testConcurrentAllocate(t *testing.T, open Opener) {
	ctx := context.Background()
	s, _ := open(t)
	sub := netip.MustParsePrefix("10.2.0.0/24")
	first, last := netip.MustParseAddr("10.2.0.1"), netip.MustParseAddr("10.2.0.254")
	const clients = 64
	var wg sync.WaitGroup
	ips := make([]netip.Addr, clients)
	errs := make([]error, clients)
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l, err := s.Allocate(ctx, sub, first, last, mac(100+i), netip.Addr{}, nil, time.Now().Add(time.Minute))
			ips[i], errs[i] = l.IP, err
		}()
	}
	wg.Wait()
	seen := map[netip.Addr]int{}
	for i, ip := range ips {
		if errs[i] != nil {
			t.Fatalf("client %d: %v", i, errs[i])
		}
		if j, dup := seen[ip]; dup {
			t.Fatalf("clients %d and %d both got %s", j, i, ip)
		}
		seen[ip] = i
	}
}
