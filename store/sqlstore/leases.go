package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/rackboot/rackboot/lease"
)

// maxScan bounds the walk over a range in search of a free address, so a
// misconfigured /8 cannot stall a DISCOVER.
const maxScan = 1 << 16

func scanLease(r scanner) (lease.Lease, error) {
	var ip, mac, subnet, state string
	var expires int64
	l := lease.Lease{}
	if err := r.Scan(&ip, &mac, &subnet, &state, &expires, &l.Hostname); err != nil {
		return l, err
	}
	var err error
	l.IP, err = netip.ParseAddr(ip)
	l.MAC, _ = net.ParseMAC(mac)
	l.Subnet, _ = netip.ParsePrefix(subnet)
	l.State, l.Expires = lease.State(state), unixNanos(expires)
	return l, err
}

func leaseBy(ctx context.Context, r runner, where string, args ...any) (lease.Lease, error) {
	l, err := scanLease(r.row(ctx, `SELECT ip, mac, subnet, state, expires, hostname FROM leases WHERE `+where+` LIMIT 1`, args...))
	if errors.Is(err, sql.ErrNoRows) {
		err = lease.ErrNoLease
	}
	return l, err
}

// upsertLease writes a lease over whatever lease its address had; claim
// adds the condition that makes it a claim.
const upsertLease = `INSERT INTO leases (ip, mac, subnet, state, expires, hostname) VALUES (?, ?, ?, ?, ?, ?)
	ON CONFLICT (ip) DO UPDATE SET mac = excluded.mac, subnet = excluded.subnet, state = excluded.state,
	expires = excluded.expires, hostname = excluded.hostname`

func leaseArgs(l lease.Lease) []any {
	mac, subnet := "", ""
	if len(l.MAC) > 0 {
		mac = macText(l.MAC)
	}
	if l.Subnet.IsValid() {
		subnet = l.Subnet.String()
	}
	return []any{l.IP.String(), mac, subnet, string(l.State), l.Expires.UnixNano(), l.Hostname}
}

// claimLease writes l unless its address is held, at now, by another MAC
// (a declined address is held by the empty MAC), and reports whether it
// did. The check and the write are one statement on the address's row, so
// two servers can never both claim one address: on PostgreSQL the second
// waits for the first's row lock and then sees its lease.
func claimLease(ctx context.Context, tx runner, l lease.Lease, now int64) (bool, error) {
	n, err := tx.exec(ctx, upsertLease+` WHERE leases.expires <= ? OR leases.mac = excluded.mac`, append(leaseArgs(l), now)...)
	return n == 1, err
}

// subnetTx runs f in a transaction that holds the lock of subnet, which
// serialises Allocate and Bind in one subnet across every server on the
// database until the transaction ends, so a MAC that two servers serve at
// once ends up with one lease, not one per server. Allocate and Bind are
// idempotent: run again after they committed, they find the MAC's own
// lease and write it again, so a connection lost during their COMMIT
// runs them again rather than failing the client's exchange.
func (s *Store) subnetTx(ctx context.Context, subnet netip.Prefix, f func(runner) error) error {
	return s.lockedTx(ctx, lockKey("lease "+subnet.String()), true, f)
}

// offerTx is subnetTx for an offer, whose commit need not reach the disk
// before the OFFER leaves: a lost offer is a client that asks again. The
// REQUEST's Bind is durable, and takes only a free address or the
// client's own.
func (s *Store) offerTx(ctx context.Context, subnet netip.Prefix, f func(runner) error) error {
	return s.laxLockedTx(ctx, lockKey("lease "+subnet.String()), true, f)
}

// bindTx runs f, a lease write that must be durable before the caller
// answers (an ACK), in a group commit with the binds that arrive
// meanwhile: on SQLite one fsync for all of them, on PostgreSQL one
// transaction under the subnet's lock (subnetTx's) and one commit for
// those of the subnet. Either way it returns only when the write is on
// disk, and the conditional upsert inside f is what keeps one address to
// one MAC, batch or not.
func (s *Store) bindTx(ctx context.Context, subnet netip.Prefix, f func(context.Context, runner) error) error {
	if s.d.oneWriter {
		return s.groupTx(ctx, f)
	}
	return s.group1(ctx, s.subnetGroup(subnet), false, f)
}

