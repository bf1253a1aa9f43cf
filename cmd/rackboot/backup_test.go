package main

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/rackboot/rackboot/appliance"
	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/store"
	"github.com/rackboot/rackboot/store/sqlite"
)

// contents is what a backup must keep: every node, lease and event.
type contents struct {
	Nodes  []string
	Leases []string
	Events []string
}

func read(t *testing.T, path string) contents {
	t.Helper()
	ctx := context.Background()
	s, err := sqlite.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var c contents
	nodes, err := s.Nodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		c.Nodes = append(c.Nodes, fmt.Sprintf("%s %s %s %v", n.ID, n.State, n.Arch, n.MACs))
		mac, _ := net.ParseMAC(n.MACs[0])
		l, err := s.ByMAC(ctx, netip.MustParsePrefix("10.0.0.0/16"), mac)
		if err != nil {
			t.Fatalf("lease of %s: %v", n.ID, err)
		}
		c.Leases = append(c.Leases, fmt.Sprintf("%s %s %d", l.IP, l.MAC, l.Expires.Unix()))
	}
	evs, err := s.Events(ctx, store.EventFilter{Limit: 100000})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		c.Events = append(c.Events, fmt.Sprintf("%d %s %s %s", e.Seq, e.NodeID, e.Kind, e.Message))
	}
	return c
}

