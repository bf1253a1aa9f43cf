//go:build integration

package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestSimulatedYear boots a site every day for 400 days into one
// database and prunes it as the appliance does, with the default
// retention (boot events 90 days, audit events 365): the file stops
// growing once the retention windows are full, and stays within what the README's sizing
// says (about 233 bytes a boot event, 250 an audit event, times the rows
// the windows keep). The rows go in through SQL, a day per transaction,
// to simulate a year in seconds; the pruning is the store's own. It is
// an integration test because SQLite in pure Go under the race detector
// takes minutes over it. RACKBOOT_SOAK=1 runs the README's 5,000-node
// site.
func TestSimulatedYear(t *testing.T) {
	nodes, steps, eventsADay := 100, 15, 2
	if os.Getenv("RACKBOOT_SOAK") != "" {
		nodes = 5000
	}
	// 400 days: past the audit log's window too, so its pruning shows.
	const days, bootDays, eventDays = 400, 90, 365
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "rackboot.db")
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// The site's rows go in through a connection of their own, beside
	// the store that prunes them, as the appliance's writers do.
	raw, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	raw.SetMaxOpenConns(1)
	start := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	size := func() int64 {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	// day writes one day of the site: every node boots once (steps boot
	// events) and gets eventsADay audit events.
	day := func(db *sql.DB, d int) {
		tx, err := db.Begin()
		if err != nil {
			t.Fatal(err)
		}
		boot, err := tx.Prepare(`INSERT INTO boot_events (node_id, time, mac, ip, proto, kind, file, bytes, size, block_size, window_size, complete, error, options)
			VALUES (?, ?, ?, ?, 'tftp', 'file', 'ipxe/snponly.efi', 1048576, 1048576, 1468, 0, 1, '', '{"60":"PXEClient:Arch:00007:UNDI:003000","93":"7"}')`)
		if err != nil {
			t.Fatal(err)
		}
		ev, err := tx.Prepare(`INSERT INTO events (time, node_id, actor, kind, from_state, to_state, reason, message)
			VALUES (?, ?, ?, 'transition', 'deploying', 'active', 'deploy done', 'deploy done (task 8c1e0b1a-5b2f-4f0e-9a53-0d6f0e1f2a3b)')`)
		if err != nil {
			t.Fatal(err)
		}
		at := start.AddDate(0, 0, d)
		for n := range nodes {
			id := fmt.Sprintf("0b8e4f2a-6c1d-4e5f-9a7b-%012x", n)
			for k := range steps {
				if _, err := boot.Exec(id, at.Add(time.Duration(n*steps+k)*time.Millisecond).UnixNano(), fmt.Sprintf("52:54:00:%02x:%02x:%02x", n>>16, (n>>8)&255, n&255),
					fmt.Sprintf("10.%d.%d.%d", n>>16, (n>>8)&255, n&255)); err != nil {
					t.Fatal(err)
				}
			}
			for k := range eventsADay {
				if _, err := ev.Exec(at.Add(time.Duration(n*eventsADay+k)*time.Millisecond).UnixNano(), id, "agent:"+id); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	sizes := map[int]int64{}
	var pruned [2]int64
	began := time.Now()
	for d := range days {
		day(raw, d)
		// The appliance prunes every hour: once a simulated day is
		// the same cut, a day at a time.
		now := start.AddDate(0, 0, d+1)
		b, e, err := s.Prune(ctx, now.AddDate(0, 0, -bootDays), now.AddDate(0, 0, -eventDays))
		if err != nil {
			t.Fatal(err)
		}
		pruned[0], pruned[1] = pruned[0]+b, pruned[1]+e
		if d+1 == bootDays || d+1 == 2*bootDays || d+1 == eventDays || d+1 == days {
			// The WAL is folded in first: the file is what stays.
			if _, err := raw.Exec(`PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
				t.Fatal(err)
			}
			sizes[d+1] = size()
		}
	}
	var bootRows, eventRows int64
	raw.QueryRow(`SELECT COUNT(*) FROM boot_events`).Scan(&bootRows)
	raw.QueryRow(`SELECT COUNT(*) FROM events`).Scan(&eventRows)
	if want := int64(nodes * steps * bootDays); bootRows != want {
		t.Errorf("boot events kept: %d, want the 90-day window's %d", bootRows, want)
	}
	if want := int64(nodes * eventsADay * eventDays); eventRows != want {
		t.Errorf("audit events kept: %d, want the year's %d", eventRows, want)
	}
	if want := int64(nodes * eventsADay * (days - eventDays)); pruned[1] != want {
		t.Errorf("audit events pruned: %d, want %d", pruned[1], want)
	}
	// The README's sizing, with a quarter for the indexes' slack.
	budget := int64(float64(bootRows)*233*1.25 + float64(eventRows)*250*1.25)
	t.Logf("%d nodes, %d boot events a day, %d audit events a day, for %d days in %.0f s: %d boot and %d audit events pruned; file %.1f MB at day %d, %.1f MB at day %d, %.1f MB at day %d, %.1f MB at day %d (budget %.1f MB)",
		nodes, nodes*steps, nodes*eventsADay, days, time.Since(began).Seconds(), pruned[0], pruned[1],
		float64(sizes[bootDays])/1e6, bootDays, float64(sizes[2*bootDays])/1e6, 2*bootDays, float64(sizes[eventDays])/1e6, eventDays, float64(sizes[days])/1e6, days, float64(budget)/1e6)
	// Once both windows are full the file stops growing: pruned pages
	// are reused.
	if grew := sizes[days] - sizes[eventDays]; grew > sizes[eventDays]/50 {
		t.Errorf("the file grew %d bytes from day %d to %d, with both windows full", grew, eventDays, days)
	}
	if sizes[days] > budget {
		t.Errorf("the file is %d bytes after a year, over the sizing's %d", sizes[days], budget)
	}
	// Past the boot window only the audit log grows: the boot events'
	// pages are reused.
	auditGrowth := int64(float64(nodes*eventsADay*(eventDays-2*bootDays)) * 250 * 1.5)
	if grew := sizes[eventDays] - sizes[2*bootDays]; grew > auditGrowth {
		t.Errorf("the file grew %d bytes from day %d to %d, more than the audit events' %d", grew, 2*bootDays, eventDays, auditGrowth)
	}
}
