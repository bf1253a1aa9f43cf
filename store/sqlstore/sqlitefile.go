package sqlstore

import (
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
)

// What a SQLite file must be before rackboot opens it as its database,
// backs it up or restores it: never a panic, never a silent new
// database over a file that was something else.

// ErrNotRackboot is a file that is not a rackboot database: not SQLite at
// all, damaged, or another application's.
var ErrNotRackboot = errors.New("not a rackboot database")

// sqliteMagic opens every SQLite 3 database file.
const sqliteMagic = "SQLite format 3\x00"

// rackbootTables are tables every version of the schema has.
var rackbootTables = []string{"nodes", "interfaces", "leases", "events", "tasks", "tokens"}

// checkHeader reads the 100-byte header of the SQLite file at path. An
// absent or empty file is fine (a new database). It refuses a file that
// is not SQLite and one shorter than its header says, unless a WAL beside
// it may hold the rest.
func checkHeader(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%w: not a regular file", ErrNotRackboot)
	}
	if fi.Size() == 0 {
		return nil
	}
	h := make([]byte, 100)
	n, err := io.ReadFull(f, h)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return err
	}
	if n < len(sqliteMagic) || string(h[:len(sqliteMagic)]) != sqliteMagic {
		return fmt.Errorf("%w: not a SQLite database (it starts %q)", ErrNotRackboot, h[:min(n, 16)])
	}
	if n < 100 {
		return fmt.Errorf("%w: damaged: %d bytes, shorter than a SQLite header", ErrNotRackboot, n)
	}
	pageSize := int64(binary.BigEndian.Uint16(h[16:18]))
	if pageSize == 1 {
		pageSize = 65536
	}
	pages := int64(binary.BigEndian.Uint32(h[28:32]))
	// The page count is valid when the change counter matches the
	// version it is valid for.
	valid := binary.BigEndian.Uint32(h[24:28]) == binary.BigEndian.Uint32(h[92:96])
	if wal, err := os.Stat(path + "-wal"); err == nil && wal.Size() > 0 {
		valid = false // the rest may be in the WAL, not yet checkpointed
	}
	if valid && pages > 0 && fi.Size() < pages*pageSize {
		return fmt.Errorf("%w: damaged: truncated to %d bytes, its header says %d (%d pages of %d)",
			ErrNotRackboot, fi.Size(), pages*pageSize, pages, pageSize)
	}
	return nil
}

