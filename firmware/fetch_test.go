package firmware

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/rackboot/rackboot/internal/atomicfile"
)

// readTree returns every regular file under dir by slash path, leaving
// out the manifest.
func readTree(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == ManifestFile {
			return nil
		}
		b, err := os.ReadFile(p)
		out[filepath.ToSlash(rel)] = string(b)
		return err
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	return out
}

func fakeOptions(a *fakeArchive, dest string) Options {
	return Options{Mirror: a.url(), Suite: a.suite, Dest: dest, AptDir: "/nonexistent"}
}

func TestFetch(t *testing.T) {
	for _, allInArch := range []bool{true, false} {
		name := "ipxe in binary-all only"
		if allInArch {
			name = "ipxe in the arch indexes"
		}
		t.Run(name, func(t *testing.T) {
			a := newFakeArchive(t, "bookworm", allInArch, loaderPackages())
			dest := filepath.Join(t.TempDir(), "firmware")
			m, err := Fetch(context.Background(), fakeOptions(a, dest))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(wantLoaderFiles, readTree(t, dest)); diff != "" {
				t.Errorf("installed files (-want +got):\n%s", diff)
			}
			if err := Verify(dest); err != nil {
				t.Errorf("Verify after Fetch: %v", err)
			}
			onDisk, err := ReadManifest(dest)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(m, onDisk); diff != "" {
				t.Errorf("returned and written manifest differ (-returned +written):\n%s", diff)
			}
			e := m.Files[GRUBX64]
			want := Entry{Package: "grub-efi-amd64-signed", Version: "1+2.06+13+deb12u2", Arch: "amd64",
				Member:    "usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed",
				DebSHA256: sha256Hex(a.files["pool/main/g/grub-efi-amd64-signed/grub-efi-amd64-signed_1+2.06+13+deb12u2_amd64.deb"]),
				SHA256:    sha256Hex([]byte("MZ grubnetx64 u2")), Size: int64(len("MZ grubnetx64 u2"))}
			if diff := cmp.Diff(want, e); diff != "" {
				t.Errorf("manifest entry for %s (-want +got):\n%s", GRUBX64, diff)
			}
			// Each package is downloaded once, however many files it gives.
			wantDebs := []string{
				"pool/main/g/grub-efi-amd64-signed/grub-efi-amd64-signed_1+2.06+13+deb12u2_amd64.deb",
				"pool/main/g/grub-efi-arm64-signed/grub-efi-arm64-signed_1+2.06+13+deb12u2_arm64.deb",
				"pool/main/i/ipxe/ipxe_1.0.0+git-20190125.36a4c85-5.1_all.deb",
				"pool/main/s/shim-signed/shim-signed_1.51~1+deb12u1+16.1-2~deb12u1_amd64.deb",
				"pool/main/s/shim-signed/shim-signed_1.51~1+deb12u1+16.1-2~deb12u1_arm64.deb",
			}
			if diff := cmp.Diff(wantDebs, debRequests(a.takeRequests())); diff != "" {
				t.Errorf(".deb requests (-want +got):\n%s", diff)
			}
		})
	}
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestFetchRefuses(t *testing.T) {
	grubAA := "pool/main/g/grub-efi-arm64-signed/grub-efi-arm64-signed_1+2.06+13+deb12u2_arm64.deb"
	tests := []struct {
		name    string
		change  func(a *fakeArchive)
		pkgs    func([]fakePackage) []fakePackage
		want    error
		message string
	}{
		{
			name: "deb with one byte changed",
			change: func(a *fakeArchive) {
				b := append([]byte(nil), a.files[grubAA]...)
				b[len(b)/2] ^= 0xff
				a.serve[grubAA] = b
			},
			want: ErrChecksum, message: "sha256",
		},
		{
			name:   "truncated deb",
			change: func(a *fakeArchive) { a.serve[grubAA] = a.files[grubAA][:len(a.files[grubAA])/2] },
			want:   ErrChecksum, message: "bytes, the index says",
		},
		{
			name: "deb with bytes appended",
			change: func(a *fakeArchive) {
				a.serve[grubAA] = append(append([]byte(nil), a.files[grubAA]...), "more"...)
			},
			want: ErrChecksum, message: "bytes, the index says",
		},
		{
			name: "index that does not match the Release file",
			change: func(a *fakeArchive) {
				p := "dists/bookworm/main/binary-arm64/Packages.xz"
				a.serve[p] = compress(t, ".xz", []byte("Package: evil\n"))
			},
			want: ErrChecksum, message: "Packages.xz",
		},
		{
			name: "missing package",
			pkgs: func(ps []fakePackage) []fakePackage {
				var out []fakePackage
				for _, p := range ps {
					if !(p.name == "shim-signed" && p.arch == "arm64") {
						out = append(out, p)
					}
				}
				return out
			},
			want: ErrNoPackage, message: "shim-signed (arm64)",
		},
		{
			name: "package without the wanted file",
			pkgs: func(ps []fakePackage) []fakePackage {
				for i, p := range ps {
					if p.name == "grub-efi-arm64-signed" {
						ps[i].files = []tarFile{{name: "./usr/lib/grub/arm64-efi-signed/grubaa64.efi.signed", body: "MZ"}}
					}
				}
				return ps
			},
			message: "no file usr/lib/grub/arm64-efi-signed/grubnetaa64.efi.signed inside",
		},
		{
			name: "Release of another suite",
			change: func(a *fakeArchive) {
				a.serve["dists/bookworm/Release"] = []byte("Codename: trixie\nSHA256:\n " + strings.Repeat("0", 64) + " 1 x\n")
			},
			message: `Release is for suite "", codename "trixie"`,
		},
		{
			name:    "mirror without the suite",
			change:  func(a *fakeArchive) { delete(a.files, "dists/bookworm/Release") },
			message: "404 Not Found",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pkgs := loaderPackages()
			if tt.pkgs != nil {
				pkgs = tt.pkgs(pkgs)
			}
			a := newFakeArchive(t, "bookworm", true, pkgs)
			if tt.change != nil {
				tt.change(a)
			}
			dest := filepath.Join(t.TempDir(), "firmware")
			_, err := Fetch(context.Background(), fakeOptions(a, dest))
			if err == nil {
				t.Fatal("Fetch succeeded")
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("Fetch error %v, want %v", err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.message) {
				t.Errorf("Fetch error %q does not say %q", err, tt.message)
			}
			if _, err := os.Stat(dest); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("Fetch left %s behind (%v): %v", dest, err, readTree(t, dest))
			}
		})
	}
}

