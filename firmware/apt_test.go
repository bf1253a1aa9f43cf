package firmware

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseDeb822Sources(t *testing.T) {
	tests := []struct {
		name string
		text string
		want []AptSource
		err  bool
	}{
		{
			name: "debian image",
			text: `Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
# http://snapshot.debian.org/archive/debian-security/20250520T000000Z
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
`,
			want: []AptSource{
				{"http://deb.debian.org/debian", "bookworm", []string{"main"}},
				{"http://deb.debian.org/debian", "bookworm-updates", []string{"main"}},
				{"http://deb.debian.org/debian-security", "bookworm-security", []string{"main"}},
			},
		},
		{
			name: "disabled, source-only and several URIs",
			text: `# leading comment

Types: deb-src
URIs: http://src.example/debian
Suites: trixie
Components: main

Types: deb
URIs: http://off.example/debian
Suites: trixie
Components: main
Enabled: no

Types: deb deb-src
URIs: https://a.example/debian http://b.example/debian
Suites: trixie
Components: main contrib non-free-firmware
Signed-By:
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 .
 mQINBGPL
 -----END PGP PUBLIC KEY BLOCK-----
`,
			want: []AptSource{
				{"https://a.example/debian", "trixie", []string{"main", "contrib", "non-free-firmware"}},
				{"http://b.example/debian", "trixie", []string{"main", "contrib", "non-free-firmware"}},
			},
		},
		{name: "not deb822", text: "deb http://deb.debian.org/debian bookworm main\n", err: true},
		{name: "empty", text: "# nothing\n\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseDeb822Sources(tt.text)
			if (err != nil) != tt.err {
				t.Fatalf("error %v, want error: %v", err, tt.err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("sources (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseSourcesList(t *testing.T) {
	text := `# See sources.list(5)
deb http://deb.debian.org/debian bookworm main contrib
deb-src http://deb.debian.org/debian bookworm main
#deb http://commented.example/debian bookworm main
deb [arch=amd64 signed-by=/usr/share/keyrings/x.gpg] http://mirror.example/debian/ trixie main # trailing comment
deb [ trusted=yes ] http://spaced.example/debian sid main
deb http://security.debian.org/debian-security bookworm-security main
deb [broken http://x.example/debian bookworm main
deb http://short.example/debian
deb cdrom:[Debian GNU/Linux 12]/ bookworm main
`
	want := []AptSource{
		{"http://deb.debian.org/debian", "bookworm", []string{"main", "contrib"}},
		{"http://mirror.example/debian/", "trixie", []string{"main"}},
		{"http://spaced.example/debian", "sid", []string{"main"}},
		{"http://security.debian.org/debian-security", "bookworm-security", []string{"main"}},
		{"cdrom:[Debian", "GNU/Linux", []string{"12]/", "bookworm", "main"}},
	}
	if diff := cmp.Diff(want, ParseSourcesList(text)); diff != "" {
		t.Errorf("sources (-want +got):\n%s", diff)
	}
}

func TestPickAptSource(t *testing.T) {
	tests := []struct {
		name    string
		sources []AptSource
		want    AptSource
		err     error
	}{
		{
			name: "security and updates first",
			sources: []AptSource{
				{"http://deb.debian.org/debian-security", "bookworm-security", []string{"main"}},
				{"http://deb.debian.org/debian", "bookworm-updates", []string{"main"}},
				{"http://deb.debian.org/debian", "bookworm-backports", []string{"main"}},
				{"http://deb.debian.org/debian", "bookworm", []string{"main"}},
			},
			want: AptSource{"http://deb.debian.org/debian", "bookworm", []string{"main"}},
		},
		{
			name: "no main, flat repository, cdrom",
			sources: []AptSource{
				{"http://deb.debian.org/debian", "bookworm", []string{"contrib"}},
				{"http://flat.example/repo", "./", []string{}},
				{"cdrom:[Debian", "bookworm", []string{"main"}},
				{"http://other.example/debian", "trixie", []string{"contrib", "main"}},
			},
			want: AptSource{"http://other.example/debian", "trixie", []string{"contrib", "main"}},
		},
		{name: "nothing", err: ErrNoAptSource},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := PickAptSource(tt.sources)
			if !errors.Is(err, tt.err) {
				t.Fatalf("error %v, want %v", err, tt.err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("picked (-want +got):\n%s", diff)
			}
		})
	}
}

func TestHostAptSource(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		want  AptSource
		err   error
	}{
		{
			name: "sources.list first",
			files: map[string]string{
				"sources.list":                "deb http://one.example/debian bookworm main\n",
				"sources.list.d/a.sources":    "Types: deb\nURIs: http://two.example/debian\nSuites: trixie\nComponents: main\n",
				"sources.list.d/ignored.save": "deb http://three.example/debian sid main\n",
			},
			want: AptSource{"http://one.example/debian", "bookworm", []string{"main"}},
		},
		{
			name: "list and sources files in name order",
			files: map[string]string{
				"sources.list.d/b.list":    "deb http://b.example/debian trixie main\n",
				"sources.list.d/a.sources": "Types: deb\nURIs: http://a.example/debian\nSuites: bookworm-security\nComponents: main\n",
				"sources.list.d/c.sources": "Types: deb\nURIs: http://c.example/debian\nSuites: sid\nComponents: main\n",
			},
			want: AptSource{"http://b.example/debian", "trixie", []string{"main"}},
		},
		{name: "no configuration", err: ErrNoAptSource},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for p, body := range tt.files {
				if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, p), []byte(body), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, err := HostAptSource(dir)
			if !errors.Is(err, tt.err) {
				t.Fatalf("error %v, want %v", err, tt.err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("source (-want +got):\n%s", diff)
			}
		})
	}
}
