package dnsmasq

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Dir is the live view of Ironic's hostsdirs and optsdirs. Load reads
// them once; Watch keeps them read. Lookup may be called from any number
// of goroutines, during either.
//
// Like dnsmasq it reads every file in the directories except names that
// start with '.', end with '~' or are #...#, and not only Ironic's
// ironic-*.conf. Unlike dnsmasq, which keeps what it read from a file
// until SIGHUP, a deleted or rewritten file stops counting at once.
// Where files disagree (one MAC in two hosts files, one option under the
// same tags in two opts files) the file written last wins, as it would in
// a dnsmasq that reads each file again when it changes.
//
// The directory lists must not change once Load or Watch has begun.
type Dir struct {
	// HostsDirs are the dhcp-hostsdir of each conductor.
	HostsDirs []string
	// OptsDirs are the dhcp-optsdir of each conductor.
	OptsDirs []string
	// Rescan is how often Watch reads every file again, for whatever
	// inotify missed (a full queue, a directory created late); 0 means 30
	// seconds, negative never.
	Rescan time.Duration
	// Settle is how long a file may stay empty or end mid-line before it
	// is taken as it is. Ironic rewrites its files in place, so a reader
	// can find one truncated; until then the file's previous lines stay
	// in force. 0 means 2 seconds.
	Settle time.Duration
	// Logger gets the lines that have no effect, once per change of a
	// file; nil discards.
	Logger *slog.Logger

	mu    sync.Mutex // serialises reading; never held by Lookup
	files map[fileKey]*fileState
	tab   atomic.Pointer[table]
}

type fileKey struct {
	hosts bool
	path  string
}

type fileState struct {
	dir     int // index in HostsDirs or OptsDirs
	mod     time.Time
	content []byte // what the records were parsed from, once loaded
	loaded  bool
	// half: the file last looked half-written, with pending in it since
	// pendingAt.
	half      bool
	pending   []byte
	pendingAt time.Time
	src       source
	problems  []*LineError
}

// Lookup returns what dnsmasq would answer mac, given the tags the
// caller's own matching set (rackboot sets "ipxe" for iPXE's requests, as
// Ironic's dhcp-match=set:ipxe,175 does). ok is false when no host line
// lists mac.
func (d *Dir) Lookup(mac net.HardwareAddr, clientTags ...string) (r Reply, ok bool) {
	t := d.tab.Load()
	if t == nil {
		return Reply{}, false
	}
	return t.lookup(mac, clientTags)
}

// Problems returns the lines currently without effect, by file and line.
func (d *Dir) Problems() []*LineError {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []*LineError
	for _, f := range d.files {
		out = append(out, f.problems...)
	}
	slices.SortFunc(out, func(a, b *LineError) int {
		return cmp.Or(cmp.Compare(a.File, b.File), cmp.Compare(a.Line, b.Line))
	})
	return out
}

// Load reads every file now. It returns the directories it could not
// read; the others are loaded all the same.
func (d *Dir) Load() error {
	_, err := d.scan(time.Now())
	return err
}

func (d *Dir) logger() *slog.Logger {
	if d.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return d.Logger
}

func (d *Dir) settle() time.Duration {
	if d.Settle == 0 {
		return 2 * time.Second
	}
	return d.Settle
}

func (d *Dir) dir(hosts bool, i int) string {
	if hosts {
		return d.HostsDirs[i]
	}
	return d.OptsDirs[i]
}

// skipName is dnsmasq's filter for directory entries: editor backups,
// autosaves and dot files (where atomic writers keep their temporaries).
func skipName(name string) bool {
	return name == "" || name[0] == '.' || name[len(name)-1] == '~' ||
		(len(name) > 1 && name[0] == '#' && name[len(name)-1] == '#')
}

// scan reads every directory and file, and returns when a half-written
// file should be looked at again (zero: none).
func (d *Dir) scan(now time.Time) (time.Time, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var errs []error
	changed := false
	var retry time.Time
	for _, hosts := range []bool{true, false} {
		dirs := d.OptsDirs
		if hosts {
			dirs = d.HostsDirs
		}
		for i, dir := range dirs {
			c, r, err := d.scanDir(hosts, i, dir, now)
			changed = changed || c
			retry = earliest(retry, r)
			if err != nil {
				errs = append(errs, err)
			}
		}
	}
	if changed || d.tab.Load() == nil {
		d.publish()
	}
	return retry, errors.Join(errs...)
}

func (d *Dir) scanDir(hosts bool, i int, dir string, now time.Time) (changed bool, retry time.Time, err error) {
	ents, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		// Keep what was read: an unreadable directory is not an empty one.
		return false, time.Time{}, fmt.Errorf("read dir %s: %w", dir, err)
	}
	seen := map[string]bool{}
	for _, e := range ents {
		if skipName(e.Name()) {
			continue
		}
		p := filepath.Join(dir, e.Name())
		seen[p] = true
		c, r := d.readFile(hosts, i, p, now)
		changed = changed || c
		retry = earliest(retry, r)
	}
	for k, f := range d.files {
		if k.hosts == hosts && f.dir == i && !seen[k.path] {
			delete(d.files, k)
			changed = true
		}
	}
	if err != nil {
		return changed, retry, fmt.Errorf("read dir %s: %w", dir, err)
	}
	return changed, retry, nil
}

