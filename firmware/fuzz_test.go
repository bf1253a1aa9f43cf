package firmware

import (
	"bytes"
	"strings"
	"testing"
)

// The parsers below read bytes from a mirror before anything vouches for
// them (Release) or from files whose hash is known but whose content is
// still the archive's word (Packages, .deb): none may panic or hang.

func FuzzParseRelease(f *testing.F) {
	f.Add([]byte(sampleRelease))
	f.Add([]byte("SHA256:\n"))
	f.Add([]byte("Suite: x\n\n\nSHA256:\n a 1 b\n"))
	f.Add([]byte(" continuation\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseRelease(b)
		if err != nil {
			return
		}
		for p, s := range r.Sums {
			if !isSHA256(s.SHA256) || s.Size < 0 {
				t.Errorf("accepted %q: %+v", p, s)
			}
		}
	})
}

func FuzzParsePackages(f *testing.F) {
	f.Add([]byte(samplePackages))
	f.Add([]byte("Package: a\nSize: 1\nFilename: x\nSHA256: " + string(bytes.Repeat([]byte("0"), 64)) + "\n"))
	f.Add([]byte("Package: a\n\tcontinued\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ps, err := ParsePackages(bytes.NewReader(b))
		if err != nil {
			return
		}
		for _, p := range ps {
			if p.Name == "" || p.Filename == "" || !isSHA256(p.Sum.SHA256) || p.Sum.Size < 0 {
				t.Errorf("accepted %+v", p)
			}
			DependsOn(p.Depends)
		}
	})
}

func FuzzReadAr(f *testing.F) {
	f.Add(buildAr(arEntry{"debian-binary", []byte("2.0\n")}, arEntry{"data.tar", []byte("x")}))
	f.Add([]byte("!<arch>\n"))
	f.Add([]byte("!<arch>\nname            0           0     0     100644  99999999999`\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ms, err := readAr(b)
		if err != nil {
			return
		}
		total := 8
		for _, m := range ms {
			total += 60 + len(m.Data)
		}
		if total > len(b) {
			t.Errorf("members hold %d bytes of a %d-byte archive", total, len(b))
		}
	})
}

func FuzzDebFiles(f *testing.F) {
	f.Add(buildDeb(f, "", []tarFile{{name: "./a", body: "x"}, {name: "./b", link: "a"}}))
	f.Add(buildDeb(f, ".gz", []tarFile{{name: "./a", body: "x"}}))
	f.Add(buildDeb(f, ".xz", []tarFile{{name: "./b", link: "/b"}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		debFiles(b, []string{"a", "b"})
	})
}

func FuzzCompareVersions(f *testing.F) {
	f.Add("1:2.0~rc1-1", "2.0")
	f.Add("", "~")
	f.Fuzz(func(t *testing.T, a, b string) {
		if x, y := CompareVersions(a, b), CompareVersions(b, a); (x < 0) != (y > 0) || (x == 0) != (y == 0) {
			t.Errorf("CompareVersions(%q, %q) = %d but reversed = %d", a, b, x, y)
		}
	})
}

func FuzzParseContents(f *testing.F) {
	f.Add([]byte("lib/firmware/a.bin   non-free-firmware/kernel/firmware-a,misc/b\n"))
	f.Add([]byte("FILE LOCATION\n/x y/\n"))
	f.Add([]byte(" \t\n,\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ParseContents(bytes.NewReader(b), func(file, pkg string) {
			if file == "" || pkg == "" || strings.Contains(pkg, "/") {
				t.Errorf("accepted file %q package %q", file, pkg)
			}
		})
	})
}