func TestFetchIdempotent(t *testing.T) {
	a := newFakeArchive(t, "bookworm", true, loaderPackages())
	dest := t.TempDir()
	first, err := Fetch(context.Background(), fakeOptions(a, dest))
	if err != nil {
		t.Fatal(err)
	}
	a.takeRequests()

	second, err := Fetch(context.Background(), fakeOptions(a, dest))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(first, second); diff != "" {
		t.Errorf("second manifest differs (-first +second):\n%s", diff)
	}
	if got := a.takeRequests(); len(got) != 0 {
		t.Errorf("second Fetch made requests: %v", got)
	}

	// Update reads the indexes again but finds the same .debs.
	o := fakeOptions(a, dest)
	o.Update = true
	if _, err := Fetch(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	got := a.takeRequests()
	if len(got) == 0 {
		t.Error("Update made no requests")
	}
	if debs := debRequests(got); len(debs) != 0 {
		t.Errorf("Update downloaded unchanged packages: %v", debs)
	}
}

func TestFetchUpdateNewVersion(t *testing.T) {
	dest := t.TempDir()
	a := newFakeArchive(t, "bookworm", true, loaderPackages())
	if _, err := Fetch(context.Background(), fakeOptions(a, dest)); err != nil {
		t.Fatal(err)
	}
	pkgs := loaderPackages()
	pkgs = append(pkgs, fakePackage{name: "shim-signed", version: "1.52+16.1-3", arch: "amd64",
		files: []tarFile{{name: "./usr/lib/shim/shimx64.efi.signed", body: "MZ shimx64 newer"}}})
	b := newFakeArchive(t, "bookworm", true, pkgs)

	// Without Update an intact dir stays as it is.
	if _, err := Fetch(context.Background(), fakeOptions(b, dest)); err != nil {
		t.Fatal(err)
	}
	if got := readTree(t, dest)[ShimX64]; got != "MZ shimx64" {
		t.Errorf("without Update %s = %q", ShimX64, got)
	}
	o := fakeOptions(b, dest)
	o.Update = true
	m, err := Fetch(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if got := readTree(t, dest)[ShimX64]; got != "MZ shimx64 newer" {
		t.Errorf("after Update %s = %q", ShimX64, got)
	}
	if v := m.Files[ShimX64].Version; v != "1.52+16.1-3" {
		t.Errorf("manifest version %q", v)
	}
	if diff := cmp.Diff([]string{"pool/main/s/shim-signed/shim-signed_1.52+16.1-3_amd64.deb"}, debRequests(b.takeRequests())); diff != "" {
		t.Errorf(".deb requests (-want +got):\n%s", diff)
	}
}

func TestFetchRepairsTamperedFile(t *testing.T) {
	a := newFakeArchive(t, "bookworm", true, loaderPackages())
	dest := t.TempDir()
	if _, err := Fetch(context.Background(), fakeOptions(a, dest)); err != nil {
		t.Fatal(err)
	}
	a.takeRequests()
	tampered := filepath.Join(dest, filepath.FromSlash(GRUBX64))
	if err := os.WriteFile(tampered, []byte("MZ grubnetx64 u3"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dest, filepath.FromSlash(IPXEBIOS))); err != nil {
		t.Fatal(err)
	}
	err := Verify(dest)
	if !errors.Is(err, ErrMismatch) {
		t.Fatalf("Verify of a tampered dir: %v, want ErrMismatch", err)
	}
	for _, f := range []string{GRUBX64, IPXEBIOS} {
		if !strings.Contains(err.Error(), f) {
			t.Errorf("Verify error %q does not name %s", err, f)
		}
	}
	if _, err := Fetch(context.Background(), fakeOptions(a, dest)); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(wantLoaderFiles, readTree(t, dest)); diff != "" {
		t.Errorf("files after repair (-want +got):\n%s", diff)
	}
	wantDebs := []string{
		"pool/main/g/grub-efi-amd64-signed/grub-efi-amd64-signed_1+2.06+13+deb12u2_amd64.deb",
		"pool/main/i/ipxe/ipxe_1.0.0+git-20190125.36a4c85-5.1_all.deb",
	}
	if diff := cmp.Diff(wantDebs, debRequests(a.takeRequests())); diff != "" {
		t.Errorf(".deb requests (-want +got):\n%s", diff)
	}
	if err := Verify(dest); err != nil {
		t.Errorf("Verify after repair: %v", err)
	}
}

func TestVerify(t *testing.T) {
	tests := []struct {
		name     string
		manifest string
		files    map[string]string
		want     string // substring of the error; empty for success
	}{
		{
			name:     "good",
			manifest: `{"files":{"a/b.efi":{"sha256":"` + sha256Hex([]byte("MZ")) + `","size":2}}}`,
			files:    map[string]string{"a/b.efi": "MZ"},
		},
		{
			name:     "changed",
			manifest: `{"files":{"a/b.efi":{"sha256":"` + sha256Hex([]byte("MZ")) + `","size":2}}}`,
			files:    map[string]string{"a/b.efi": "ZM"},
			want:     "a/b.efi: 2 bytes with sha256",
		},
		{
			name:     "missing",
			manifest: `{"files":{"a/b.efi":{"sha256":"` + sha256Hex([]byte("MZ")) + `","size":2}}}`,
			want:     "no such file",
		},
		{
			name:     "outside the dir",
			manifest: `{"files":{"../b.efi":{"sha256":"` + sha256Hex([]byte("MZ")) + `","size":2}}}`,
			want:     "not a path inside the dir",
		},
		{name: "empty manifest", manifest: `{"files":{}}`, want: "lists no files"},
		{name: "no manifest", want: "read manifest"},
		{name: "bad manifest", manifest: `{"files":`, want: "unexpected end of JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if tt.manifest != "" {
				if err := os.WriteFile(filepath.Join(dir, ManifestFile), []byte(tt.manifest), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			for p, body := range tt.files {
				if err := atomicfile.Write(filepath.Join(dir, filepath.FromSlash(p)), []byte(body)); err != nil {
					t.Fatal(err)
				}
			}
			err := Verify(dir)
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Verify: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("Verify: %v, want an error saying %q", err, tt.want)
			}
		})
	}
}

func TestVerifyWanted(t *testing.T) {
	a := newFakeArchive(t, "bookworm", true, loaderPackages())
	dest := t.TempDir()
	o := fakeOptions(a, dest)
	o.Files = Loaders()[:3]
	if _, err := Fetch(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	if err := VerifyWanted(dest, Loaders()[:3]); err != nil {
		t.Errorf("VerifyWanted of what was fetched: %v", err)
	}
	err := VerifyWanted(dest, Loaders())
	if !errors.Is(err, ErrMismatch) || !strings.Contains(err.Error(), ShimX64+": not fetched") {
		t.Errorf("VerifyWanted of a partial dir: %v", err)
	}
	other := []Wanted{{Package: "ipxe", Arch: "all", Member: "usr/lib/ipxe/snponly.efi", Dest: IPXEBIOS}}
	if err := VerifyWanted(dest, other); !errors.Is(err, ErrMismatch) {
		t.Errorf("VerifyWanted with another member: %v", err)
	}
}

func TestFetchPackage(t *testing.T) {
	a := newFakeArchive(t, "bookworm", true, loaderPackages())
	dest := t.TempDir()
	files := map[string]string{
		"usr/lib/ipxe/ipxe.efi":      "x/ipxe-via-link.efi", // a symlink to /boot/ipxe.efi
		"usr/lib/ipxe/undionly.kpxe": "x/undionly.kpxe",
	}
	m, err := FetchPackage(context.Background(), fakeOptions(a, dest), "amd64", "ipxe", files)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"x/ipxe-via-link.efi": "MZ ipxe.efi", "x/undionly.kpxe": "undionly.kpxe"}
	if diff := cmp.Diff(want, readTree(t, dest)); diff != "" {
		t.Errorf("files (-want +got):\n%s", diff)
	}
	if got := m.Files["x/ipxe-via-link.efi"].Member; got != "usr/lib/ipxe/ipxe.efi" {
		t.Errorf("manifest member %q", got)
	}
	if err := Verify(dest); err != nil {
		t.Error(err)
	}

	// Another package into the same dir keeps the first one's entries.
	if _, err := FetchPackage(context.Background(), fakeOptions(a, dest), "arm64", "shim-signed",
		map[string]string{"usr/lib/shim/shimaa64.efi.signed": "y/shim.efi"}); err != nil {
		t.Fatal(err)
	}
	m, err = ReadManifest(dest)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Files) != 3 {
		t.Errorf("manifest has %d files, want 3: %v", len(m.Files), m.Files)
	}

	for _, bad := range []string{"../escape", "/abs", "a/../../b", ManifestFile, ""} {
		_, err := FetchPackage(context.Background(), fakeOptions(a, dest), "amd64", "ipxe",
			map[string]string{"usr/lib/ipxe/undionly.kpxe": bad})
		if err == nil || !strings.Contains(err.Error(), "not a clean path inside the dir") {
			t.Errorf("destination %q: %v", bad, err)
		}
	}
}

