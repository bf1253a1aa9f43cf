package appliance

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/rackboot/rackboot/store/sqlite"
)

// LockFile, in the data dir, is held (flock) by a server running on its
// SQLite database and by a restore, so neither starts while the other
// runs.
const LockFile = "rackboot.lock"

// ErrServing is a data dir whose lock another process holds: a server is
// running on it, or a restore.
var ErrServing = errors.New("a rackboot server is running on this data dir")

// lockDataDir takes the data dir's lock, or fails at once with
// ErrServing. The lock dies with the process, however it ends.
func lockDataDir(dir string) (unlock func(), err error) {
	path := filepath.Join(dir, LockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock data dir: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("data dir %s: %w (or a restore): it holds %s; stop it first (systemctl stop rackboot)", dir, ErrServing, path)
		}
		return nil, fmt.Errorf("lock data dir: %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}

// pgOnly says what to run instead on PostgreSQL.
func pgOnly(op, dsn, how string) error {
	shown := "postgres://..."
	if u, err := url.Parse(dsn); err == nil {
		shown = u.Redacted()
	}
	return fmt.Errorf("%s: the database is PostgreSQL (%s): rackboot %s handles SQLite only; use %s", op, shown, op, how)
}

// Backup writes a consistent copy of the appliance's SQLite database
// (DATA_DIR/rackboot.db) to dst, mode 0600, while servers keep serving;
// dst must not exist. On PostgreSQL it refuses and names pg_dump. It
// returns the copy's schema version.
func Backup(ctx context.Context, dsn, dataDir, dst string) (int, error) {
	if dsn != "" {
		return 0, pgOnly("backup", dsn, "pg_dump --format=custom --file "+dst+" DATABASE_URL")
	}
	return sqlite.Backup(ctx, filepath.Join(dataDir, DBFile), dst)
}

// Restore puts the backup src in place as the appliance's SQLite
// database. It refuses while a server runs on the data dir (it takes the
// server's lock), and refuses a file that is not a sound rackboot
// database or is from a newer schema, changing nothing then. A database
// already there is kept beside it as rackboot.db.before-restore-TIME,
// which it returns with the backup's schema version. On PostgreSQL it
// refuses and names pg_restore.
func Restore(ctx context.Context, dsn, dataDir, src string) (aside string, version int, err error) {
	if dsn != "" {
		return "", 0, pgOnly("restore", dsn, "pg_restore --clean --if-exists --dbname DATABASE_URL "+src+" with every rackboot server stopped")
	}
	if _, err := sqlite.Check(ctx, src); err != nil {
		return "", 0, fmt.Errorf("restore: %w", err)
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return "", 0, fmt.Errorf("restore: %w", err)
	}
	unlock, err := lockDataDir(dataDir)
	if err != nil {
		return "", 0, fmt.Errorf("restore: %w", err)
	}
	defer unlock()
	db := filepath.Join(dataDir, DBFile)
	suffix := ".before-restore-" + time.Now().UTC().Format("20060102T150405Z")
	if _, err := os.Lstat(db); err == nil {
		aside = db + suffix
	}
	version, err = sqlite.Restore(ctx, src, db, suffix)
	if err != nil {
		return "", 0, err
	}
	return aside, version, nil
}
