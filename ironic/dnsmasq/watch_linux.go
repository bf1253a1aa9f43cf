package dnsmasq

import (
	"bytes"
	"errors"
	"os"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

const watchMask = unix.IN_CLOSE_WRITE | unix.IN_MODIFY | unix.IN_CREATE | unix.IN_DELETE |
	unix.IN_MOVED_TO | unix.IN_MOVED_FROM | unix.IN_DELETE_SELF | unix.IN_MOVE_SELF | unix.IN_ONLYDIR

type watcher struct {
	d      *Dir
	fd     int
	f      *os.File
	events chan change
	done   chan struct{}
	wg     sync.WaitGroup

	mu  sync.Mutex
	wds map[int]change // watch descriptor → its directory
}

func newWatcher(d *Dir) (*watcher, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, os.NewSyscallError("inotify_init1", err)
	}
	w := &watcher{d: d, fd: fd, f: os.NewFile(uintptr(fd), "inotify"), events: make(chan change), done: make(chan struct{}), wds: map[int]change{}}
	w.wg.Add(1)
	go w.read()
	return w, nil
}

// add watches the directories not yet watched: they may not exist until
// a conductor first writes, and a removed one loses its watch.
func (w *watcher) add() {
	w.mu.Lock()
	defer w.mu.Unlock()
	have := map[change]bool{}
	for _, c := range w.wds {
		have[c] = true
	}
	for _, hosts := range []bool{true, false} {
		dirs := w.d.OptsDirs
		if hosts {
			dirs = w.d.HostsDirs
		}
		for i, dir := range dirs {
			c := change{hosts: hosts, dir: i}
			if have[c] {
				continue
			}
			wd, err := unix.InotifyAddWatch(w.fd, dir, watchMask)
			if err != nil {
				if !errors.Is(err, unix.ENOENT) {
					w.d.logger().Warn("cannot watch ironic dnsmasq directory; rescans only", "file", dir, "err", err)
				}
				continue
			}
			w.wds[wd] = c
		}
	}
}

func (w *watcher) read() {
	defer w.wg.Done()
	buf := make([]byte, 64<<10)
	for {
		n, err := w.f.Read(buf)
		if err != nil {
			return
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			name := buf[off+unix.SizeofInotifyEvent : min(n, off+unix.SizeofInotifyEvent+int(ev.Len))]
			off += unix.SizeofInotifyEvent + int(ev.Len)
			if i := bytes.IndexByte(name, 0); i >= 0 {
				name = name[:i]
			}
			var c change
			switch {
			case ev.Mask&unix.IN_Q_OVERFLOW != 0:
				c = change{all: true}
			default:
				w.mu.Lock()
				dc, ok := w.wds[int(ev.Wd)]
				switch {
				case ev.Mask&unix.IN_IGNORED != 0:
					delete(w.wds, int(ev.Wd))
				case ev.Mask&unix.IN_MOVE_SELF != 0:
					// The watch follows the directory away from its path;
					// the next rescan watches whatever is there now.
					unix.InotifyRmWatch(w.fd, uint32(ev.Wd))
					delete(w.wds, int(ev.Wd))
				}
				w.mu.Unlock()
				if !ok {
					continue
				}
				c = dc
				if ev.Mask&(unix.IN_DELETE_SELF|unix.IN_MOVE_SELF|unix.IN_IGNORED) == 0 {
					c.name = string(name)
				}
			}
			select {
			case w.events <- c:
			case <-w.done:
				return
			}
		}
	}
}

func (w *watcher) close() {
	close(w.done)
	w.f.Close()
	w.wg.Wait()
}
