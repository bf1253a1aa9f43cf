package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/store"
)

// BenchmarkRowSize reports how many bytes of database file a boot event
// and an audit event take, from the file's growth over b.N rows of each
// (run with -benchtime 20000x): the figure the README's retention sizes
// come from.
func BenchmarkRowSize(b *testing.B) {
	ctx := context.Background()
	path := filepath.Join(b.TempDir(), "rackboot.db")
	s, err := Open(ctx, path)
	if err != nil {
		b.Fatal(err)
	}
	n, _, err := s.EnrollClient(ctx, boot.Client{MAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, Arch: boot.ClientX64UEFI}, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	size := func() int64 {
		s.Close()
		fi, err := os.Stat(path)
		if err != nil {
			b.Fatal(err)
		}
		if s, err = Open(ctx, path); err != nil {
			b.Fatal(err)
		}
		return fi.Size()
	}
	base := size()
	ip := netip.MustParseAddr("10.0.0.5")
	mac := net.HardwareAddr{0x52, 0x54, 0, 0, 0, 1}
	for range b.N {
		if err := s.AddTrace(ctx, n.ID, boot.Event{Time: time.Now(), MAC: mac, IP: ip, Proto: "tftp", Kind: "file", File: "ipxe/snponly.efi",
			Bytes: 1 << 20, Size: 1 << 20, BlockSize: 1468, Complete: true, Options: map[string]string{"93": "7", "60": "PXEClient:Arch:00007:UNDI:003000"}}); err != nil {
			b.Fatal(err)
		}
	}
	traces := size()
	for range b.N {
		if _, err := s.AddEvent(ctx, store.Event{NodeID: n.ID, Actor: "agent:" + n.ID, Kind: "transition", From: store.StateDeploying, To: store.StateActive,
			Reason: "deploy done", Message: "deploy done (task 8c1e0b1a-5b2f-4f0e-9a53-0d6f0e1f2a3b)"}); err != nil {
			b.Fatal(err)
		}
	}
	events := size()
	s.Close()
	b.ReportMetric(float64(traces-base)/float64(b.N), "bytes/boot_event")
	b.ReportMetric(float64(events-traces)/float64(b.N), "bytes/event")
}

// BenchmarkOpenLarge reports how long Open takes on a database of 60,000
// leases and 300,000 boot events (about 30 MB): the quick_check that
// reads every page at start is most of it.
func BenchmarkOpenLarge(b *testing.B) {
	ctx := context.Background()
	path := filepath.Join(b.TempDir(), "rackboot.db")
	s, err := Open(ctx, path)
	if err != nil {
		b.Fatal(err)
	}
	s.Close()
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		b.Fatal(err)
	}
	tx, err := db.Begin()
	if err != nil {
		b.Fatal(err)
	}
	for i := range 60000 {
		if _, err := tx.Exec(`INSERT INTO leases (ip, mac, subnet, state, expires, hostname) VALUES (?, ?, '10.0.0.0/8', 'bound', 0, '')`,
			fmt.Sprintf("10.%d.%d.%d", i>>16, (i>>8)&255, i&255), fmt.Sprintf("52:54:00:%02x:%02x:%02x", i>>16, (i>>8)&255, i&255)); err != nil {
			b.Fatal(err)
		}
	}
	for i := range 300000 {
		if _, err := tx.Exec(`INSERT INTO boot_events (node_id, time, mac, ip, proto, kind, file, bytes, size, block_size, window_size, complete, error, options)
			VALUES ('n', ?, '52:54:00:00:00:01', '10.0.0.5', 'tftp', 'file', 'ipxe/snponly.efi', 1, 1, 1468, 0, 1, '', '{"93":"7"}')`, i); err != nil {
			b.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		b.Fatal(err)
	}
	db.Close()
	fi, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for range b.N {
		s, err := Open(ctx, path)
		if err != nil {
			b.Fatal(err)
		}
		s.Close()
	}
	b.ReportMetric(float64(fi.Size())/(1<<20), "MB")
}
