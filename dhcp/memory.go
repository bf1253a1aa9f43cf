package dhcp

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"time"
)

// MemoryLeases keeps leases in memory: for tests, and for a server that
// need not remember its leases across a restart.
type MemoryLeases struct {
	mu     sync.Mutex
	leases map[netip.Addr]Lease
	Now    func() time.Time
}

var _ Leases = (*MemoryLeases)(nil)

func (m *MemoryLeases) now() time.Time {
	if m.Now != nil {
		return m.Now()
	}
	return time.Now()
}

func (m *MemoryLeases) live(l Lease) bool { return l.Expires.After(m.now()) }

func (m *MemoryLeases) init() {
	if m.leases == nil {
		m.leases = map[netip.Addr]Lease{}
	}
}

// Allocate implements Leases.
func (m *MemoryLeases) Allocate(ctx context.Context, subnet netip.Prefix, first, last netip.Addr, mac net.HardwareAddr, want netip.Addr, reserved []netip.Addr, expires time.Time) (Lease, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.init()
	for a, l := range m.leases {
		if l.Subnet == subnet && l.MAC.String() == mac.String() && l.State != LeaseDeclined && m.live(l) {
			if l.State == LeaseOffered && expires.After(l.Expires) {
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
		return Lease{}, ErrPoolExhausted
	}
	l := Lease{MAC: mac, IP: pick, Subnet: subnet, State: LeaseOffered, Expires: expires}
	m.leases[pick] = l
	return l, nil
}

// Bind implements Leases.
func (m *MemoryLeases) Bind(ctx context.Context, subnet netip.Prefix, mac net.HardwareAddr, ip netip.Addr, hostname string, expires time.Time) (Lease, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.init()
	if l, ok := m.leases[ip]; ok && m.live(l) && l.MAC.String() != mac.String() {
		return Lease{}, ErrNoLease
	}
	for a, l := range m.leases {
		if l.Subnet == subnet && l.MAC.String() == mac.String() && a != ip {
			delete(m.leases, a)
		}
	}
	l := Lease{MAC: mac, IP: ip, Subnet: subnet, State: LeaseBound, Expires: expires, Hostname: hostname}
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
		if l.State == LeaseOffered && l.Subnet == subnet && l.MAC.String() == mac.String() && ip != keep {
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
	m.leases[ip] = Lease{IP: ip, Subnet: sub, State: LeaseDeclined, Expires: expires}
	return nil
}

// ByMAC implements Leases.
func (m *MemoryLeases) ByMAC(ctx context.Context, subnet netip.Prefix, mac net.HardwareAddr) (Lease, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, l := range m.leases {
		if l.Subnet == subnet && l.MAC.String() == mac.String() && l.State != LeaseDeclined && m.live(l) {
			return l, nil
		}
	}
	return Lease{}, ErrNoLease
}

// ByIP implements Leases.
func (m *MemoryLeases) ByIP(ctx context.Context, ip netip.Addr) (Lease, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if l, ok := m.leases[ip]; ok && m.live(l) {
		return l, nil
	}
	return Lease{}, ErrNoLease
}
