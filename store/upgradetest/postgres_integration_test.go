//go:build integration

package upgradetest

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"testing"

	"github.com/rackboot/rackboot/internal/pgtest"
	"github.com/rackboot/rackboot/store/postgres"
)

const postgresDump = "testdata/postgres.sql"

// pgBin is the path of a PostgreSQL program of the newest Debian
// postgresql installed, as scripts/postgres.sh finds it.
func pgBin(t *testing.T, name string) string {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Sort(sort.Reverse(sort.StringSlice(dirs)))
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, name)); err == nil {
			return filepath.Join(d, name)
		}
	}
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("no %s: run scripts/postgres.sh as root to install PostgreSQL", name)
	}
	return p
}

// testDatabase creates an empty database on the test server (the one
// RACKBOOT_TEST_POSTGRES names, or that scripts/postgres.sh starts, as in
// store/postgres), dropped when the test ends, and returns its DSN. A
// cluster the tests started stops once no test binary uses it.
func testDatabase(t *testing.T) string {
	base, stop, err := pgtest.Server(filepath.Join("..", "..", "scripts", "postgres.sh"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return pgtest.Database(t, base)
}

func pgTool(t *testing.T, name string, args ...string) []byte {
	var stderr bytes.Buffer
	cmd := exec.Command(pgBin(t, name), args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v\n%s", name, err, stderr.String())
	}
	return out
}

// TestWriteFixturePostgres fills a new PostgreSQL store and writes its
// pg_dump (plain SQL) and golden file. It runs only with -update.
func TestWriteFixturePostgres(t *testing.T) {
	if !*update {
		t.Skip("rewrites testdata with -update only")
	}
	ctx := context.Background()
	dsn := testDatabase(t)
	s, err := postgres.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	fill(t, s)
	writeGolden(t, s, "postgres")
	s.Close()
	dump := pgTool(t, "pg_dump", "--format=plain", "--no-owner", "--no-privileges", "--dbname", dsn)
	ck(t, os.WriteFile(postgresDump, dump, 0o644))
}

// TestUpgradePostgres loads the PostgreSQL fixture with psql and opens it
// with this store.
func TestUpgradePostgres(t *testing.T) {
	ctx := context.Background()
	dsn := testDatabase(t)
	pgTool(t, "psql", "--quiet", "--no-psqlrc", "-v", "ON_ERROR_STOP=1", "--file", postgresDump, "--dbname", dsn)
	s, err := postgres.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	checkUpgraded(t, s, "postgres")
}
