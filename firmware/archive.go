package firmware

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/ulikunitz/xz"
)

// ErrChecksum is returned when downloaded bytes do not match the size or
// SHA256 that the Release file or a Packages index promises.
var ErrChecksum = errors.New("checksum mismatch")

// ErrNoPackage is returned when the archive has no such package.
var ErrNoPackage = errors.New("package not in the archive")

// maxRelease bounds the one download that no index vouches for.
const maxRelease = 32 << 20

// Archive is one suite of one Debian mirror whose Release file has been
// read. It keeps the Packages indexes it has read, so several lookups cost
// one download per component and architecture. It is not safe for
// concurrent use.
type Archive struct {
	mirror, suite string
	client        *http.Client
	log           *slog.Logger
	release       Release
	indexes       map[string][]Package // by "component/arch" of the index
	// Downloaded counts the bytes fetched from the mirror so far.
	Downloaded int64
}

// Open reads the Release file of o's suite (after filling Mirror and Suite
// from the host's apt configuration where empty) and checks that it is the
// suite asked for.
func Open(ctx context.Context, o Options) (*Archive, error) {
	o, err := o.withSource()
	if err != nil {
		return nil, err
	}
	a := &Archive{mirror: strings.TrimRight(o.Mirror, "/"), suite: o.Suite, client: o.client(), log: o.log(),
		indexes: map[string][]Package{}}
	b, err := a.get(ctx, "dists/"+a.suite+"/Release", nil)
	if err != nil {
		return nil, fmt.Errorf("open archive: %w", err)
	}
	if a.release, err = ParseRelease(b); err != nil {
		return nil, fmt.Errorf("open archive %s %s: %w", a.mirror, a.suite, err)
	}
	if a.release.Suite != a.suite && a.release.Codename != a.suite {
		return nil, fmt.Errorf("open archive %s %s: Release is for suite %q, codename %q",
			a.mirror, a.suite, a.release.Suite, a.release.Codename)
	}
	return a, nil
}

// Mirror is the archive's base URL.
func (a *Archive) Mirror() string { return a.mirror }

// Suite is the suite asked for when the archive was opened.
func (a *Archive) Suite() string { return a.suite }

// get downloads a path under the mirror. With want, the bytes must have
// exactly its size and SHA256; a longer body is cut at size+1 bytes, so a
// hostile mirror cannot fill memory.
func (a *Archive) get(ctx context.Context, p string, want *FileSum) ([]byte, error) {
	url := a.mirror + "/" + p
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", url, err)
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("get %s: %s", url, resp.Status)
	}
	limit := int64(maxRelease)
	if want != nil {
		limit = want.Size + 1
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit))
	a.Downloaded += int64(len(b))
	if err != nil {
		return nil, fmt.Errorf("get %s: after %d bytes: %w", url, len(b), err)
	}
	if want == nil {
		if int64(len(b)) == limit {
			return nil, fmt.Errorf("get %s: larger than %d bytes", url, limit)
		}
		return b, nil
	}
	if int64(len(b)) != want.Size {
		return nil, fmt.Errorf("get %s: %d bytes, the index says %d: %w", url, len(b), want.Size, ErrChecksum)
	}
	if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != want.SHA256 {
		return nil, fmt.Errorf("get %s: sha256 %x, the index says %s: %w", url, sum, want.SHA256, ErrChecksum)
	}
	return b, nil
}

// Components of a Debian suite that rackboot reads.
const (
	Main            = "main"
	NonFreeFirmware = "non-free-firmware" // Debian 12 and later
)

// indexFile downloads a file of the suite's dists/ directory in the
// first compression the Release file lists (xz, gz, plain, in that
// order), verified against the Release file, and returns it
// decompressed.
func (a *Archive) indexFile(ctx context.Context, base string, exts ...string) (io.Reader, string, error) {
	for _, ext := range exts {
		sum, ok := a.release.Sums[base+ext]
		if !ok {
			continue
		}
		b, err := a.get(ctx, "dists/"+a.suite+"/"+base+ext, &sum)
		if err != nil {
			return nil, "", err
		}
		var r io.Reader = bytes.NewReader(b)
		switch ext {
		case ".xz":
			if r, err = xz.NewReader(r); err != nil {
				return nil, "", fmt.Errorf("%s: %w", base+ext, err)
			}
		case ".gz":
			if r, err = gzip.NewReader(r); err != nil {
				return nil, "", fmt.Errorf("%s: %w", base+ext, err)
			}
		}
		return r, base + ext, nil
	}
	return nil, "", fmt.Errorf("%s %s: the Release file lists no %s: %w", a.mirror, a.suite, base, ErrNoPackage)
}

