package sqlstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/store"
)

// insertEvent appends e to the audit log. On PostgreSQL the lock held to
// the commit makes sequence numbers commit in order, so a reader following
// the log with EventFilter.After never skips an event that commits late.
func insertEvent(ctx context.Context, tx runner, e store.Event) (int64, error) {
	if err := tx.lock(ctx, eventsKey); err != nil {
		return 0, err
	}
	var seq int64
	err := tx.row(ctx, `INSERT INTO events (time, node_id, actor, kind, from_state, to_state, reason, message)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING seq`,
		e.Time.UnixNano(), e.NodeID, e.Actor, e.Kind, string(e.From), string(e.To), e.Reason, e.Message).Scan(&seq)
	return seq, err
}

// AddEvent implements store.Store.
func (s *Store) AddEvent(ctx context.Context, e store.Event) (store.Event, error) {
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	err := s.tx(ctx, func(tx runner) error {
		var err error
		e.Seq, err = insertEvent(ctx, tx, e)
		return err
	})
	if err != nil {
		return e, fmt.Errorf("add event: %w", err)
	}
	return e, nil
}

func scanEvent(r scanner) (store.Event, error) {
	var e store.Event
	var t int64
	var from, to string
	err := r.Scan(&e.Seq, &t, &e.NodeID, &e.Actor, &e.Kind, &from, &to, &e.Reason, &e.Message)
	e.Time, e.From, e.To = unixNanos(t), store.State(from), store.State(to)
	return e, err
}

// Events implements store.Store.
func (s *Store) Events(ctx context.Context, f store.EventFilter) ([]store.Event, error) {
	if f.Limit <= 0 {
		f.Limit = 1000
	}
	q := `SELECT seq, time, node_id, actor, kind, from_state, to_state, reason, message FROM events WHERE seq > ?`
	args := []any{f.After}
	if f.NodeID != "" {
		q, args = q+` AND node_id = ?`, append(args, f.NodeID)
	}
	if f.Before > 0 {
		q, args = q+` AND seq < ?`, append(args, f.Before)
	}
	if f.Newest {
		q += ` ORDER BY seq DESC LIMIT ?`
	} else {
		q += ` ORDER BY seq LIMIT ?`
	}
	out, err := all(ctx, s.db, scanEvent, q, append(args, f.Limit)...)
	if err != nil {
		return nil, fmt.Errorf("list events: %w", err)
	}
	return out, nil
}

// CreateImage implements store.Store.
func (s *Store) CreateImage(ctx context.Context, im store.Image) error {
	if im.Created.IsZero() {
		im.Created = time.Now().UTC()
	}
	_, err := s.db.exec(ctx, `INSERT INTO images (`+imageColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		im.Name, string(im.Arch), im.Format, im.Size, im.SHA256, im.RawSize, im.RawSHA256, im.Source, im.Created.UnixNano())
	if s.d.unique(err) {
		err = store.ErrConflict
	}
	if err != nil {
		return fmt.Errorf("create image %s: %w", im.Name, err)
	}
	return nil
}

const imageColumns = `name, arch, format, size, sha256, raw_size, raw_sha256, source, created`

func scanImage(row scanner) (store.Image, error) {
	var im store.Image
	var arch string
	var created int64
	err := row.Scan(&im.Name, &arch, &im.Format, &im.Size, &im.SHA256, &im.RawSize, &im.RawSHA256, &im.Source, &created)
	im.Arch, im.Created = boot.Arch(arch), unixNanos(created)
	return im, err
}

// Image implements store.Store.
func (s *Store) Image(ctx context.Context, name string) (store.Image, error) {
	im, err := one(ctx, s.db, scanImage, `SELECT `+imageColumns+` FROM images WHERE name = ?`, name)
	if err != nil {
		return im, fmt.Errorf("image %q: %w", name, err)
	}
	return im, nil
}