// Allocate implements dhcp.Leases.
func (s *Store) Allocate(ctx context.Context, subnet netip.Prefix, first, last netip.Addr, mac net.HardwareAddr, want netip.Addr, reserved []netip.Addr, expires time.Time) (lease.Lease, error) {
	m := macText(mac)
	var out lease.Lease
	err := s.offerTx(ctx, subnet, func(tx runner) error {
		now := time.Now().UnixNano()
		if l, err := leaseBy(ctx, tx, `mac = ? AND subnet = ? AND expires > ? AND state <> ?`, m, subnet.String(), now, string(lease.Declined)); err == nil {
			out = l
			if out.State == lease.Offered && expires.After(out.Expires) {
				out.Expires = expires
			}
			_, err := tx.exec(ctx, upsertLease, leaseArgs(out)...)
			return err
		} else if !errors.Is(err, lease.ErrNoLease) {
			return err
		}
		reservedSet := map[netip.Addr]bool{}
		for _, r := range reserved {
			reservedSet[r] = true
		}
		// try claims a if it is in range, not reserved, and free.
		try := func(a netip.Addr) (bool, error) {
			if !a.IsValid() || !subnet.Contains(a) || first.Compare(a) > 0 || a.Compare(last) > 0 || reservedSet[a] {
				return false, nil
			}
			out = lease.Lease{MAC: mac, IP: a, Subnet: subnet, State: lease.Offered, Expires: expires.UTC()}
			s.probes.Add(1)
			ok, err := claimLease(ctx, tx, out, now)
			if ok {
				s.setCursor(subnet, a.Next())
			}
			return ok, err
		}
		if ok, err := try(want); ok || err != nil {
			return err
		}
		// Probe from where this server's last allocation in the subnet
		// ended, wrapping once: one indexed statement per address, so a
		// new client costs the same with ten leases or ten thousand.
		start, warm := s.cursor(subnet, first, last)
		if !warm {
			var err error
			if start, err = coldCursor(ctx, tx, subnet, first, last, reservedSet, now); err != nil {
				return err
			}
		}
		a := start
		for i := 0; i < maxScan; i++ {
			if ok, err := try(a); ok || err != nil {
				return err
			}
			if a = a.Next(); !a.IsValid() || a.Compare(last) > 0 {
				a = first
			}
			if a == start {
				break
			}
		}
		return lease.ErrPoolExhausted
	})
	if err != nil {
		return lease.Lease{}, fmt.Errorf("allocate address in %s for %s: %w", subnet, m, err)
	}
	return out, nil
}

// Bind implements dhcp.Leases.
func (s *Store) Bind(ctx context.Context, subnet netip.Prefix, mac net.HardwareAddr, ip netip.Addr, hostname string, expires time.Time) (lease.Lease, error) {
	m := macText(mac)
	out := lease.Lease{MAC: mac, IP: ip, Subnet: subnet, State: lease.Bound, Expires: expires.UTC(), Hostname: hostname}
	err := s.bindTx(ctx, subnet, func(ctx context.Context, tx runner) error {
		ok, err := claimLease(ctx, tx, out, time.Now().UnixNano())
		if err != nil {
			return err
		}
		if !ok {
			return lease.ErrNoLease
		}
		// A MAC holds one address per subnet: binding a new one frees the old.
		_, err = tx.exec(ctx, `DELETE FROM leases WHERE mac = ? AND subnet = ? AND ip <> ?`, m, subnet.String(), ip.String())
		return err
	})
	if err != nil {
		return lease.Lease{}, fmt.Errorf("bind %s to %s: %w", ip, m, err)
	}
	return out, nil
}

// Release implements dhcp.Leases.
func (s *Store) Release(ctx context.Context, mac net.HardwareAddr, ip netip.Addr) error {
	if _, err := s.idem.exec(ctx, `DELETE FROM leases WHERE ip = ? AND mac = ?`, ip.String(), macText(mac)); err != nil {
		return fmt.Errorf("release %s of %s: %w", ip, macText(mac), err)
	}
	return nil
}

