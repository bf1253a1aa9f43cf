package postgres

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rackboot/rackboot/dhcp"
)

// maxScan bounds the walk over a range in search of a free address, so a
// misconfigured /8 cannot stall a DISCOVER.
const maxScan = 1 << 16

type leaseRow struct {
	ip       netip.Addr
	mac      string
	subnet   string
	state    string
	expires  int64
	hostname string
}

func (r leaseRow) lease() dhcp.Lease {
	l := dhcp.Lease{IP: r.ip, State: dhcp.LeaseState(r.state), Expires: time.Unix(0, r.expires).UTC(), Hostname: r.hostname}
	l.MAC, _ = net.ParseMAC(r.mac)
	l.Subnet, _ = netip.ParsePrefix(r.subnet)
	return l
}

type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func leaseBy(ctx context.Context, q querier, where string, args ...any) (leaseRow, error) {
	var r leaseRow
	var ip string
	err := q.QueryRow(ctx, `SELECT ip, mac, subnet, state, expires, hostname FROM leases WHERE `+where+` LIMIT 1`, args...).
		Scan(&ip, &r.mac, &r.subnet, &r.state, &r.expires, &r.hostname)
	if errors.Is(err, pgx.ErrNoRows) {
		return r, dhcp.ErrNoLease
	}
	if err != nil {
		return r, err
	}
	r.ip, err = netip.ParseAddr(ip)
	return r, err
}

func leaseArgs(l dhcp.Lease) []any {
	mac := ""
	if len(l.MAC) > 0 {
		mac = macText(l.MAC)
	}
	subnet := ""
	if l.Subnet.IsValid() {
		subnet = l.Subnet.String()
	}
	return []any{l.IP.String(), mac, subnet, string(l.State), l.Expires.UnixNano(), l.Hostname}
}

// putLease writes l over whatever lease its address had.
func putLease(ctx context.Context, tx pgx.Tx, l dhcp.Lease) error {
	_, err := tx.Exec(ctx, `INSERT INTO leases (ip, mac, subnet, state, expires, hostname) VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (ip) DO UPDATE SET mac = excluded.mac, subnet = excluded.subnet, state = excluded.state,
		expires = excluded.expires, hostname = excluded.hostname`, leaseArgs(l)...)
	return err
}

// claimLease writes l unless its address is held, at now, by another MAC
// (a declined address is held by the empty MAC), and reports whether it
// did. The check and the write are one statement on the address's row, so
// two servers can never both claim one address: the second waits for the
// first's row lock and then sees its lease.
func claimLease(ctx context.Context, tx pgx.Tx, l dhcp.Lease, now int64) (bool, error) {
	tag, err := tx.Exec(ctx, `INSERT INTO leases (ip, mac, subnet, state, expires, hostname) VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (ip) DO UPDATE SET mac = excluded.mac, subnet = excluded.subnet, state = excluded.state,
		expires = excluded.expires, hostname = excluded.hostname
		WHERE leases.expires <= $7 OR leases.mac = excluded.mac`, append(leaseArgs(l), now)...)
	if err != nil {
		return false, err
	}
	return tag.RowsAffected() == 1, nil
}

// lockSubnet serialises Allocate and Bind in one subnet across every
// server on the database until the transaction ends, so a MAC that two
// servers serve at once ends up with one lease, not one per server.
func lockSubnet(ctx context.Context, tx pgx.Tx, subnet netip.Prefix) error {
	return advisoryLock(ctx, tx, lockKey("lease "+subnet.String()))
}

// Allocate implements dhcp.Leases.
func (s *Store) Allocate(ctx context.Context, subnet netip.Prefix, first, last netip.Addr, mac net.HardwareAddr, want netip.Addr, reserved []netip.Addr, expires time.Time) (dhcp.Lease, error) {
	m := macText(mac)
	var out dhcp.Lease
	err := s.tx(ctx, func(tx pgx.Tx) error {
		if err := lockSubnet(ctx, tx, subnet); err != nil {
			return err
		}
		now := time.Now().UnixNano()
		if r, err := leaseBy(ctx, tx, `mac = $1 AND subnet = $2 AND expires > $3 AND state <> $4`, m, subnet.String(), now, string(dhcp.LeaseDeclined)); err == nil {
			out = r.lease()
			if out.State == dhcp.LeaseOffered && expires.After(out.Expires) {
				out.Expires = expires
			}
			return putLease(ctx, tx, out)
		} else if !errors.Is(err, dhcp.ErrNoLease) {
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
			out = dhcp.Lease{MAC: mac, IP: a, Subnet: subnet, State: dhcp.LeaseOffered, Expires: expires.UTC()}
			return claimLease(ctx, tx, out, now)
		}
		if ok, err := try(want); err != nil {
			return err
		} else if ok {
			s.setCursor(subnet, want.Next())
			return nil
		}
		// Probe from where this server's last allocation in the subnet
		// ended, wrapping once: one indexed statement per address, so a
		// new client costs the same with ten leases or ten thousand.
		start := s.cursor(subnet, first, last)
		a := start
		for i := 0; i < maxScan; i++ {
			ok, err := try(a)
			if err != nil {
				return err
			}
			if ok {
				s.setCursor(subnet, a.Next())
				return nil
			}
			if a = a.Next(); !a.IsValid() || a.Compare(last) > 0 {
				a = first
			}
			if a == start {
				break
			}
		}
		return dhcp.ErrPoolExhausted
	})
	if err != nil {
		return dhcp.Lease{}, fmt.Errorf("allocate address in %s for %s: %w", subnet, m, err)
	}
	return out, nil
}

