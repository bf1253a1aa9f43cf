// Package catalog imports disk images into the appliance's image store:
// from an upload or an http(s) URL, checked against the sha256 the user
// gave, sniffed so the content matches the format its name claims, and
// converted on the appliance from qcow2 (which the agent should not
// parse) to raw plus zstd with qemu-img, under memory and time limits,
// after refusing backing files and external data files. Every image ends
// with the sha256 of the file served and of the raw image it holds, so
// the agent checks both.
package catalog

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
	"golang.org/x/sys/unix"

	"github.com/rackboot/rackboot/boot"
)

// Formats the catalog serves; qcow2 is accepted and converted.
var Formats = []string{"raw", "raw.gz", "raw.zst", "raw.xz"}

// ErrRefused wraps every refusal of an import: bad input, not a failure
// of the appliance.
var ErrRefused = errors.New("refused")

func refuse(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrRefused, fmt.Sprintf(format, a...))
}

// Catalog keeps image files in Dir.
type Catalog struct {
	Dir string
	// QemuImg is the qemu-img program (default "qemu-img", Debian's
	// qemu-utils).
	QemuImg string
	// ConvertMemory and ConvertTime bound one qemu-img run (defaults
	// 1 GiB of address space and 30 minutes).
	ConvertMemory int64
	ConvertTime   time.Duration
	// MaxSize bounds an upload or download (default 64 GiB).
	MaxSize int64
	// AllowNetworks are the private networks (RFC 1918, RFC 4193,
	// 100.64.0.0/10) URL imports may fetch from; loopback, link-local,
	// multicast and the appliance's own addresses are refused always.
	AllowNetworks []netip.Prefix
	Logger        *slog.Logger

	// Reserve is the space an import must leave free in Dir's file
	// system, so the database beside the images always has room
	// (default DefaultReserve; negative: none).
	Reserve int64
	// MaxRawSize bounds what an image holds uncompressed (default 4
	// TiB): a qcow2 claiming more is refused before it is converted.
	MaxRawSize int64
	// MaxImports bounds the imports running at once (default 2): one
	// more is refused with ErrBusy rather than left to fill the disk and
	// the CPU beside the others.
	MaxImports int

	// permit lets this package's tests serve imports from a loopback
	// address and port.
	permit func(netip.AddrPort) bool
	// free reports the bytes free to unprivileged writers in a dir
	// (statfs); tests replace it.
	free      func(dir string) (int64, error)
	slotsOnce sync.Once
	slots     chan struct{}
}

// DefaultReserve is the free space an import leaves by default.
const DefaultReserve = 2 << 30

// ErrBusy refuses an import while MaxImports others run.
var ErrBusy = errors.New("too many image imports at once: try again when one has finished")

func (c *Catalog) reserve() int64 {
	if c.Reserve == 0 {
		return DefaultReserve
	}
	return c.Reserve
}

