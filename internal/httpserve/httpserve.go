// Package httpserve is how rackboot serves HTTP, boot files and API
// alike: one server setup (timeouts, base context, error log, graceful
// shutdown) and one way of sending files (Range, conditional requests,
// ETag) that keeps the kernel's sendfile path, so kernels, initrds and
// disk images are not copied through user space.
package httpserve

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"
)

// ShutdownGrace is how long Serve waits for requests in flight once its
// context ends.
const ShutdownGrace = 5 * time.Second

// Limits bound what one client can hold of a server: anyone on the
// provisioning network can open connections to it.
type Limits struct {
	// ReadHeader bounds how long a client may take to send its request
	// headers, Read the whole request, Write the whole answer, Idle a
	// keep-alive connection between requests. Answers that are long on
	// purpose lift Read and Write for their request (Long, File).
	ReadHeader, Read, Write, Idle time.Duration
	// MaxConns caps the connections open at once; more wait in the
	// kernel's backlog until one closes. MaxPerSource caps those of one
	// source address (0: none); more are closed at once, so one host
	// cannot take the slots every booting node shares.
	MaxConns, MaxPerSource int
	// MinRate is the slowest a client may read a file: File gives a
	// request Write plus the file's length at this rate.
	MinRate int64
}

// DefaultLimits are what the appliance serves with.
var DefaultLimits = Limits{ReadHeader: 10 * time.Second, Read: time.Minute, Write: time.Minute, Idle: 2 * time.Minute,
	MaxConns: 4096, MaxPerSource: 256, MinRate: 1 << 20}

// Serve is ServeLimits with DefaultLimits.
func Serve(ctx context.Context, ln net.Listener, h http.Handler, log *slog.Logger) error {
	return ServeLimits(ctx, ln, h, log, DefaultLimits)
}

// ServeLimits answers HTTP on ln with h until ctx ends, then lets
// requests in flight finish for up to ShutdownGrace and returns nil.
// Requests' contexts derive from ctx, so long-lived ones (event streams)
// end with it. Connection errors go to log at debug level; nil discards.
// It closes ln.
func ServeLimits(ctx context.Context, ln net.Listener, h http.Handler, log *slog.Logger, l Limits) error {
	return ServeTLS(ctx, ln, h, log, l, nil)
}

// ServeTLS is ServeLimits over TLS with cfg (plain HTTP when cfg is nil).
// The handshake counts against the connection cap and has the header
// read time, so a client that never finishes one holds nothing for long.
func ServeTLS(ctx context.Context, ln net.Listener, h http.Handler, log *slog.Logger, l Limits, cfg *tls.Config) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if l.MaxConns > 0 {
		ln = limit(ln, l.MaxConns, l.MaxPerSource)
	}
	if cfg != nil {
		// Wrapped outside the cap, so net/http sees a *tls.Conn: it then
		// bounds the handshake and fills in r.TLS.
		ln = tls.NewListener(ln, cfg)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), limitsKey{}, l)))
		}),
		ReadHeaderTimeout: l.ReadHeader,
		ReadTimeout:       l.Read,
		WriteTimeout:      l.Write,
		IdleTimeout:       l.Idle,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	done := make(chan error, 1)
	go func() {
		<-ctx.Done()
		// The serving context is over; shutting down needs one of its own.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ShutdownGrace)
		defer cancel()
		err := srv.Shutdown(sctx)
		if err != nil {
			err = errors.Join(err, srv.Close())
		}
		done <- err
	}()
	err := srv.Serve(ln)
	if !errors.Is(err, http.ErrServerClosed) {
		// Serve failed on its own; release the shutdown goroutine.
		_ = srv.Close()
		return fmt.Errorf("serve http %s: %w", ln.Addr(), err)
	}
	if err := <-done; err != nil {
		log.Warn("http shutdown", "err", err)
	}
	return nil
}

type limitsKey struct{}

