package appliance

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/rackboot/rackboot/store"
	"github.com/rackboot/rackboot/store/postgres"
	"github.com/rackboot/rackboot/store/sqlite"
)

// OpenStore opens the database a config names: a postgres:// URL, or
// SQLite in the data dir when dsn is empty.
func OpenStore(ctx context.Context, dsn, dataDir string) (store.Store, error) {
	switch {
	case dsn == "":
		return sqlite.Open(ctx, filepath.Join(dataDir, DBFile))
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"):
		return postgres.Open(ctx, dsn)
	default:
		return nil, fmt.Errorf("open database %q: want empty (SQLite in the data dir) or a postgres:// URL", dsn)
	}
}
