package firmware

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// ErrNoAptSource is returned when the host's apt configuration names no
// Debian archive rackboot can fetch from.
var ErrNoAptSource = errors.New("no Debian archive with component main in the apt configuration")

// AptSource is one "deb" source of an apt configuration, one suite each.
type AptSource struct {
	URI        string
	Suite      string
	Components []string
}

// ParseDeb822Sources reads the deb822 format of /etc/apt/sources.list.d/
// *.sources files: one paragraph per entry, several URIs and suites each.
// Entries with "Enabled: no" and deb-src-only entries are left out.
func ParseDeb822Sources(text string) ([]AptSource, error) {
	var b strings.Builder
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		b.WriteString(line + "\n")
	}
	st, err := ParseStanzas(strings.NewReader(b.String()))
	if err != nil {
		return nil, fmt.Errorf("parse deb822 sources: %w", err)
	}
	var out []AptSource
	for _, s := range st {
		if !hasWord(s["Types"], "deb") || strings.EqualFold(strings.TrimSpace(s["Enabled"]), "no") {
			continue
		}
		comps := strings.Fields(s["Components"])
		for _, uri := range strings.Fields(s["URIs"]) {
			for _, suite := range strings.Fields(s["Suites"]) {
				out = append(out, AptSource{URI: uri, Suite: suite, Components: comps})
			}
		}
	}
	return out, nil
}

// ParseSourcesList reads the one-line format of /etc/apt/sources.list:
// "deb [options] uri suite component...". Lines it cannot read are left
// out, as apt's own comments and deb-src lines are.
func ParseSourcesList(text string) []AptSource {
	var out []AptSource
	for _, line := range strings.Split(text, "\n") {
		line, _, _ = strings.Cut(line, "#")
		f := strings.Fields(line)
		if len(f) < 3 || f[0] != "deb" {
			continue
		}
		f = f[1:]
		if strings.HasPrefix(f[0], "[") {
			// Options such as [ arch=amd64 signed-by=... ] may hold spaces.
			i := 0
			for i < len(f) && !strings.HasSuffix(f[i], "]") {
				i++
			}
			if i == len(f) {
				continue
			}
			f = f[i+1:]
		}
		if len(f) < 2 {
			continue
		}
		out = append(out, AptSource{URI: f[0], Suite: f[1], Components: f[2:]})
	}
	return out
}

// PickAptSource returns the first source that serves a Debian release's
// main component over http or https: not -security, -updates,
// -backports or a flat repository, which hold only part of a release.
func PickAptSource(sources []AptSource) (AptSource, error) {
	for _, s := range sources {
		if !strings.HasPrefix(s.URI, "http://") && !strings.HasPrefix(s.URI, "https://") {
			continue
		}
		if s.Suite == "" || strings.ContainsAny(s.Suite, "-/") {
			continue
		}
		for _, c := range s.Components {
			if c == "main" {
				return s, nil
			}
		}
	}
	return AptSource{}, ErrNoAptSource
}

// HostAptSource reads the apt configuration under etcApt (normally
// /etc/apt): sources.list, then sources.list.d/*.list and *.sources in
// name order, and picks the archive to fetch from.
func HostAptSource(etcApt string) (AptSource, error) {
	var all []AptSource
	if b, err := os.ReadFile(filepath.Join(etcApt, "sources.list")); err == nil {
		all = append(all, ParseSourcesList(string(b))...)
	}
	files, _ := filepath.Glob(filepath.Join(etcApt, "sources.list.d", "*"))
	sort.Strings(files)
	for _, f := range files {
		var deb822 bool
		switch filepath.Ext(f) {
		case ".sources":
			deb822 = true
		case ".list":
		default:
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			return AptSource{}, fmt.Errorf("read apt sources: %w", err)
		}
		if !deb822 {
			all = append(all, ParseSourcesList(string(b))...)
			continue
		}
		s, err := ParseDeb822Sources(string(b))
		if err != nil {
			return AptSource{}, fmt.Errorf("read apt sources %s: %w", f, err)
		}
		all = append(all, s...)
	}
	s, err := PickAptSource(all)
	if err != nil {
		return s, fmt.Errorf("read apt sources %s: %w", etcApt, err)
	}
	return s, nil
}
