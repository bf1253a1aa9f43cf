package sqlstore

import (
	"container/list"
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"reflect"
	"strings"

	"modernc.org/sqlite"
)

// stmtCacheSize bounds the prepared statements kept per SQLite
// connection. The store has about a hundred distinct queries; the few
// built at run time (IN lists of a page's length) would otherwise grow
// the cache without end.
const stmtCacheSize = 256

// openSQLiteDB opens dsn through modernc.org/sqlite with a cache of
// prepared statements on each connection. database/sql hands a query
// with arguments straight to the driver, which parses and plans the SQL
// anew every time: under DHCP load a third of the CPU went to that. The
// store's queries are fixed strings, so each connection keeps the
// statements it has prepared and only binds and steps them again.
func openSQLiteDB(dsn string) *sql.DB {
	return sql.OpenDB(&cachingConnector{dsn: dsn, d: &sqlite.Driver{}})
}

type cachingConnector struct {
	dsn string
	d   *sqlite.Driver
}

func (c *cachingConnector) Connect(context.Context) (driver.Conn, error) {
	conn, err := c.d.Open(c.dsn)
	if err != nil {
		return nil, err
	}
	return newCachingConn(conn)
}

func (c *cachingConnector) Driver() driver.Driver { return c.d }

// sqliteConn is what modernc.org/sqlite's connections offer and the
// cache passes on.
type sqliteConn interface {
	driver.Conn
	driver.ConnBeginTx
	driver.ConnPrepareContext
	driver.ExecerContext
	driver.QueryerContext
	driver.Pinger
	driver.SessionResetter
	driver.Validator
}

// cachingConn is one SQLite connection and its statements. database/sql
// uses a connection from one goroutine at a time (a Rows' Close
// included), so the cache needs no lock.
type cachingConn struct {
	sqliteConn
	stmts map[string]*list.Element // of *cachedStmt
	lru   list.List                // most recently used first
}

type cachedStmt struct {
	query string
	s     stmtContext
	// busy: its Rows are still open, so the statement is mid-step and
	// another query of the same text needs a statement of its own.
	busy bool
	// evicted: dropped from the cache while busy; closed with its Rows.
	evicted bool
}

type stmtContext interface {
	driver.Stmt
	driver.StmtExecContext
	driver.StmtQueryContext
}

func newCachingConn(c driver.Conn) (driver.Conn, error) {
	sc, ok := c.(sqliteConn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("open database: the sqlite driver's connection (%T) lacks the methods the statement cache needs", c)
	}
	return &cachingConn{sqliteConn: sc, stmts: make(map[string]*list.Element)}, nil
}

// cacheable says whether query is one statement worth keeping: a
// transaction's BEGIN, a PRAGMA or a script of several statements is
// run as it comes.
func cacheable(query string) bool {
	if strings.Contains(query, ";") {
		return false
	}
	q := strings.TrimLeft(query, " \t\r\n")
	word, _, _ := strings.Cut(q, " ")
	word, _, _ = strings.Cut(word, "\n")
	word, _, _ = strings.Cut(word, "(")
	switch strings.ToUpper(strings.TrimSpace(word)) {
	case "SELECT", "INSERT", "UPDATE", "DELETE", "REPLACE", "WITH":
		return true
	}
	return false
}

// stmt returns the cached statement for query, preparing it on first
// use, or nil when query is not kept (the caller runs it uncached). A
// statement whose Rows are still open is not handed out twice.
func (c *cachingConn) stmt(ctx context.Context, query string) (*cachedStmt, error) {
	if !cacheable(query) {
		return nil, nil
	}
	if el, ok := c.stmts[query]; ok {
		cs := el.Value.(*cachedStmt)
		if cs.busy {
			return nil, nil
		}
		c.lru.MoveToFront(el)
		return cs, nil
	}
	ds, err := c.sqliteConn.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	s, ok := ds.(stmtContext)
	if !ok {
		ds.Close()
		return nil, nil
	}
	cs := &cachedStmt{query: query, s: s}
	c.stmts[query] = c.lru.PushFront(cs)
	for c.lru.Len() > stmtCacheSize {
		c.drop(c.lru.Back())
	}
	return cs, nil
}

func (c *cachingConn) drop(el *list.Element) {
	cs := c.lru.Remove(el).(*cachedStmt)
	delete(c.stmts, cs.query)
	if cs.busy {
		cs.evicted = true
		return
	}
	cs.s.Close()
}

func (c *cachingConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	cs, err := c.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	if cs == nil {
		return c.sqliteConn.ExecContext(ctx, query, args)
	}
	return cs.s.ExecContext(ctx, args)
}

func (c *cachingConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	cs, err := c.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	if cs == nil {
		return c.sqliteConn.QueryContext(ctx, query, args)
	}
	r, err := cs.s.QueryContext(ctx, args)
	if err != nil {
		return nil, err
	}
	cs.busy = true
	return &cachedRows{Rows: r, cs: cs}, nil
}

func (c *cachingConn) Close() error {
	for el := c.lru.Front(); el != nil; el = el.Next() {
		el.Value.(*cachedStmt).s.Close()
	}
	c.lru.Init()
	clear(c.stmts)
	return c.sqliteConn.Close()
}

// cachedRows frees its statement for the next query when closed.
type cachedRows struct {
	driver.Rows
	cs     *cachedStmt
	closed bool
}

func (r *cachedRows) Close() error {
	if r.closed {
		return nil
	}
	r.closed = true
	err := r.Rows.Close()
	r.cs.busy = false
	if r.cs.evicted {
		r.cs.s.Close()
	}
	return err
}

// The column type methods are passed on, so that sql.Rows.ColumnTypes
// reports what SQLite declared, as it does without the cache.

func (r *cachedRows) ColumnTypeDatabaseTypeName(i int) string {
	if t, ok := r.Rows.(driver.RowsColumnTypeDatabaseTypeName); ok {
		return t.ColumnTypeDatabaseTypeName(i)
	}
	return ""
}

func (r *cachedRows) ColumnTypeScanType(i int) reflect.Type {
	if t, ok := r.Rows.(driver.RowsColumnTypeScanType); ok {
		return t.ColumnTypeScanType(i)
	}
	return reflect.TypeFor[any]()
}

func (r *cachedRows) ColumnTypeNullable(i int) (nullable, ok bool) {
	if t, ok := r.Rows.(driver.RowsColumnTypeNullable); ok {
		return t.ColumnTypeNullable(i)
	}
	return false, false
}
