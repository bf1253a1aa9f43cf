package dhcp

import (
	"context"
	"net"
	"net/netip"
	"time"

	"github.com/rackboot/rackboot/lease"
)

// Leases keeps address leases (the records of package lease). It is
// transactional: implementations backed by a shared database must never
// give one address to two MACs, even when several servers allocate at once.
type Leases interface {
	// Allocate returns an address for mac in subnet, within [first, last].
	// A MAC with a live lease in the subnet keeps its address. Otherwise
	// want is used if it is in range and free, else any free address.
	// Addresses in reserved are never handed out by Allocate. The returned
	// lease is in state offered and lives until expires. With no address
	// left it returns lease.ErrPoolExhausted.
	Allocate(ctx context.Context, subnet netip.Prefix, first, last netip.Addr, mac net.HardwareAddr, want netip.Addr, reserved []netip.Addr, expires time.Time) (lease.Lease, error)
	// Bind marks the lease of mac on ip bound until expires, creating it
	// when it is free (a REQUEST after a restart, or a reservation). It
	// returns lease.ErrNoLease when ip is held by another MAC.
	Bind(ctx context.Context, subnet netip.Prefix, mac net.HardwareAddr, ip netip.Addr, hostname string, expires time.Time) (lease.Lease, error)
	// Release frees the lease of mac on ip. Releasing a lease that is not
	// there is not an error.
	Release(ctx context.Context, mac net.HardwareAddr, ip netip.Addr) error
	// ReleaseOffer frees the lease of mac in subnet only if it is still
	// offered and not on keep, in one step: a client that took another
	// server's offer frees ours. With a database shared with that server,
	// the address the client asks for is the very lease the other server
	// is binding, so it is kept, whether bound yet or not.
	ReleaseOffer(ctx context.Context, subnet netip.Prefix, mac net.HardwareAddr, keep netip.Addr) error
	// Decline marks ip unusable until expires, whoever held it.
	Decline(ctx context.Context, ip netip.Addr, expires time.Time) error
	// ByMAC returns the live lease of mac in subnet, or lease.ErrNoLease.
	ByMAC(ctx context.Context, subnet netip.Prefix, mac net.HardwareAddr) (lease.Lease, error)
	// ByIP returns the live lease on ip, or lease.ErrNoLease.
	ByIP(ctx context.Context, ip netip.Addr) (lease.Lease, error)
}
