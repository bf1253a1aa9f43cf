package sqlstore

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/rackboot/rackboot/store"
)

// TestSingleWritesTakeTheirTurn: on SQLite a write run alone (a token's
// insert) that comes while a transaction writes waits in the same queue
// as the transactions, and goes before a transaction that came after it.
// Before, it went to SQLite, whose busy handler slept it in growing
// steps while the transactions queued after it went first.
func TestSingleWritesTakeTheirTurn(t *testing.T) {
	ctx := context.Background()
	s, err := OpenSQLite(ctx, filepath.Join(t.TempDir(), "rackboot.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for round := range 5 {
		hold, held := make(chan struct{}), make(chan struct{})
		first := make(chan error, 1)
		go func() {
			first <- s.tx(ctx, func(tx runner) error {
				close(held)
				<-hold
				return nil
			})
		}()
		<-held
		single := make(chan error, 1)
		go func() {
			_, err := s.CreateToken(ctx, store.Token{ID: "single", Hash: "h-single", Kind: "api", Role: store.RoleReadonly})
			single <- err
		}()
		time.Sleep(20 * time.Millisecond) // the single write reaches its wait
		after := make(chan error, 1)
		go func() {
			after <- s.tx(ctx, func(tx runner) error {
				_, err := tx.exec(ctx, `INSERT INTO tokens (`+tokenColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
					"after", "h-after", "api", "", string(store.RoleReadonly), "", "", "", time.Now().UnixNano(), 0)
				return err
			})
		}()
		time.Sleep(20 * time.Millisecond) // the transaction queues behind it
		close(hold)
		for _, c := range []chan error{first, single, after} {
			if err := <-c; err != nil {
				t.Fatal(err)
			}
		}
		var order []string
		rows, err := s.pool.QueryContext(ctx, `SELECT id FROM tokens WHERE id IN ('single', 'after') ORDER BY rowid`)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var id string
			rows.Scan(&id)
			order = append(order, id)
		}
		rows.Close()
		if len(order) != 2 || order[0] != "single" {
			t.Fatalf("round %d: written in the order %v, want the single write first", round, order)
		}
		if _, err := s.pool.ExecContext(ctx, `DELETE FROM tokens`); err != nil {
			t.Fatal(err)
		}
	}
}
