// Package deploy writes a disk image to a node's disk: it downloads the
// image over HTTP, resuming with Range where the connection breaks,
// decompresses it, hashes what it reads and what it writes, and writes in
// large aligned blocks, so a disk either holds the image whole and
// verified or the task fails.
package deploy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// resumable is an HTTP body that survives broken connections: when a read
// fails it asks again for the bytes from where it stopped, and checks the
// server still has the same file (ETag), so a resumed download never
// stitches two versions together.
type resumable struct {
	ctx    context.Context
	client *http.Client
	url    string
	token  string
	// size is the length the first answer announced (-1 unknown).
	size int64
	etag string
	off  int64
	body io.ReadCloser
	// retries is how many broken connections are survived in a row.
	retries, failed int
	backoff         time.Duration
	// resumes counts the Range requests made, for the task's report.
	resumes int
	// stall is how long one answer may send nothing (its headers, or
	// the next byte of its body) before it is given up and resumed:
	// TCP alone notices a dead peer only after minutes.
	stall time.Duration
	// timer ends the current answer when it stalls (cancel, with
	// ErrStalled as the cause); it runs only while a read waits on
	// the network, never while the disk is being written.
	timer  *time.Timer
	cancel context.CancelCauseFunc
	// fresh is true until the current answer's body gives a byte: one
	// that breaks before it does is a failed try, like a refused one.
	fresh bool
}

// DefaultStallTimeout is how long an image download may receive nothing
// before the connection is given up and the download resumed.
const DefaultStallTimeout = time.Minute

// ErrStalled is a download whose server sent nothing for the stall
// timeout: a cut network or a hung server.
var ErrStalled = errors.New("the download stalled")

func openResumable(ctx context.Context, c *http.Client, url, token string, retries int, stall time.Duration) (*resumable, error) {
	if stall <= 0 {
		stall = DefaultStallTimeout
	}
	r := &resumable{ctx: ctx, client: c, url: url, token: token, size: -1, retries: retries, backoff: 500 * time.Millisecond, stall: stall}
	if err := r.open(); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *resumable) open() error {
	ctx, cancel := context.WithCancelCause(r.ctx)
	timer := time.AfterFunc(r.stall, func() { cancel(ErrStalled) })
	err := r.request(ctx)
	if !timer.Stop() {
		err = fmt.Errorf("download %s: %w: no answer in %s", r.url, ErrStalled, r.stall)
		if r.body != nil {
			r.body.Close()
			r.body = nil
		}
	}
	if err != nil {
		cancel(nil)
		return err
	}
	r.timer, r.cancel, r.fresh = timer, cancel, true
	return nil
}

// request asks for the bytes from r.off on and, when the answer fits,
// makes its body r.body.
func (r *resumable) request(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.url, nil)
	if err != nil {
		return fmt.Errorf("download %s: %w", r.url, err)
	}
	if r.token != "" {
		req.Header.Set("Authorization", "Bearer "+r.token)
	}
	if r.off > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", r.off))
		if r.etag != "" {
			req.Header.Set("If-Range", r.etag)
		}
	}
	resp, err := r.client.Do(req)
	if err != nil {
		return fmt.Errorf("download %s: %w", r.url, err)
	}
	switch {
	case r.off == 0 && resp.StatusCode == http.StatusOK:
		r.size, r.etag = resp.ContentLength, resp.Header.Get("ETag")
	case r.off > 0 && resp.StatusCode == http.StatusPartialContent:
		start, total, ok := contentRange(resp.Header.Get("Content-Range"))
		if !ok || start != r.off || (r.size >= 0 && total != r.size) {
			resp.Body.Close()
			return fmt.Errorf("download %s: resumed at %d, the server answered %q", r.url, r.off, resp.Header.Get("Content-Range"))
		}
		if et := resp.Header.Get("ETag"); r.etag != "" && et != "" && et != r.etag {
			resp.Body.Close()
			return fmt.Errorf("download %s: the image changed on the server while it was being written (ETag %s, was %s)", r.url, et, r.etag)
		}
	case r.off > 0 && resp.StatusCode == http.StatusOK:
		// The server ignored the Range (or If-Range failed): it would
		// send the whole file again, which cannot be spliced in.
		resp.Body.Close()
		return fmt.Errorf("download %s: the server cannot resume at byte %d (it sent the whole file, perhaps a changed one)", r.url, r.off)
	default:
		resp.Body.Close()
		return fmt.Errorf("download %s: %s", r.url, resp.Status)
	}
	r.body = resp.Body
	return nil
}

// contentRange parses "bytes START-END/TOTAL".
func contentRange(h string) (start, total int64, ok bool) {
	rest, found := strings.CutPrefix(h, "bytes ")
	if !found {
		return 0, 0, false
	}
	span, tot, found := strings.Cut(rest, "/")
	if !found {
		return 0, 0, false
	}
	s, _, found := strings.Cut(span, "-")
	if !found {
		return 0, 0, false
	}
	start, err1 := strconv.ParseInt(s, 10, 64)
	total, err2 := strconv.ParseInt(tot, 10, 64)
	return start, total, err1 == nil && err2 == nil && start >= 0
}

func (r *resumable) Read(p []byte) (int, error) {
	for {
		if r.body == nil {
			if err := r.open(); err != nil {
				if r.ctx.Err() != nil {
					return 0, r.ctx.Err()
				}
				if err := r.retry(err); err != nil {
					return 0, err
				}
				continue
			}
			r.resumes++
		}
		n, err := r.read(p)
		r.off += int64(n)
		if n > 0 {
			r.failed, r.fresh = 0, false
		}
		switch {
		case err == nil:
			return n, nil
		case errors.Is(err, io.EOF) && (r.size < 0 || r.off == r.size):
			return n, io.EOF
		}
		// A short body, a broken connection or a stall: resume from r.off.
		fresh := r.fresh
		r.closeBody()
		if r.ctx.Err() != nil {
			return n, r.ctx.Err()
		}
		if n > 0 {
			return n, nil
		}
		if fresh {
			// Not a byte from this answer: without counting it, a
			// server that answers and then sends nothing would be
			// asked again forever.
			if !errors.Is(err, ErrStalled) {
				// Not wrapped: the reader would take an
				// io.ErrUnexpectedEOF for the image's end.
				err = fmt.Errorf("download %s: the answer ended before its first byte, at byte %d: %v", r.url, r.off, err)
			}
			if err := r.retry(err); err != nil {
				return 0, err
			}
		}
	}
}

// read reads the current body, giving it up when nothing comes for the
// stall timeout.
func (r *resumable) read(p []byte) (int, error) {
	r.timer.Reset(r.stall)
	n, err := r.body.Read(p)
	if !r.timer.Stop() {
		// The timer ran, so the answer's context is cancelled even
		// if this read beat it.
		return n, fmt.Errorf("download %s: %w: nothing received for %s at byte %d", r.url, ErrStalled, r.stall, r.off+int64(n))
	}
	return n, err
}

func (r *resumable) closeBody() {
	r.body.Close()
	r.body = nil
	r.cancel(nil)
}

// retry counts a failed try (err) and waits before the next one, or
// returns err when tries have failed r.retries times in a row.
func (r *resumable) retry(err error) error {
	if r.failed++; r.failed > r.retries {
		return err
	}
	select {
	case <-r.ctx.Done():
		return r.ctx.Err()
	case <-time.After(r.backoff):
	}
	if r.backoff < 10*time.Second {
		r.backoff *= 2
	}
	return nil
}

func (r *resumable) Close() error {
	if r.body != nil {
		err := r.body.Close()
		r.cancel(nil)
		return err
	}
	return nil
}
