// Package sqlite is the embedded Store: one SQLite file in the data dir,
// through modernc.org/sqlite (no cgo). It is store/sqlstore on SQLite.
package sqlite

import (
	"context"

	"github.com/rackboot/rackboot/store/sqlstore"
)

// Store is a store.Store on one SQLite database file.
type Store = sqlstore.Store

// Open opens (creating if needed) the database at path and applies the
// migrations it lacks.
func Open(ctx context.Context, path string) (*Store, error) { return sqlstore.OpenSQLite(ctx, path) }

// ErrNotRackboot is a file that is not a rackboot database: not SQLite,
// damaged, or another application's. Open, Check and Restore refuse one
// with it and leave it as it was.
var ErrNotRackboot = sqlstore.ErrNotRackboot

// Check tells whether the file at path is a sound rackboot database this
// rackboot can open, changing nothing, and returns its schema version.
func Check(ctx context.Context, path string) (int, error) { return sqlstore.CheckSQLite(ctx, path) }

// Backup writes a consistent copy (mode 0600) of the database at path to
// dst, which must not exist, while servers go on using it.
func Backup(ctx context.Context, path, dst string) (int, error) {
	return sqlstore.BackupSQLite(ctx, path, dst)
}

// Restore puts the backup src in place as the database at path, moving
// an old one aside to path+aside. No server may have path open.
func Restore(ctx context.Context, src, path, aside string) (int, error) {
	return sqlstore.RestoreSQLite(ctx, src, path, aside)
}
