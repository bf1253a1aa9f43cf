package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/store"
)

func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

func jsonText(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// ListNodes implements store.Store.
func (s *Store) ListNodes(ctx context.Context, f store.NodeFilter) ([]store.Node, error) {
	where := []string{"1 = 1"}
	var args []any
	if f.State != "" {
		where, args = append(where, "state = ?"), append(args, string(f.State))
	}
	if f.Arch != "" {
		where, args = append(where, "arch = ?"), append(args, string(f.Arch))
	}
	if f.Rack != "" {
		where, args = append(where, "rack = ?"), append(args, f.Rack)
	}
	if f.Tag != "" {
		where, args = append(where, "instr(tags, ?) > 0"), append(args, jsonText(f.Tag))
	}
	if f.GPU != "" {
		where, args = append(where, "instr(lower(gpu_models), lower(?)) > 0"), append(args, f.GPU)
	}
	if f.Query != "" {
		where = append(where, `(instr(lower(id || ' ' || name || ' ' || rack || ' ' || tags || ' ' || gpu_models), lower(?)) > 0
			OR id IN (SELECT node_id FROM interfaces WHERE instr(mac, lower(?)) > 0))`)
		args = append(args, f.Query, f.Query)
	}
	if f.After != "" {
		where, args = append(where, "id > ?"), append(args, f.After)
	}
	q := `SELECT ` + nodeColumns + ` FROM nodes WHERE ` + strings.Join(where, " AND ") + ` ORDER BY id`
	if f.Limit > 0 {
		q += fmt.Sprintf(" LIMIT %d", f.Limit)
	}
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	var nodes []store.Node
	for rows.Next() {
		n, err := scanNodeRow(rows)
		if err != nil {
			rows.Close()
			return nil, fmt.Errorf("list nodes: %w", err)
		}
		nodes = append(nodes, n)
	}
	if err := rows.Close(); err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	// MACs are read after the rows are closed, so one connection is never
	// asked for two result sets at once.
	for i := range nodes {
		if err := s.fillMACs(ctx, &nodes[i]); err != nil {
			return nil, fmt.Errorf("list nodes: %w", err)
		}
	}
	return nodes, nil
}

// Transition implements store.Store.
func (s *Store) Transition(ctx context.Context, id string, from, to store.State, lastError string, e store.Event) (store.Node, store.Event, error) {
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	e.NodeID, e.From, e.To = id, from, to
	if e.Kind == "" {
		e.Kind = "transition"
	}
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var cur string
		err := tx.QueryRowContext(ctx, `SELECT state FROM nodes WHERE id = ?`, id).Scan(&cur)
		if errors.Is(err, sql.ErrNoRows) {
			return store.ErrNotFound
		}
		if err != nil {
			return err
		}
		if store.State(cur) != from {
			return fmt.Errorf("node is %s, not %s: %w", cur, from, store.ErrConflict)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE nodes SET state = ?, last_error = ?, state_changed = ? WHERE id = ?`,
			string(to), lastError, e.Time.UnixNano(), id); err != nil {
			return err
		}
		// An agent's token is good for one state of its node only.
		if _, err := tx.ExecContext(ctx, `DELETE FROM tokens WHERE kind = 'agent' AND node_id = ?`, id); err != nil {
			return err
		}
		e.Seq, err = insertEvent(ctx, tx, e)
		return err
	})
	if err != nil {
		return store.Node{}, store.Event{}, fmt.Errorf("transition node %s from %s to %s: %w", id, from, to, err)
	}
	n, err := s.Node(ctx, id)
	return n, e, err
}

func insertEvent(ctx context.Context, tx *sql.Tx, e store.Event) (int64, error) {
	res, err := tx.ExecContext(ctx, `INSERT INTO events (time, node_id, actor, kind, from_state, to_state, reason, message)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, e.Time.UnixNano(), e.NodeID, e.Actor, e.Kind, string(e.From), string(e.To), e.Reason, e.Message)
	if err != nil {
		return 0, err
	}
	return res.LastInsertId()
}

// UpdateNode implements store.Store.
func (s *Store) UpdateNode(ctx context.Context, id string, p store.NodePatch) (store.Node, error) {
	var set []string
	var args []any
	if p.Name != nil {
		set, args = append(set, "name = ?"), append(args, *p.Name)
	}
	if p.Rack != nil {
		set, args = append(set, "rack = ?"), append(args, *p.Rack)
	}
	if p.Position != nil {
		set, args = append(set, "position = ?"), append(args, *p.Position)
	}
	if p.Tags != nil {
		tags := *p.Tags
		if tags == nil {
			tags = []string{}
		}
		set, args = append(set, "tags = ?"), append(args, jsonText(tags))
	}
	if p.Owner != nil {
		set, args = append(set, "owner = ?"), append(args, *p.Owner)
	}
	err := s.tx(ctx, func(tx *sql.Tx) error {
		if p.Name != nil && *p.Name != "" {
			var other string
			err := tx.QueryRowContext(ctx, `SELECT id FROM nodes WHERE name = ? AND id != ?`, *p.Name, id).Scan(&other)
			if err == nil {
				return fmt.Errorf("name %q is taken by node %s: %w", *p.Name, other, store.ErrConflict)
			}
			if !errors.Is(err, sql.ErrNoRows) {
				return err
			}
		}
		if len(set) == 0 {
			set = []string{"id = id"}
		}
		res, err := tx.ExecContext(ctx, `UPDATE nodes SET `+strings.Join(set, ", ")+` WHERE id = ?`, append(args, id)...)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return store.ErrNotFound
		}
		return nil
	})
	if err != nil {
		return store.Node{}, fmt.Errorf("update node %s: %w", id, err)
	}
	return s.Node(ctx, id)
}

