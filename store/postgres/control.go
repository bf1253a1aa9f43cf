package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/store"
)

// ListNodes implements store.Store. The filters match exactly what the
// SQLite store's do: tags and GPU models are matched in their JSON text.
func (s *Store) ListNodes(ctx context.Context, f store.NodeFilter) ([]store.Node, error) {
	where := []string{"TRUE"}
	var args []any
	add := func(cond string, arg any) {
		args = append(args, arg)
		where = append(where, strings.ReplaceAll(cond, "$?", fmt.Sprintf("$%d", len(args))))
	}
	if f.State != "" {
		add("state = $?", string(f.State))
	}
	if f.Arch != "" {
		add("arch = $?", string(f.Arch))
	}
	if f.Rack != "" {
		add("rack = $?", f.Rack)
	}
	if f.Tag != "" {
		add("strpos(tags, $?) > 0", jsonText(f.Tag))
	}
	if f.GPU != "" {
		add("strpos(lower(gpu_models), lower($?)) > 0", f.GPU)
	}
	if f.Query != "" {
		add(`(strpos(lower(id || ' ' || name || ' ' || rack || ' ' || tags || ' ' || gpu_models), lower($?)) > 0
			OR id IN (SELECT node_id FROM interfaces WHERE strpos(mac, lower($?)) > 0))`, f.Query)
	}
	if f.After != "" {
		add("id > $?", f.After)
	}
	q := `SELECT ` + nodeColumns + ` FROM nodes WHERE ` + strings.Join(where, " AND ") + ` ORDER BY id`
	if f.Limit > 0 {
		q += fmt.Sprintf(" LIMIT %d", f.Limit)
	}
	nodes, err := s.queryNodes(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	return nodes, nil
}

// Transition implements store.Store. The node's row stays locked from the
// state check to the commit, so of two transitions out of one state, the
// second sees the first's result and fails with ErrConflict.
func (s *Store) Transition(ctx context.Context, id string, from, to store.State, lastError string, e store.Event) (store.Node, store.Event, error) {
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	e.NodeID, e.From, e.To = id, from, to
	if e.Kind == "" {
		e.Kind = "transition"
	}
	err := s.tx(ctx, func(tx pgx.Tx) error {
		var cur string
		err := tx.QueryRow(ctx, `SELECT state FROM nodes WHERE id = $1 FOR UPDATE`, id).Scan(&cur)
		if errors.Is(err, pgx.ErrNoRows) {
			return store.ErrNotFound
		}
		if err != nil {
			return err
		}
		if store.State(cur) != from {
			return fmt.Errorf("node is %s, not %s: %w", cur, from, store.ErrConflict)
		}
		if _, err := tx.Exec(ctx, `UPDATE nodes SET state = $1, last_error = $2, state_changed = $3 WHERE id = $4`,
			string(to), lastError, e.Time.UnixNano(), id); err != nil {
			return err
		}
		// An agent's token is good for one state of its node only.
		if _, err := tx.Exec(ctx, `DELETE FROM tokens WHERE kind = 'agent' AND node_id = $1`, id); err != nil {
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

// insertEvent appends e to the audit log. The lock held to the commit
// makes sequence numbers commit in order, so a reader following the log
// with EventFilter.After never skips an event that commits late.
func insertEvent(ctx context.Context, tx pgx.Tx, e store.Event) (int64, error) {
	if err := advisoryLock(ctx, tx, eventsKey); err != nil {
		return 0, err
	}
	var seq int64
	err := tx.QueryRow(ctx, `INSERT INTO events (time, node_id, actor, kind, from_state, to_state, reason, message)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING seq`,
		e.Time.UnixNano(), e.NodeID, e.Actor, e.Kind, string(e.From), string(e.To), e.Reason, e.Message).Scan(&seq)
	return seq, err
}

// UpdateNode implements store.Store.
func (s *Store) UpdateNode(ctx context.Context, id string, p store.NodePatch) (store.Node, error) {
	var set []string
	var args []any
	add := func(col string, v any) {
		args = append(args, v)
		set = append(set, fmt.Sprintf("%s = $%d", col, len(args)))
	}
	if p.Name != nil {
		add("name", *p.Name)
	}
	if p.Rack != nil {
		add("rack", *p.Rack)
	}
	if p.Position != nil {
		add("position", *p.Position)
	}
	if p.Tags != nil {
		tags := *p.Tags
		if tags == nil {
			tags = []string{}
		}
		add("tags", jsonText(tags))
	}
	if p.Owner != nil {
		add("owner", *p.Owner)
	}
	if len(set) == 0 {
		set = []string{"id = id"}
	}
	args = append(args, id)
	err := s.tx(ctx, func(tx pgx.Tx) error {
		if p.Name != nil && *p.Name != "" {
			var other string
			err := tx.QueryRow(ctx, `SELECT id FROM nodes WHERE name = $1 AND id <> $2`, *p.Name, id).Scan(&other)
			if err == nil {
				return fmt.Errorf("name %q is taken by node %s: %w", *p.Name, other, store.ErrConflict)
			}
			if !errors.Is(err, pgx.ErrNoRows) {
				return err
			}
		}
		tag, err := tx.Exec(ctx, `UPDATE nodes SET `+strings.Join(set, ", ")+fmt.Sprintf(` WHERE id = $%d`, len(args)), args...)
		if uniqueViolation(err) {
			// Another server named a node the same a moment ago.
			return fmt.Errorf("name is taken: %w", store.ErrConflict)
		}
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
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
	tag, err := s.pool.Exec(ctx, `UPDATE nodes SET inventory = $1, gpu_models = $2 WHERE id = $3`, []byte(inv), jsonText(gpuModels), id)
	if err != nil {
		return fmt.Errorf("set inventory of node %s: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("set inventory of node %s: %w", id, store.ErrNotFound)
	}
	return nil
}

// DeleteNode implements store.Store.
func (s *Store) DeleteNode(ctx context.Context, id string) error {
	err := s.tx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM tokens WHERE node_id = $1`, id); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `DELETE FROM nodes WHERE id = $1`, id)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
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
	rows, err := s.pool.Query(ctx, `SELECT state, COUNT(*) FROM nodes GROUP BY state`)
	if err != nil {
		return nil, fmt.Errorf("count nodes: %w", err)
	}
	defer rows.Close()
	out := map[store.State]int{}
	for rows.Next() {
		var st string
		var n int64
		if err := rows.Scan(&st, &n); err != nil {
			return nil, fmt.Errorf("count nodes: %w", err)
		}
		out[store.State(st)] = int(n)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count nodes: %w", err)
	}
	return out, nil
}

// AddEvent implements store.Store.
func (s *Store) AddEvent(ctx context.Context, e store.Event) (store.Event, error) {
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	err := s.tx(ctx, func(tx pgx.Tx) error {
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
	q := `SELECT seq, time, node_id, actor, kind, from_state, to_state, reason, message FROM events WHERE seq > $1`
	args := []any{f.After}
	if f.NodeID != "" {
		args = append(args, f.NodeID)
		q += fmt.Sprintf(` AND node_id = $%d`, len(args))
	}
	if f.Before > 0 {
		args = append(args, f.Before)
		q += fmt.Sprintf(` AND seq < $%d`, len(args))
	}
	order := ` ORDER BY seq`
	if f.Newest {
		order = ` ORDER BY seq DESC`
	}
	args = append(args, f.Limit)
	rows, err := s.pool.Query(ctx, q+order+fmt.Sprintf(` LIMIT $%d`, len(args)), args...)
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
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list events: %w", err)
	}
	return out, nil
}

// CreateImage implements store.Store.
func (s *Store) CreateImage(ctx context.Context, im store.Image) error {
	if im.Created.IsZero() {
		im.Created = time.Now().UTC()
	}
	_, err := s.pool.Exec(ctx, `INSERT INTO images (`+imageColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
		im.Name, string(im.Arch), im.Format, im.Size, im.SHA256, im.RawSize, im.RawSHA256, im.Source, im.Created.UnixNano())
	if uniqueViolation(err) {
		err = store.ErrConflict
	}
	if err != nil {
		return fmt.Errorf("create image %s: %w", im.Name, err)
	}
	return nil
}

const imageColumns = `name, arch, format, size, sha256, raw_size, raw_sha256, source, created`

func scanImage(row pgx.Row) (store.Image, error) {
	var im store.Image
	var arch string
	var created int64
	err := row.Scan(&im.Name, &arch, &im.Format, &im.Size, &im.SHA256, &im.RawSize, &im.RawSHA256, &im.Source, &created)
	im.Arch, im.Created = boot.Arch(arch), time.Unix(0, created).UTC()
	return im, err
}

// Image implements store.Store.
func (s *Store) Image(ctx context.Context, name string) (store.Image, error) {
	im, err := scanImage(s.pool.QueryRow(ctx, `SELECT `+imageColumns+` FROM images WHERE name = $1`, name))
	if errors.Is(err, pgx.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		return im, fmt.Errorf("image %q: %w", name, err)
	}
	return im, nil
}

// Images implements store.Store.
func (s *Store) Images(ctx context.Context) ([]store.Image, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+imageColumns+` FROM images ORDER BY name`)
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
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	return out, nil
}

// DeleteImage implements store.Store.
func (s *Store) DeleteImage(ctx context.Context, name string) error {
	tag, err := s.pool.Exec(ctx, `DELETE FROM images WHERE name = $1`, name)
	if err != nil {
		return fmt.Errorf("delete image %q: %w", name, err)
	}
	if tag.RowsAffected() == 0 {
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
	_, err := s.pool.Exec(ctx, `INSERT INTO tasks (id, node_id, kind, state, params, result, error, created, updated) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
		t.ID, t.NodeID, t.Kind, string(t.State), []byte(t.Params), []byte(t.Result), t.Error, t.Created.UnixNano(), t.Updated.UnixNano())
	if err != nil {
		return t, fmt.Errorf("create task for node %s: %w", t.NodeID, err)
	}
	return t, nil
}

const taskColumns = `id, node_id, kind, state, params, result, error, created, updated`

func scanTask(row pgx.Row) (store.Task, error) {
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
	t, err := scanTask(s.pool.QueryRow(ctx, `SELECT `+taskColumns+` FROM tasks WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		return t, fmt.Errorf("task %s: %w", id, err)
	}
	return t, nil
}

// Tasks implements store.Store.
func (s *Store) Tasks(ctx context.Context, f store.TaskFilter) ([]store.Task, error) {
	q := `SELECT ` + taskColumns + ` FROM tasks WHERE TRUE`
	var args []any
	if f.NodeID != "" {
		args = append(args, f.NodeID)
		q += fmt.Sprintf(` AND node_id = $%d`, len(args))
	}
	if f.State != "" {
		args = append(args, string(f.State))
		q += fmt.Sprintf(` AND state = $%d`, len(args))
	}
	q += ` ORDER BY created, id`
	if f.Limit > 0 {
		q += fmt.Sprintf(" LIMIT %d", f.Limit)
	}
	rows, err := s.pool.Query(ctx, q, args...)
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
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list tasks: %w", err)
	}
	return out, nil
}

// UpdateTask implements store.Store.
func (s *Store) UpdateTask(ctx context.Context, t store.Task) error {
	if t.Updated.IsZero() {
		t.Updated = time.Now().UTC()
	}
	tag, err := s.pool.Exec(ctx, `UPDATE tasks SET state = $1, result = $2, error = $3, updated = $4 WHERE id = $5`,
		string(t.State), []byte(t.Result), t.Error, t.Updated.UnixNano(), t.ID)
	if err != nil {
		return fmt.Errorf("update task %s: %w", t.ID, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("update task %s: %w", t.ID, store.ErrNotFound)
	}
	return nil
}

// TaskProgress implements store.Store.
func (s *Store) TaskProgress(ctx context.Context, id string, progress json.RawMessage, now time.Time) error {
	tag, err := s.pool.Exec(ctx, `UPDATE tasks SET result = $1, updated = $2 WHERE id = $3 AND state = $4`,
		[]byte(progress), now.UnixNano(), id, string(store.TaskRunning))
	if err != nil {
		return fmt.Errorf("task %s progress: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		if _, err := s.Task(ctx, id); err != nil {
			return fmt.Errorf("task %s progress: %w", id, err)
		}
		return fmt.Errorf("task %s progress: not running: %w", id, store.ErrConflict)
	}
	return nil
}

// ClaimTask implements store.Store. The pending task is picked and moved
// in one statement; SKIP LOCKED lets concurrent claimers pass a task that
// another is taking instead of waiting for it and then finding it gone.
func (s *Store) ClaimTask(ctx context.Context, nodeID string, now time.Time) (store.Task, error) {
	t, err := scanTask(s.pool.QueryRow(ctx, `UPDATE tasks SET state = $1, updated = $2
		WHERE id = (SELECT id FROM tasks WHERE node_id = $3 AND state = $4 ORDER BY created, id LIMIT 1 FOR UPDATE SKIP LOCKED)
		RETURNING `+taskColumns,
		string(store.TaskRunning), now.UnixNano(), nodeID, string(store.TaskPending)))
	if errors.Is(err, pgx.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		return t, fmt.Errorf("claim task of node %s: %w", nodeID, err)
	}
	return t, nil
}

// PutUser implements store.Store.
func (s *Store) PutUser(ctx context.Context, u store.User) error {
	if u.Created.IsZero() {
		u.Created = time.Now().UTC()
	}
	_, err := s.pool.Exec(ctx, `INSERT INTO users (name, role, password_hash, created) VALUES ($1, $2, $3, $4)
		ON CONFLICT (name) DO UPDATE SET role = excluded.role, password_hash = excluded.password_hash`,
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
	tag, err := s.pool.Exec(ctx, `INSERT INTO users (name, role, password_hash, created) VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO NOTHING`,
		u.Name, string(u.Role), u.PasswordHash, u.Created.UnixNano())
	if err != nil {
		return fmt.Errorf("create user %s: %w", u.Name, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("create user %s: %w", u.Name, store.ErrConflict)
	}
	return nil
}

func scanUser(row pgx.Row) (store.User, error) {
	var u store.User
	var role string
	var created int64
	err := row.Scan(&u.Name, &role, &u.PasswordHash, &created)
	u.Role, u.Created = store.Role(role), time.Unix(0, created).UTC()
	return u, err
}

// User implements store.Store.
func (s *Store) User(ctx context.Context, name string) (store.User, error) {
	u, err := scanUser(s.pool.QueryRow(ctx, `SELECT name, role, password_hash, created FROM users WHERE name = $1`, name))
	if errors.Is(err, pgx.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		return u, fmt.Errorf("user %q: %w", name, err)
	}
	return u, nil
}

// Users implements store.Store.
func (s *Store) Users(ctx context.Context) ([]store.User, error) {
	rows, err := s.pool.Query(ctx, `SELECT name, role, password_hash, created FROM users ORDER BY name`)
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
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	return out, nil
}

// DeleteUser implements store.Store.
func (s *Store) DeleteUser(ctx context.Context, name string) error {
	err := s.tx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM users WHERE name = $1`, name)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return store.ErrNotFound
		}
		_, err = tx.Exec(ctx, `DELETE FROM tokens WHERE user_name = $1`, name)
		return err
	})
	if err != nil {
		return fmt.Errorf("delete user %q: %w", name, err)
	}
	return nil
}

const tokenColumns = `id, hash, kind, name, role, user_name, node_id, node_state, created, expires`

func scanToken(row pgx.Row) (store.Token, error) {
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
	_, err := s.pool.Exec(ctx, `INSERT INTO tokens (`+tokenColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
		t.ID, t.Hash, t.Kind, t.Name, string(t.Role), t.User, t.NodeID, string(t.NodeState), nanos(t.Created), nanos(t.Expires))
	if err != nil {
		if uniqueViolation(err) {
			err = fmt.Errorf("%w: %v", store.ErrConflict, err)
		}
		return t, fmt.Errorf("create token: %w", err)
	}
	return t, nil
}

// TokenByHash implements store.Store.
func (s *Store) TokenByHash(ctx context.Context, hash string) (store.Token, error) {
	t, err := scanToken(s.pool.QueryRow(ctx, `SELECT `+tokenColumns+` FROM tokens WHERE hash = $1`, hash))
	if errors.Is(err, pgx.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		return t, fmt.Errorf("token: %w", err)
	}
	return t, nil
}

// Tokens implements store.Store.
func (s *Store) Tokens(ctx context.Context) ([]store.Token, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+tokenColumns+` FROM tokens WHERE kind = 'api' ORDER BY created, id`)
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
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	return out, nil
}

// DeleteToken implements store.Store.
func (s *Store) DeleteToken(ctx context.Context, id string) error {
	tag, err := s.pool.Exec(ctx, `DELETE FROM tokens WHERE id = $1`, id)
	if err != nil {
		return fmt.Errorf("delete token %s: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("delete token %s: %w", id, store.ErrNotFound)
	}
	return nil
}

// DeleteTokens implements store.Store.
func (s *Store) DeleteTokens(ctx context.Context, kind, nodeID, user string) error {
	var err error
	if nodeID != "" {
		_, err = s.pool.Exec(ctx, `DELETE FROM tokens WHERE kind = $1 AND node_id = $2`, kind, nodeID)
	} else {
		_, err = s.pool.Exec(ctx, `DELETE FROM tokens WHERE kind = $1 AND user_name = $2`, kind, user)
	}
	if err != nil {
		return fmt.Errorf("delete %s tokens: %w", kind, err)
	}
	return nil
}
