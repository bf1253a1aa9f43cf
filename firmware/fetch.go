package firmware

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/rackboot/rackboot/internal/atomicfile"
)

// ErrMismatch is returned by Verify when a file is missing or differs from
// the manifest.
var ErrMismatch = errors.New("file does not match the manifest")

// Options says where to fetch from and where to put the files.
type Options struct {
	// Mirror is the Debian archive's base URL, e.g.
	// http://deb.debian.org/debian; empty reads the host's apt
	// configuration.
	Mirror string
	// Suite is the release, e.g. bookworm; empty reads the host's apt
	// configuration.
	Suite string
	// Dest is the directory the files and manifest.json go to.
	Dest string
	// Files are the files Fetch installs; nil means Loaders().
	Files []Wanted
	// Update makes Fetch read the archive's indexes even when every file is
	// present and intact, and replace those whose package the archive now
	// has in another version. Without it, a complete and intact Dest makes
	// no request at all, so a fetch works offline once done.
	Update bool
	// AptDir is where the apt configuration is read from; empty means
	// /etc/apt.
	AptDir string
	// Client makes the requests; nil means a client with a 10 minute
	// timeout per request.
	Client *http.Client
	// Logger receives a line per package downloaded; nil means discard.
	Logger *slog.Logger
}

func (o Options) client() *http.Client {
	if o.Client != nil {
		return o.Client
	}
	return &http.Client{Timeout: 10 * time.Minute}
}

func (o Options) log() *slog.Logger {
	if o.Logger != nil {
		return o.Logger
	}
	return slog.New(slog.DiscardHandler)
}

// withSource fills Mirror and Suite from the host's apt configuration.
func (o Options) withSource() (Options, error) {
	if o.Mirror != "" && o.Suite != "" {
		return o, nil
	}
	dir := o.AptDir
	if dir == "" {
		dir = "/etc/apt"
	}
	src, err := HostAptSource(dir)
	if err != nil {
		return o, fmt.Errorf("no mirror and suite given, and %w", err)
	}
	if o.Mirror == "" {
		o.Mirror = src.URI
	}
	if o.Suite == "" {
		o.Suite = src.Suite
	}
	return o, nil
}

// Entry is one installed file in the manifest.
type Entry struct {
	Package   string `json:"package"`
	Version   string `json:"version"`
	Arch      string `json:"arch"`
	Member    string `json:"member"`     // path inside the package
	DebSHA256 string `json:"deb_sha256"` // of the .deb it came from
	SHA256    string `json:"sha256"`     // of the file
	Size      int64  `json:"size"`
}

// Manifest records where every installed file came from; it is written as
// manifest.json in the destination dir.
type Manifest struct {
	Mirror string           `json:"mirror"`
	Suite  string           `json:"suite"`
	Files  map[string]Entry `json:"files"` // by slash-separated path under the dir
}

// ReadManifest reads dir/manifest.json.
func ReadManifest(dir string) (Manifest, error) {
	var m Manifest
	p := filepath.Join(dir, ManifestFile)
	b, err := os.ReadFile(p)
	if err != nil {
		return m, fmt.Errorf("read manifest: %w", err)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("read manifest %s: %w", p, err)
	}
	if m.Files == nil {
		m.Files = map[string]Entry{}
	}
	return m, nil
}

func writeManifest(dir string, m Manifest) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("write manifest: %w", err)
	}
	if err := atomicfile.Write(filepath.Join(dir, ManifestFile), append(b, '\n')); err != nil {
		return fmt.Errorf("write manifest: %w", err)
	}
	return nil
}

// checkFile reports whether dir/dest holds exactly what e records.
func checkFile(dir, dest string, e Entry) error {
	if !filepath.IsLocal(filepath.FromSlash(dest)) {
		return fmt.Errorf("%s: not a path inside the dir", dest)
	}
	f, err := os.Open(filepath.Join(dir, filepath.FromSlash(dest)))
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return fmt.Errorf("%s: %w", dest, err)
	}
	if sum := hex.EncodeToString(h.Sum(nil)); n != e.Size || sum != e.SHA256 {
		return fmt.Errorf("%s: %d bytes with sha256 %s, the manifest says %d bytes with %s", dest, n, sum, e.Size, e.SHA256)
	}
	return nil
}

// Verify checks every file the manifest in dir lists against its recorded
// size and SHA256. An empty manifest is an error: there is nothing to boot.
func Verify(dir string) error {
	m, err := ReadManifest(dir)
	if err != nil {
		return fmt.Errorf("verify %s: %w", dir, err)
	}
	if len(m.Files) == 0 {
		return fmt.Errorf("verify %s: the manifest lists no files: %w", dir, ErrMismatch)
	}
	var bad []string
	for dest, e := range m.Files {
		if err := checkFile(dir, dest, e); err != nil {
			bad = append(bad, err.Error())
		}
	}
	if len(bad) > 0 {
		sort.Strings(bad)
		return fmt.Errorf("verify %s: %s: %w", dir, strings.Join(bad, "; "), ErrMismatch)
	}
	return nil
}

