package deploy

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultDiskTimeout is how long one disk operation of an image write may
// take before the disk counts as wedged.
const DefaultDiskTimeout = 2 * time.Minute

// ErrWedged is a disk that stopped completing I/O: a write, the flush or
// a read of the verification has been in the kernel for longer than the
// disk timeout. The goroutine doing it stays stuck there; the write
// returns, so the agent can report the failure.
var ErrWedged = errors.New("the disk stopped answering")

// device is the disk an image is written to: an *os.File, or in tests
// one that can stop answering.
type device interface {
	io.ReaderAt
	io.WriterAt
	io.Seeker
	Sync() error
	Close() error
}

// watchdog tells a disk that has stopped answering from a slow
// download: only an operation on the disk that has been in flight for
// longer than the limit trips it, never time spent waiting for data.
type watchdog struct {
	limit    time.Duration
	mu       sync.Mutex
	inflight int
	since    time.Time // the last time an operation began on an idle disk, or ended
	tripped  chan struct{}
	done     chan struct{}
	once     sync.Once
}

func newWatchdog(limit time.Duration) *watchdog {
	if limit <= 0 {
		limit = DefaultDiskTimeout
	}
	w := &watchdog{limit: limit, tripped: make(chan struct{}), done: make(chan struct{})}
	go w.run()
	return w
}

func (w *watchdog) begin() {
	w.mu.Lock()
	if w.inflight == 0 {
		w.since = time.Now()
	}
	w.inflight++
	w.mu.Unlock()
}

func (w *watchdog) end() {
	w.mu.Lock()
	w.inflight--
	w.since = time.Now()
	w.mu.Unlock()
}

func (w *watchdog) run() {
	t := time.NewTicker(max(w.limit/8, time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-w.done:
			return
		case <-t.C:
			w.mu.Lock()
			stuck := w.inflight > 0 && time.Since(w.since) > w.limit
			w.mu.Unlock()
			if stuck {
				close(w.tripped)
				return
			}
		}
	}
}

func (w *watchdog) stop() { w.once.Do(func() { close(w.done) }) }

// err is the wedge as an error about dev.
func (w *watchdog) err(dev, what string) error {
	return fmt.Errorf("write image: %w: %s of %s has not completed in %s", ErrWedged, what, dev, w.limit)
}

// do runs one disk operation under the watchdog, and gives up on it when
// the watchdog trips.
func (w *watchdog) do(dev, what string, op func() error) error {
	res := make(chan error, 1)
	go func() {
		w.begin()
		err := op()
		w.end()
		res <- err
	}()
	select {
	case err := <-res:
		return err
	case <-w.tripped:
		// An operation that ended as the watchdog tripped did end.
		select {
		case err := <-res:
			return err
		default:
		}
		return w.err(dev, what)
	}
}

// writebackWindow is how much written data may wait in the page cache
// for the disk: the final flush then has at most about twice this to
// write, well within the disk timeout, however much memory the node has
// and however much faster its network is than its disk.
const writebackWindow = 64 << 20

// writeback starts the disk writing each window once it is written and
// waits for the window before it, as dd's oflag=direct would bound it
// without direct I/O's alignment rules.
type writeback struct {
	fd      int
	started int64 // bytes up to which writeback was started
	waited  int64 // bytes up to which it was waited for
}

// newWriteback is nil for a device that is not a real file (tests).
func newWriteback(d device) *writeback {
	f, ok := asFile(d)
	if !ok {
		return nil
	}
	return &writeback{fd: int(f.Fd())}
}

// wrote says the image has been written up to end.
func (w *writeback) wrote(end int64) error {
	if w == nil || end-w.started < writebackWindow {
		return nil
	}
	if err := unix.SyncFileRange(w.fd, w.started, end-w.started, unix.SYNC_FILE_RANGE_WRITE); err != nil {
		return fmt.Errorf("start writeback: %w", err)
	}
	if w.started > w.waited {
		if err := unix.SyncFileRange(w.fd, w.waited, w.started-w.waited,
			unix.SYNC_FILE_RANGE_WAIT_BEFORE|unix.SYNC_FILE_RANGE_WRITE|unix.SYNC_FILE_RANGE_WAIT_AFTER); err != nil {
			return fmt.Errorf("wait for writeback: %w", err)
		}
		w.waited = w.started
	}
	w.started = end
	return nil
}

// watchedReader counts each read of the verification as a disk
// operation.
type watchedReader struct {
	r io.ReaderAt
	w *watchdog
}

func (r watchedReader) ReadAt(p []byte, off int64) (int, error) {
	r.w.begin()
	defer r.w.end()
	return r.r.ReadAt(p, off)
}

// asFile is d as the *os.File it usually is, for the calls only a real
// file takes (fadvise, the partition table's reread).
func asFile(d device) (*os.File, bool) {
	f, ok := d.(*os.File)
	return f, ok
}
