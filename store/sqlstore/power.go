package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/rackboot/rackboot/store"
)

const powerColumns = `node_id, state, error, checked, changed`

func scanPower(r scanner) (store.PowerState, error) {
	var p store.PowerState
	var checked, changed int64
	err := r.Scan(&p.NodeID, &p.State, &p.Error, &checked, &changed)
	p.Checked, p.Changed = fromNanos(checked), fromNanos(changed)
	return p, err
}

// RecordPower implements store.Store. The node's row is locked first
// (PostgreSQL), so servers recording one node's state at once take turns
// and only the first to see a change appends its event.
func (s *Store) RecordPower(ctx context.Context, p store.PowerState, e store.Event) (bool, error) {
	if p.Checked.IsZero() {
		p.Checked = time.Now().UTC()
	}
	changed := false
	err := s.tx(ctx, func(tx runner) error {
		changed = false
		var one int
		if err := tx.row(ctx, `SELECT 1 FROM nodes WHERE id = ?`+s.d.forUpdate, p.NodeID).Scan(&one); err != nil {
			return noRows(err)
		}
		var have string
		err := tx.row(ctx, `SELECT state FROM power_states WHERE node_id = ?`, p.NodeID).Scan(&have)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			changed = true
		case err != nil:
			return err
		default:
			changed = have != p.State
		}
		if changed {
			_, err = tx.exec(ctx, `INSERT INTO power_states (`+powerColumns+`) VALUES (?, ?, ?, ?, ?)
				ON CONFLICT (node_id) DO UPDATE SET state = excluded.state, error = excluded.error,
				checked = excluded.checked, changed = excluded.changed`,
				p.NodeID, p.State, p.Error, nanos(p.Checked), nanos(p.Checked))
			if err != nil {
				return err
			}
			e.NodeID, e.Time = p.NodeID, p.Checked
			_, err = insertEvent(ctx, tx, e)
			return err
		}
		_, err = tx.exec(ctx, `UPDATE power_states SET error = ?, checked = ? WHERE node_id = ?`, p.Error, nanos(p.Checked), p.NodeID)
		return err
	})
	if err != nil {
		return false, fmt.Errorf("record power state of node %s: %w", p.NodeID, err)
	}
	return changed, nil
}

// PowerState implements store.Store.
func (s *Store) PowerState(ctx context.Context, nodeID string) (store.PowerState, error) {
	p, err := one(ctx, s.db, scanPower, `SELECT `+powerColumns+` FROM power_states WHERE node_id = ?`, nodeID)
	if err != nil {
		return p, fmt.Errorf("power state of node %s: %w", nodeID, err)
	}
	return p, nil
}

// PowerStates implements store.Store.
func (s *Store) PowerStates(ctx context.Context) ([]store.PowerState, error) {
	ps, err := all(ctx, s.db, scanPower, `SELECT `+powerColumns+` FROM power_states ORDER BY node_id`)
	if err != nil {
		return nil, fmt.Errorf("list power states: %w", err)
	}
	return ps, nil
}
