package upgradetest

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	_ "modernc.org/sqlite" // the "sqlite" driver, for dumping and loading

	"github.com/rackboot/rackboot/store/sqlite"
)

const sqliteDump = "testdata/sqlite.sql"

// dumpSQLite writes a database as SQL text: each table's CREATE statement
// as SQLite keeps it, its rows as INSERTs of quote()d values (exact for
// every storage class, blobs included), AUTOINCREMENT counters, then the
// indexes. Loading the text into an empty database gives the same database.
func dumpSQLite(ctx context.Context, db *sql.DB) (string, error) {
	var b strings.Builder
	b.WriteString("-- rackboot SQLite upgrade fixture, written by TestWriteFixture -update\n")
	type object struct{ kind, name, sql string }
	rows, err := db.QueryContext(ctx, `SELECT type, name, sql FROM sqlite_schema WHERE sql IS NOT NULL ORDER BY type = 'index', rowid`)
	if err != nil {
		return "", err
	}
	var objects []object
	for rows.Next() {
		var o object
		if err := rows.Scan(&o.kind, &o.name, &o.sql); err != nil {
			rows.Close()
			return "", err
		}
		objects = append(objects, o)
	}
	rows.Close()
	for _, o := range objects {
		if o.kind != "table" || strings.HasPrefix(o.name, "sqlite_") {
			continue
		}
		fmt.Fprintf(&b, "%s;\n", o.sql)
		if err := dumpRows(ctx, db, &b, o.name); err != nil {
			return "", err
		}
	}
	var seq int
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM sqlite_schema WHERE name = 'sqlite_sequence'`).Scan(&seq); err != nil {
		return "", err
	}
	if seq > 0 {
		// Loading the rows above filled it already, as sqlite3's .dump knows.
		b.WriteString("DELETE FROM sqlite_sequence;\n")
		if err := dumpRows(ctx, db, &b, "sqlite_sequence"); err != nil {
			return "", err
		}
	}
	for _, o := range objects {
		if o.kind != "table" {
			fmt.Fprintf(&b, "%s;\n", o.sql)
		}
	}
	return b.String(), nil
}

func dumpRows(ctx context.Context, db *sql.DB, b *strings.Builder, table string) error {
	cols, err := db.QueryContext(ctx, `SELECT name FROM pragma_table_info(?) ORDER BY cid`, table)
	if err != nil {
		return err
	}
	var quoted []string
	for cols.Next() {
		var c string
		if err := cols.Scan(&c); err != nil {
			cols.Close()
			return err
		}
		quoted = append(quoted, fmt.Sprintf("quote(%q)", c))
	}
	cols.Close()
	rows, err := db.QueryContext(ctx, `SELECT `+strings.Join(quoted, ` || ',' || `)+fmt.Sprintf(` FROM %q ORDER BY rowid`, table))
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var values string
		if err := rows.Scan(&values); err != nil {
			return err
		}
		fmt.Fprintf(b, "INSERT INTO %q VALUES(%s);\n", table, values)
	}
	return rows.Err()
}

// loadSQLite creates a database at path from a dump.
func loadSQLite(ctx context.Context, path, dump string) error {
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		return err
	}
	defer db.Close()
	_, err = db.ExecContext(ctx, dump)
	return err
}

func openRaw(t *testing.T, path string) *sql.DB {
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// TestWriteFixtureSQLite fills a new SQLite store and writes its dump and
// golden file. It runs only with -update.
func TestWriteFixtureSQLite(t *testing.T) {
	if !*update {
		t.Skip("rewrites testdata with -update only")
	}
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "rackboot.db")
	s, err := sqlite.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	fill(t, s)
	writeGolden(t, s, "sqlite")
	s.Close()
	dump := get(dumpSQLite(ctx, openRaw(t, path)))(t)
	// The dump must round-trip: loaded and dumped again, it is the same text.
	again := filepath.Join(t.TempDir(), "again.db")
	ck(t, loadSQLite(ctx, again, dump))
	if d := cmp.Diff(dump, get(dumpSQLite(ctx, openRaw(t, again)))(t)); d != "" {
		t.Fatalf("the dump does not round-trip:\n%s", d)
	}
	ck(t, os.WriteFile(sqliteDump, []byte(dump), 0o644))
}

// TestUpgradeSQLite opens the SQLite fixture with this store.
func TestUpgradeSQLite(t *testing.T) {
	ctx := context.Background()
	dump, err := os.ReadFile(sqliteDump)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "rackboot.db")
	ck(t, loadSQLite(ctx, path, string(dump)))
	s, err := sqlite.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	checkUpgraded(t, s, "sqlite")
}