// VerifyWanted is Verify, and also checks that the manifest lists every
// wanted file as taken from the wanted package and member: a firmware dir
// fetched by an older rackboot may lack a loader that this one offers.
func VerifyWanted(dir string, wanted []Wanted) error {
	if err := Verify(dir); err != nil {
		return err
	}
	m, err := ReadManifest(dir)
	if err != nil {
		return fmt.Errorf("verify %s: %w", dir, err)
	}
	var bad []string
	for _, w := range wanted {
		e, ok := m.Files[w.Dest]
		switch {
		case !ok:
			bad = append(bad, w.Dest+": not fetched")
		case e.Package != w.Package || e.Member != w.Member:
			bad = append(bad, fmt.Sprintf("%s: from %s %s, want %s %s", w.Dest, e.Package, e.Member, w.Package, w.Member))
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("verify %s: %s: %w", dir, strings.Join(bad, "; "), ErrMismatch)
	}
	return nil
}

// Fetch installs o.Files (the boot loaders by default) into o.Dest from
// Debian's archive and returns the manifest it wrote. Files present and
// matching the manifest are not downloaded again. Every package is
// downloaded and checked before any file is written: a package whose
// bytes do not match the archive's index is refused, and then nothing is
// written at all.
func Fetch(ctx context.Context, o Options) (Manifest, error) {
	if o.Files == nil {
		o.Files = Loaders()
	}
	m, err := fetch(ctx, o, nil)
	if err != nil {
		return m, fmt.Errorf("fetch firmware: %w", err)
	}
	return m, nil
}

// FetchPackage installs files of one Debian package into o.Dest: files
// maps a path inside the package (usr/lib/ipxe/snponly.efi) to a
// slash-separated path under o.Dest. It records them in o.Dest's manifest
// beside whatever it already lists, and like Fetch downloads nothing when
// they are already there and intact. o.Files is ignored.
func FetchPackage(ctx context.Context, o Options, arch, pkg string, files map[string]string) (Manifest, error) {
	o.Files = wantedOf(pkg, arch, files)
	m, err := fetch(ctx, o, nil)
	if err != nil {
		return m, fmt.Errorf("fetch package %s (%s): %w", pkg, arch, err)
	}
	return m, nil
}

func wantedOf(pkg, arch string, files map[string]string) []Wanted {
	ws := make([]Wanted, 0, len(files))
	for member, dest := range files {
		ws = append(ws, Wanted{Package: pkg, Arch: arch, Member: member, Dest: dest})
	}
	sort.Slice(ws, func(i, j int) bool { return ws[i].Dest < ws[j].Dest })
	return ws
}

// ResolvePackage follows a metapackage to the package it depends on whose
// name starts with prefix: ("amd64", "linux-image-cloud-amd64",
// "linux-image-") gives linux-image-6.1.0-NN-cloud-amd64.
func ResolvePackage(ctx context.Context, o Options, arch, meta, prefix string) (Package, error) {
	a, err := Open(ctx, o)
	if err != nil {
		return Package{}, err
	}
	return a.Resolve(ctx, arch, meta, prefix)
}

// FetchKernel installs the kernel of a Debian kernel metapackage
// (linux-image-amd64, linux-image-cloud-arm64, ...) for a Debian arch as
// the file dest, recorded in the manifest of dest's directory, and
// returns the real package's name and version. A kernel already there and
// matching the manifest is not downloaded again.
func FetchKernel(ctx context.Context, o Options, meta, arch, dest string) (string, error) {
	o.Dest = filepath.Dir(dest)
	name := filepath.Base(dest)
	if m, err := ReadManifest(o.Dest); err == nil && !o.Update {
		if e, ok := m.Files[name]; ok && kernelOf(meta, e.Package) && checkFile(o.Dest, name, e) == nil {
			return e.Package + " " + e.Version, nil
		}
	}
	a, err := Open(ctx, o)
	if err != nil {
		return "", fmt.Errorf("fetch kernel %s: %w", meta, err)
	}
	p, err := a.Resolve(ctx, arch, meta, "linux-image-")
	if err != nil {
		return "", fmt.Errorf("fetch kernel: %w", err)
	}
	o.Files = []Wanted{{Package: p.Name, Arch: arch, Member: "boot/vmlinuz-" + strings.TrimPrefix(p.Name, "linux-image-"), Dest: name}}
	o.Update = true // the manifest entry, if any, is for another kernel
	if _, err := fetch(ctx, o, a); err != nil {
		return "", fmt.Errorf("fetch kernel %s: %w", meta, err)
	}
	return p.Name + " " + p.Version, nil
}

// kernelOf reports whether pkg (linux-image-6.1.0-NN-cloud-amd64) is a
// kernel of the flavour meta (linux-image-cloud-amd64) stands for, and not
// of another flavour for the same architecture (linux-image-amd64).
func kernelOf(meta, pkg string) bool {
	flavour := strings.TrimPrefix(meta, "linux-image-")
	abi, ok := strings.CutSuffix(strings.TrimPrefix(pkg, "linux-image-"), "-"+flavour)
	return ok && abi != "" && strings.Trim(abi, "0123456789.-+~") == ""
}

// fetch installs o.Files into o.Dest, opening the archive only when a file
// is missing or damaged, or o.Update asks; a may be an archive already
// open.
func fetch(ctx context.Context, o Options, a *Archive) (Manifest, error) {
	if o.Dest == "" {
		return Manifest{}, errors.New("no destination dir")
	}
	for _, w := range o.Files {
		if !filepath.IsLocal(filepath.FromSlash(w.Dest)) || w.Dest == ManifestFile || path.Clean(w.Dest) != w.Dest {
			return Manifest{}, fmt.Errorf("destination %q: not a clean path inside the dir", w.Dest)
		}
	}
	log := o.log()
	m, err := ReadManifest(o.Dest)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			log.Warn("ignoring unreadable manifest", "dir", o.Dest, "err", err)
		}
		m = Manifest{Files: map[string]Entry{}}
	}

	// A package is fetched whole when any of its files needs it, so the
	// files of one package never come from two versions.
	type key struct{ pkg, arch string }
	groups := map[key][]Wanted{}
	var keys []key
	stale := map[key]bool{}
	for _, w := range o.Files {
		k := key{w.Package, w.Arch}
		if groups[k] == nil {
			keys = append(keys, k)
		}
		groups[k] = append(groups[k], w)
		e, ok := m.Files[w.Dest]
		if !ok || e.Package != w.Package || e.Member != w.Member {
			stale[k] = true
			continue
		}
		if err := checkFile(o.Dest, w.Dest, e); err != nil {
			log.Info("file to fetch again", "file", w.Dest, "reason", err)
			stale[k] = true
		}
	}
	if o.Suite != "" && m.Suite != "" && o.Suite != m.Suite {
		o.Update = true // another release was asked for: its versions win
	}
	if len(stale) == 0 && !o.Update {
		log.Debug("files up to date", "dir", o.Dest, "files", len(o.Files))
		return m, nil
	}

	if a == nil {
		if a, err = Open(ctx, o); err != nil {
			return m, err
		}
	}
	type install struct {
		w Wanted
		p Package
		b []byte
	}
	var todo []install
	for _, k := range keys {
		p, err := a.Find(ctx, k.arch, k.pkg)
		if err != nil {
			return m, err
		}
		if !stale[k] {
			// Update: keep what came from the same .deb.
			same := true
			for _, w := range groups[k] {
				if m.Files[w.Dest].DebSHA256 != p.Sum.SHA256 {
					same = false
				}
			}
			if same {
				continue
			}
		}
		deb, err := a.Download(ctx, p)
		if err != nil {
			return m, err
		}
		members := make([]string, 0, len(groups[k]))
		for _, w := range groups[k] {
			members = append(members, w.Member)
		}
		files, err := debFiles(deb, members)
		if err != nil {
			return m, fmt.Errorf("package %s %s: %w", p.Name, p.Version, err)
		}
		for _, w := range groups[k] {
			todo = append(todo, install{w, p, files[w.Member]})
		}
	}

	m.Mirror, m.Suite = a.Mirror(), a.Suite()
	for _, in := range todo {
		if err := atomicfile.Write(filepath.Join(o.Dest, filepath.FromSlash(in.w.Dest)), in.b); err != nil {
			// Record what is already in place, so the next run redoes only
			// the rest.
			if werr := writeManifest(o.Dest, m); werr != nil {
				log.Warn("manifest not written", "dir", o.Dest, "err", werr)
			}
			return m, fmt.Errorf("install %s: %w", in.w.Dest, err)
		}
		s := sha256.Sum256(in.b)
		m.Files[in.w.Dest] = Entry{Package: in.p.Name, Version: in.p.Version, Arch: in.p.Arch, Member: in.w.Member,
			DebSHA256: in.p.Sum.SHA256, SHA256: hex.EncodeToString(s[:]), Size: int64(len(in.b))}
		log.Info("installed", "file", in.w.Dest, "package", in.p.Name, "version", in.p.Version, "bytes", len(in.b))
	}
	if err := writeManifest(o.Dest, m); err != nil {
		return m, err
	}
	return m, nil
}
