package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

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
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func leaseBy(ctx context.Context, q querier, where string, args ...any) (leaseRow, error) {
	var r leaseRow
	var ip string
	err := q.QueryRowContext(ctx, `SELECT ip, mac, subnet, state, expires, hostname FROM leases WHERE `+where+` LIMIT 1`, args...).
		Scan(&ip, &r.mac, &r.subnet, &r.state, &r.expires, &r.hostname)
	if errors.Is(err, sql.ErrNoRows) {
		return r, dhcp.ErrNoLease
	}
	if err != nil {
		return r, err
	}
	r.ip, err = netip.ParseAddr(ip)
	return r, err
}

func putLease(ctx context.Context, tx *sql.Tx, l dhcp.Lease) error {
	mac := ""
	if len(l.MAC) > 0 {
		mac = macText(l.MAC)
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO leases (ip, mac, subnet, state, expires, hostname) VALUES (?, ?, ?, ?, ?, ?)
		ON CONFLICT(ip) DO UPDATE SET mac = excluded.mac, subnet = excluded.subnet, state = excluded.state,
		expires = excluded.expires, hostname = excluded.hostname`,
		l.IP.String(), mac, l.Subnet.String(), string(l.State), l.Expires.UnixNano(), l.Hostname)
	return err
}

// Allocate implements dhcp.Leases.
func (s *Store) Allocate(ctx context.Context, subnet netip.Prefix, first, last netip.Addr, mac net.HardwareAddr, want netip.Addr, reserved []netip.Addr, expires time.Time) (dhcp.Lease, error) {
	now := time.Now().UnixNano()
	m := macText(mac)
	var out dhcp.Lease
	err := s.tx(ctx, func(tx *sql.Tx) error {
		if r, err := leaseBy(ctx, tx, `mac = ? AND subnet = ? AND expires > ? AND state != ?`, m, subnet.String(), now, dhcp.LeaseDeclined); err == nil {
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
		free := func(a netip.Addr) (bool, error) {
			if !a.IsValid() || !subnet.Contains(a) || first.Compare(a) > 0 || a.Compare(last) > 0 || reservedSet[a] {
				return false, nil
			}
			var n int
			err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM leases WHERE ip = ? AND expires > ? AND mac != ?`, a.String(), now, m).Scan(&n)
			return n == 0, err
		}
		pick := netip.Addr{}
		if ok, err := free(want); err != nil {
			return err
		} else if ok {
			pick = want
		} else {
			// Probe from where the last allocation in this subnet ended,
			// wrapping once: one indexed lookup per address, so a new
			// client costs the same with ten leases or ten thousand.
			a := s.cursor(subnet, first, last)
			for i := 0; i < maxScan; i++ {
				ok, err := free(a)
				if err != nil {
					return err
				}
				if ok {
					pick = a
					break
				}
				if a = a.Next(); !a.IsValid() || a.Compare(last) > 0 {
					a = first
				}
				if a == s.cursor(subnet, first, last) {
					break
				}
			}
		}
		if pick.IsValid() {
			s.setCursor(subnet, pick.Next())
		}
		if !pick.IsValid() {
			return dhcp.ErrPoolExhausted
		}
		out = dhcp.Lease{MAC: mac, IP: pick, Subnet: subnet, State: dhcp.LeaseOffered, Expires: expires.UTC()}
		return putLease(ctx, tx, out)
	})
	if err != nil {
		return dhcp.Lease{}, fmt.Errorf("allocate address in %s for %s: %w", subnet, m, err)
	}
	return out, nil
}

// Bind implements dhcp.Leases.
func (s *Store) Bind(ctx context.Context, subnet netip.Prefix, mac net.HardwareAddr, ip netip.Addr, hostname string, expires time.Time) (dhcp.Lease, error) {
	now := time.Now().UnixNano()
	m := macText(mac)
	var out dhcp.Lease
	err := s.tx(ctx, func(tx *sql.Tx) error {
		r, err := leaseBy(ctx, tx, `ip = ?`, ip.String())
		switch {
		case err == nil && r.expires > now && r.mac != m:
			return dhcp.ErrNoLease
		case err != nil && !errors.Is(err, dhcp.ErrNoLease):
			return err
		}
		// A MAC holds one address per subnet: binding a new one frees the old.
		if _, err := tx.ExecContext(ctx, `DELETE FROM leases WHERE mac = ? AND subnet = ? AND ip != ?`, m, subnet.String(), ip.String()); err != nil {
			return err
		}
		out = dhcp.Lease{MAC: mac, IP: ip, Subnet: subnet, State: dhcp.LeaseBound, Expires: expires.UTC(), Hostname: hostname}
		return putLease(ctx, tx, out)
	})
	if err != nil {
		return dhcp.Lease{}, fmt.Errorf("bind %s to %s: %w", ip, m, err)
	}
	return out, nil
}

// Release implements dhcp.Leases.
func (s *Store) Release(ctx context.Context, mac net.HardwareAddr, ip netip.Addr) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM leases WHERE ip = ? AND mac = ?`, ip.String(), macText(mac)); err != nil {
		return fmt.Errorf("release %s of %s: %w", ip, macText(mac), err)
	}
	return nil
}

// ReleaseOffer implements dhcp.Leases.
func (s *Store) ReleaseOffer(ctx context.Context, subnet netip.Prefix, mac net.HardwareAddr, keep netip.Addr) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM leases WHERE subnet = ? AND mac = ? AND state = ? AND ip != ?`,
		subnet.String(), macText(mac), string(dhcp.LeaseOffered), addrText(keep)); err != nil {
		return fmt.Errorf("release offer to %s: %w", macText(mac), err)
	}
	return nil
}

// Decline implements dhcp.Leases.
func (s *Store) Decline(ctx context.Context, ip netip.Addr, expires time.Time) error {
	err := s.tx(ctx, func(tx *sql.Tx) error {
		subnet := ""
		if r, err := leaseBy(ctx, tx, `ip = ?`, ip.String()); err == nil {
			subnet = r.subnet
		}
		pfx, _ := netip.ParsePrefix(subnet)
		return putLease(ctx, tx, dhcp.Lease{IP: ip, Subnet: pfx, State: dhcp.LeaseDeclined, Expires: expires})
	})
	if err != nil {
		return fmt.Errorf("decline %s: %w", ip, err)
	}
	return nil
}

// ByMAC implements dhcp.Leases.
func (s *Store) ByMAC(ctx context.Context, subnet netip.Prefix, mac net.HardwareAddr) (dhcp.Lease, error) {
	r, err := leaseBy(ctx, s.db, `mac = ? AND subnet = ? AND expires > ? AND state != ?`, macText(mac), subnet.String(), time.Now().UnixNano(), dhcp.LeaseDeclined)
	if err != nil {
		return dhcp.Lease{}, fmt.Errorf("lease of %s in %s: %w", macText(mac), subnet, err)
	}
	return r.lease(), nil
}

// ByIP implements dhcp.Leases.
func (s *Store) ByIP(ctx context.Context, ip netip.Addr) (dhcp.Lease, error) {
	r, err := leaseBy(ctx, s.db, `ip = ? AND expires > ?`, ip.String(), time.Now().UnixNano())
	if err != nil {
		return dhcp.Lease{}, fmt.Errorf("lease on %s: %w", ip, err)
	}
	return r.lease(), nil
}

// cursor is where the next search for a free address in subnet starts.
// It lives in memory only: after a restart the first search walks the
// taken addresses once, and every other server sharing the database keeps
// its own; the transaction checks every candidate either way.
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
