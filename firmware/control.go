package firmware

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Stanza is one paragraph of a Debian control file (Release, Packages,
// deb822 apt sources). Continuation lines are joined to their field with
// newlines.
type Stanza map[string]string

// ParseStanzas parses Debian control data. A malformed line is an error,
// since these bytes come from the network.
func ParseStanzas(r io.Reader) ([]Stanza, error) {
	var out []Stanza
	err := parseControl(r, nil, func(s Stanza) error {
		out = append(out, s)
		return nil
	})
	return out, err
}

// parseControl calls fn with each paragraph of r, holding only the fields
// keep accepts (all when keep is nil): a Packages index is tens of
// megabytes, of which a handful of fields matter.
func parseControl(r io.Reader, keep func(field string) bool, fn func(Stanza) error) error {
	cur := Stanza{}
	last, seen := "", false
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	n := 0
	flush := func() error {
		if !seen {
			return nil
		}
		s := cur
		cur, last, seen = Stanza{}, "", false
		return fn(s)
	}
	for sc.Scan() {
		n++
		line := sc.Text()
		switch {
		case strings.TrimSpace(line) == "":
			if err := flush(); err != nil {
				return err
			}
		case line[0] == ' ' || line[0] == '\t':
			if last == "" {
				return fmt.Errorf("control data line %d: continuation without a field", n)
			}
			if _, ok := cur[last]; ok {
				cur[last] += "\n" + strings.TrimSpace(line)
			}
		default:
			k, v, ok := strings.Cut(line, ":")
			if !ok || k == "" || strings.ContainsAny(k, " \t") {
				return fmt.Errorf("control data line %d: not a field: %.40q", n, line)
			}
			last, seen = k, true
			if keep == nil || keep(k) {
				cur[k] = strings.TrimSpace(v)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("control data line %d: %w", n+1, err)
	}
	return flush()
}

// FileSum is a file's expected SHA256 (lower-case hex) and size.
type FileSum struct {
	SHA256 string
	Size   int64
}

// Release is what rackboot uses of a suite's Release file.
type Release struct {
	Suite, Codename string
	// AllInArch is true when the binary-<arch> indexes list the suite's
	// Architecture: all packages too ("No-Support-for-Architecture-all:
	// Packages"); otherwise they are only in binary-all.
	AllInArch bool
	// Sums are the SHA256 section's entries, by path under dists/<suite>/.
	Sums map[string]FileSum
}

// ParseRelease parses a Release file.
func ParseRelease(b []byte) (Release, error) {
	st, err := ParseStanzas(bytes.NewReader(b))
	if err != nil {
		return Release{}, fmt.Errorf("parse release: %w", err)
	}
	if len(st) == 0 || st[0]["SHA256"] == "" {
		return Release{}, errors.New("parse release: no SHA256 section")
	}
	r := Release{
		Suite:     st[0]["Suite"],
		Codename:  st[0]["Codename"],
		AllInArch: hasWord(st[0]["No-Support-for-Architecture-all"], "Packages"),
		Sums:      map[string]FileSum{},
	}
	for _, line := range strings.Split(st[0]["SHA256"], "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if len(f) != 3 || !isSHA256(f[0]) {
			return Release{}, fmt.Errorf("parse release: bad SHA256 line %.80q", line)
		}
		size, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil || size < 0 {
			return Release{}, fmt.Errorf("parse release: bad size in %.80q", line)
		}
		r.Sums[f[2]] = FileSum{SHA256: strings.ToLower(f[0]), Size: size}
	}
	return r, nil
}

// Package is one entry of a Packages index.
type Package struct {
	Name, Version, Arch string
	Filename            string // path of the .deb under the mirror's base URL
	Depends             string
	Sum                 FileSum
}

var packageFields = map[string]bool{
	"Package": true, "Version": true, "Architecture": true, "Filename": true,
	"Depends": true, "Pre-Depends": true, "Size": true, "SHA256": true,
}

// ParsePackages reads a Packages index. An entry without a name, pool
// path, size or SHA256 is left out: rackboot could not verify it, so it
// does not use it.
func ParsePackages(r io.Reader) ([]Package, error) {
	var out []Package
	err := parseControl(r, func(k string) bool { return packageFields[k] }, func(s Stanza) error {
		size, err := strconv.ParseInt(s["Size"], 10, 64)
		if err != nil || size < 0 || s["Package"] == "" || s["Filename"] == "" || !isSHA256(s["SHA256"]) {
			return nil
		}
		dep := s["Depends"]
		if pre := s["Pre-Depends"]; pre != "" {
			dep = strings.TrimPrefix(pre+", "+dep, ", ")
		}
		out = append(out, Package{Name: s["Package"], Version: s["Version"], Arch: s["Architecture"],
			Filename: s["Filename"], Depends: strings.ReplaceAll(dep, "\n", " "),
			Sum: FileSum{SHA256: strings.ToLower(s["SHA256"]), Size: size}})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("parse packages index: %w", err)
	}
	return out, nil
}

// DependsOn returns the package names of a Depends field, taking the first
// choice of each alternative and dropping version and arch qualifiers.
func DependsOn(depends string) []string {
	var out []string
	for _, d := range strings.Split(depends, ",") {
		d, _, _ = strings.Cut(d, "|")
		f := strings.Fields(strings.NewReplacer("(", " (", "[", " [", "<", " <").Replace(d))
		if len(f) == 0 {
			continue
		}
		name, _, _ := strings.Cut(f[0], ":")
		out = append(out, name)
	}
	return out
}

func isSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

func hasWord(s, w string) bool {
	for _, f := range strings.Fields(s) {
		if f == w {
			return true
		}
	}
	return false
}

// CompareVersions orders two Debian version strings as dpkg does: it
// returns a negative number when a is older than b, zero when they are
// equal and a positive number when a is newer.
func CompareVersions(a, b string) int {
	ea, ua, ra := splitVersion(a)
	eb, ub, rb := splitVersion(b)
	if ea != eb {
		if ea < eb {
			return -1
		}
		return 1
	}
	if c := verrevcmp(ua, ub); c != 0 {
		return c
	}
	return verrevcmp(ra, rb)
}

func splitVersion(v string) (epoch int, upstream, revision string) {
	if e, rest, ok := strings.Cut(v, ":"); ok {
		if n, err := strconv.Atoi(e); err == nil {
			epoch, v = n, rest
		}
	}
	if i := strings.LastIndexByte(v, '-'); i >= 0 {
		return epoch, v[:i], v[i+1:]
	}
	return epoch, v, ""
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// order is dpkg's character weight: '~' sorts before everything, even the
// end of the string; letters before other characters.
func order(s string, i int) int {
	if i >= len(s) {
		return 0
	}
	c := s[i]
	switch {
	case isDigit(c):
		return 0
	case c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z':
		return int(c)
	case c == '~':
		return -1
	}
	return int(c) + 256
}

func verrevcmp(a, b string) int {
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		for (i < len(a) && !isDigit(a[i])) || (j < len(b) && !isDigit(b[j])) {
			if ac, bc := order(a, i), order(b, j); ac != bc {
				return ac - bc
			}
			i++
			j++
		}
		for i < len(a) && a[i] == '0' {
			i++
		}
		for j < len(b) && b[j] == '0' {
			j++
		}
		first := 0
		for i < len(a) && j < len(b) && isDigit(a[i]) && isDigit(b[j]) {
			if first == 0 {
				first = int(a[i]) - int(b[j])
			}
			i++
			j++
		}
		if i < len(a) && isDigit(a[i]) {
			return 1
		}
		if j < len(b) && isDigit(b[j]) {
			return -1
		}
		if first != 0 {
			return first
		}
	}
	return 0
}

// ParseContents reads a Contents-<arch> index: per line a path and, after
// the last run of spaces, a comma-separated list of "section/package"
// (or "component/section/package") locations. fn sees each path with each
// package that holds it. A header line ("FILE LOCATION") and blank lines
// are skipped; a line without a location is an error.
func ParseContents(r io.Reader, fn func(file, pkg string)) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimRight(sc.Text(), " \t")
		if strings.TrimSpace(line) == "" {
			continue
		}
		i := strings.LastIndexAny(line, " \t")
		if i < 0 {
			return fmt.Errorf("parse contents: line %d: no location", n)
		}
		file, locs := strings.TrimSpace(line[:i]), line[i+1:]
		if file == "FILE" && locs == "LOCATION" {
			continue
		}
		file = strings.TrimLeft(file, "/")
		if file == "" {
			return fmt.Errorf("parse contents: line %d: no path", n)
		}
		for _, loc := range strings.Split(locs, ",") {
			if pkg := loc[strings.LastIndex(loc, "/")+1:]; pkg != "" {
				fn(file, pkg)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("parse contents: %w", err)
	}
	return nil
}
