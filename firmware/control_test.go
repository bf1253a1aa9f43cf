package firmware

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const sampleRelease = `Origin: Debian
Label: Debian
Suite: oldstable
Version: 12.15
Codename: bookworm
Acquire-By-Hash: yes
No-Support-for-Architecture-all: Packages
Architectures: all amd64 arm64
Components: main contrib non-free-firmware non-free
Description: Debian 12.15 Released 11 July 2026
MD5Sum:
 0f420d159a5c49a2844b23557e6e5a47  4231936 main/binary-all/Packages.xz
SHA256:
 bc442eb8e8251796e139748da1872c050e2d1e93f55655100357f2e68364caf5 22526615 main/binary-all/Packages
 BC442EB8E8251796E139748DA1872C050E2D1E93F55655100357F2E68364CAF6  8790396 main/binary-amd64/Packages.xz
`

func TestParseRelease(t *testing.T) {
	tests := []struct {
		name string
		text string
		want Release
		err  string
	}{
		{
			name: "bookworm",
			text: sampleRelease,
			want: Release{Suite: "oldstable", Codename: "bookworm", AllInArch: true, Sums: map[string]FileSum{
				"main/binary-all/Packages":      {"bc442eb8e8251796e139748da1872c050e2d1e93f55655100357f2e68364caf5", 22526615},
				"main/binary-amd64/Packages.xz": {"bc442eb8e8251796e139748da1872c050e2d1e93f55655100357f2e68364caf6", 8790396},
			}},
		},
		{name: "no SHA256", text: "Codename: bookworm\nMD5Sum:\n 0f420d159a5c49a2844b23557e6e5a47 1 x\n", err: "no SHA256 section"},
		{name: "short hash", text: "SHA256:\n abcd 1 x\n", err: "bad SHA256 line"},
		{name: "not hex", text: "SHA256:\n " + strings.Repeat("g", 64) + " 1 x\n", err: "bad SHA256 line"},
		{name: "negative size", text: "SHA256:\n " + strings.Repeat("a", 64) + " -1 x\n", err: "bad size"},
		{name: "garbage", text: "<html>not found</html>\n", err: "not a field"},
		{name: "continuation first", text: " SHA256:\n", err: "continuation without a field"},
		{name: "empty", text: "", err: "no SHA256 section"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseRelease([]byte(tt.text))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v, want one saying %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("release (-want +got):\n%s", diff)
			}
		})
	}
}

const samplePackages = `Package: linux-image-cloud-amd64
Source: linux-signed-amd64 (6.1.140+1)
Version: 6.1.140-1
Installed-Size: 13
Maintainer: Debian Kernel Team <debian-kernel@lists.debian.org>
Architecture: amd64
Depends: linux-image-6.1.0-37-cloud-amd64 (= 6.1.140-1)
Description: Linux for x86-64 cloud (meta-package)
Description-md5: 8ddb2a6b2fa0b4e87f1ea3e5fd2a6e3b
Section: kernel
Priority: optional
Filename: pool/main/l/linux-signed-amd64/linux-image-cloud-amd64_6.1.140-1_amd64.deb
Size: 1500
SHA256: 1d3cd1e4d11d5e1e4f7b1b2ed7d8f8b74e4fd44d6b0d0d4b2f9c2f1b3a4e5f60

Package: shim-signed
Version: 1.51~1+deb12u1+16.1-2~deb12u1
Architecture: amd64
Pre-Depends: dpkg (>= 1.17)
Depends: debconf (>= 0.5) | debconf-2.0, mokutil,
 shim-signed-common (>= 1.51~1+deb12u1), grub-efi-amd64-bin
Filename: pool/main/s/shim-signed/shim-signed_1.51~1+deb12u1+16.1-2~deb12u1_amd64.deb
Size: 350384
SHA256: AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA

Package: no-hash
Version: 1
Architecture: all
Filename: pool/main/n/no-hash/no-hash_1_all.deb
Size: 10

Package: bad-size
Version: 1
Architecture: all
Filename: pool/main/b/bad-size/bad-size_1_all.deb
Size: ten
SHA256: 1d3cd1e4d11d5e1e4f7b1b2ed7d8f8b74e4fd44d6b0d0d4b2f9c2f1b3a4e5f60
`