// index returns the Packages index of a component for a Debian arch,
// verified against the Release file. It prefers the xz-compressed index,
// the one every Debian mirror carries.
func (a *Archive) index(ctx context.Context, component, arch string) ([]Package, error) {
	key := component + "/" + arch
	if p, ok := a.indexes[key]; ok {
		return p, nil
	}
	start := time.Now()
	r, name, err := a.indexFile(ctx, component+"/binary-"+arch+"/Packages", ".xz", ".gz", "")
	if err != nil {
		return nil, fmt.Errorf("read index: %w", err)
	}
	p, err := ParsePackages(r)
	if err != nil {
		return nil, fmt.Errorf("read index %s: %w", name, err)
	}
	a.log.Debug("read index", "file", name, "packages", len(p), "seconds", time.Since(start).Seconds())
	a.indexes[key] = p
	return p, nil
}

// Contents maps every file that a component's packages for a Debian
// arch install (Contents-<arch> and Contents-all, both verified against
// the Release file) to the name of the package holding it. Paths are as
// the Contents files spell them: relative, "lib/firmware/...".
func (a *Archive) Contents(ctx context.Context, component, arch string) (map[string]string, error) {
	out := map[string]string{}
	for _, ar := range []string{arch, DebianArchAll} {
		r, name, err := a.indexFile(ctx, component+"/Contents-"+ar, ".gz", "")
		if err != nil {
			if errors.Is(err, ErrNoPackage) && ar == DebianArchAll {
				continue // older suites list arch:all files in the arch's file
			}
			return nil, fmt.Errorf("read contents: %w", err)
		}
		if err := ParseContents(r, func(file, pkg string) {
			if _, ok := out[file]; !ok {
				out[file] = pkg
			}
		}); err != nil {
			return nil, fmt.Errorf("read contents %s: %w", name, err)
		}
	}
	return out, nil
}

// Find returns the newest version of a package of main built for a
// Debian arch (amd64, arm64, ...; "all" for Architecture: all packages).
// An arch index may also hold Architecture: all packages, which Find
// returns too.
func (a *Archive) Find(ctx context.Context, arch, name string) (Package, error) {
	return a.FindIn(ctx, Main, arch, name)
}

// FindIn is Find in another component of the suite (NonFreeFirmware).
func (a *Archive) FindIn(ctx context.Context, component, arch, name string) (Package, error) {
	var idxs []string
	if arch == DebianArchAll {
		// Where the arch indexes carry arch:all packages, one already read
		// saves downloading binary-all.
		if a.release.AllInArch {
			for _, ix := range []string{"amd64", "arm64"} {
				if _, ok := a.indexes[component+"/"+ix]; ok {
					idxs = append(idxs, ix)
					break
				}
			}
			if len(idxs) == 0 {
				idxs = append(idxs, "amd64")
			}
		}
		if _, ok := a.release.Sums[component+"/binary-all/Packages.xz"]; ok || !a.release.AllInArch {
			idxs = append(idxs, DebianArchAll)
		}
	} else {
		idxs = []string{arch}
	}
	var best Package
	found := false
	for _, ix := range idxs {
		pkgs, err := a.index(ctx, component, ix)
		if err != nil {
			return Package{}, fmt.Errorf("find %s (%s): %w", name, arch, err)
		}
		for _, p := range pkgs {
			if p.Name != name || (p.Arch != arch && p.Arch != DebianArchAll) {
				continue
			}
			if !found || CompareVersions(p.Version, best.Version) > 0 {
				best, found = p, true
			}
		}
		if found {
			return best, nil
		}
	}
	return Package{}, fmt.Errorf("find %s (%s) in %s %s %s: %w", name, arch, a.mirror, a.suite, component, ErrNoPackage)
}

// Resolve follows a metapackage (linux-image-cloud-amd64) to the package
// it depends on whose name starts with prefix
// (linux-image-6.1.0-NN-cloud-amd64). A package whose own name starts with
// prefix and that depends on no such package is returned as it is.
func (a *Archive) Resolve(ctx context.Context, arch, name, prefix string) (Package, error) {
	p, err := a.Find(ctx, arch, name)
	if err != nil {
		return Package{}, err
	}
	for _, dep := range DependsOn(p.Depends) {
		if strings.HasPrefix(dep, prefix) && dep != name {
			return a.Find(ctx, arch, dep)
		}
	}
	if strings.HasPrefix(name, prefix) {
		return p, nil
	}
	return Package{}, fmt.Errorf("resolve %s (%s): it depends on no %s* package: %w", name, arch, prefix, ErrNoPackage)
}

// Download fetches a package's .deb and checks it against its index entry.
func (a *Archive) Download(ctx context.Context, p Package) ([]byte, error) {
	start := time.Now()
	b, err := a.get(ctx, p.Filename, &p.Sum)
	if err != nil {
		return nil, fmt.Errorf("download %s %s: %w", p.Name, p.Version, err)
	}
	a.log.Info("downloaded package", "package", p.Name, "version", p.Version, "arch", p.Arch,
		"bytes", len(b), "seconds", time.Since(start).Round(time.Millisecond).Seconds())
	return b, nil
}
