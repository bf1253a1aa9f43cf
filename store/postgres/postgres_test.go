package postgres

import (
	"strings"
	"testing"
)

func TestParseDSN(t *testing.T) {
	for _, tc := range []struct {
		dsn  string
		want string // a substring of the error; empty means valid
	}{
		{"postgres://rackboot:secret@db.example:5432/rackboot?sslmode=disable", ""},
		{"postgresql://db.example/rackboot", ""},
		{"postgres://postgres@/postgres?host=/tmp/pg&port=5433", ""},
		{"postgres://db.example/rackboot?pool_max_conns=7", ""},
		{"mysql://root@localhost/rackboot", `scheme "mysql"`},
		{"host=localhost dbname=rackboot", "want postgres://"},
		{"postgres://u:secret@db.example:notaport/x", "database url"},
		{"postgres://u:secret@db.example/x?sslmode=bogus", "database url"},
	} {
		t.Run(tc.dsn, func(t *testing.T) {
			_, err := ParseDSN(tc.dsn)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("ParseDSN: %v", err)
			case tc.want != "" && err == nil:
				t.Fatalf("ParseDSN accepted it, want an error with %q", tc.want)
			case tc.want != "" && !strings.Contains(err.Error(), tc.want):
				t.Fatalf("ParseDSN: %v, want an error with %q", err, tc.want)
			}
			if err != nil && strings.Contains(err.Error(), "secret") {
				t.Errorf("error shows the password: %v", err)
			}
		})
	}
}

func TestParseDSNPool(t *testing.T) {
	// pool_max_conns is the store's, not a server setting.
	cfg, err := ParseDSN("postgres://db.example/rackboot?pool_max_conns=7")
	if err != nil || cfg.MaxConns != 7 {
		t.Fatalf("ParseDSN: %v, max conns %d; want 7", err, cfg.MaxConns)
	}
	if _, ok := cfg.ConnConfig.RuntimeParams["pool_max_conns"]; ok {
		t.Error("pool_max_conns would be sent to the server")
	}
}

// TestParseDSNApplicationName: rackboot's sessions carry a name an
// operator can find them by, unless the DSN names them otherwise.
func TestParseDSNApplicationName(t *testing.T) {
	t.Setenv("PGAPPNAME", "")
	for _, tc := range []struct{ dsn, want string }{
		{"postgres://db.example/rackboot", "rackboot"},
		{"postgres://db.example/rackboot?application_name=rack-a", "rack-a"},
	} {
		cfg, err := ParseDSN(tc.dsn)
		if err != nil {
			t.Fatalf("ParseDSN(%q): %v", tc.dsn, err)
		}
		if got := cfg.ConnConfig.RuntimeParams["application_name"]; got != tc.want {
			t.Errorf("ParseDSN(%q): application_name %q, want %q", tc.dsn, got, tc.want)
		}
	}
}
