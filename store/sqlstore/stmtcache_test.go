package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

func TestCacheable(t *testing.T) {
	for _, tc := range []struct {
		q    string
		want bool
	}{
		{"SELECT 1", true},
		{"\n\t  select mac FROM leases WHERE ip = ?", true},
		{"INSERT INTO t VALUES (?)", true},
		{"UPDATE t SET a = ?", true},
		{"DELETE FROM t", true},
		{"REPLACE INTO t VALUES (1)", true},
		{"WITH x AS (SELECT 1) SELECT * FROM x", true},
		{"WITH\nx AS (SELECT 1) SELECT * FROM x", true},
		{"BEGIN IMMEDIATE", false},
		{"COMMIT", false},
		{"PRAGMA synchronous = FULL", false},
		{"PRAGMA synchronous = NORMAL; BEGIN IMMEDIATE", false},
		{"SELECT 1; SELECT 2", false},
		{"SAVEPOINT s1", false},
		{"CREATE TABLE t (a)", false},
		{"", false},
		{"SEL", false},
	} {
		if got := cacheable(tc.q); got != tc.want {
			t.Errorf("cacheable(%q) = %v, want %v", tc.q, got, tc.want)
		}
	}
}

// cacheConn is one connection of a database opened through the cache,
// and a way to look at that connection's cache.
func cacheConn(t *testing.T) (*sql.Conn, func() *cachingConn) {
	t.Helper()
	db := openSQLiteDB("file:" + filepath.Join(t.TempDir(), "db") + "?_pragma=journal_mode(WAL)")
	t.Cleanup(func() { db.Close() })
	c, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.ExecContext(context.Background(), "CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)"); err != nil {
		t.Fatal(err)
	}
	return c, func() *cachingConn {
		var cc *cachingConn
		if err := c.Raw(func(dc any) error { cc = dc.(*cachingConn); return nil }); err != nil {
			t.Fatal(err)
		}
		return cc
	}
}