func TestParsePackages(t *testing.T) {
	got, err := ParsePackages(strings.NewReader(samplePackages))
	if err != nil {
		t.Fatal(err)
	}
	want := []Package{
		{Name: "linux-image-cloud-amd64", Version: "6.1.140-1", Arch: "amd64",
			Filename: "pool/main/l/linux-signed-amd64/linux-image-cloud-amd64_6.1.140-1_amd64.deb",
			Depends:  "linux-image-6.1.0-37-cloud-amd64 (= 6.1.140-1)",
			Sum:      FileSum{"1d3cd1e4d11d5e1e4f7b1b2ed7d8f8b74e4fd44d6b0d0d4b2f9c2f1b3a4e5f60", 1500}},
		{Name: "shim-signed", Version: "1.51~1+deb12u1+16.1-2~deb12u1", Arch: "amd64",
			Filename: "pool/main/s/shim-signed/shim-signed_1.51~1+deb12u1+16.1-2~deb12u1_amd64.deb",
			Depends:  "dpkg (>= 1.17), debconf (>= 0.5) | debconf-2.0, mokutil, shim-signed-common (>= 1.51~1+deb12u1), grub-efi-amd64-bin",
			Sum:      FileSum{strings.Repeat("a", 64), 350384}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("packages (-want +got):\n%s", diff)
	}
	if _, err := ParsePackages(strings.NewReader("Package: x\nthis is not a field\n")); err == nil {
		t.Error("a malformed index parsed")
	}
}

func TestDependsOn(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"linux-image-6.1.0-37-cloud-amd64 (= 6.1.140-1)", []string{"linux-image-6.1.0-37-cloud-amd64"}},
		{"dpkg (>= 1.17), debconf (>= 0.5) | debconf-2.0, mokutil", []string{"dpkg", "debconf", "mokutil"}},
		{"libc6:any(>=2.36), foo [amd64], bar<!nocheck>", []string{"libc6", "foo", "bar"}},
		{"", nil},
		{" , ,", nil},
	}
	for _, tt := range tests {
		if diff := cmp.Diff(tt.want, DependsOn(tt.in)); diff != "" {
			t.Errorf("DependsOn(%q) (-want +got):\n%s", tt.in, diff)
		}
	}
}

func TestCompareVersions(t *testing.T) {
	// Pairs in ascending order, from dpkg's own test suite and the
	// versions of the packages rackboot fetches.
	tests := []struct{ a, b string }{
		{"1.0", "1.1"},
		{"1.0~rc1", "1.0"},
		{"1.0~~", "1.0~"},
		{"1.0", "1.0a"},
		{"1.0a", "1.0+"},
		{"1.0-1", "1.0-2"},
		{"1.0-9", "1.0-10"},
		{"9", "10"},
		{"2:1.0", "10:0.1"},
		{"1:0.1", "2:0"},
		{"0.1", "1:0.0"},
		{"1+2.06+13+deb12u1", "1+2.06+13+deb12u2"},
		{"1.51~1+deb12u1+16.1-2~deb12u1", "1.51~1+deb12u1+16.1-2"},
		{"6.1.140-1", "6.1.192-2"},
		{"1.0.0+git-20190125.36a4c85-5", "1.0.0+git-20190125.36a4c85-5.1"},
		{"1.2.3", "1.2.3.0"},
		{"001", "2"},
	}
	for _, tt := range tests {
		if c := CompareVersions(tt.a, tt.b); c >= 0 {
			t.Errorf("CompareVersions(%q, %q) = %d, want < 0", tt.a, tt.b, c)
		}
		if c := CompareVersions(tt.b, tt.a); c <= 0 {
			t.Errorf("CompareVersions(%q, %q) = %d, want > 0", tt.b, tt.a, c)
		}
	}
	for _, v := range []string{"1.0", "0:1.0", "1.0-0", "1:2.3~4-5"} {
		if c := CompareVersions(v, v); c != 0 {
			t.Errorf("CompareVersions(%q, itself) = %d", v, c)
		}
	}
	if c := CompareVersions("1.0", "0:1.0"); c != 0 {
		t.Errorf("epoch 0 differs from no epoch: %d", c)
	}
}
