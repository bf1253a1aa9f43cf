package firmware

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/rackboot/rackboot/boot"
)

func TestLoader(t *testing.T) {
	tests := []struct {
		arch       boot.ClientArch
		secureBoot bool
		want       string
		err        error
	}{
		{boot.ClientX86BIOS, false, IPXEBIOS, nil},
		{boot.ClientX86BIOS, true, IPXEBIOS, nil},
		{boot.ClientX64UEFI, false, IPXESNP, nil},
		{boot.ClientX64UEFI, true, ShimX64, nil},
		{boot.ClientX64UEFIAlt, false, IPXESNP, nil},
		{boot.ClientX64UEFIAlt, true, ShimX64, nil},
		{boot.ClientX64UEFIHTTP, false, IPXESNP, nil},
		{boot.ClientX64UEFIHTTP, true, "", ErrSecureBootHTTP},
		{boot.ClientARM64UEFI, false, GRUBNetAA64, nil},
		{boot.ClientARM64UEFI, true, ShimAA64, nil},
		{boot.ClientARM64UEFIHTTP, false, GRUBHTTPAA64, nil},
		{boot.ClientARM64UEFIHTTP, true, "", ErrSecureBootHTTP},
		{boot.ClientIA32UEFI, false, "", ErrNoLoader},
		{boot.ClientIA32UEFI, true, "", ErrNoLoader},
		{boot.ClientArch(10), false, "", ErrNoLoader}, // ARM 32-bit UEFI
		{boot.ClientArch(0xffff), false, "", ErrNoLoader},
	}
	for _, tt := range tests {
		name := tt.arch.String()
		if tt.secureBoot {
			name += "/secureboot"
		}
		t.Run(name, func(t *testing.T) {
			got, err := Loader(tt.arch, tt.secureBoot)
			if !errors.Is(err, tt.err) {
				t.Fatalf("Loader error %v, want %v", err, tt.err)
			}
			if got != tt.want {
				t.Errorf("Loader = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestLoadersCoverCatalog checks that every file Loader can answer is one
// that Fetch installs (or BuildGRUBHTTP builds), and that shim finds its
// GRUB beside it.
func TestLoadersCoverCatalog(t *testing.T) {
	installed := map[string]bool{GRUBHTTPAA64: true}
	for _, w := range Loaders() {
		if installed[w.Dest] {
			t.Errorf("%s installed twice", w.Dest)
		}
		installed[w.Dest] = true
	}
	for _, arch := range []boot.ClientArch{0, 6, 7, 9, 10, 11, 16, 19} {
		for _, sb := range []bool{false, true} {
			if l, err := Loader(arch, sb); err == nil && !installed[l] {
				t.Errorf("Loader(%s, %v) = %s, which Fetch does not install", arch, sb, l)
			}
		}
	}
	// shim loads grub<arch>.efi from its own directory.
	for shim, grub := range map[string]string{ShimX64: GRUBX64, ShimAA64: GRUBShimAA64} {
		if !installed[grub] {
			t.Errorf("%s without %s", shim, grub)
		}
	}
	var srcs []string
	for _, w := range Loaders() {
		if w.Dest == GRUBX64 || w.Dest == GRUBShimAA64 || w.Dest == GRUBNetAA64 {
			srcs = append(srcs, w.Member)
		}
	}
	want := []string{
		"usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed",
		"usr/lib/grub/arm64-efi-signed/grubnetaa64.efi.signed",
		"usr/lib/grub/arm64-efi-signed/grubnetaa64.efi.signed",
	}
	if diff := cmp.Diff(want, srcs); diff != "" {
		t.Errorf("GRUB sources are not the network images (-want +got):\n%s", diff)
	}
}