func (c *Catalog) freeBytes() (int64, error) {
	if c.free != nil {
		return c.free(c.Dir)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(c.Dir, &st); err != nil {
		return 0, fmt.Errorf("free space of %s: %w", c.Dir, err)
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

// checkReserve refuses to go on when Dir's file system has less than
// the reserve free.
func (c *Catalog) checkReserve() error {
	r := c.reserve()
	if r < 0 {
		return nil
	}
	free, err := c.freeBytes()
	if err != nil {
		return err
	}
	if free < r {
		return refuse("the image would leave %d MiB free in %s, under the %d MiB images.reserve keeps for the database", free>>20, c.Dir, r>>20)
	}
	return nil
}

// acquire takes one of the import slots, or says the catalog is busy.
func (c *Catalog) acquire() (release func(), err error) {
	c.slotsOnce.Do(func() {
		n := c.MaxImports
		if n <= 0 {
			n = 2
		}
		c.slots = make(chan struct{}, n)
	})
	select {
	case c.slots <- struct{}{}:
		return func() { <-c.slots }, nil
	default:
		return nil, ErrBusy
	}
}

// reserveWriter checks the reserve every checkEvery bytes it writes.
type reserveWriter struct {
	w     io.Writer
	c     *Catalog
	since int64
}

const checkEvery = 16 << 20

func (r *reserveWriter) Write(p []byte) (int, error) {
	if r.since += int64(len(p)); r.since >= checkEvery {
		r.since = 0
		if err := r.c.checkReserve(); err != nil {
			return 0, err
		}
	}
	return r.w.Write(p)
}

// Imported is an image as stored: the file and what it holds.
type Imported struct {
	Name      string
	Arch      boot.Arch
	Format    string
	Path      string
	Size      int64
	SHA256    string
	RawSize   int64
	RawSHA256 string
	Source    string
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// ValidName reports whether name can name an image (and its file).
func ValidName(name string) bool { return nameRE.MatchString(name) && !strings.Contains(name, "..") }

// FormatOf names the format a file name says: raw (.raw, .img), raw.gz,
// raw.zst, raw.xz or qcow2.
func FormatOf(filename string) (string, error) {
	f := strings.ToLower(filepath.Base(filename))
	for _, s := range []struct{ suffix, format string }{
		{".raw.gz", "raw.gz"}, {".img.gz", "raw.gz"}, {".raw.zst", "raw.zst"}, {".img.zst", "raw.zst"},
		{".raw.xz", "raw.xz"}, {".img.xz", "raw.xz"}, {".qcow2", "qcow2"}, {".raw", "raw"}, {".img", "raw"},
	} {
		if strings.HasSuffix(f, s.suffix) {
			return s.format, nil
		}
	}
	return "", refuse("%q: the name must end in .raw, .img, .raw.gz, .raw.zst, .raw.xz or .qcow2 (add --format)", filename)
}

var magics = map[string][]byte{
	"raw.gz":  {0x1f, 0x8b},
	"raw.zst": {0x28, 0xb5, 0x2f, 0xfd},
	"raw.xz":  {0xfd, '7', 'z', 'X', 'Z', 0},
	"qcow2":   {'Q', 'F', 'I', 0xfb},
}

// sniff checks the first bytes agree with the format: a qcow2 named .raw
// would be written to a disk as is and never boot.
func sniff(head []byte, format string) error {
	if m, ok := magics[format]; ok {
		if !bytes.HasPrefix(head, m) {
			return refuse("the content is not %s (its first bytes are % x)", format, head[:min(len(head), 8)])
		}
		return nil
	}
	for f, m := range magics {
		if bytes.HasPrefix(head, m) {
			return refuse("the name says raw, the content is %s", f)
		}
	}
	return nil
}

func (c *Catalog) log() *slog.Logger {
	if c.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.Logger
}

// Import stores an image read from r. format is the format the upload
// claims; wantSHA, when given, is checked against the upload.
func (c *Catalog) Import(ctx context.Context, name string, arch boot.Arch, format string, r io.Reader, wantSHA, source string) (Imported, error) {
	im := Imported{Name: name, Arch: arch, Source: source}
	if !ValidName(name) {
		return im, refuse("image name %q: 1 to 64 letters, digits, dots, dashes and underscores", name)
	}
	if arch != boot.ArchX86_64 && arch != boot.ArchAArch64 {
		return im, refuse("architecture %q: want x86_64 or aarch64", arch)
	}
	if format != "qcow2" && !contains(Formats, format) {
		return im, refuse("format %q: want raw, raw.gz, raw.zst, raw.xz or qcow2", format)
	}
	wantSHA = strings.ToLower(strings.TrimSpace(wantSHA))
	if wantSHA != "" && !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(wantSHA) {
		return im, refuse("sha256 %q: want 64 hex digits", wantSHA)
	}
	if err := os.MkdirAll(c.Dir, 0o755); err != nil {
		return im, fmt.Errorf("import %s: %w", name, err)
	}
	for _, f := range append(Formats, "qcow2") {
		if _, err := os.Stat(filepath.Join(c.Dir, name+"."+f)); err == nil {
			return im, fmt.Errorf("import %s: an image file of that name exists: %w", name, os.ErrExist)
		}
	}
	release, err := c.acquire()
	if err != nil {
		return im, fmt.Errorf("import %s: %w", name, err)
	}
	defer release()
	if err := c.checkReserve(); err != nil {
		return im, err
	}
	tmp, err := os.CreateTemp(c.Dir, ".upload-*")
	if err != nil {
		return im, fmt.Errorf("import %s: %w", name, err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	max := c.MaxSize
	if max == 0 {
		max = 64 << 30
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(&reserveWriter{w: tmp, c: c}, h), io.LimitReader(r, max+1))
	if errors.Is(err, ErrRefused) {
		return im, err
	}
	if err != nil {
		return im, fmt.Errorf("import %s: receiving: %w", name, err)
	}
	if n > max {
		return im, refuse("the image is larger than the %d GiB limit", max>>30)
	}
	if n == 0 {
		return im, refuse("the image is empty")
	}
	got := hex.EncodeToString(h.Sum(nil))
	if wantSHA != "" && got != wantSHA {
		return im, refuse("sha256 of what arrived is %s, not %s (truncated or wrong file?)", got, wantSHA)
	}
	head := make([]byte, 8)
	hn, _ := tmp.ReadAt(head, 0)
	if err := sniff(head[:hn], format); err != nil {
		return im, err
	}
	path := tmp.Name()
	if format == "qcow2" {
		if path, err = c.convert(ctx, tmp.Name()); err != nil {
			return im, err
		}
		defer os.Remove(path)
		format = "raw.zst"
	}
	// Read the whole image back through its decompressor: a corrupt
	// archive is refused here, not found by the agent half-way.
	im.Format = format
	if im.Size, im.SHA256, im.RawSize, im.RawSHA256, err = measure(path, format); err != nil {
		return im, refuse("%s: %v", format, err)
	}
	if im.RawSize == 0 {
		return im, refuse("the image holds no data")
	}
	im.Path = filepath.Join(c.Dir, name+"."+format)
	if err := os.Chmod(path, 0o644); err != nil {
		return im, fmt.Errorf("import %s: %w", name, err)
	}
	if err := os.Link(path, im.Path); err != nil {
		return im, fmt.Errorf("import %s: %w", name, err)
	}
	c.log().Info("image imported", "image", name, "arch", arch, "format", format, "size", im.Size, "raw_size", im.RawSize)
	return im, nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// measure hashes a file and the raw image it decompresses to.
func measure(path, format string) (size int64, sum string, rawSize int64, rawSum string, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, "", 0, "", err
	}
	defer f.Close()
	fh := sha256.New()
	tee := io.TeeReader(f, fh)
	var raw io.Reader
	switch format {
	case "raw":
		raw = tee
	case "raw.gz":
		z, err := gzip.NewReader(tee)
		if err != nil {
			return 0, "", 0, "", err
		}
		raw = z
	case "raw.zst":
		z, err := zstd.NewReader(tee, zstd.WithDecoderMaxWindow(1<<30))
		if err != nil {
			return 0, "", 0, "", err
		}
		defer z.Close()
		raw = z
	case "raw.xz":
		z, err := xz.NewReader(tee)
		if err != nil {
			return 0, "", 0, "", err
		}
		raw = z
	}
	rh := sha256.New()
	rawSize, err = io.Copy(rh, raw)
	if err != nil {
		return 0, "", 0, "", err
	}
	// Trailing bytes after the compressed stream still count.
	size, err = io.Copy(io.Discard, tee)
	if err != nil {
		return 0, "", 0, "", err
	}
	st, err := f.Stat()
	if err != nil {
		return 0, "", 0, "", err
	}
	return st.Size(), hexSum(fh), rawSize, hexSum(rh), nil
}

func hexSum(h hash.Hash) string { return hex.EncodeToString(h.Sum(nil)) }

// qemuInfo is what the refusals need of `qemu-img info --output json`.
type qemuInfo struct {
	Format          string `json:"format"`
	VirtualSize     int64  `json:"virtual-size"`
	BackingFilename string `json:"backing-filename"`
	FullBacking     string `json:"full-backing-filename"`
	FormatSpecific  struct {
		Data struct {
			DataFile string `json:"data-file"`
		} `json:"data"`
	} `json:"format-specific"`
}

// qemu runs qemu-img under the catalog's limits: address space through
// prlimit, time through the context.
func (c *Catalog) qemu(ctx context.Context, args ...string) ([]byte, error) {
	prog := c.QemuImg
	if prog == "" {
		prog = "qemu-img"
	}
	mem, d := c.ConvertMemory, c.ConvertTime
	if mem == 0 {
		mem = 1 << 30
	}
	if d == 0 {
		d = 30 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	full := append([]string{fmt.Sprintf("--as=%d", mem), "--", prog}, args...)
	cmd := exec.CommandContext(ctx, "prlimit", full...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if ctx.Err() == context.DeadlineExceeded {
		return nil, fmt.Errorf("qemu-img %s: took longer than %v", args[0], d)
	}
	if err != nil {
		return nil, fmt.Errorf("qemu-img %s: %w: %s", args[0], err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// convert turns a qcow2 file into raw+zstd, refusing what could make
// qemu-img read other files: a backing file or an external data file.
func (c *Catalog) convert(ctx context.Context, path string) (string, error) {
	out, err := c.qemu(ctx, "info", "-f", "qcow2", "--output", "json", path)
	if err != nil {
		return "", refuse("not a usable qcow2 image: %v", err)
	}
	var info qemuInfo
	if err := json.Unmarshal(out, &info); err != nil {
		return "", fmt.Errorf("qemu-img info: %w", err)
	}
	switch {
	case info.Format != "qcow2":
		return "", refuse("qemu-img reads it as %q, not qcow2", info.Format)
	case info.BackingFilename != "" || info.FullBacking != "":
		return "", refuse("the qcow2 image has a backing file (%s): upload a flattened image (qemu-img convert -O qcow2)", info.BackingFilename)
	case info.FormatSpecific.Data.DataFile != "":
		return "", refuse("the qcow2 image has an external data file (%s)", info.FormatSpecific.Data.DataFile)
	}
	maxRaw := c.MaxRawSize
	if maxRaw == 0 {
		maxRaw = 4 << 40
	}
	if info.VirtualSize <= 0 || info.VirtualSize > maxRaw {
		return "", refuse("the qcow2 image's virtual size is %d GiB; at most %d GiB is taken", info.VirtualSize>>30, maxRaw>>30)
	}
	raw := path + ".raw"
	defer os.Remove(raw)
	if _, err := c.qemu(ctx, "convert", "-f", "qcow2", "-O", "raw", path, raw); err != nil {
		return "", fmt.Errorf("convert qcow2: %w", err)
	}
	// The raw file is sparse: what it took is what the reserve sees.
	if err := c.checkReserve(); err != nil {
		return "", err
	}
	zpath := path + ".zst"
	if err := compressZstd(raw, zpath, func(w io.Writer) io.Writer { return &reserveWriter{w: w, c: c} }); err != nil {
		os.Remove(zpath)
		if errors.Is(err, ErrRefused) {
			return "", err
		}
		return "", fmt.Errorf("convert qcow2: %w", err)
	}
	return zpath, nil
}

func compressZstd(src, dst string, wrap func(io.Writer) io.Writer) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	defer out.Close()
	z, err := zstd.NewWriter(wrap(out), zstd.WithEncoderLevel(zstd.SpeedDefault))
	if err != nil {
		return err
	}
	if _, err := io.Copy(z, in); err != nil {
		z.Close()
		return err
	}
	if err := z.Close(); err != nil {
		return err
	}
	return out.Sync()
}

// CheckURL refuses any source but http(s) URLs with a host.
func CheckURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return refuse("URL %q: %v", raw, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return refuse("URL %q: only http and https sources are accepted", raw)
	}
	if u.Host == "" {
		return refuse("URL %q: no host", raw)
	}
	return nil
}

// ImportURL downloads and imports an image. The format comes from the
// URL's path unless format is given.
func (c *Catalog) ImportURL(ctx context.Context, name string, arch boot.Arch, format, src, wantSHA string) (Imported, error) {
	if err := CheckURL(src); err != nil {
		return Imported{}, err
	}
	if format == "" {
		u, _ := url.Parse(src)
		f, err := FormatOf(u.Path)
		if err != nil {
			return Imported{}, err
		}
		format = f
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, src, nil)
	if err != nil {
		return Imported{}, refuse("URL %q: %v", src, err)
	}
	resp, err := c.client().Do(req)
	if err != nil {
		var be *blockedError
		if errors.As(err, &be) {
			return Imported{}, refuse("download %s: the source (or a redirect) is %s", src, be.rule)
		}
		var ue *url.Error
		if errors.As(err, &ue) && ue.Err != nil && !isNetError(ue.Err) {
			return Imported{}, refuse("download %s: %v", src, ue.Err) // a redirect rule
		}
		// What a socket error says (refused, timed out, reset) would make
		// imports a port scanner of the provisioning network: the caller
		// learns the source was not reached, the log says why.
		c.log().Warn("image download failed", "image", name, "url", src, "err", err)
		return Imported{}, fmt.Errorf("import %s: download %s: the source could not be reached (the server's log says why)", name, src)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Imported{}, refuse("download %s: %s", src, resp.Status)
	}
	// A body shorter than announced is a truncated download.
	body := io.Reader(resp.Body)
	im, err := c.Import(ctx, name, arch, format, body, wantSHA, src)
	if err == nil && resp.ContentLength >= 0 && im.Size != resp.ContentLength && format != "qcow2" {
		os.Remove(im.Path)
		return Imported{}, refuse("download %s: got %d of %d bytes", src, im.Size, resp.ContentLength)
	}
	return im, err
}

// isNetError tells socket and protocol errors from the redirect rules.
func isNetError(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

// Remove deletes an image's file.
func (c *Catalog) Remove(name, format string) error {
	if !ValidName(name) || !contains(Formats, format) {
		return refuse("image %q (%s): not a name the catalog could have stored", name, format)
	}
	err := os.Remove(filepath.Join(c.Dir, name+"."+format))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// Path is where an image's file is.
func (c *Catalog) Path(name, format string) (string, error) {
	if !ValidName(name) || !contains(Formats, format) {
		return "", refuse("image %q (%s): not a name the catalog could have stored", name, format)
	}
	return filepath.Join(c.Dir, name+"."+format), nil
}