// SetInventory implements store.Store.
func (s *Store) SetInventory(ctx context.Context, id string, inv json.RawMessage, gpuModels []string) error {
	if gpuModels == nil {
		gpuModels = []string{}
	}
	res, err := s.db.ExecContext(ctx, `UPDATE nodes SET inventory = ?, gpu_models = ? WHERE id = ?`, []byte(inv), jsonText(gpuModels), id)
	if err != nil {
		return fmt.Errorf("set inventory of node %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("set inventory of node %s: %w", id, store.ErrNotFound)
	}
	return nil
}

// DeleteNode implements store.Store.
func (s *Store) DeleteNode(ctx context.Context, id string) error {
	err := s.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM tokens WHERE node_id = ?`, id); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM nodes WHERE id = ?`, id)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return store.ErrNotFound
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete node %s: %w", id, err)
	}
	return nil
}

// CountNodes implements store.Store.
func (s *Store) CountNodes(ctx context.Context) (map[store.State]int, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT state, COUNT(*) FROM nodes GROUP BY state`)
	if err != nil {
		return nil, fmt.Errorf("count nodes: %w", err)
	}
	defer rows.Close()
	out := map[store.State]int{}
	for rows.Next() {
		var st string
		var n int
		if err := rows.Scan(&st, &n); err != nil {
			return nil, fmt.Errorf("count nodes: %w", err)
		}
		out[store.State(st)] = n
	}
	return out, rows.Err()
}

// AddEvent implements store.Store.
func (s *Store) AddEvent(ctx context.Context, e store.Event) (store.Event, error) {
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var err error
		e.Seq, err = insertEvent(ctx, tx, e)
		return err
	})
	if err != nil {
		return e, fmt.Errorf("add event: %w", err)
	}
	return e, nil
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
	order := ` ORDER BY seq`
	if f.Newest {
		order = ` ORDER BY seq DESC`
	}
	rows, err := s.db.QueryContext(ctx, q+order+` LIMIT ?`, append(args, f.Limit)...)
	if err != nil {
		return nil, fmt.Errorf("list events: %w", err)
	}
	defer rows.Close()
	var out []store.Event
	for rows.Next() {
		var e store.Event
		var t int64
		var from, to string
		if err := rows.Scan(&e.Seq, &t, &e.NodeID, &e.Actor, &e.Kind, &from, &to, &e.Reason, &e.Message); err != nil {
			return nil, fmt.Errorf("list events: %w", err)
		}
		e.Time, e.From, e.To = time.Unix(0, t).UTC(), store.State(from), store.State(to)
		out = append(out, e)
	}
	return out, rows.Err()
}

// CreateImage implements store.Store.
func (s *Store) CreateImage(ctx context.Context, im store.Image) error {
	if im.Created.IsZero() {
		im.Created = time.Now().UTC()
	}
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM images WHERE name = ?`, im.Name).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return store.ErrConflict
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO images (name, arch, format, size, sha256, raw_size, raw_sha256, source, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			im.Name, string(im.Arch), im.Format, im.Size, im.SHA256, im.RawSize, im.RawSHA256, im.Source, im.Created.UnixNano())
		return err
	})
	if err != nil {
		return fmt.Errorf("create image %s: %w", im.Name, err)
	}
	return nil
}

