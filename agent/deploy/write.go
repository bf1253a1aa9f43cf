package deploy

import (
	"bufio"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
	"golang.org/x/sys/unix"
)

// Image is what to write.
type Image struct {
	URL string
	// Token is the agent's token, which the server wants for an image
	// file: images are not for anyone on the network.
	Token string
	// Format is how the file is served: raw, raw.gz, raw.zst or raw.xz.
	Format string
	// SHA256 is the hash of the file as served; required.
	SHA256 string
	// RawSHA256 and RawSize describe the decompressed image, when known;
	// what was written is checked against them.
	RawSHA256 string
	RawSize   int64
	// Retries is how many failed attempts in a row to resume the
	// download survives (default 8, with a backoff up to 10 s).
	Retries int
	// StallTimeout is how long the server may send nothing before the
	// connection is given up and the download resumed with Range, as
	// a broken one is (DefaultStallTimeout when zero). A slow but
	// steady download is never cut.
	StallTimeout time.Duration
	// DiskTimeout is how long one write, the flush or one read of the
	// verification may take before the disk counts as wedged
	// (DefaultDiskTimeout when zero).
	DiskTimeout time.Duration
}

// Progress is reported while an image is written.
type Progress struct {
	Written    int64   // bytes written to the disk
	Downloaded int64   // bytes read from the server
	Total      int64   // the image's raw size, -1 when unknown
	Rate       float64 // bytes written per second so far
}

// Result says what a write did.
type Result struct {
	Device     string  `json:"device"`
	Written    int64   `json:"written"`
	Downloaded int64   `json:"downloaded"`
	SHA256     string  `json:"sha256"`
	RawSHA256  string  `json:"raw_sha256"`
	Seconds    float64 `json:"seconds"`
	MBps       float64 `json:"mb_per_s"`
	Resumes    int     `json:"resumes"`
	Verified   bool    `json:"verified"`
}

// BlockSize is the unit of writes: large, and a multiple of every sector
// and page size in use, so writes are aligned.
const BlockSize = 4 << 20

// ErrTooLarge is an image that does not fit the disk.
var ErrTooLarge = errors.New("image larger than the disk")

func decompressor(format string, r io.Reader) (io.Reader, func(), error) {
	switch format {
	case "raw":
		return r, func() {}, nil
	case "raw.gz":
		z, err := gzip.NewReader(r)
		if err != nil {
			return nil, nil, fmt.Errorf("gzip: %w", err)
		}
		return z, func() { z.Close() }, nil
	case "raw.zst":
		z, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(2), zstd.WithDecoderMaxWindow(1<<30))
		if err != nil {
			return nil, nil, fmt.Errorf("zstd: %w", err)
		}
		return z, z.Close, nil
	case "raw.xz":
		z, err := xz.NewReader(r)
		if err != nil {
			return nil, nil, fmt.Errorf("xz: %w", err)
		}
		return z, func() {}, nil
	}
	return nil, nil, fmt.Errorf("image format %q: want raw, raw.gz, raw.zst or raw.xz", format)
}

// countingHash hashes and counts what passes through it.
type countingHash struct {
	r io.Reader
	h hash.Hash
	n int64
}

func (c *countingHash) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.h.Write(p[:n])
	c.n += int64(n)
	return n, err
}

// deviceSize is the size of a block device or a regular file.
func deviceSize(f io.Seeker) (int64, error) {
	n, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return 0, err
	}
	_, err = f.Seek(0, io.SeekStart)
	return n, err
}

// Write writes im to the disk at path dev. The old partition tables go
// before the image's first byte, the image's own (its first MiB, and its
// last when it reaches the disk's end) after the rest of it is synced,
// and on any failure after writing began the tables are destroyed again:
// a half-written disk never boots as if it were good, even when the
// agent is killed or the power goes mid-write.
func Write(ctx context.Context, c *http.Client, im Image, dev string, progress func(Progress)) (res Result, err error) {
	return write(ctx, c, im, dev, progress, func(dev string) (device, error) { return os.OpenFile(dev, os.O_RDWR, 0) })
}

