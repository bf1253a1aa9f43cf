package sqlstore

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/rackboot/rackboot/store"
)

const bmcColumns = `node_id, url, user_name, password, fingerprint, updated`

func scanBMC(r scanner) (store.BMC, error) {
	var b store.BMC
	var updated int64
	err := r.Scan(&b.NodeID, &b.URL, &b.User, &b.Password, &b.Fingerprint, &updated)
	b.Updated = fromNanos(updated)
	if len(b.Password) == 0 {
		b.Password = nil
	}
	return b, err
}

// SetBMC implements store.Store.
func (s *Store) SetBMC(ctx context.Context, b store.BMC) error {
	if b.Updated.IsZero() {
		b.Updated = time.Now().UTC()
	}
	err := s.tx(ctx, func(tx runner) error {
		var one int
		if err := tx.row(ctx, `SELECT 1 FROM nodes WHERE id = ?`, b.NodeID).Scan(&one); err != nil {
			return noRows(err)
		}
		_, err := tx.exec(ctx, `INSERT INTO bmcs (`+bmcColumns+`) VALUES (?, ?, ?, ?, ?, ?)
			ON CONFLICT (node_id) DO UPDATE SET url = excluded.url, user_name = excluded.user_name,
			password = excluded.password, fingerprint = excluded.fingerprint, updated = excluded.updated`,
			b.NodeID, b.URL, b.User, b.Password, b.Fingerprint, nanos(b.Updated))
		return err
	})
	if err != nil {
		return fmt.Errorf("set bmc of node %s: %w", b.NodeID, err)
	}
	return nil
}

// BMC implements store.Store.
func (s *Store) BMC(ctx context.Context, nodeID string) (store.BMC, error) {
	b, err := one(ctx, s.db, scanBMC, `SELECT `+bmcColumns+` FROM bmcs WHERE node_id = ?`, nodeID)
	if err != nil {
		return b, fmt.Errorf("bmc of node %s: %w", nodeID, err)
	}
	return b, nil
}

// DeleteBMC implements store.Store.
func (s *Store) DeleteBMC(ctx context.Context, nodeID string) error {
	if err := s.db.change(ctx, `DELETE FROM bmcs WHERE node_id = ?`, nodeID); err != nil {
		return fmt.Errorf("delete bmc of node %s: %w", nodeID, err)
	}
	return nil
}

// BMCs implements store.Store.
func (s *Store) BMCs(ctx context.Context) ([]store.BMC, error) {
	bs, err := all(ctx, s.db, scanBMC, `SELECT `+bmcColumns+` FROM bmcs ORDER BY node_id`)
	if err != nil {
		return nil, fmt.Errorf("list bmcs: %w", err)
	}
	return bs, nil
}

// ResealBMC implements store.Store.
func (s *Store) ResealBMC(ctx context.Context, nodeID string, old, resealed []byte) error {
	err := s.tx(ctx, func(tx runner) error {
		var have []byte
		if err := tx.row(ctx, `SELECT password FROM bmcs WHERE node_id = ?`+s.d.forUpdate, nodeID).Scan(&have); err != nil {
			return noRows(err)
		}
		if !bytes.Equal(have, old) {
			return store.ErrConflict
		}
		_, err := tx.exec(ctx, `UPDATE bmcs SET password = ? WHERE node_id = ?`, resealed, nodeID)
		return err
	})
	if err != nil {
		return fmt.Errorf("reseal bmc password of node %s: %w", nodeID, err)
	}
	return nil
}

// noRows turns a row that is not there into ErrNotFound.
func noRows(err error) error {
	if errors.Is(err, sql.ErrNoRows) {
		return store.ErrNotFound
	}
	return err
}