// Long lifts the read and write deadlines of a request that is long on
// purpose: an event stream, an image upload. It is bounded by the
// server's context and the connection cap instead.
func Long(w http.ResponseWriter) {
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Time{})
	_ = rc.SetWriteDeadline(time.Time{})
}

// extendWrite gives an answer of n bytes the server's write time plus n
// at the slowest rate it accepts.
func extendWrite(w http.ResponseWriter, r *http.Request, n int64) {
	l, ok := r.Context().Value(limitsKey{}).(Limits)
	if !ok || l.Write <= 0 {
		return
	}
	d := l.Write
	if l.MinRate > 0 {
		d += time.Duration(n/l.MinRate) * time.Second
	}
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(d))
}

// Sent says what File answered.
type Sent struct {
	// Status is the status code answered.
	Status int
	// Bytes is how many body bytes reached the connection; Want is the
	// length promised in Content-Length (the file, the range, or the
	// multipart body of several ranges), -1 when none was.
	Bytes, Want int64
	// Err is the first write error: most often a client that went away.
	Err error
}

// Complete says whether every promised byte went out.
func (s Sent) Complete() bool { return s.Err == nil && s.Want >= 0 && s.Bytes == s.Want }

// File serves the open regular file f as application/octet-stream with
// the strong validator etag, answering Range, If-Range, If-None-Match and
// HEAD through http.ServeContent. The body goes to the connection through
// its io.ReaderFrom, which sends an *os.File by sendfile. File does not
// close f.
func File(w http.ResponseWriter, r *http.Request, f *os.File, modTime time.Time, etag string) Sent {
	if etag != "" {
		w.Header().Set("ETag", etag)
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	if fi, err := f.Stat(); err == nil {
		extendWrite(w, r, fi.Size())
	}
	cw := &Writer{ResponseWriter: w}
	http.ServeContent(cw, r, "", modTime, f)
	want, err := strconv.ParseInt(w.Header().Get("Content-Length"), 10, 64)
	if err != nil {
		want = -1
	}
	return Sent{Status: cw.Status(), Bytes: cw.Bytes, Want: want, Err: cw.Err}
}

// Writer is an http.ResponseWriter that notes the status code and counts
// the body bytes that reached the connection, without hiding what the
// writer beneath it can do: ReadFrom hands a file on to the connection's
// own ReadFrom (sendfile), Flush flushes, and Unwrap lets
// http.ResponseController reach the rest.
type Writer struct {
	http.ResponseWriter
	// Bytes is how many body bytes were written.
	Bytes int64
	// Err is the first write error.
	Err  error
	code int
}

// Status is the status code written, 200 when the handler wrote none
// (net/http's own default).
func (c *Writer) Status() int {
	if c.code == 0 {
		return http.StatusOK
	}
	return c.code
}

func (c *Writer) WriteHeader(code int) {
	if c.code == 0 {
		c.code = code
	}
	c.ResponseWriter.WriteHeader(code)
}

func (c *Writer) Write(b []byte) (int, error) {
	if c.code == 0 {
		c.code = http.StatusOK
	}
	n, err := c.ResponseWriter.Write(b)
	c.count(int64(n), err)
	return n, err
}

// ReadFrom keeps the server's sendfile path, which a plain wrapper would
// hide from io.Copy.
func (c *Writer) ReadFrom(src io.Reader) (int64, error) {
	if c.code == 0 {
		c.code = http.StatusOK
	}
	var n int64
	var err error
	if rf, ok := c.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(src)
	} else {
		n, err = io.Copy(struct{ io.Writer }{c.ResponseWriter}, src)
	}
	c.count(n, err)
	return n, err
}

// Flush sends what is buffered to the client, where the writer beneath
// can.
func (c *Writer) Flush() {
	_ = http.NewResponseController(c.ResponseWriter).Flush()
}

// Unwrap returns the writer beneath, for http.ResponseController.
func (c *Writer) Unwrap() http.ResponseWriter { return c.ResponseWriter }

func (c *Writer) count(n int64, err error) {
	c.Bytes += n
	if err != nil && c.Err == nil {
		c.Err = err
	}
}
