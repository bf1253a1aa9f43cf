package firmware

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Options says where to fetch from.
type Options struct {
	// Mirror is the Debian archive's base URL; empty reads the host's apt
	// configuration.
	Mirror string
	// Suite is the release, e.g. bookworm; empty reads apt's configuration.
	Suite  string
	Client *http.Client
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

// withDefaults fills Mirror and Suite from the host's apt sources.
func (o Options) withDefaults() (Options, error) {
	if o.Mirror != "" && o.Suite != "" {
		return o, nil
	}
	src, err := HostAptSource("/etc/apt")
	if err != nil {
		return o, fmt.Errorf("no --mirror/--suite given and %w", err)
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
	Package string `json:"package"`
	Version string `json:"version"`
	Arch    string `json:"arch"`
	Member  string `json:"member"`
	DebSHA  string `json:"deb_sha256"`
	SHA256  string `json:"sha256"`
	Size    int64  `json:"size"`
}

// Manifest records where every installed file came from.
type Manifest struct {
	Mirror string           `json:"mirror"`
	Suite  string           `json:"suite"`
	Files  map[string]Entry `json:"files"` // by destination path
}

// ReadManifest reads dir/manifest.json.
func ReadManifest(dir string) (Manifest, error) {
	var m Manifest
	b, err := os.ReadFile(filepath.Join(dir, ManifestFile))
	if err != nil {
		return m, fmt.Errorf("read manifest: %w", err)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("read manifest %s: %w", filepath.Join(dir, ManifestFile), err)
	}
	return m, nil
}

func fileSHA(path string) (string, int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", 0, err
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:]), int64(len(b)), nil
}

// Verify checks every file of the manifest in dir against its recorded
// hash and size, and that the manifest covers every wanted file.
func Verify(dir string, wanted []Wanted) error {
	m, err := ReadManifest(dir)
	if err != nil {
		return err
	}
	var bad []string
	for _, w := range wanted {
		if _, ok := m.Files[w.Dest]; !ok {
			bad = append(bad, w.Dest+": not fetched")
		}
	}
	for dest, e := range m.Files {
		sum, size, err := fileSHA(filepath.Join(dir, dest))
		switch {
		case err != nil:
			bad = append(bad, fmt.Sprintf("%s: %v", dest, err))
		case sum != e.SHA256 || size != e.Size:
			bad = append(bad, fmt.Sprintf("%s: sha256 %s, manifest says %s", dest, sum, e.SHA256))
		}
	}
	if len(bad) > 0 {
		sort.Strings(bad)
		return fmt.Errorf("verify %s: %s", dir, strings.Join(bad, "; "))
	}
	return nil
}

// Fetch installs the wanted files into dir from Debian's archive. Files
// already present and matching the manifest are not downloaded again. A
// package whose bytes do not match the archive's index is refused and
// nothing of it is written.
func Fetch(ctx context.Context, o Options, dir string, wanted []Wanted) (Manifest, error) {
	o, err := o.withDefaults()
	if err != nil {
		return Manifest{}, err
	}
	m, err := ReadManifest(dir)
	if err != nil || m.Files == nil {
		m = Manifest{Files: map[string]Entry{}}
	}
	m.Mirror, m.Suite = o.Mirror, o.Suite

	// Group what is still missing by package, so each .deb is read once.
	type key struct{ pkg, arch string }
	todo := map[key][]Wanted{}
	var keys []key
	for _, w := range wanted {
		if e, ok := m.Files[w.Dest]; ok {
			if sum, size, err := fileSHA(filepath.Join(dir, w.Dest)); err == nil && sum == e.SHA256 && size == e.Size {
				continue
			}
		}
		k := key{w.Package, w.Arch}
		if todo[k] == nil {
			keys = append(keys, k)
		}
		todo[k] = append(todo[k], w)
	}
	if len(keys) == 0 {
		o.log().Info("firmware up to date", "dir", dir)
		return m, nil
	}
	a, err := openArchive(ctx, o)
	if err != nil {
		return m, fmt.Errorf("fetch firmware: %w", err)
	}
	for _, k := range keys {
		p, err := a.find(ctx, k.pkg, k.arch)
		if err != nil {
			return m, fmt.Errorf("fetch firmware: %w", err)
		}
		if err := installPackage(ctx, a, p, dir, todo[k], &m); err != nil {
			return m, fmt.Errorf("fetch firmware: %w", err)
		}
	}
	b, _ := json.MarshalIndent(m, "", "  ")
	if err := writeAtomic(filepath.Join(dir, ManifestFile), append(b, '\n')); err != nil {
		return m, fmt.Errorf("fetch firmware: write manifest: %w", err)
	}
	return m, nil
}