// Bind implements dhcp.Leases.
func (s *Store) Bind(ctx context.Context, subnet netip.Prefix, mac net.HardwareAddr, ip netip.Addr, hostname string, expires time.Time) (dhcp.Lease, error) {
	m := macText(mac)
	var out dhcp.Lease
	err := s.tx(ctx, func(tx pgx.Tx) error {
		if err := lockSubnet(ctx, tx, subnet); err != nil {
			return err
		}
		now := time.Now().UnixNano()
		out = dhcp.Lease{MAC: mac, IP: ip, Subnet: subnet, State: dhcp.LeaseBound, Expires: expires.UTC(), Hostname: hostname}
		ok, err := claimLease(ctx, tx, out, now)
		if err != nil {
			return err
		}
		if !ok {
			return dhcp.ErrNoLease
		}
		// A MAC holds one address per subnet: binding a new one frees the old.
		_, err = tx.Exec(ctx, `DELETE FROM leases WHERE mac = $1 AND subnet = $2 AND ip <> $3`, m, subnet.String(), ip.String())
		return err
	})
	if err != nil {
		return dhcp.Lease{}, fmt.Errorf("bind %s to %s: %w", ip, m, err)
	}
	return out, nil
}

// Release implements dhcp.Leases.
func (s *Store) Release(ctx context.Context, mac net.HardwareAddr, ip netip.Addr) error {
	if _, err := s.pool.Exec(ctx, `DELETE FROM leases WHERE ip = $1 AND mac = $2`, ip.String(), macText(mac)); err != nil {
		return fmt.Errorf("release %s of %s: %w", ip, macText(mac), err)
	}
	return nil
}

// ReleaseOffer implements dhcp.Leases.
func (s *Store) ReleaseOffer(ctx context.Context, subnet netip.Prefix, mac net.HardwareAddr, keep netip.Addr) error {
	if _, err := s.pool.Exec(ctx, `DELETE FROM leases WHERE subnet = $1 AND mac = $2 AND state = $3 AND ip <> $4`,
		subnet.String(), macText(mac), string(dhcp.LeaseOffered), addrText(keep)); err != nil {
		return fmt.Errorf("release offer to %s: %w", macText(mac), err)
	}
	return nil
}

// Decline implements dhcp.Leases. It writes over the address's row in one
// statement: an allocation racing with it either wrote first (and the
// decline replaces it) or finds the address declined.
func (s *Store) Decline(ctx context.Context, ip netip.Addr, expires time.Time) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO leases (ip, mac, subnet, state, expires, hostname) VALUES ($1, '', '', $2, $3, '')
		ON CONFLICT (ip) DO UPDATE SET mac = '', state = excluded.state, expires = excluded.expires, hostname = ''`,
		ip.String(), string(dhcp.LeaseDeclined), expires.UnixNano())
	if err != nil {
		return fmt.Errorf("decline %s: %w", ip, err)
	}
	return nil
}

// ByMAC implements dhcp.Leases.
func (s *Store) ByMAC(ctx context.Context, subnet netip.Prefix, mac net.HardwareAddr) (dhcp.Lease, error) {
	r, err := leaseBy(ctx, s.pool, `mac = $1 AND subnet = $2 AND expires > $3 AND state <> $4`, macText(mac), subnet.String(), time.Now().UnixNano(), string(dhcp.LeaseDeclined))
	if err != nil {
		return dhcp.Lease{}, fmt.Errorf("lease of %s in %s: %w", macText(mac), subnet, err)
	}
	return r.lease(), nil
}

// ByIP implements dhcp.Leases.
func (s *Store) ByIP(ctx context.Context, ip netip.Addr) (dhcp.Lease, error) {
	r, err := leaseBy(ctx, s.pool, `ip = $1 AND expires > $2`, ip.String(), time.Now().UnixNano())
	if err != nil {
		return dhcp.Lease{}, fmt.Errorf("lease on %s: %w", ip, err)
	}
	return r.lease(), nil
}

// cursor is where the next search for a free address in subnet starts.
// It lives in memory only: every server sharing the database keeps its
// own, and the claim checks every candidate either way.
func (s *Store) cursor(subnet netip.Prefix, first, last netip.Addr) netip.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.next[subnet]
	if !ok || a.Compare(first) < 0 || a.Compare(last) > 0 {
		return first
	}
	return a
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