// Images implements store.Store.
func (s *Store) Images(ctx context.Context) ([]store.Image, error) {
	out, err := all(ctx, s.db, scanImage, `SELECT `+imageColumns+` FROM images ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	return out, nil
}

// DeleteImage implements store.Store.
func (s *Store) DeleteImage(ctx context.Context, name string) error {
	if err := s.db.change(ctx, `DELETE FROM images WHERE name = ?`, name); err != nil {
		return fmt.Errorf("delete image %q: %w", name, err)
	}
	return nil
}

// CreateTask implements store.Store.
func (s *Store) CreateTask(ctx context.Context, t store.Task) (store.Task, error) {
	if t.ID == "" {
		t.ID = uuid.NewString()
	}
	if t.Created.IsZero() {
		t.Created = time.Now().UTC()
	}
	if t.Updated.IsZero() {
		t.Updated = t.Created
	}
	if t.State == "" {
		t.State = store.TaskPending
	}
	if err := insertTask(ctx, s.db, t); err != nil {
		return t, err
	}
	return t, nil
}

func insertTask(ctx context.Context, r runner, t store.Task) error {
	_, err := r.exec(ctx, `INSERT INTO tasks (`+taskColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		t.ID, t.NodeID, t.Kind, string(t.State), []byte(t.Params), []byte(t.Result), t.Error, t.Created.UnixNano(), t.Updated.UnixNano())
	if err != nil {
		return fmt.Errorf("create task for node %s: %w", t.NodeID, err)
	}
	return nil
}

const taskColumns = `id, node_id, kind, state, params, result, error, created, updated`

func scanTask(row scanner) (store.Task, error) {
	var t store.Task
	var st string
	var params, result []byte
	var created, updated int64
	err := row.Scan(&t.ID, &t.NodeID, &t.Kind, &st, &params, &result, &t.Error, &created, &updated)
	t.State, t.Created, t.Updated = store.TaskState(st), unixNanos(created), unixNanos(updated)
	t.Params, t.Result = rawJSON(params), rawJSON(result)
	return t, err
}

// Task implements store.Store.
func (s *Store) Task(ctx context.Context, id string) (store.Task, error) {
	t, err := one(ctx, s.db, scanTask, `SELECT `+taskColumns+` FROM tasks WHERE id = ?`, id)
	if err != nil {
		return t, fmt.Errorf("task %s: %w", id, err)
	}
	return t, nil
}

// Tasks implements store.Store.
func (s *Store) Tasks(ctx context.Context, f store.TaskFilter) ([]store.Task, error) {
	q := `SELECT ` + taskColumns + ` FROM tasks WHERE 1 = 1`
	var args []any
	if f.NodeID != "" {
		q, args = q+` AND node_id = ?`, append(args, f.NodeID)
	}
	if f.State != "" {
		q, args = q+` AND state = ?`, append(args, string(f.State))
	}
	q += ` ORDER BY created, id`
	if f.Limit > 0 {
		q += fmt.Sprintf(" LIMIT %d", f.Limit)
	}
	out, err := all(ctx, s.db, scanTask, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list tasks: %w", err)
	}
	return out, nil
}

// LatestTasks implements store.Store. The window ranks the tasks by their
// small columns only; the results, the large ones, are read for the
// newest task of each node alone.
func (s *Store) LatestTasks(ctx context.Context, kind, key string) ([]store.NodeTask, error) {
	args := []any{kind, string(store.TaskDone), string(store.TaskFailed)}
	has := ""
	if key != "" {
		// The results are JSON that Go's encoder wrote: a top-level
		// key appears as "key": with no space.
		k, _ := json.Marshal(key)
		has = " AND " + fmt.Sprintf(s.d.blobHas, "result")
		args = append(args, append(k, ':'))
	}
	q := `SELECT n.id, n.name, n.rack, n.state, n.gpu_models, ` + prefixed("t.", taskColumns) + `
		FROM (SELECT id, ROW_NUMBER() OVER (PARTITION BY node_id ORDER BY created DESC, id DESC) AS newest
			FROM tasks WHERE kind = ? AND state IN (?, ?)` + has + `) w
		JOIN tasks t ON t.id = w.id
		JOIN nodes n ON n.id = t.node_id
		WHERE w.newest = 1 ORDER BY n.id`
	out, err := all(ctx, s.db, func(r scanner) (store.NodeTask, error) {
		var nt store.NodeTask
		var state, tstate, gpus string
		var params, result []byte
		var created, updated int64
		t := &nt.Task
		if err := r.Scan(&nt.Node.ID, &nt.Node.Name, &nt.Node.Rack, &state, &gpus,
			&t.ID, &t.NodeID, &t.Kind, &tstate, &params, &result, &t.Error, &created, &updated); err != nil {
			return nt, err
		}
		nt.Node.State, t.State = store.State(state), store.TaskState(tstate)
		if err := json.Unmarshal([]byte(gpus), &nt.Node.GPUModels); err != nil {
			return nt, fmt.Errorf("gpu models of node %s: %w", nt.Node.ID, err)
		}
		t.Created, t.Updated = unixNanos(created), unixNanos(updated)
		t.Params, t.Result = rawJSON(params), rawJSON(result)
		return nt, nil
	}, q, args...)
	if err != nil {
		return nil, fmt.Errorf("latest %s tasks: %w", kind, err)
	}
	return out, nil
}

// prefixed puts p before every column of a comma-separated list.
func prefixed(p, columns string) string {
	cols := strings.Split(columns, ",")
	for i, c := range cols {
		cols[i] = p + strings.TrimSpace(c)
	}
	return strings.Join(cols, ", ")
}

// UpdateTask implements store.Store.
func (s *Store) UpdateTask(ctx context.Context, t store.Task) error {
	if t.Updated.IsZero() {
		t.Updated = time.Now().UTC()
	}
	if err := s.idem.change(ctx, `UPDATE tasks SET state = ?, result = ?, error = ?, updated = ? WHERE id = ?`,
		string(t.State), []byte(t.Result), t.Error, t.Updated.UnixNano(), t.ID); err != nil {
		return fmt.Errorf("update task %s: %w", t.ID, err)
	}
	return nil
}

// TaskProgress implements store.Store.
func (s *Store) TaskProgress(ctx context.Context, id string, progress json.RawMessage, now time.Time) error {
	n, err := s.idem.exec(ctx, `UPDATE tasks SET result = ?, updated = ? WHERE id = ? AND state = ?`,
		[]byte(progress), now.UnixNano(), id, string(store.TaskRunning))
	if err != nil {
		return fmt.Errorf("task %s progress: %w", id, err)
	}
	if n == 0 {
		if _, err := s.Task(ctx, id); err != nil {
			return fmt.Errorf("task %s progress: %w", id, err)
		}
		return fmt.Errorf("task %s progress: not running: %w", id, store.ErrConflict)
	}
	return nil
}

// ClaimTask implements store.Store. The pending task is picked and moved
// in one statement; on PostgreSQL, SKIP LOCKED lets concurrent claimers
// pass a task that another is taking instead of waiting for it and then
// finding it gone.
func (s *Store) ClaimTask(ctx context.Context, nodeID string, now time.Time) (store.Task, error) {
	// Every heartbeat of an idle agent asks; nearly always there is
	// nothing. A read answers that without the write lock (SQLite) or a
	// row lock (PostgreSQL). A task queued just after is the next
	// heartbeat's.
	var pending int
	err := s.db.row(ctx, `SELECT count(*) FROM (SELECT 1 FROM tasks WHERE node_id = ? AND state = ? LIMIT 1) AS p`,
		nodeID, string(store.TaskPending)).Scan(&pending)
	if err != nil {
		return store.Task{}, fmt.Errorf("claim task of node %s: %w", nodeID, err)
	}
	if pending == 0 {
		return store.Task{}, fmt.Errorf("claim task of node %s: %w", nodeID, store.ErrNotFound)
	}
	var t store.Task
	err = s.db.write(ctx, func(ctx context.Context, w runner) error {
		var err error
		t, err = one(ctx, w, scanTask, `UPDATE tasks SET state = ?, updated = ?
		WHERE id = (SELECT id FROM tasks WHERE node_id = ? AND state = ? ORDER BY created, id LIMIT 1`+s.d.skipLocked+`)
		RETURNING `+taskColumns,
			string(store.TaskRunning), now.UnixNano(), nodeID, string(store.TaskPending))
		return err
	})
	if err != nil {
		return t, fmt.Errorf("claim task of node %s: %w", nodeID, err)
	}
	return t, nil
}

// PutUser implements store.Store.
func (s *Store) PutUser(ctx context.Context, u store.User) error {
	if err := insertUser(ctx, s.db, u, upsertUser); err != nil {
		return fmt.Errorf("put user %s: %w", u.Name, err)
	}
	return nil
}

const upsertUser = `DO UPDATE SET role = excluded.role, password_hash = excluded.password_hash`

// ReplaceUser implements store.Store. The sessions end in the same
// transaction: never a new password with the old one's sessions alive.
func (s *Store) ReplaceUser(ctx context.Context, u store.User) error {
	err := s.tx(ctx, func(tx runner) error {
		if err := insertUser(ctx, tx, u, upsertUser); err != nil {
			return err
		}
		_, err := tx.exec(ctx, `DELETE FROM tokens WHERE kind = 'session' AND user_name = ?`, u.Name)
		return err
	})
	if err != nil {
		return fmt.Errorf("replace user %s: %w", u.Name, err)
	}
	return nil
}

// CreateUser implements store.Store.
func (s *Store) CreateUser(ctx context.Context, u store.User) error {
	if err := insertUser(ctx, s.db, u, `DO NOTHING`); err != nil {
		return fmt.Errorf("create user %s: %w", u.Name, err)
	}
	return nil
}

// insertUser inserts u, doing onConflict if the name is taken; a user
// neither inserted nor updated is ErrConflict.
func insertUser(ctx context.Context, r runner, u store.User, onConflict string) error {
	if u.Created.IsZero() {
		u.Created = time.Now().UTC()
	}
	err := r.change(ctx, `INSERT INTO users (name, role, password_hash, created) VALUES (?, ?, ?, ?) ON CONFLICT (name) `+onConflict,
		u.Name, string(u.Role), u.PasswordHash, u.Created.UnixNano())
	if errors.Is(err, store.ErrNotFound) {
		err = store.ErrConflict
	}
	return err
}

func scanUser(row scanner) (store.User, error) {
	var u store.User
	var role string
	var created int64
	err := row.Scan(&u.Name, &role, &u.PasswordHash, &created)
	u.Role, u.Created = store.Role(role), unixNanos(created)
	return u, err
}

// User implements store.Store.
func (s *Store) User(ctx context.Context, name string) (store.User, error) {
	u, err := one(ctx, s.db, scanUser, `SELECT name, role, password_hash, created FROM users WHERE name = ?`, name)
	if err != nil {
		return u, fmt.Errorf("user %q: %w", name, err)
	}
	return u, nil
}

// Users implements store.Store.
func (s *Store) Users(ctx context.Context) ([]store.User, error) {
	out, err := all(ctx, s.db, scanUser, `SELECT name, role, password_hash, created FROM users ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	return out, nil
}

// DeleteUser implements store.Store.
func (s *Store) DeleteUser(ctx context.Context, name string) error {
	err := s.tx(ctx, func(tx runner) error {
		if err := tx.change(ctx, `DELETE FROM users WHERE name = ?`, name); err != nil {
			return err
		}
		_, err := tx.exec(ctx, `DELETE FROM tokens WHERE user_name = ?`, name)
		return err
	})
	if err != nil {
		return fmt.Errorf("delete user %q: %w", name, err)
	}
	return nil
}

const tokenColumns = `id, hash, kind, name, role, user_name, node_id, node_state, created, expires`

func scanToken(row scanner) (store.Token, error) {
	var t store.Token
	var role, st string
	var created, expires int64
	err := row.Scan(&t.ID, &t.Hash, &t.Kind, &t.Name, &role, &t.User, &t.NodeID, &st, &created, &expires)
	t.Role, t.NodeState, t.Created, t.Expires = store.Role(role), store.State(st), fromNanos(created), fromNanos(expires)
	return t, err
}

// CreateToken implements store.Store.
func (s *Store) CreateToken(ctx context.Context, t store.Token) (store.Token, error) {
	if t.ID == "" {
		t.ID = uuid.NewString()
	}
	if t.Created.IsZero() {
		t.Created = time.Now().UTC()
	}
	_, err := s.db.exec(ctx, `INSERT INTO tokens (`+tokenColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		t.ID, t.Hash, t.Kind, t.Name, string(t.Role), t.User, t.NodeID, string(t.NodeState), nanos(t.Created), nanos(t.Expires))
	if err != nil {
		if s.d.unique(err) {
			err = fmt.Errorf("%w: %v", store.ErrConflict, err)
		}
		return t, fmt.Errorf("create token: %w", err)
	}
	return t, nil
}

// TokenByHash implements store.Store.
func (s *Store) TokenByHash(ctx context.Context, hash string) (store.Token, error) {
	t, err := one(ctx, s.db, scanToken, `SELECT `+tokenColumns+` FROM tokens WHERE hash = ?`, hash)
	if err != nil {
		return t, fmt.Errorf("token: %w", err)
	}
	return t, nil
}

// Tokens implements store.Store.
func (s *Store) Tokens(ctx context.Context) ([]store.Token, error) {
	out, err := all(ctx, s.db, scanToken, `SELECT `+tokenColumns+` FROM tokens WHERE kind = 'api' ORDER BY created, id`)
	if err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	return out, nil
}

// DeleteToken implements store.Store.
func (s *Store) DeleteToken(ctx context.Context, id string) error {
	if err := s.db.change(ctx, `DELETE FROM tokens WHERE id = ?`, id); err != nil {
		return fmt.Errorf("delete token %s: %w", id, err)
	}
	return nil
}

// SetTokenKind implements store.Store.
func (s *Store) SetTokenKind(ctx context.Context, id, hash, from, to string) error {
	n, err := s.db.exec(ctx, `UPDATE tokens SET kind = ? WHERE id = ? AND hash = ? AND kind = ?`, to, id, hash, from)
	if err == nil && n == 0 {
		if _, terr := one(ctx, s.db, func(r scanner) (string, error) {
			var k string
			return k, r.Scan(&k)
		}, `SELECT kind FROM tokens WHERE id = ?`, id); terr != nil {
			err = terr
		} else {
			err = store.ErrConflict
		}
	}
	if err != nil {
		return fmt.Errorf("token %s from %s to %s: %w", id, from, to, err)
	}
	return nil
}

// DeleteTokens implements store.Store.
func (s *Store) DeleteTokens(ctx context.Context, kind, nodeID, user string) error {
	col, v := "user_name", user
	if nodeID != "" {
		col, v = "node_id", nodeID
	}
	if _, err := s.idem.exec(ctx, `DELETE FROM tokens WHERE kind = ? AND `+col+` = ?`, kind, v); err != nil {
		return fmt.Errorf("delete %s tokens: %w", kind, err)
	}
	return nil
}

// DeleteTokensBut implements store.Store.
func (s *Store) DeleteTokensBut(ctx context.Context, kind, nodeID, keep string) error {
	if _, err := s.idem.exec(ctx, `DELETE FROM tokens WHERE kind = ? AND node_id = ? AND id <> ?`, kind, nodeID, keep); err != nil {
		return fmt.Errorf("delete %s tokens of %s: %w", kind, nodeID, err)
	}
	return nil
}

// pruneBatch is how many rows one statement of Prune deletes at most.
const pruneBatch = 1000

// Prune implements store.Store. Rows are walked in sequence order, which
// is time order but for writers racing by a moment, up to the first one
// that is new enough; each batch is deleted in a statement of its own.
func (s *Store) Prune(ctx context.Context, bootBefore, eventsBefore time.Time) (boot, events int64, err error) {
	if !bootBefore.IsZero() {
		if boot, err = s.prune(ctx, "boot_events", "", bootBefore); err != nil {
			return boot, 0, err
		}
	}
	if !eventsBefore.IsZero() {
		keep := ` AND NOT (to_state = 'maintenance' AND from_state <> 'maintenance')`
		if events, err = s.prune(ctx, "events", keep, eventsBefore); err != nil {
			return boot, events, err
		}
	}
	return boot, events, nil
}

func (s *Store) prune(ctx context.Context, table, keep string, before time.Time) (int64, error) {
	cutoff := before.UnixNano()
	var deleted, cursor int64
	for {
		type row struct{ seq, time int64 }
		rows, err := all(ctx, s.db, func(r scanner) (row, error) {
			var v row
			return v, r.Scan(&v.seq, &v.time)
		}, `SELECT seq, time FROM `+table+` WHERE seq > ? ORDER BY seq LIMIT ?`, cursor, pruneBatch)
		if err != nil {
			return deleted, fmt.Errorf("prune %s: %w", table, err)
		}
		last, done := cursor, len(rows) < pruneBatch
		for _, r := range rows {
			if r.time >= cutoff {
				done = true
				break
			}
			last = r.seq
		}
		if last > cursor {
			n, err := s.db.exec(ctx, `DELETE FROM `+table+` WHERE seq > ? AND seq <= ?`+keep, cursor, last)
			if err != nil {
				return deleted, fmt.Errorf("prune %s: %w", table, err)
			}
			deleted += n
			cursor = last
		}
		if done {
			return deleted, nil
		}
		if err := ctx.Err(); err != nil {
			return deleted, err
		}
	}
}