func earliest(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}

// readFile brings one file's records up to date. A file whose content
// looks half-written keeps its previous records until it completes or
// has not changed for Settle; retry says when to look again.
func (d *Dir) readFile(hosts bool, i int, path string, now time.Time) (changed bool, retry time.Time) {
	k := fileKey{hosts, path}
	f := d.files[k]
	b, mod, err := readRegular(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, errNotRegular) {
			if f != nil {
				delete(d.files, k)
				return true, time.Time{}
			}
			return false, time.Time{}
		}
		d.logger().Warn("ironic dnsmasq file unreadable; its previous lines stay", "file", path, "err", err)
		return false, time.Time{}
	}
	if d.files == nil {
		d.files = map[fileKey]*fileState{}
	}
	if f == nil {
		f = &fileState{dir: i}
		d.files[k] = f
	}
	if f.loaded && bytes.Equal(b, f.content) {
		f.half, f.pending = false, nil
		if !mod.Equal(f.mod) {
			f.mod = mod
			return true, time.Time{}
		}
		return false, time.Time{}
	}
	if len(b) == 0 || b[len(b)-1] != '\n' {
		if !f.half || !bytes.Equal(b, f.pending) {
			f.half, f.pending, f.pendingAt = true, b, now
		}
		if now.Sub(f.pendingAt) < d.settle() {
			return false, f.pendingAt.Add(d.settle())
		}
	}
	f.content, f.mod, f.loaded = b, mod, true
	f.half, f.pending = false, nil
	if hosts {
		f.src.hosts, f.problems = parseHosts(path, b)
	} else {
		f.src.opts, f.problems = parseOpts(path, b)
	}
	for _, p := range f.problems {
		level := slog.LevelWarn
		if errors.Is(p, ErrNotDHCPv4) {
			level = slog.LevelDebug
		}
		d.logger().Log(context.Background(), level, "ironic dnsmasq line has no effect", "file", p.File, "line", p.Line, "err", p.Err)
	}
	return true, time.Time{}
}

var errNotRegular = errors.New("not a regular file")

func readRegular(path string) ([]byte, time.Time, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, time.Time{}, err
	}
	defer fh.Close()
	st, err := fh.Stat()
	if err != nil {
		return nil, time.Time{}, err
	}
	if !st.Mode().IsRegular() {
		return nil, time.Time{}, errNotRegular
	}
	b, err := io.ReadAll(io.LimitReader(fh, MaxFileSize+1))
	if err != nil {
		return nil, time.Time{}, err
	}
	if len(b) > MaxFileSize {
		return nil, time.Time{}, fmt.Errorf("larger than %d bytes", MaxFileSize)
	}
	return b, st.ModTime(), nil
}

// publish builds the table from the files in the order dnsmasq would have
// read them last: it reads a file again whenever it changes, so the file
// written most recently counts last; ties go by directory, then name.
func (d *Dir) publish() {
	type entry struct {
		k fileKey
		f *fileState
	}
	var es []entry
	for k, f := range d.files {
		if f.loaded {
			es = append(es, entry{k, f})
		}
	}
	slices.SortFunc(es, func(a, b entry) int {
		return cmp.Or(a.f.mod.Compare(b.f.mod), cmp.Compare(a.f.dir, b.f.dir), cmp.Compare(a.k.path, b.k.path))
	})
	srcs := make([]source, len(es))
	for i, e := range es {
		srcs[i] = e.f.src
	}
	d.tab.Store(newTable(srcs))
}

// MACs lists the MACs the host lines list and do not ignore: the ones
// whose leases the lease file gives Ironic back.
func (d *Dir) MACs() []net.HardwareAddr {
	t := d.tab.Load()
	if t == nil {
		return nil
	}
	var out []net.HardwareAddr
	for k, h := range t.hosts {
		if !h.Ignore {
			out = append(out, net.HardwareAddr(k))
		}
	}
	slices.SortFunc(out, func(a, b net.HardwareAddr) int { return cmp.Compare(string(a), string(b)) })
	return out
}

// Ignored says whether a host line lists mac as ignore: Ironic has
// cleaned the node up, and its DHCP server would not answer it.
func (d *Dir) Ignored(mac net.HardwareAddr) bool {
	t := d.tab.Load()
	if t == nil {
		return false
	}
	h, ok := t.hosts[string(mac)]
	return ok && h.Ignore
}

// Listed says whether a host line lists mac and does not ignore it: the
// node is Ironic's to boot.
func (d *Dir) Listed(mac net.HardwareAddr) bool {
	t := d.tab.Load()
	if t == nil {
		return false
	}
	h, ok := t.hosts[string(mac)]
	return ok && !h.Ignore
}