// isDamaged says whether err is SQLite's word that a file is not a
// database or is corrupt.
func isDamaged(err error) bool {
	if err == nil {
		return false
	}
	msg := err.Error()
	for _, s := range []string{"file is not a database", "malformed", "SQLITE_CORRUPT", "SQLITE_NOTADB", "(26)", "(11)"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// damaged wraps a SQLite error that says the file is not a database or
// is corrupt as ErrNotRackboot; other errors pass as they are.
func damaged(err error) error {
	if isDamaged(err) {
		return fmt.Errorf("%w: damaged: %w", ErrNotRackboot, err)
	}
	return err
}

// checkExisting looks at the tables of the database at path, if it has
// any, through a read-only connection that changes nothing in the file.
func checkExisting(ctx context.Context, path string) error {
	fi, err := os.Stat(path)
	if err != nil || fi.Size() == 0 {
		return nil // a new database: SQLite reports what else is wrong
	}
	q := url.Values{}
	q.Add("mode", "ro")
	q.Add("_pragma", "busy_timeout(10000)")
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return err
	}
	defer db.Close()
	r := runner{c: db, d: sqliteDialect}
	if err := checkTables(ctx, r); err != nil {
		return err
	}
	return quickCheck(ctx, r)
}

// quickCheck runs SQLite's quick_check over the whole file: every page
// of every table and index read, about 5 ms a megabyte here. It finds
// damage that a start's own queries never read.
func quickCheck(ctx context.Context, r runner) error {
	found, err := all(ctx, r, func(r scanner) (string, error) {
		var s string
		return s, r.Scan(&s)
	}, `PRAGMA quick_check(4)`)
	if err != nil {
		return damaged(err)
	}
	found = slices.DeleteFunc(found, func(s string) bool { return strings.HasPrefix(s, "*** in database") })
	if len(found) != 1 || found[0] != "ok" {
		return fmt.Errorf("%w: damaged: quick_check: %s", ErrNotRackboot, strings.Join(found, "; "))
	}
	return nil
}

// checkTables refuses a SQLite database that holds tables but is not
// rackboot's: no schema_migrations, or not rackboot's tables beside it.
// An empty database is a new one.
func checkTables(ctx context.Context, db runner) error {
	tables, err := all(ctx, db, func(r scanner) (string, error) {
		var s string
		return s, r.Scan(&s)
	}, `SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name`)
	if err != nil {
		return damaged(err)
	}
	if len(tables) == 0 {
		return nil
	}
	if !slices.Contains(tables, "schema_migrations") {
		shown := tables[:min(len(tables), 5)]
		return fmt.Errorf("%w: a SQLite database of another application (tables %s)", ErrNotRackboot, strings.Join(shown, ", "))
	}
	var have int
	if err := db.row(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&have); err != nil {
		return damaged(err)
	}
	if have == 0 {
		return nil // a start that failed before its first migration
	}
	var missing []string
	for _, t := range rackbootTables {
		if !slices.Contains(tables, t) {
			missing = append(missing, t)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: it has a schema_migrations table but no %s", ErrNotRackboot, strings.Join(missing, ", "))
	}
	return nil
}

// CheckSQLite tells whether the file at path is a sound rackboot SQLite
// database this rackboot can open, without changing it: SQLite, not
// damaged (SQLite's quick_check), rackboot's tables, and a schema version
// no newer than this rackboot's. It returns the schema version.
func CheckSQLite(ctx context.Context, path string) (int, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return 0, fmt.Errorf("check database %s: %w", path, err)
	}
	if fi.Size() == 0 {
		return 0, fmt.Errorf("check database %s: %w: empty file", path, ErrNotRackboot)
	}
	if err := checkHeader(path); err != nil {
		return 0, fmt.Errorf("check database %s: %w", path, err)
	}
	q := url.Values{}
	q.Add("mode", "ro")
	q.Add("_pragma", "busy_timeout(10000)")
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return 0, fmt.Errorf("check database %s: %w", path, err)
	}
	defer db.Close()
	r := runner{c: db, d: sqliteDialect}
	if err := quickCheck(ctx, r); err != nil {
		return 0, fmt.Errorf("check database %s: %w", path, err)
	}
	if err := checkTables(ctx, r); err != nil {
		return 0, fmt.Errorf("check database %s: %w", path, err)
	}
	var have int
	if err := r.row(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&have); err != nil {
		return 0, fmt.Errorf("check database %s: %w: %w", path, ErrNotRackboot, err)
	}
	if have == 0 {
		return 0, fmt.Errorf("check database %s: %w: no schema applied", path, ErrNotRackboot)
	}
	if have > len(sqliteMigrations) {
		return have, fmt.Errorf("check database %s: schema version %d is newer than this rackboot's (%d): use a newer rackboot", path, have, len(sqliteMigrations))
	}
	return have, nil
}