// write is Write on the device open gives.
func write(ctx context.Context, c *http.Client, im Image, dev string, progress func(Progress), open func(string) (device, error)) (res Result, err error) {
	start := time.Now()
	res.Device = dev
	if c == nil {
		c = http.DefaultClient
	}
	if im.SHA256 == "" {
		return res, errors.New("write image: no sha256 to check it against")
	}
	f, err := open(dev)
	if err != nil {
		return res, fmt.Errorf("write image: %w", err)
	}
	wd := newWatchdog(im.DiskTimeout)
	defer wd.stop()
	wedged := false
	defer func() {
		if !wedged {
			f.Close()
		}
		// A wedged disk's file stays open: the goroutine stuck in the
		// kernel still holds it.
	}()
	size, err := deviceSize(f)
	if err != nil {
		return res, fmt.Errorf("write image: size of %s: %w", dev, err)
	}
	if im.RawSize > size {
		return res, fmt.Errorf("write image: %w: %d bytes onto %s of %d", ErrTooLarge, im.RawSize, dev, size)
	}
	if im.Retries == 0 {
		im.Retries = 8
	}
	body, err := openResumable(ctx, c, im.URL, im.Token, im.Retries, im.StallTimeout)
	if err != nil {
		return res, fmt.Errorf("write image: %w", err)
	}
	defer body.Close()
	// The new image's tables are written only once the rest of it is on
	// the disk (held), and the old image's go before its first byte
	// changes (begin): a write cut short at any point, even by a kill
	// that runs no cleanup, leaves a disk firmware finds nothing on,
	// never a new table over half an image.
	held := newHeldBack(size)
	started := false
	begin := func() error {
		if started {
			return nil
		}
		started = true
		return wd.do(dev, "clearing the old partition tables", func() error { return spoil(f, size) })
	}
	defer func() {
		switch {
		case err != nil && started && errors.Is(err, ErrWedged):
			wedged = true
			err = fmt.Errorf("%w (its partial image could not be cleared: the disk does not answer)", err)
		case err != nil && started:
			serr := wd.do(dev, "clearing the partial image", func() error { return spoil(f, size) })
			if errors.Is(serr, ErrWedged) {
				wedged = true
			}
			if serr != nil {
				err = fmt.Errorf("%w (and clearing the partial image failed: %v)", err, serr)
			}
		}
	}()
	down := &countingHash{r: bufio.NewReaderSize(body, 1<<20), h: sha256.New()}
	raw, closeRaw, err := decompressor(im.Format, down)
	if err != nil {
		return res, fmt.Errorf("write image: %w", err)
	}
	defer closeRaw()
	rawHash := sha256.New()
	total := im.RawSize
	if total == 0 {
		total = -1
	}
	// Decompressing and writing overlap: this goroutine reads into one
	// buffer while the writer hashes and writes the one before.
	type block struct {
		buf []byte
		n   int
		off int64
	}
	free := make(chan []byte, 3)
	for i := 0; i < cap(free); i++ {
		free <- alignedBuffer(BlockSize)
	}
	full := make(chan block, cap(free))
	werr := make(chan error, 1)
	// A disk the watchdog gave up on may answer again: the writer then
	// writes nothing more of an image the agent has reported failed.
	var abandoned atomic.Bool
	flush := newWriteback(f)
	go func() {
		var err error
		for b := range full {
			if err == nil && !abandoned.Load() {
				rawHash.Write(b.buf[:b.n])
				wd.begin()
				werr := held.writeAt(f, b.buf[:b.n], b.off)
				if werr == nil {
					werr = flush.wrote(b.off + int64(b.n))
				}
				wd.end()
				if werr != nil {
					err = fmt.Errorf("write image: at byte %d of %s: %w", b.off, dev, werr)
				}
			}
			free <- b.buf
		}
		werr <- err
	}()
	defer func() {
		if errors.Is(err, ErrWedged) {
			abandoned.Store(true)
		}
	}()
	var closeFull sync.Once
	defer closeFull.Do(func() { close(full) })
	finish := func() error {
		closeFull.Do(func() { close(full) })
		select {
		case err := <-werr:
			return err
		case <-wd.tripped:
			return wd.err(dev, "a write")
		}
	}
	var off int64
	lastReport := time.Now()
	for {
		var buf []byte
		select {
		case buf = <-free:
		case <-wd.tripped:
			return res, wd.err(dev, "a write")
		}
		n, rerr := io.ReadFull(raw, buf)
		if n > 0 {
			if err := begin(); err != nil {
				if errors.Is(err, ErrWedged) {
					return res, err
				}
				return res, fmt.Errorf("write image: %w", err)
			}
			if off+int64(n) > size {
				if ferr := finish(); errors.Is(ferr, ErrWedged) {
					return res, ferr
				}
				return res, fmt.Errorf("write image: %w: it goes on past byte %d of %s", ErrTooLarge, size, dev)
			}
			select {
			case full <- block{buf, n, off}:
			case <-wd.tripped:
				return res, wd.err(dev, "a write")
			}
			off += int64(n)
			if progress != nil && time.Since(lastReport) > time.Second {
				lastReport = time.Now()
				progress(Progress{Written: off, Downloaded: down.n, Total: total, Rate: float64(off) / time.Since(start).Seconds()})
			}
		} else {
			free <- buf
		}
		if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
			break
		}
		if rerr != nil {
			if ferr := finish(); errors.Is(ferr, ErrWedged) {
				return res, ferr
			}
			return res, fmt.Errorf("write image: reading %s: %w", im.URL, rerr)
		}
		if ctx.Err() != nil {
			if ferr := finish(); errors.Is(ferr, ErrWedged) {
				return res, ferr
			}
			return res, ctx.Err()
		}
	}
	if err := finish(); err != nil {
		return res, err
	}
	buf := <-free // the writer has ended: every buffer is back
	// The decompressor may stop before the file does (trailing bytes):
	// the whole file counts for its hash.
	if _, err := io.Copy(io.Discard, down); err != nil {
		return res, fmt.Errorf("write image: reading %s: %w", im.URL, err)
	}
	res.Written, res.Downloaded, res.Resumes = off, down.n, body.resumes
	res.SHA256 = hex.EncodeToString(down.h.Sum(nil))
	res.RawSHA256 = hex.EncodeToString(rawHash.Sum(nil))
	if res.SHA256 != im.SHA256 {
		return res, fmt.Errorf("write image: sha256 of the download is %s, the catalog says %s", res.SHA256, im.SHA256)
	}
	if im.RawSHA256 != "" && res.RawSHA256 != im.RawSHA256 {
		return res, fmt.Errorf("write image: sha256 of the decompressed image is %s, the catalog says %s", res.RawSHA256, im.RawSHA256)
	}
	if im.RawSize > 0 && off != im.RawSize {
		return res, fmt.Errorf("write image: %d bytes decompressed, the catalog says %d", off, im.RawSize)
	}
	if err := wd.do(dev, "the flush", f.Sync); err != nil {
		if errors.Is(err, ErrWedged) {
			return res, err
		}
		return res, fmt.Errorf("write image: fsync %s: %w", dev, err)
	}
	// The rest of the image is on the disk: now its tables.
	if err := wd.do(dev, "writing the partition tables", func() error { return held.flush(f) }); err != nil {
		if errors.Is(err, ErrWedged) {
			return res, err
		}
		return res, fmt.Errorf("write image: the partition tables of %s: %w", dev, err)
	}
	// Read back from the disk, not from the page cache.
	if file, ok := asFile(f); ok {
		unix.Fadvise(int(file.Fd()), 0, off, unix.FADV_DONTNEED)
	}
	var back string
	if err := wd.do(dev, "a read of the verification", func() error {
		var err error
		back, err = readBack(watchedReader{f, wd}, off, buf)
		return err
	}); err != nil {
		if errors.Is(err, ErrWedged) {
			return res, err
		}
		return res, fmt.Errorf("write image: verify %s: %w", dev, err)
	}
	if back != res.RawSHA256 {
		return res, fmt.Errorf("write image: %s reads back with sha256 %s, %s was written", dev, back, res.RawSHA256)
	}
	res.Verified = true
	if file, ok := asFile(f); ok {
		rereadPartitions(file)
	}
	res.Seconds = time.Since(start).Seconds()
	res.MBps = float64(off) / 1e6 / res.Seconds
	if progress != nil {
		progress(Progress{Written: off, Downloaded: down.n, Total: total, Rate: float64(off) / res.Seconds})
	}
	return res, nil
}

