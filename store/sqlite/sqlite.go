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
