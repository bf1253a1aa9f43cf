package firmware

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestDebFiles(t *testing.T) {
	files := []tarFile{
		{name: "./boot/ipxe.efi", body: "MZ ipxe"},
		{name: "./usr/lib/ipxe/ipxe.efi", link: "/boot/ipxe.efi"},
		{name: "./usr/lib/ipxe/rel.efi", link: "../../../boot/ipxe.efi"},
		{name: "./usr/lib/ipxe/loop1", link: "loop2"},
		{name: "./usr/lib/ipxe/loop2", link: "loop1"},
		{name: "./usr/lib/ipxe/odd", body: "odd length"},
		{name: "./usr/lib/ipxe/", body: ""},
	}
	for _, ext := range []string{".xz", ".zst", ".gz", ""} {
		t.Run("data.tar"+ext, func(t *testing.T) {
			deb := buildDeb(t, ext, files)
			got, err := debFiles(deb, []string{"usr/lib/ipxe/ipxe.efi", "boot/ipxe.efi", "./usr/lib/ipxe/rel.efi", "usr/lib/ipxe/odd"})
			if err != nil {
				t.Fatal(err)
			}
			want := map[string][]byte{
				"usr/lib/ipxe/ipxe.efi":  []byte("MZ ipxe"),
				"boot/ipxe.efi":          []byte("MZ ipxe"),
				"./usr/lib/ipxe/rel.efi": []byte("MZ ipxe"),
				"usr/lib/ipxe/odd":       []byte("odd length"),
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("files (-want +got):\n%s", diff)
			}
		})
	}

	deb := buildDeb(t, ".xz", files)
	errTests := []struct {
		name string
		deb  []byte
		want []string
		err  string
		is   error
	}{
		{name: "missing member", deb: deb, want: []string{"usr/lib/ipxe/nope.efi", "boot/ipxe.efi"}, err: "no file usr/lib/ipxe/nope.efi inside"},
		{name: "link loop", deb: deb, want: []string{"usr/lib/ipxe/loop1"}, err: "no file usr/lib/ipxe/loop1 inside"},
		{name: "directory", deb: deb, want: []string{"usr/lib/ipxe"}, err: "is not a file"},
		{name: "not ar", deb: []byte("PK\x03\x04"), want: []string{"x"}, is: ErrNotDeb},
		{name: "truncated", deb: deb[:len(deb)-100], want: []string{"x"}, err: "truncated"},
		{name: "no debian-binary", deb: buildAr(arEntry{"data.tar", nil}), want: []string{"x"}, is: ErrNotDeb},
		{name: "no data", deb: buildAr(arEntry{"debian-binary", []byte("2.0\n")}), want: []string{"x"}, is: ErrNotDeb},
		{name: "unknown compression", deb: buildAr(arEntry{"debian-binary", []byte("2.0\n")}, arEntry{"data.tar.lzma", []byte("x")}), want: []string{"x"}, err: "unsupported member"},
		{name: "corrupt xz", deb: buildAr(arEntry{"debian-binary", []byte("2.0\n")}, arEntry{"data.tar.xz", []byte("not xz")}), want: []string{"x"}, err: "data.tar.xz"},
	}
	for _, tt := range errTests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := debFiles(tt.deb, tt.want)
			if err == nil {
				t.Fatal("debFiles succeeded")
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %v, want %v", err, tt.is)
			}
			if !strings.Contains(err.Error(), tt.err) {
				t.Errorf("error %q does not say %q", err, tt.err)
			}
		})
	}
}

func TestReadAr(t *testing.T) {
	good := buildAr(arEntry{"debian-binary", []byte("2.0\n")}, arEntry{"odd", []byte("abc")}, arEntry{"last", []byte("z")})
	got, err := readAr(good)
	if err != nil {
		t.Fatal(err)
	}
	want := []arEntry{{"debian-binary", []byte("2.0\n")}, {"odd", []byte("abc")}, {"last", []byte("z")}}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(arEntry{})); diff != "" {
		t.Errorf("members (-want +got):\n%s", diff)
	}
	// GNU ar ends names with "/".
	gnu := []byte("!<arch>\ndebian-binary/  0           0     0     100644  4         `\n2.0\n")
	if got, err := readAr(gnu); err != nil || len(got) != 1 || got[0].Name != "debian-binary" {
		t.Errorf("GNU name: %v, %v", got, err)
	}
	for name, b := range map[string][]byte{
		"short header": good[:8+30],
		"bad magic":    []byte("!<arch>x"),
		"bad end":      append([]byte("!<arch>\n"), []byte(strings.Repeat(" ", 58)+"xx")...),
		"bad size":     []byte("!<arch>\nname            0           0     0     100644  -5        `\n"),
	} {
		if _, err := readAr(b); err == nil {
			t.Errorf("%s: read", name)
		}
	}
}
