package appliance

import (
	"context"
	"errors"
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
		st, err := sqlite.Open(ctx, filepath.Join(dataDir, DBFile))
		if errors.Is(err, sqlite.ErrNotRackboot) {
			return nil, fmt.Errorf("%w; rackboot leaves it as it is: move it away to start with a new database, or put a backup in its place with rackboot restore FILE", err)
		}
		if err != nil {
			return nil, err
		}
		return st, nil
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"):
		return postgres.Open(ctx, dsn)
	default:
		return nil, fmt.Errorf("open database %q: want empty (SQLite in the data dir) or a postgres:// URL", dsn)
	}
}
