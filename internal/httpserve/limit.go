package httpserve

import (
	"io"
	"net"
	"net/netip"
	"sync"
)

// limitListener accepts at most n connections at once; more wait in the
// kernel's backlog. One source address may hold at most perSource of
// them (0: no such cap): a connection over that is closed at once, so
// one host cannot fill the cap that every booting node shares. Unlike
// x/net's, its connections keep the accepted connection's ReadFrom,
// which is how net/http reaches sendfile.
type limitListener struct {
	net.Listener
	sem       chan struct{}
	perSource int
	mu        sync.Mutex
	bySource  map[netip.Addr]int
}

func limit(ln net.Listener, n, perSource int) net.Listener {
	return &limitListener{Listener: ln, sem: make(chan struct{}, n), perSource: perSource, bySource: map[netip.Addr]int{}}
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		l.sem <- struct{}{}
		c, err := l.Listener.Accept()
		if err != nil {
			<-l.sem
			return nil, err
		}
		src := sourceOf(c)
		if !l.take(src) {
			c.Close()
			<-l.sem
			continue
		}
		return &limitedConn{Conn: c, release: func() { l.give(src); <-l.sem }}, nil
	}
}

func sourceOf(c net.Conn) netip.Addr {
	if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

func (l *limitListener) take(src netip.Addr) bool {
	if l.perSource <= 0 {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.bySource[src] >= l.perSource {
		return false
	}
	l.bySource[src]++
	return true
}

func (l *limitListener) give(src netip.Addr) {
	if l.perSource <= 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.bySource[src]--; l.bySource[src] <= 0 {
		delete(l.bySource, src)
	}
}

type limitedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// ReadFrom hands a file on to the connection's own ReadFrom (sendfile).
func (c *limitedConn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{c.Conn}, r)
}