func TestStmtCacheReuses(t *testing.T) {
	ctx := context.Background()
	c, cache := cacheConn(t)
	for i := range 10 {
		if _, err := c.ExecContext(ctx, "INSERT INTO t (k, v) VALUES (?, ?)", i, fmt.Sprint("v", i)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 10 {
		var v string
		if err := c.QueryRowContext(ctx, "SELECT v FROM t WHERE k = ?", i).Scan(&v); err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprint("v", i); v != want {
			t.Fatalf("k %d: v %q, want %q", i, v, want)
		}
	}
	// The table's CREATE is not kept; the INSERT and the SELECT are, once each.
	cc := cache()
	if n := cc.lru.Len(); n != 2 {
		t.Fatalf("%d statements cached, want 2 (one INSERT, one SELECT)", n)
	}
	for _, q := range []string{"INSERT INTO t (k, v) VALUES (?, ?)", "SELECT v FROM t WHERE k = ?"} {
		if _, ok := cc.stmts[q]; !ok {
			t.Errorf("%q not cached", q)
		}
	}
}

// A query of a text whose statement is still being read gets a
// statement of its own: both result sets come out whole.
func TestStmtCacheBusy(t *testing.T) {
	ctx := context.Background()
	c, cache := cacheConn(t)
	for i := range 5 {
		if _, err := c.ExecContext(ctx, "INSERT INTO t (k, v) VALUES (?, ?)", i, fmt.Sprint("v", i)); err != nil {
			t.Fatal(err)
		}
	}
	const q = "SELECT k FROM t WHERE k >= ? ORDER BY k"
	outer, err := c.QueryContext(ctx, q, 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for outer.Next() {
		var k int
		if err := outer.Scan(&k); err != nil {
			t.Fatal(err)
		}
		// database/sql runs this on the same connection: c is one.
		inner, err := c.QueryContext(ctx, q, k)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for inner.Next() {
			n++
		}
		if err := inner.Close(); err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%d:%d", k, n))
	}
	if err := outer.Err(); err != nil {
		t.Fatal(err)
	}
	outer.Close()
	if want := "0:5 1:4 2:3 3:2 4:1"; strings.Join(got, " ") != want {
		t.Fatalf("got %v, want %s", got, want)
	}
	if el, ok := cache().stmts[q]; !ok || el.Value.(*cachedStmt).busy {
		t.Fatalf("after both closed: cached %v, want cached and free", ok)
	}
}

// The cache holds at most stmtCacheSize statements; one dropped while
// its rows are read still reads to the end, and is closed after.
func TestStmtCacheBounded(t *testing.T) {
	ctx := context.Background()
	c, cache := cacheConn(t)
	for i := range 3 {
		if _, err := c.ExecContext(ctx, "INSERT INTO t (k, v) VALUES (?, ?)", i, "x"); err != nil {
			t.Fatal(err)
		}
	}
	open, err := c.QueryContext(ctx, "SELECT k FROM t ORDER BY k")
	if err != nil {
		t.Fatal(err)
	}
	if !open.Next() {
		t.Fatal("no first row")
	}
	for i := range stmtCacheSize + 10 {
		var n int
		if err := c.QueryRowContext(ctx, fmt.Sprintf("SELECT count(*) + %d FROM t", i)).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 3+i {
			t.Fatalf("query %d: %d", i, n)
		}
	}
	cc := cache()
	if n := cc.lru.Len(); n != stmtCacheSize || len(cc.stmts) != stmtCacheSize {
		t.Fatalf("cache holds %d (map %d), want %d", n, len(cc.stmts), stmtCacheSize)
	}
	if _, ok := cc.stmts["SELECT k FROM t ORDER BY k"]; ok {
		t.Fatal("the oldest statement is still cached")
	}
	rows := 1
	for open.Next() {
		rows++
	}
	if err := open.Close(); err != nil {
		t.Fatal(err)
	}
	if rows != 3 {
		t.Fatalf("the evicted statement read %d rows, want 3", rows)
	}
}

// A statement that failed (a constraint, a schema change under it) is
// used again and answers right.
func TestStmtCacheAfterErrors(t *testing.T) {
	ctx := context.Background()
	c, _ := cacheConn(t)
	const ins = "INSERT INTO t (k, v) VALUES (?, ?)"
	if _, err := c.ExecContext(ctx, ins, 1, "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ExecContext(ctx, ins, 1, "b"); err == nil || !strings.Contains(err.Error(), "UNIQUE") {
		t.Fatalf("duplicate key: %v, want a UNIQUE error", err)
	}
	if _, err := c.ExecContext(ctx, ins, 2, "b"); err != nil {
		t.Fatalf("after a failed insert: %v", err)
	}
	const sel = "SELECT * FROM t WHERE k = ?"
	cols := func() []string {
		t.Helper()
		r, err := c.QueryContext(ctx, sel, 2)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		cs, err := r.Columns()
		if err != nil {
			t.Fatal(err)
		}
		return cs
	}
	if got := strings.Join(cols(), ","); got != "k,v" {
		t.Fatalf("columns %s", got)
	}
	// A migration adds a column: the kept statement is planned again.
	if _, err := c.ExecContext(ctx, "ALTER TABLE t ADD COLUMN w TEXT"); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(cols(), ","); got != "k,v,w" {
		t.Fatalf("columns after ALTER TABLE: %s, want k,v,w", got)
	}
	// A context that ended fails the query and leaves the statement usable.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := c.QueryContext(cctx, sel, 2); err == nil {
		t.Fatal("query with an ended context: no error")
	}
	var v string
	if err := c.QueryRowContext(ctx, "SELECT v FROM t WHERE k = ?", 2).Scan(&v); err != nil || v != "b" {
		t.Fatalf("after an ended context: %q, %v", v, err)
	}
}