func readBack(f io.ReaderAt, n int64, buf []byte) (string, error) {
	h := sha256.New()
	if _, err := io.CopyBuffer(h, io.NewSectionReader(f, 0, n), buf); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// alignedBuffer returns n bytes starting on a 4096-byte boundary, as
// direct I/O and some RAID controllers want.
func alignedBuffer(n int) []byte {
	b := make([]byte, n+4096)
	off := 0
	if r := int(uintptrOf(b) % 4096); r != 0 {
		off = 4096 - r
	}
	return b[off : off+n]
}

// rereadPartitions asks the kernel to read the new partition table; a
// regular file (in tests) has none to read.
func rereadPartitions(f *os.File) {
	if st, err := f.Stat(); err == nil && st.Mode()&os.ModeDevice != 0 {
		unix.IoctlSetInt(int(f.Fd()), unix.BLKRRPART, 0)
	}
}

// heldBack keeps the image's bytes that fall in the disk's first and
// last MiB (the MBR, the primary GPT, and a backup GPT when the image
// reaches the disk's end) out of the disk until flush: the image is
// written in order, so without it a disk cut short would start with the
// new image's tables over a part of the image.
type heldBack struct{ regions []heldRegion }

type heldRegion struct {
	off int64
	buf []byte
	// hi is how many bytes of buf the image has filled.
	hi int64
}

func newHeldBack(size int64) *heldBack {
	head := min(size, 1<<20)
	h := &heldBack{regions: []heldRegion{{off: 0, buf: make([]byte, head)}}}
	if tail := max(size-1<<20, head); tail < size {
		h.regions = append(h.regions, heldRegion{off: tail, buf: make([]byte, size-tail)})
	}
	return h
}

// writeAt writes p at off to f, but for the held regions' parts, which
// it keeps.
func (h *heldBack) writeAt(f io.WriterAt, p []byte, off int64) error {
	for len(p) > 0 {
		n := int64(len(p))
		var in *heldRegion
		for i := range h.regions {
			r := &h.regions[i]
			end := r.off + int64(len(r.buf))
			switch {
			case off >= r.off && off < end:
				in, n = r, min(n, end-off)
			case off < r.off:
				n = min(n, r.off-off)
			}
		}
		if in != nil {
			copy(in.buf[off-in.off:], p[:n])
			in.hi = max(in.hi, off+n-in.off)
		} else if _, err := f.WriteAt(p[:n], off); err != nil {
			return err
		}
		p, off = p[n:], off+n
	}
	return nil
}

// flush writes what the held regions keep, and syncs it.
func (h *heldBack) flush(f device) error {
	for _, r := range h.regions {
		if r.hi == 0 {
			continue
		}
		if _, err := f.WriteAt(r.buf[:r.hi], r.off); err != nil {
			return err
		}
	}
	return f.Sync()
}

// spoil zeroes the first and last MiB of a disk: the MBR, the primary GPT
// and the backup GPT, so firmware finds nothing to boot.
func spoil(f device, size int64) error {
	z := make([]byte, 1<<20)
	head := min(int64(len(z)), size)
	if _, err := f.WriteAt(z[:head], 0); err != nil {
		return err
	}
	if tail := max(size-int64(len(z)), head); size > tail {
		if _, err := f.WriteAt(z[:size-tail], tail); err != nil {
			return err
		}
	}
	return f.Sync()
}
