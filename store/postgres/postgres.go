// Package postgres is the shared Store: one PostgreSQL database that
// several rackboot servers use at once, through github.com/jackc/pgx/v5.
// It is store/sqlstore on PostgreSQL, which says how the servers keep out
// of each other's way.
package postgres

import (
	"context"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rackboot/rackboot/store/sqlstore"
)

// Store is a store.Store on a PostgreSQL database.
type Store = sqlstore.Store

// ParseDSN checks that dsn is a PostgreSQL URL (postgres:// or
// postgresql://) that pgx can use, and returns the configuration it
// describes.
func ParseDSN(dsn string) (*pgxpool.Config, error) { return sqlstore.ParseDSN(dsn) }

// Open connects to the database dsn names (postgres://...) and applies the
// migrations it lacks.
func Open(ctx context.Context, dsn string) (*Store, error) { return sqlstore.OpenPostgres(ctx, dsn) }
