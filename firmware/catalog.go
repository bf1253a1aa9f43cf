// Package firmware knows which boot loader each kind of client gets, and
// fetches those loaders from Debian's package archive: every index is
// checked against the Release file's SHA256, every package against its
// index entry, and the extracted files are recorded with their hashes in a
// manifest beside them.
//
// Layout of the firmware dir, which is also the TFTP root and the tree
// served under /firmware/ for UEFI HTTP boot:
//
//	ipxe/undionly.kpxe        x86 BIOS (PXE ROM → iPXE)
//	ipxe/snponly.efi          x86-64 UEFI (iPXE on the firmware's own NIC driver)
//	ipxe/ipxe.efi             x86-64 UEFI with iPXE's own NIC drivers
//	efi/x64/shimx64.efi       x86-64 UEFI Secure Boot: Microsoft-signed shim ...
//	efi/x64/grubx64.efi       ... which loads Debian's signed network GRUB from its own directory
//	efi/aa64/grubnetaa64.efi  AArch64 UEFI: Debian's signed network GRUB
//	efi/aa64/shimaa64.efi     AArch64 UEFI Secure Boot: shim ...
//	efi/aa64/grubaa64.efi     ... and the same GRUB under the name shim loads
package firmware

import (
	"errors"
	"fmt"

	"github.com/rackboot/rackboot/boot"
)

// ErrNoLoader is returned for client types rackboot has no loader for.
var ErrNoLoader = errors.New("no boot loader for this client type")

// Loader paths, relative to the firmware dir.
const (
	IPXEBIOS      = "ipxe/undionly.kpxe"
	IPXESNP       = "ipxe/snponly.efi"
	IPXEEFI       = "ipxe/ipxe.efi"
	ShimX64       = "efi/x64/shimx64.efi"
	GRUBX64       = "efi/x64/grubx64.efi"
	GRUBNetAA64   = "efi/aa64/grubnetaa64.efi"
	ShimAA64      = "efi/aa64/shimaa64.efi"
	GRUBShimAA64  = "efi/aa64/grubaa64.efi"
	ManifestFile  = "manifest.json"
	debianArchAll = "all"
)

// Loader returns the loader a client type boots first. secureBoot picks
// the shim → signed GRUB chain, which UEFI firmware enforcing Secure Boot
// with Microsoft's keys accepts (Debian's iPXE is not signed).
//
// UEFI HTTP boot (16) gets snponly.efi too: the firmware that did the HTTP
// boot has a working SNP driver for the NIC, which is all snponly needs,
// and iPXE's own drivers would fight the firmware's for the same device.
func Loader(arch boot.ClientArch, secureBoot bool) (string, error) {
	switch arch {
	case boot.ClientX86BIOS:
		return IPXEBIOS, nil
	case boot.ClientX64UEFI, boot.ClientX64UEFIAlt, boot.ClientX64UEFIHTTP:
		if secureBoot {
			return ShimX64, nil
		}
		return IPXESNP, nil
	case boot.ClientARM64UEFI, boot.ClientARM64UEFIHTTP:
		if secureBoot {
			return ShimAA64, nil
		}
		return GRUBNetAA64, nil
	}
	return "", fmt.Errorf("loader for %s: %w", arch, ErrNoLoader)
}

// Wanted is one file to take out of one Debian package.
type Wanted struct {
	Package string // Debian package name
	Arch    string // Debian architecture of the package: amd64, arm64 or all
	Member  string // path inside the package, e.g. usr/lib/ipxe/snponly.efi
	Dest    string // path under the destination dir
}

// Loaders lists every file `rackboot firmware fetch` installs.
func Loaders() []Wanted {
	return []Wanted{
		{"ipxe", debianArchAll, "usr/lib/ipxe/undionly.kpxe", IPXEBIOS},
		{"ipxe", debianArchAll, "usr/lib/ipxe/snponly.efi", IPXESNP},
		{"ipxe", debianArchAll, "boot/ipxe.efi", IPXEEFI},
		{"shim-signed", "amd64", "usr/lib/shim/shimx64.efi.signed", ShimX64},
		{"grub-efi-amd64-signed", "amd64", "usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed", GRUBX64},
		{"grub-efi-arm64-signed", "arm64", "usr/lib/grub/arm64-efi-signed/grubnetaa64.efi.signed", GRUBNetAA64},
		{"shim-signed", "arm64", "usr/lib/shim/shimaa64.efi.signed", ShimAA64},
		{"grub-efi-arm64-signed", "arm64", "usr/lib/grub/arm64-efi-signed/grubnetaa64.efi.signed", GRUBShimAA64},
	}
}