func installPackage(ctx context.Context, a *archive, p Package, dir string, ws []Wanted, m *Manifest) error {
	start := time.Now()
	deb, err := a.get(ctx, p.Filename, &p.Sum)
	if err != nil {
		return fmt.Errorf("package %s %s: %w", p.Name, p.Version, err)
	}
	want := map[string]bool{}
	for _, w := range ws {
		want[w.Member] = true
	}
	files, err := debMembers(deb, want)
	if err != nil {
		return fmt.Errorf("package %s %s: %w", p.Name, p.Version, err)
	}
	for _, w := range ws {
		b := files[w.Member]
		if err := writeAtomic(filepath.Join(dir, w.Dest), b); err != nil {
			return fmt.Errorf("install %s: %w", w.Dest, err)
		}
		s := sha256.Sum256(b)
		m.Files[w.Dest] = Entry{Package: p.Name, Version: p.Version, Arch: p.Arch, Member: w.Member,
			DebSHA: p.Sum.SHA256, SHA256: hex.EncodeToString(s[:]), Size: int64(len(b))}
	}
	a.o.log().Info("fetched package", "package", p.Name, "version", p.Version, "arch", p.Arch,
		"bytes", p.Sum.Size, "files", len(ws), "seconds", time.Since(start).Round(time.Millisecond).Seconds())
	return nil
}

// FetchKernel installs the kernel of a Debian kernel metapackage (e.g.
// linux-image-amd64 or linux-image-cloud-arm64 for Debian arch amd64 or
// arm64) as dest, verified like the loaders, and returns the real
// package's name and version.
func FetchKernel(ctx context.Context, o Options, meta, arch, dest string) (string, error) {
	o, err := o.withDefaults()
	if err != nil {
		return "", err
	}
	a, err := openArchive(ctx, o)
	if err != nil {
		return "", fmt.Errorf("fetch kernel: %w", err)
	}
	p, err := a.resolveMeta(ctx, meta, arch, "linux-image-")
	if err != nil {
		return "", fmt.Errorf("fetch kernel: %w", err)
	}
	abi := strings.TrimPrefix(p.Name, "linux-image-")
	member := "boot/vmlinuz-" + abi
	deb, err := a.get(ctx, p.Filename, &p.Sum)
	if err != nil {
		return "", fmt.Errorf("fetch kernel %s: %w", p.Name, err)
	}
	files, err := debMembers(deb, map[string]bool{member: true})
	if err != nil {
		return "", fmt.Errorf("fetch kernel %s: %w", p.Name, err)
	}
	if err := writeAtomic(dest, files[member]); err != nil {
		return "", fmt.Errorf("fetch kernel %s: %w", p.Name, err)
	}
	return p.Name + " " + p.Version, nil
}

// AptSource is one deb source of the host's apt configuration.
type AptSource struct {
	URI, Suite string
}

// HostAptSource returns the host's main Debian archive: the first deb
// source with component main whose suite is a release, not -updates or
// -security.
func HostAptSource(etcApt string) (AptSource, error) {
	var texts []string
	if b, err := os.ReadFile(filepath.Join(etcApt, "sources.list")); err == nil {
		texts = append(texts, string(b))
	}
	files, _ := filepath.Glob(filepath.Join(etcApt, "sources.list.d", "*.sources"))
	lists, _ := filepath.Glob(filepath.Join(etcApt, "sources.list.d", "*.list"))
	for _, f := range append(files, lists...) {
		if b, err := os.ReadFile(f); err == nil {
			texts = append(texts, string(b))
		}
	}
	for _, t := range texts {
		for _, s := range ParseAptSources(t) {
			if !strings.Contains(s.Suite, "-") && !strings.Contains(s.URI, "security") {
				return s, nil
			}
		}
	}
	return AptSource{}, errors.New("the host's apt configuration names no Debian archive with component main")
}

// ParseAptSources reads deb sources with component main, from one-line
// (sources.list) or deb822 (.sources) text.
func ParseAptSources(text string) []AptSource {
	var out []AptSource
	if st, err := ParseStanzas(strings.NewReader(stripComments(text))); err == nil {
		for _, s := range st {
			if s["URIs"] == "" {
				continue
			}
			if !hasWord(s["Types"], "deb") || !hasWord(s["Components"], "main") || strings.EqualFold(s["Enabled"], "no") {
				continue
			}
			for _, uri := range strings.Fields(s["URIs"]) {
				for _, suite := range strings.Fields(s["Suites"]) {
					out = append(out, AptSource{URI: uri, Suite: suite})
				}
			}
		}
	}
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(strings.TrimSpace(line))
		if len(f) < 4 || f[0] != "deb" {
			continue
		}
		f = f[1:]
		if strings.HasPrefix(f[0], "[") { // options such as [arch=amd64 signed-by=...]
			for len(f) > 0 && !strings.HasSuffix(f[0], "]") {
				f = f[1:]
			}
			if len(f) > 0 {
				f = f[1:]
			}
		}
		if len(f) >= 3 && hasWord(strings.Join(f[2:], " "), "main") {
			out = append(out, AptSource{URI: f[0], Suite: f[1]})
		}
	}
	return out
}

func stripComments(text string) string {
	var b strings.Builder
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		if strings.HasPrefix(line, "deb ") || strings.HasPrefix(line, "deb-src ") {
			b.WriteString("\n") // one-line entries are not deb822; keep paragraphs apart
			continue
		}
		b.WriteString(line + "\n")
	}
	return b.String()
}

func hasWord(s, w string) bool {
	for _, f := range strings.Fields(s) {
		if f == w {
			return true
		}
	}
	return false
}