// ReleaseOffer implements dhcp.Leases, in one statement.
func (s *Store) ReleaseOffer(ctx context.Context, subnet netip.Prefix, mac net.HardwareAddr, keep netip.Addr) error {
	if _, err := s.idem.exec(ctx, `DELETE FROM leases WHERE subnet = ? AND mac = ? AND state = ? AND ip <> ?`,
		subnet.String(), macText(mac), string(lease.Offered), addrText(keep)); err != nil {
		return fmt.Errorf("release offer to %s: %w", macText(mac), err)
	}
	return nil
}

// Decline implements dhcp.Leases. It writes over the address's row in one
// statement, keeping its subnet: an allocation racing with it either
// wrote first (and the decline replaces it) or finds the address declined.
func (s *Store) Decline(ctx context.Context, ip netip.Addr, expires time.Time) error {
	_, err := s.idem.exec(ctx, `INSERT INTO leases (ip, mac, subnet, state, expires, hostname) VALUES (?, '', '', ?, ?, '')
		ON CONFLICT (ip) DO UPDATE SET mac = '', state = excluded.state, expires = excluded.expires, hostname = ''`,
		ip.String(), string(lease.Declined), expires.UnixNano())
	if err != nil {
		return fmt.Errorf("decline %s: %w", ip, err)
	}
	return nil
}

// ByMAC implements dhcp.Leases.
func (s *Store) ByMAC(ctx context.Context, subnet netip.Prefix, mac net.HardwareAddr) (lease.Lease, error) {
	l, err := leaseBy(ctx, s.db, `mac = ? AND subnet = ? AND expires > ? AND state <> ?`, macText(mac), subnet.String(), time.Now().UnixNano(), string(lease.Declined))
	if err != nil {
		return lease.Lease{}, fmt.Errorf("lease of %s in %s: %w", macText(mac), subnet, err)
	}
	return l, nil
}

// ByIP implements dhcp.Leases.
func (s *Store) ByIP(ctx context.Context, ip netip.Addr) (lease.Lease, error) {
	l, err := leaseBy(ctx, s.db, `ip = ? AND expires > ?`, ip.String(), time.Now().UnixNano())
	if err != nil {
		return lease.Lease{}, fmt.Errorf("lease on %s: %w", ip, err)
	}
	return l, nil
}

// cursor is where the next search for a free address in subnet starts.
// It lives in memory only: after a restart the first search walks the
// taken addresses once, and every server sharing a database keeps its
// own; the claim checks every candidate either way.
func (s *Store) cursor(subnet netip.Prefix, first, last netip.Addr) (a netip.Addr, warm bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.next[subnet]
	if !ok || a.Compare(first) < 0 || a.Compare(last) > 0 {
		return first, false
	}
	return a, true
}

// coldCursor is where a server that has not allocated in the subnet yet
// (it has just started) begins its search: the lowest address of the
// range that no live lease holds, found from one read of the subnet's
// leases. Probing from the range's start instead costs one statement per
// address taken, under the subnet's lock: 40,000 of them took the first
// new client of a restarted server most of a second.
func coldCursor(ctx context.Context, tx runner, subnet netip.Prefix, first, last netip.Addr, reserved map[netip.Addr]bool, now int64) (netip.Addr, error) {
	rows, err := tx.query(ctx, `SELECT ip FROM leases WHERE subnet = ? AND expires > ?`, subnet.String(), now)
	if err != nil {
		return first, err
	}
	defer rows.Close()
	taken := map[netip.Addr]bool{}
	for rows.Next() {
		var ip string
		if err := rows.Scan(&ip); err != nil {
			return first, err
		}
		if a, err := netip.ParseAddr(ip); err == nil {
			taken[a] = true
		}
	}
	if err := rows.Err(); err != nil {
		return first, err
	}
	for a, i := first, 0; a.IsValid() && a.Compare(last) <= 0 && i < maxScan; a, i = a.Next(), i+1 {
		if !taken[a] && !reserved[a] {
			return a, nil
		}
	}
	return first, nil
}

func (s *Store) setCursor(subnet netip.Prefix, a netip.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.next == nil {
		s.next = map[netip.Prefix]netip.Addr{}
	}
	s.next[subnet] = a
}

// addrText is an address as stored, "" for none.
func addrText(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}