func TestResolveAndFetchKernel(t *testing.T) {
	a := newFakeArchive(t, "bookworm", true, loaderPackages())
	p, err := ResolvePackage(context.Background(), fakeOptions(a, ""), "amd64", "linux-image-cloud-amd64", "linux-image-")
	if err != nil {
		t.Fatal(err)
	}
	if p.Name != "linux-image-6.1.0-37-cloud-amd64" || p.Version != "6.1.140-1" {
		t.Errorf("resolved to %s %s", p.Name, p.Version)
	}
	if _, err := ResolvePackage(context.Background(), fakeOptions(a, ""), "amd64", "ipxe", "linux-image-"); !errors.Is(err, ErrNoPackage) {
		t.Errorf("resolving a package without such a dependency: %v", err)
	}

	kernel := filepath.Join(t.TempDir(), "vmlinuz-x86_64")
	got, err := FetchKernel(context.Background(), fakeOptions(a, ""), "linux-image-cloud-amd64", "amd64", kernel)
	if err != nil {
		t.Fatal(err)
	}
	if got != "linux-image-6.1.0-37-cloud-amd64 6.1.140-1" {
		t.Errorf("FetchKernel returned %q", got)
	}
	if b, err := os.ReadFile(kernel); err != nil || string(b) != "kernel bzImage" {
		t.Errorf("kernel file %q, %v", b, err)
	}
	a.takeRequests()
	if _, err := FetchKernel(context.Background(), fakeOptions(a, ""), "linux-image-cloud-amd64", "amd64", kernel); err != nil {
		t.Fatal(err)
	}
	if r := a.takeRequests(); len(r) != 0 {
		t.Errorf("second FetchKernel made requests: %v", r)
	}
	if err := Verify(filepath.Dir(kernel)); err != nil {
		t.Error(err)
	}
}