// BackupSQLite writes a consistent copy of the SQLite database at path
// to dst (mode 0600) with VACUUM INTO, which reads one snapshot while
// servers go on writing. dst must not exist. The copy is checked as
// restore would check it before it is given its name.
func BackupSQLite(ctx context.Context, path, dst string) (version int, err error) {
	if _, err := os.Stat(path); err != nil {
		return 0, fmt.Errorf("backup: database %s: %w", path, err)
	}
	if _, err := os.Lstat(dst); err == nil {
		return 0, fmt.Errorf("backup: %s exists: remove it or name another file", dst)
	}
	if err := checkHeader(path); err != nil {
		return 0, fmt.Errorf("backup: database %s: %w", path, err)
	}
	// VACUUM INTO writes into an empty file; making it first gives it
	// its mode, and a name of its own keeps a half-written copy from
	// ever carrying dst's.
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp-*")
	if err != nil {
		return 0, fmt.Errorf("backup: %w", err)
	}
	tmpName := tmp.Name()
	defer func() {
		if err != nil {
			os.Remove(tmpName)
		}
	}()
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return 0, fmt.Errorf("backup: %w", err)
	}
	tmp.Close()

	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return 0, fmt.Errorf("backup: database %s: %w", path, err)
	}
	defer db.Close()
	r := runner{c: db, d: sqliteDialect}
	if err := checkTables(ctx, r); err != nil {
		return 0, fmt.Errorf("backup: database %s: %w", path, err)
	}
	if _, err := db.ExecContext(ctx, `VACUUM INTO ?`, tmpName); err != nil {
		return 0, fmt.Errorf("backup: database %s: %w", path, damaged(err))
	}
	if err := syncFile(tmpName); err != nil {
		return 0, fmt.Errorf("backup: %w", err)
	}
	if version, err = CheckSQLite(ctx, tmpName); err != nil {
		return 0, fmt.Errorf("backup: the copy failed its check: %w", err)
	}
	// A hard link gives the copy its name only if dst is still free.
	if err := os.Link(tmpName, dst); err != nil {
		return 0, fmt.Errorf("backup: %w", err)
	}
	os.Remove(tmpName)
	return version, syncDir(filepath.Dir(dst))
}

// RestoreSQLite puts the backup src in place as the SQLite database at
// path, after CheckSQLite accepted it. A database already at path, with
// its WAL and shared-memory files, is moved aside to path+aside (its
// files keep their suffixes), never deleted; the caller makes sure no
// server has it open. It returns the backup's schema version.
func RestoreSQLite(ctx context.Context, src, path, aside string) (int, error) {
	version, err := CheckSQLite(ctx, src)
	if err != nil {
		return 0, fmt.Errorf("restore: %w", err)
	}
	in, err := os.Open(src)
	if err != nil {
		return 0, fmt.Errorf("restore: %w", err)
	}
	defer in.Close()
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".restore-*")
	if err != nil {
		return 0, fmt.Errorf("restore: %w", err)
	}
	tmpName := tmp.Name()
	ok := false
	defer func() {
		if !ok {
			os.Remove(tmpName)
		}
	}()
	_, err = io.Copy(tmp, in)
	if err == nil {
		err = tmp.Chmod(0o600)
	}
	if err == nil && os.Geteuid() == 0 {
		// Run as root on a service's data dir: the file belongs to
		// whoever owns the dir, as the database it replaces did.
		if di, serr := os.Stat(filepath.Dir(path)); serr == nil {
			if st, ok := di.Sys().(*syscall.Stat_t); ok {
				err = tmp.Chown(int(st.Uid), int(st.Gid))
			}
		}
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, fmt.Errorf("restore: copy %s: %w", src, err)
	}
	if _, err := CheckSQLite(ctx, tmpName); err != nil {
		return 0, fmt.Errorf("restore: the copy failed its check: %w", err)
	}
	// The old database's WAL must never meet the new file: it would be
	// replayed into it.
	for _, suffix := range []string{"-wal", "-shm", ""} {
		if _, err := os.Lstat(path + suffix); err == nil {
			if err := os.Rename(path+suffix, path+aside+suffix); err != nil {
				return 0, fmt.Errorf("restore: move the old database aside: %w", err)
			}
		}
	}
	if err := os.Rename(tmpName, path); err != nil {
		return 0, fmt.Errorf("restore: %w", err)
	}
	ok = true
	return version, syncDir(filepath.Dir(path))
}

func syncFile(name string) error {
	f, err := os.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