// TestBackupRestore: a backup taken while the appliance serves (and a
// writer keeps adding events) restores into a fresh data dir with the
// same nodes, leases and events; restore refuses the serving data dir,
// files that are no rackboot database or are newer, and PostgreSQL.
func TestBackupRestore(t *testing.T) {
	ctx := context.Background()
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	dir := t.TempDir()
	live := filepath.Join(dir, "live")
	done := make(chan error, 1)
	go func() {
		done <- appliance.Run(actx, appliance.Config{DataDir: live, ServerIP: "127.0.0.1", HTTPAddr: "127.0.0.1:0",
			TFTPAddr: "127.0.0.1:0", DHCP: appliance.DHCPConfig{Mode: appliance.DHCPOff}}, nil)
	}()
	dbPath := filepath.Join(live, appliance.DBFile)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(live, appliance.TokenFile)); err == nil {
			if _, err := os.Stat(dbPath); err == nil {
				break
			}
		}
		select {
		case err := <-done:
			t.Fatalf("appliance: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("the appliance did not start in 30 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // its start-up writes

	// Nodes, leases and events, through a second connection to the
	// database the server has open.
	st, err := sqlite.Open(ctx, dbPath)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	subnet := netip.MustParsePrefix("10.0.0.0/16")
	for i := range 40 {
		mac := net.HardwareAddr{0x52, 0x54, 0, 0, 0, byte(i)}
		n, _, err := st.EnrollClient(ctx, boot.Client{MAC: mac, Arch: boot.ClientARM64UEFI}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Bind(ctx, subnet, mac, netip.AddrFrom4([4]byte{10, 0, 1, byte(i)}), "", time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		if _, _, err := st.Transition(ctx, n.ID, store.StateDiscovered, store.StateInspecting, "", store.Event{Actor: "test", Reason: "backup test"}); err != nil {
			t.Fatal(err)
		}
	}

	// Back up while a writer goes on adding events.
	stop, started := make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			if i == 10 {
				close(started)
			}
			select {
			case <-stop:
				return
			default:
			}
			st.AddEvent(ctx, store.Event{Actor: "writer", Kind: "audit", Message: fmt.Sprint("write ", i)})
		}
	}()
	<-started
	backup := filepath.Join(dir, "backup.db")
	var stdout, stderr bytes.Buffer
	err = run(ctx, []string{"backup", backup, "--data-dir", live}, &stdout, &stderr)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatalf("backup: %v\n%s", err, stderr.String())
	}
	if !strings.Contains(stdout.String(), "wrote "+backup) {
		t.Errorf("backup said %q", stdout.String())
	}
	fi, err := os.Stat(backup)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("backup file: %v %v, want mode 0600", fi.Mode(), err)
	}
	if err := run(ctx, []string{"backup", backup, "--data-dir", live}, &stdout, &stderr); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Errorf("backup over an existing file: %v", err)
	}

	// The server is running: restore refuses its data dir, and leaves
	// the database alone.
	err = run(ctx, []string{"restore", backup, "--data-dir", live}, &stdout, &stderr)
	if !errors.Is(err, appliance.ErrServing) || !strings.Contains(err.Error(), "stop it first") {
		t.Errorf("restore under a running server: %v", err)
	}

	// Into a fresh data dir.
	fresh := filepath.Join(dir, "fresh")
	stdout.Reset()
	if err := run(ctx, []string{"restore", backup, "--data-dir", fresh}, &stdout, &stderr); err != nil {
		t.Fatalf("restore: %v", err)
	}
	t.Log(strings.TrimSpace(stdout.String()))
	got, want := read(t, filepath.Join(fresh, appliance.DBFile)), read(t, backup)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("restored database differs from the backup (-backup +restored):\n%s", diff)
	}
	if len(got.Nodes) != 40 || len(got.Leases) != 40 || len(got.Events) < 40 {
		t.Errorf("restored %d nodes, %d leases, %d events; want 40, 40 and at least 40", len(got.Nodes), len(got.Leases), len(got.Events))
	}
	// The backup is a prefix of the live log: nothing made up, nothing
	// out of order.
	cancel()
	if err := <-done; err != nil {
		t.Errorf("appliance: %v", err)
	}
	st.Close()
	now := read(t, dbPath)
	if diff := cmp.Diff(now.Nodes, got.Nodes); diff != "" {
		t.Errorf("nodes differ from the live database:\n%s", diff)
	}
	if !slices.Equal(now.Events[:len(got.Events)], got.Events) {
		t.Error("the backup's events are not the live log's first ones")
	}
	t.Logf("backup: %d nodes, %d leases, %d events (the live log had %d when the writer stopped)", len(got.Nodes), len(got.Leases), len(got.Events), len(now.Events))

	// Restoring again over the fresh one keeps it aside.
	stdout.Reset()
	if err := run(ctx, []string{"restore", backup, "--data-dir", fresh}, &stdout, &stderr); err != nil {
		t.Fatalf("second restore: %v", err)
	}
	if !strings.Contains(stdout.String(), "rackboot.db.before-restore-") {
		t.Errorf("second restore said %q", stdout.String())
	}

	// Refused files change nothing.
	garbage := filepath.Join(dir, "garbage")
	os.WriteFile(garbage, []byte("not a database at all"), 0o600)
	newer := filepath.Join(dir, "newer.db")
	if _, err := sqlite.Backup(ctx, filepath.Join(fresh, appliance.DBFile), newer); err != nil {
		t.Fatal(err)
	}
	raw, err := sql.Open("sqlite", "file:"+newer)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Exec(`INSERT INTO schema_migrations (version, applied_at) VALUES (99, 0)`); err != nil {
		t.Fatal(err)
	}
	raw.Close()
	foreign := filepath.Join(dir, "foreign.db")
	raw, _ = sql.Open("sqlite", "file:"+foreign)
	if _, err := raw.Exec(`CREATE TABLE photos (id INTEGER PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	raw.Close()
	before, _ := os.ReadFile(filepath.Join(fresh, appliance.DBFile))
	for file, want := range map[string]string{
		garbage:                      "not a SQLite database",
		newer:                        "schema version 99 is newer than this rackboot's",
		foreign:                      "another application (tables photos)",
		filepath.Join(dir, "absent"): "no such file",
	} {
		err := run(ctx, []string{"restore", file, "--data-dir", fresh}, &stdout, &stderr)
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), file) {
			t.Errorf("restore %s: %v, want %q", filepath.Base(file), err, want)
		}
	}
	if after, _ := os.ReadFile(filepath.Join(fresh, appliance.DBFile)); !bytes.Equal(before, after) {
		t.Error("a refused restore changed the database")
	}

	// PostgreSQL: the commands name pg_dump and pg_restore, and never
	// show the password.
	for op, want := range map[string]string{"backup": "pg_dump", "restore": "pg_restore"} {
		err := run(ctx, []string{op, filepath.Join(dir, "pg.dump"), "--db", "postgres://rb:secret@db.example/rackboot"}, &stdout, &stderr)
		if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "secret") {
			t.Errorf("%s on PostgreSQL: %v", op, err)
		}
	}
}