const imageColumns = `name, arch, format, size, sha256, raw_size, raw_sha256, source, created`

func scanImage(row interface{ Scan(...any) error }) (store.Image, error) {
	var im store.Image
	var arch string
	var created int64
	err := row.Scan(&im.Name, &arch, &im.Format, &im.Size, &im.SHA256, &im.RawSize, &im.RawSHA256, &im.Source, &created)
	im.Arch, im.Created = boot.Arch(arch), time.Unix(0, created).UTC()
	return im, err
}

// Image implements store.Store.
func (s *Store) Image(ctx context.Context, name string) (store.Image, error) {
	im, err := scanImage(s.db.QueryRowContext(ctx, `SELECT `+imageColumns+` FROM images WHERE name = ?`, name))
	if errors.Is(err, sql.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		return im, fmt.Errorf("image %q: %w", name, err)
	}
	return im, nil
}

// Images implements store.Store.
func (s *Store) Images(ctx context.Context) ([]store.Image, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+imageColumns+` FROM images ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	defer rows.Close()
	var out []store.Image
	for rows.Next() {
		im, err := scanImage(rows)
		if err != nil {
			return nil, fmt.Errorf("list images: %w", err)
		}
		out = append(out, im)
	}
	return out, rows.Err()
}

// DeleteImage implements store.Store.
func (s *Store) DeleteImage(ctx context.Context, name string) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM images WHERE name = ?`, name)
	if err != nil {
		return fmt.Errorf("delete image %q: %w", name, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("delete image %q: %w", name, store.ErrNotFound)
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
	_, err := s.db.ExecContext(ctx, `INSERT INTO tasks (id, node_id, kind, state, params, result, error, created, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		t.ID, t.NodeID, t.Kind, string(t.State), []byte(t.Params), []byte(t.Result), t.Error, t.Created.UnixNano(), t.Updated.UnixNano())
	if err != nil {
		return t, fmt.Errorf("create task for node %s: %w", t.NodeID, err)
	}
	return t, nil
}

const taskColumns = `id, node_id, kind, state, params, result, error, created, updated`

func scanTask(row interface{ Scan(...any) error }) (store.Task, error) {
	var t store.Task
	var st string
	var params, result []byte
	var created, updated int64
	err := row.Scan(&t.ID, &t.NodeID, &t.Kind, &st, &params, &result, &t.Error, &created, &updated)
	t.State, t.Created, t.Updated = store.TaskState(st), time.Unix(0, created).UTC(), time.Unix(0, updated).UTC()
	if len(params) > 0 {
		t.Params = json.RawMessage(params)
	}
	if len(result) > 0 {
		t.Result = json.RawMessage(result)
	}
	return t, err
}

// Task implements store.Store.
func (s *Store) Task(ctx context.Context, id string) (store.Task, error) {
	t, err := scanTask(s.db.QueryRowContext(ctx, `SELECT `+taskColumns+` FROM tasks WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		err = store.ErrNotFound
	}
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
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list tasks: %w", err)
	}
	defer rows.Close()
	var out []store.Task
	for rows.Next() {
		t, err := scanTask(rows)
		if err != nil {
			return nil, fmt.Errorf("list tasks: %w", err)
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// UpdateTask implements store.Store.
func (s *Store) UpdateTask(ctx context.Context, t store.Task) error {
	if t.Updated.IsZero() {
		t.Updated = time.Now().UTC()
	}
	res, err := s.db.ExecContext(ctx, `UPDATE tasks SET state = ?, result = ?, error = ?, updated = ? WHERE id = ?`,
		string(t.State), []byte(t.Result), t.Error, t.Updated.UnixNano(), t.ID)
	if err != nil {
		return fmt.Errorf("update task %s: %w", t.ID, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("update task %s: %w", t.ID, store.ErrNotFound)
	}
	return nil
}

// PutUser implements store.Store.
func (s *Store) PutUser(ctx context.Context, u store.User) error {
	if u.Created.IsZero() {
		u.Created = time.Now().UTC()
	}
	_, err := s.db.ExecContext(ctx, `INSERT INTO users (name, role, password_hash, created) VALUES (?, ?, ?, ?)
		ON CONFLICT(name) DO UPDATE SET role = excluded.role, password_hash = excluded.password_hash`,
		u.Name, string(u.Role), u.PasswordHash, u.Created.UnixNano())
	if err != nil {
		return fmt.Errorf("put user %s: %w", u.Name, err)
	}
	return nil
}

// CreateUser implements store.Store.
func (s *Store) CreateUser(ctx context.Context, u store.User) error {
	if u.Created.IsZero() {
		u.Created = time.Now().UTC()
	}
	res, err := s.db.ExecContext(ctx, `INSERT INTO users (name, role, password_hash, created) VALUES (?, ?, ?, ?) ON CONFLICT(name) DO NOTHING`,
		u.Name, string(u.Role), u.PasswordHash, u.Created.UnixNano())
	if err != nil {
		return fmt.Errorf("create user %s: %w", u.Name, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("create user %s: %w", u.Name, store.ErrConflict)
	}
	return nil
}

func scanUser(row interface{ Scan(...any) error }) (store.User, error) {
	var u store.User
	var role string
	var created int64
	err := row.Scan(&u.Name, &role, &u.PasswordHash, &created)
	u.Role, u.Created = store.Role(role), time.Unix(0, created).UTC()
	return u, err
}

// User implements store.Store.
func (s *Store) User(ctx context.Context, name string) (store.User, error) {
	u, err := scanUser(s.db.QueryRowContext(ctx, `SELECT name, role, password_hash, created FROM users WHERE name = ?`, name))
	if errors.Is(err, sql.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		return u, fmt.Errorf("user %q: %w", name, err)
	}
	return u, nil
}

// Users implements store.Store.
func (s *Store) Users(ctx context.Context) ([]store.User, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT name, role, password_hash, created FROM users ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	defer rows.Close()
	var out []store.User
	for rows.Next() {
		u, err := scanUser(rows)
		if err != nil {
			return nil, fmt.Errorf("list users: %w", err)
		}
		out = append(out, u)
	}
	return out, rows.Err()
}

// DeleteUser implements store.Store.
func (s *Store) DeleteUser(ctx context.Context, name string) error {
	err := s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM users WHERE name = ?`, name)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return store.ErrNotFound
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM tokens WHERE user_name = ?`, name)
		return err
	})
	if err != nil {
		return fmt.Errorf("delete user %q: %w", name, err)
	}
	return nil
}

const tokenColumns = `id, hash, kind, name, role, user_name, node_id, node_state, created, expires`

func scanToken(row interface{ Scan(...any) error }) (store.Token, error) {
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
	_, err := s.db.ExecContext(ctx, `INSERT INTO tokens (`+tokenColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		t.ID, t.Hash, t.Kind, t.Name, string(t.Role), t.User, t.NodeID, string(t.NodeState), nanos(t.Created), nanos(t.Expires))
	if err != nil {
		if strings.Contains(err.Error(), "UNIQUE") {
			err = fmt.Errorf("%w: %v", store.ErrConflict, err)
		}
		return t, fmt.Errorf("create token: %w", err)
	}
	return t, nil
}

// TokenByHash implements store.Store.
func (s *Store) TokenByHash(ctx context.Context, hash string) (store.Token, error) {
	t, err := scanToken(s.db.QueryRowContext(ctx, `SELECT `+tokenColumns+` FROM tokens WHERE hash = ?`, hash))
	if errors.Is(err, sql.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		return t, fmt.Errorf("token: %w", err)
	}
	return t, nil
}

// Tokens implements store.Store.
func (s *Store) Tokens(ctx context.Context) ([]store.Token, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+tokenColumns+` FROM tokens WHERE kind = 'api' ORDER BY created, id`)
	if err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	defer rows.Close()
	var out []store.Token
	for rows.Next() {
		t, err := scanToken(rows)
		if err != nil {
			return nil, fmt.Errorf("list tokens: %w", err)
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// DeleteToken implements store.Store.
func (s *Store) DeleteToken(ctx context.Context, id string) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM tokens WHERE id = ?`, id)
	if err != nil {
		return fmt.Errorf("delete token %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("delete token %s: %w", id, store.ErrNotFound)
	}
	return nil
}

// DeleteTokens implements store.Store.
func (s *Store) DeleteTokens(ctx context.Context, kind, nodeID, user string) error {
	var err error
	if nodeID != "" {
		_, err = s.db.ExecContext(ctx, `DELETE FROM tokens WHERE kind = ? AND node_id = ?`, kind, nodeID)
	} else {
		_, err = s.db.ExecContext(ctx, `DELETE FROM tokens WHERE kind = ? AND user_name = ?`, kind, user)
	}
	if err != nil {
		return fmt.Errorf("delete %s tokens: %w", kind, err)
	}
	return nil
}

// TaskProgress implements store.Store.
func (s *Store) TaskProgress(ctx context.Context, id string, progress json.RawMessage, now time.Time) error {
	res, err := s.db.ExecContext(ctx, `UPDATE tasks SET result = ?, updated = ? WHERE id = ? AND state = ?`,
		[]byte(progress), now.UnixNano(), id, string(store.TaskRunning))
	if err != nil {
		return fmt.Errorf("task %s progress: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		if _, err := s.Task(ctx, id); err != nil {
			return fmt.Errorf("task %s progress: %w", id, err)
		}
		return fmt.Errorf("task %s progress: not running: %w", id, store.ErrConflict)
	}
	return nil
}

// ClaimTask implements store.Store.
func (s *Store) ClaimTask(ctx context.Context, nodeID string, now time.Time) (store.Task, error) {
	var t store.Task
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var err error
		t, err = scanTask(tx.QueryRowContext(ctx, `SELECT `+taskColumns+` FROM tasks WHERE node_id = ? AND state = ? ORDER BY created, id LIMIT 1`,
			nodeID, string(store.TaskPending)))
		if errors.Is(err, sql.ErrNoRows) {
			return store.ErrNotFound
		}
		if err != nil {
			return err
		}
		t.State, t.Updated = store.TaskRunning, now.UTC()
		_, err = tx.ExecContext(ctx, `UPDATE tasks SET state = ?, updated = ? WHERE id = ?`, string(t.State), now.UnixNano(), t.ID)
		return err
	})
	if err != nil {
		return t, fmt.Errorf("claim task of node %s: %w", nodeID, err)
	}
	return t, nil
}
