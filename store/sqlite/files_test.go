package sqlite

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/store"
)

// filled makes a rackboot database at path with nodes, leases and
// events, closed again.
func filled(t *testing.T, path string, nodes int) {
	t.Helper()
	ctx := context.Background()
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	fill(t, s, 0, nodes)
}

func fill(t *testing.T, s store.Store, from, nodes int) {
	t.Helper()
	ctx := context.Background()
	subnet := netip.MustParsePrefix("10.0.0.0/16")
	for i := from; i < from+nodes; i++ {
		mac := net.HardwareAddr{0x52, 0x54, 0, 0, byte(i >> 8), byte(i)}
		n, _, err := s.EnrollClient(ctx, boot.Client{MAC: mac, Arch: boot.ClientX64UEFI}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		ip := netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})
		if _, err := s.Bind(ctx, subnet, mac, ip, "", time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		if _, err := s.AddEvent(ctx, store.Event{NodeID: n.ID, Actor: "test", Kind: "audit", Message: "node " + n.ID}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRefusedFiles: a file that is not a rackboot database gives a clear
// error naming it at open, never a panic or a new database in its place,
// and the file is left byte for byte as it was.
func TestRefusedFiles(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name string
		make func(t *testing.T, path string)
		want string
	}{
		{"garbage", func(t *testing.T, path string) {
			os.WriteFile(path, bytes.Repeat([]byte("this is no database\n"), 500), 0o600)
		}, "not a SQLite database"},
		{"short garbage", func(t *testing.T, path string) { os.WriteFile(path, []byte("x"), 0o600) }, "not a SQLite database"},
		{"header only", func(t *testing.T, path string) { os.WriteFile(path, []byte("SQLite format 3\x00"), 0o600) }, "shorter than a SQLite header"},
		{"truncated", func(t *testing.T, path string) {
			filled(t, path, 300)
			fi, _ := os.Stat(path)
			if err := os.Truncate(path, fi.Size()/2); err != nil {
				t.Fatal(err)
			}
		}, "truncated"},
		{"pages overwritten", func(t *testing.T, path string) {
			filled(t, path, 300)
			b, _ := os.ReadFile(path)
			copy(b[4096:], bytes.Repeat([]byte{0xa5}, 8192)) // pages 2 and 3
			os.WriteFile(path, b, 0o600)
		}, "damaged"},
		{"a page in the middle overwritten", func(t *testing.T, path string) {
			// Page 30 of 52: only a read of every page finds it.
			filled(t, path, 150)
			b, _ := os.ReadFile(path)
			copy(b[29*4096:], bytes.Repeat([]byte{0xa5}, 4096))
			os.WriteFile(path, b, 0o600)
		}, "damaged"},
		{"another application's", func(t *testing.T, path string) {
			db, err := sql.Open("sqlite", "file:"+path)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if _, err := db.Exec(`CREATE TABLE moz_places (id INTEGER PRIMARY KEY, url TEXT); INSERT INTO moz_places (url) VALUES ('https://example.com')`); err != nil {
				t.Fatal(err)
			}
		}, "another application (tables moz_places)"},
		{"newer schema", func(t *testing.T, path string) {
			filled(t, path, 1)
			db, err := sql.Open("sqlite", "file:"+path)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if _, err := db.Exec(`INSERT INTO schema_migrations (version, applied_at) VALUES (999, 0)`); err != nil {
				t.Fatal(err)
			}
		}, "newer than this rackboot"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "rackboot.db")
			tc.make(t, path)
			before, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			s, err := Open(ctx, path)
			if err == nil {
				s.Close()
				t.Fatal("opened")
			}
			t.Logf("open: %v", err)
			if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("open: %v; want the file's name and %q", err, tc.want)
			}
			if tc.name != "newer schema" && !errors.Is(err, ErrNotRackboot) {
				t.Errorf("open: %v is not ErrNotRackboot", err)
			}
			if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
				t.Errorf("the refused file changed: %d bytes, then %d", len(before), len(after))
			}
			if _, err := Check(ctx, path); err == nil || !strings.Contains(err.Error(), path) {
				t.Errorf("check: %v", err)
			}
		})
	}
	// An empty file and an absent one are a new database.
	for _, name := range []string{"empty", "absent"} {
		path := filepath.Join(t.TempDir(), "rackboot.db")
		if name == "empty" {
			os.WriteFile(path, nil, 0o600)
		}
		s, err := Open(ctx, path)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		s.Close()
	}
}
