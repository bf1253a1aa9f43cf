package ramdisk

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/rackboot/rackboot/firmware"
	"github.com/rackboot/rackboot/internal/atomicfile"
)

// FirmwareDir is where the initrd carries firmware files: the kernel's
// firmware loader looks there (and the agent loads drivers before it
// could mount anything else).
const FirmwareDir = "lib/firmware"

// FirmwarePackage is a package of Debian's non-free-firmware component
// that firmware files of the initrd came from.
type FirmwarePackage struct {
	Name      string `json:"name"`
	Version   string `json:"version"`
	Arch      string `json:"arch"`
	DebSHA256 string `json:"deb_sha256"` // of the .deb, as the archive's index lists it
	Filename  string `json:"filename"`   // pool path under the mirror
	Size      int64  `json:"size"`
}

// firmwareMember is where one requested firmware file is in a package.
type firmwareMember struct {
	Package string `json:"package"`
	Member  string `json:"member"` // the path inside the package
}

// resolveFirmware finds, in a component's Contents (file path → package),
// the files the modules request (module → "firmware=" entries, relative
// to /lib/firmware; a few are globs). It returns each file found under
// its path relative to /lib/firmware, and the requests nothing provides,
// sorted. A pure function: the archive is read elsewhere.
func resolveFirmware(requests map[string][]string, contents map[string]string) (found map[string]firmwareMember, missing []string) {
	// What the packages put under /lib/firmware (or /usr/lib/firmware,
	// where newer packages move it), by the path a driver asks for.
	avail := map[string]firmwareMember{}
	for file, pkg := range contents {
		rel, ok := strings.CutPrefix(strings.TrimPrefix(file, "usr/"), FirmwareDir+"/")
		if !ok || rel == "" {
			continue
		}
		if old, dup := avail[rel]; !dup || file < old.Member {
			avail[rel] = firmwareMember{Package: pkg, Member: file}
		}
	}
	var all []string // for globs
	found = map[string]firmwareMember{}
	for _, files := range requests {
		for _, f := range files {
			f = path.Clean(f)
			if m, ok := avail[f]; ok {
				found[f] = m
				continue
			}
			if strings.ContainsAny(f, "*?[") {
				if all == nil {
					all = slices.Sorted(maps.Keys(avail))
				}
				n := 0
				for _, a := range all {
					if ok, _ := path.Match(f, a); ok {
						found[a] = avail[a]
						n++
					}
				}
				if n > 0 {
					continue
				}
			}
			if !slices.Contains(missing, f) {
				missing = append(missing, f)
			}
		}
	}
	sort.Strings(missing)
	return found, missing
}

// firmwareRecord is the cached resolution of one architecture's firmware
// requests: what to take from which package.
type firmwareRecord struct {
	Requests string                    `json:"requests_sha256"` // of the sorted request list
	Packages []FirmwarePackage         `json:"packages"`
	Files    map[string]firmwareMember `json:"files"` // by path under /lib/firmware
	Missing  []string                  `json:"missing"`
}

// firmwareSet is what the initrd gets.
type firmwareSet struct {
	Packages []FirmwarePackage
	Files    []string // paths under /lib/firmware, sorted
	Missing  []string // requested, in no package (or a link out of it)
	Archive  []byte   // newc archive of lib/firmware/...
}

func requestsKey(requests map[string][]string) string {
	var all []string
	for m, fs := range requests {
		for _, f := range fs {
			all = append(all, m+" "+f)
		}
	}
	sort.Strings(all)
	return sha([]byte(strings.Join(all, "\n")))
}

func firmwareDeb(p FirmwarePackage) string {
	return p.Name + "_" + strings.ReplaceAll(p.Version, ":", "%3a") + "_" + p.Arch + ".deb"
}