func TestKernelOf(t *testing.T) {
	tests := []struct {
		meta, pkg string
		want      bool
	}{
		{"linux-image-cloud-amd64", "linux-image-6.1.0-37-cloud-amd64", true},
		{"linux-image-amd64", "linux-image-6.1.0-37-amd64", true},
		{"linux-image-amd64", "linux-image-6.1.0-37-cloud-amd64", false},
		{"linux-image-cloud-arm64", "linux-image-6.1.0-37-cloud-amd64", false},
		{"linux-image-amd64", "linux-image-amd64", false},
	}
	for _, tt := range tests {
		if got := kernelOf(tt.meta, tt.pkg); got != tt.want {
			t.Errorf("kernelOf(%q, %q) = %v, want %v", tt.meta, tt.pkg, got, tt.want)
		}
	}
}

func TestOptionsFromApt(t *testing.T) {
	a := newFakeArchive(t, "bookworm", true, loaderPackages())
	etc := t.TempDir()
	if err := os.MkdirAll(filepath.Join(etc, "sources.list.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	src := "Types: deb\nURIs: " + a.url() + "\nSuites: bookworm bookworm-updates\nComponents: main\n"
	if err := os.WriteFile(filepath.Join(etc, "sources.list.d", "debian.sources"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	dest := t.TempDir()
	m, err := Fetch(context.Background(), Options{Dest: dest, AptDir: etc})
	if err != nil {
		t.Fatal(err)
	}
	if m.Mirror != strings.TrimRight(a.url(), "/") || m.Suite != "bookworm" {
		t.Errorf("fetched from %s %s", m.Mirror, m.Suite)
	}
	if _, err := Fetch(context.Background(), Options{Dest: t.TempDir(), AptDir: t.TempDir()}); !errors.Is(err, ErrNoAptSource) {
		t.Errorf("Fetch without any apt source: %v", err)
	}
}
