// Package firmware knows which boot loader each kind of client gets, and
// installs those loaders (and any other file of a Debian package, such as a
// kernel) from Debian's package archive.
//
// Trust is anchored in the suite's Release file, fetched over the mirror's
// URL: every Packages index is checked against the SHA256 and size the
// Release file lists, every .deb against its index entry, and nothing of a
// package is written unless all of it verified. The extracted files are
// recorded with their hashes in manifest.json beside them, so Verify can
// tell later whether a file on disk is still the one that was fetched. The
// Release file's OpenPGP signature is not checked: use an https:// mirror,
// or a mirror on a trusted network, where that matters.
//
// Layout of the firmware dir. It is also the TFTP root and the tree served
// under /firmware/ for UEFI HTTP boot, so a loader's path here is its TFTP
// path and its URL path:
//
//	ipxe/undionly.kpxe        x86 BIOS (0): iPXE on the PXE ROM's UNDI driver
//	ipxe/snponly.efi          x86-64 UEFI (7, 9) and UEFI HTTP boot (16)
//	ipxe/ipxe.efi             iPXE with its own NIC drivers, for firmware whose SNP driver is broken
//	efi/x64/shimx64.efi       x86-64 UEFI with Secure Boot: Microsoft-signed shim ...
//	efi/x64/grubx64.efi       ... which loads Debian's signed network GRUB from its own directory
//	efi/aa64/grubnetaa64.efi  AArch64 UEFI (11) and UEFI HTTP boot (19): Debian's signed network GRUB
//	efi/aa64/shimaa64.efi     AArch64 UEFI with Secure Boot: shim ...
//	efi/aa64/grubaa64.efi     ... and the same network GRUB under the name shim loads
//	efi/aa64/grubhttpaa64.efi AArch64 UEFI HTTP boot (19) without Secure Boot: a network GRUB
//	                          with http, built by grub-mkimage from grub-efi-arm64-bin
//	manifest.json             where each file came from and its SHA256
//
// UEFI HTTP boot on x86-64 gets snponly.efi, not ipxe.efi: firmware that has
// just done an HTTP boot has bound its own driver to the NIC and offers the
// Simple Network Protocol on it, which is all snponly.efi needs. ipxe.efi
// would unbind that driver and bring its own, which fails on NICs iPXE has
// no driver for and is the usual cause of a node that loads iPXE and then
// finds no network.
//
// The files come from these Debian packages (paths inside each .deb):
//
//	ipxe (all)                     usr/lib/ipxe/undionly.kpxe, usr/lib/ipxe/snponly.efi, boot/ipxe.efi
//	shim-signed (amd64)            usr/lib/shim/shimx64.efi.signed
//	shim-signed (arm64)            usr/lib/shim/shimaa64.efi.signed
//	grub-efi-amd64-signed (amd64)  usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed
//	grub-efi-arm64-signed (arm64)  usr/lib/grub/arm64-efi-signed/grubnetaa64.efi.signed
//
// Only the files are taken; the packages' dependencies (shim-signed-common,
// grub-common, mokutil, ...) hold installer scripts and tools that a
// network boot server does not need.
package firmware

import (
	"errors"
	"fmt"

	"github.com/rackboot/rackboot/boot"
)

// ErrNoLoader is returned for client types rackboot has no loader for.
var ErrNoLoader = errors.New("no boot loader for this client type")

// ErrSecureBootHTTP refuses UEFI HTTP boot on the Secure Boot path:
// Debian's signed GRUB, the only GRUB shim starts, has no http module and
// ends at its prompt after an HTTP boot. Such nodes boot over PXE (their
// firmware tries it when no HTTP boot offer comes).
var ErrSecureBootHTTP = errors.New("no signed loader boots over UEFI HTTP (Debian's signed GRUB has no http module): the Secure Boot path needs PXE")

// Loader paths, relative to the firmware dir.
const (
	IPXEBIOS     = "ipxe/undionly.kpxe"
	IPXESNP      = "ipxe/snponly.efi"
	IPXEEFI      = "ipxe/ipxe.efi"
	ShimX64      = "efi/x64/shimx64.efi"
	GRUBX64      = "efi/x64/grubx64.efi"
	GRUBNetAA64  = "efi/aa64/grubnetaa64.efi"
	ShimAA64     = "efi/aa64/shimaa64.efi"
	GRUBShimAA64 = "efi/aa64/grubaa64.efi"
	GRUBHTTPAA64 = "efi/aa64/grubhttpaa64.efi"
	ManifestFile = "manifest.json"
)

// DebianArchAll is the Debian architecture of packages that run anywhere.
const DebianArchAll = "all"

// Loader returns the file a client type boots first, relative to the
// firmware dir. secureBoot picks the shim → signed GRUB chain, which UEFI
// firmware enforcing Secure Boot with Microsoft's keys accepts; Debian's
// iPXE is not signed and such firmware refuses it.
func Loader(arch boot.ClientArch, secureBoot bool) (string, error) {
	switch arch {
	case boot.ClientX86BIOS:
		// BIOS has no Secure Boot: a fleet-wide policy must not strand it.
		return IPXEBIOS, nil
	case boot.ClientX64UEFIHTTP, boot.ClientARM64UEFIHTTP:
		if secureBoot {
			return "", fmt.Errorf("loader for %s: %w", arch, ErrSecureBootHTTP)
		}
		if arch == boot.ClientARM64UEFIHTTP {
			return GRUBHTTPAA64, nil
		}
		return IPXESNP, nil
	case boot.ClientX64UEFI, boot.ClientX64UEFIAlt:
		if secureBoot {
			return ShimX64, nil
		}
		return IPXESNP, nil
	case boot.ClientARM64UEFI:
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
	Dest    string // slash-separated path under the destination dir
}

// Loaders lists every file `rackboot firmware fetch` installs.
func Loaders() []Wanted {
	return []Wanted{
		{"ipxe", DebianArchAll, "usr/lib/ipxe/undionly.kpxe", IPXEBIOS},
		{"ipxe", DebianArchAll, "usr/lib/ipxe/snponly.efi", IPXESNP},
		{"ipxe", DebianArchAll, "boot/ipxe.efi", IPXEEFI},
		{"shim-signed", "amd64", "usr/lib/shim/shimx64.efi.signed", ShimX64},
		{"grub-efi-amd64-signed", "amd64", "usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed", GRUBX64},
		{"grub-efi-arm64-signed", "arm64", "usr/lib/grub/arm64-efi-signed/grubnetaa64.efi.signed", GRUBNetAA64},
		{"shim-signed", "arm64", "usr/lib/shim/shimaa64.efi.signed", ShimAA64},
		{"grub-efi-arm64-signed", "arm64", "usr/lib/grub/arm64-efi-signed/grubnetaa64.efi.signed", GRUBShimAA64},
	}
}