// fetchFirmware resolves the modules' firmware requests against the
// non-free-firmware component of the suite for a Debian arch and returns
// the files as an archive. The packages are kept in dir, downloaded and
// checked against the archive's index like every other package, and
// with a record of the resolution: when it and the packages are intact
// (and update is false), no request reaches the network.
func fetchFirmware(ctx context.Context, o firmware.Options, debArch string, requests map[string][]string, dir string, update bool, log *slog.Logger) (firmwareSet, error) {
	var fs firmwareSet
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	key := requestsKey(requests)
	recFile := filepath.Join(dir, "firmware-"+debArch+".json")
	var rec firmwareRecord
	debs := map[string][]byte{}
	cached := false
	if b, err := os.ReadFile(recFile); err == nil && !update && json.Unmarshal(b, &rec) == nil && rec.Requests == key {
		cached = true
		for _, p := range rec.Packages {
			b, err := os.ReadFile(filepath.Join(dir, firmwareDeb(p)))
			if err != nil || sha(b) != p.DebSHA256 {
				cached = false
				break
			}
			debs[p.Name] = b
		}
	}
	if !cached {
		a, err := firmware.Open(ctx, o)
		if err != nil {
			return fs, fmt.Errorf("firmware: %w", err)
		}
		contents, err := a.Contents(ctx, firmware.NonFreeFirmware, debArch)
		if err != nil {
			return fs, fmt.Errorf("firmware: %w", err)
		}
		found, missing := resolveFirmware(requests, contents)
		rec = firmwareRecord{Requests: key, Files: found, Missing: missing}
		var names []string
		for _, m := range found {
			if !slices.Contains(names, m.Package) {
				names = append(names, m.Package)
			}
		}
		sort.Strings(names)
		debs = map[string][]byte{}
		for _, n := range names {
			p, err := a.FindIn(ctx, firmware.NonFreeFirmware, debArch, n)
			if err != nil {
				return fs, fmt.Errorf("firmware: %w", err)
			}
			fp := FirmwarePackage{Name: p.Name, Version: p.Version, Arch: p.Arch, DebSHA256: p.Sum.SHA256, Filename: p.Filename, Size: p.Sum.Size}
			deb, err := os.ReadFile(filepath.Join(dir, firmwareDeb(fp)))
			if err != nil || sha(deb) != fp.DebSHA256 {
				if deb, err = a.Download(ctx, p); err != nil { // checked against the index
					return fs, fmt.Errorf("firmware: %w", err)
				}
				if err := atomicfile.Write(filepath.Join(dir, firmwareDeb(fp)), deb); err != nil {
					return fs, fmt.Errorf("firmware: cache: %w", err)
				}
			}
			rec.Packages = append(rec.Packages, fp)
			debs[n] = deb
		}
		b, _ := json.MarshalIndent(rec, "", "  ")
		if err := atomicfile.Write(recFile, append(b, '\n')); err != nil {
			return fs, fmt.Errorf("firmware: cache: %w", err)
		}
		pruneFirmware(dir)
	}
	fs.Packages, fs.Missing = rec.Packages, slices.Clone(rec.Missing)
	// Each package is read once, for all the files wanted from it.
	members := map[string][]string{}
	for _, m := range rec.Files {
		members[m.Package] = append(members[m.Package], m.Member)
	}
	got := map[string][]byte{} // by package member
	for pkg, ms := range members {
		files, lost, err := firmware.DebFiles(debs[pkg], ms)
		if err != nil {
			return fs, fmt.Errorf("firmware: %s: %w", pkg, err)
		}
		if len(lost) > 0 {
			log.Warn("firmware files are links out of their package", "package", pkg, "files", strings.Join(lost, ","))
		}
		for m, b := range files {
			got[pkg+"\x00"+m] = b
		}
	}
	var files []file
	for _, rel := range slices.Sorted(maps.Keys(rec.Files)) {
		m := rec.Files[rel]
		b, ok := got[m.Package+"\x00"+m.Member]
		if !ok {
			fs.Missing = append(fs.Missing, rel)
			continue
		}
		files = append(files, file{FirmwareDir + "/" + rel, b})
		fs.Files = append(fs.Files, rel)
	}
	sort.Strings(fs.Missing)
	var buf bytes.Buffer
	if err := writeTree(&buf, files); err != nil {
		return fs, fmt.Errorf("firmware: archive: %w", err)
	}
	fs.Archive = buf.Bytes()
	return fs, nil
}

// pruneFirmware removes the packages in dir that no architecture's
// record names any more.
func pruneFirmware(dir string) {
	keep := map[string]bool{}
	recs, _ := filepath.Glob(filepath.Join(dir, "firmware-*.json"))
	for _, r := range recs {
		var rec firmwareRecord
		if b, err := os.ReadFile(r); err == nil && json.Unmarshal(b, &rec) == nil {
			for _, p := range rec.Packages {
				keep[firmwareDeb(p)] = true
			}
		}
	}
	debs, _ := filepath.Glob(filepath.Join(dir, "*.deb"))
	for _, d := range debs {
		if !keep[filepath.Base(d)] {
			os.Remove(d)
		}
	}
}
