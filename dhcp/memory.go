package dhcp

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/rackboot/rackboot/lease"
)

// MemoryLeases keeps leases in memory: for tests, and for a server that
// need not remember its leases across a restart.
type MemoryLeases struct {
	mu     sync.Mutex
	leases map[netip.Addr]lease.Lease
	Now    func() time.Time
}

var _ Leases = (*MemoryLeases)(nil)

func (m *MemoryLeases) now() time.Time {
	if m.Now != nil {
		return m.Now()
	}
	return time.Now()
}

func (m *MemoryLeases) live(l lease.Lease) bool { return l.Expires.After(m.now()) }

func (m *MemoryLeases) init() {
	if m.leases == nil {
		m.leases = map[netip.Addr]lease.Lease{}
	}
}

// Allocate implements Leases.
func (m *MemoryLeases) Allocate(ctx context.Context, subnet netip.Prefix, first, last netip.Addr, mac net.HardwareAddr, want netip.Addr, reserved []netip.Addr, expires time.Time) (lease.Lease, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.init()
	for a, l := range m.leases {
		if l.Subnet == subnet && l.MAC.String() == mac.String() && l.State != lease.Declined && m.live(l) {
			if l.State == lease.Offered && expires.After(l.Expires) {
				l.Expires = expires
				m.leases[a] = l
			}
			return l, nil
		}
	}
	taken := map[netip.Addr]bool{}
	for _, r := range reserved {
		taken[r] = true
	}
	free := func(a netip.Addr) bool {
		if !a.IsValid() || !subnet.Contains(a) || a.Compare(first) < 0 || a.Compare(last) > 0 || taken[a] {
			return false
		}
		l, ok := m.leases[a]
		return !ok || !m.live(l)
	}
	pick := netip.Addr{}
	if free(want) {
		pick = want
	} else {
		for a, i := first, 0; a.IsValid() && a.Compare(last) <= 0 && i < 1<<16; a, i = a.Next(), i+1 {
			if free(a) {
				pick = a
				break
			}
		}
	}
	if !pick.IsValid() {
		return lease.Lease{}, lease.ErrPoolExhausted
	}
	l := lease.Lease{MAC: mac, IP: pick, Subnet: subnet, State: lease.Offered, Expires: expires}
	m.leases[pick] = l
	return l, nil
}

// Bind implements Leases.
func (m *MemoryLeases) Bind(ctx context.Context, subnet netip.Prefix, mac net.HardwareAddr, ip netip.Addr, hostname string, expires time.Time) (lease.Lease, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.init()
	if l, ok := m.leases[ip]; ok && m.live(l) && l.MAC.String() != mac.String() {
		return lease.Lease{}, lease.ErrNoLease
	}
	for a, l := range m.leases {
		if l.Subnet == subnet && l.MAC.String() == mac.String() && a != ip {
			delete(m.leases, a)
		}
	}
	l := lease.Lease{MAC: mac, IP: ip, Subnet: subnet, State: lease.Bound, Expires: expires, Hostname: hostname}
	m.leases[ip] = l
	return l, nil
}

// Release implements Leases.
func (m *MemoryLeases) Release(ctx context.Context, mac net.HardwareAddr, ip netip.Addr) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if l, ok := m.leases[ip]; ok && l.MAC.String() == mac.String() {
		delete(m.leases, ip)
	}
	return nil
}

// ReleaseOffer implements Leases.
func (m *MemoryLeases) ReleaseOffer(ctx context.Context, subnet netip.Prefix, mac net.HardwareAddr, keep netip.Addr) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for ip, l := range m.leases {
		if l.State == lease.Offered && l.Subnet == subnet && l.MAC.String() == mac.String() && ip != keep {
			delete(m.leases, ip)
		}
	}
	return nil
}

// Decline implements Leases.
func (m *MemoryLeases) Decline(ctx context.Context, ip netip.Addr, expires time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.init()
	sub := m.leases[ip].Subnet
	m.leases[ip] = lease.Lease{IP: ip, Subnet: sub, State: lease.Declined, Expires: expires}
	return nil
}

// ByMAC implements Leases.
func (m *MemoryLeases) ByMAC(ctx context.Context, subnet netip.Prefix, mac net.HardwareAddr) (lease.Lease, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, l := range m.leases {
		if l.Subnet == subnet && l.MAC.String() == mac.String() && l.State != lease.Declined && m.live(l) {
			return l, nil
		}
	}
	return lease.Lease{}, lease.ErrNoLease
}

// ByIP implements Leases.
func (m *MemoryLeases) ByIP(ctx context.Context, ip netip.Addr) (lease.Lease, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if l, ok := m.leases[ip]; ok && m.live(l) {
		return l, nil
	}
	return lease.Lease{}, lease.ErrNoLease
}
