package domain

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/rackboot/rackboot/boot"
)

// Accel is how QEMU runs the guest's instructions.
type Accel string

// The accelerators a rackboot VM runs under.
const (
	// AccelKVM runs the guest on the host's CPU: <domain type='kvm'>.
	AccelKVM Accel = "kvm"
	// AccelTCG has QEMU translate every instruction: <domain type='qemu'>.
	// It runs any architecture on any host, many times slower.
	AccelTCG Accel = "tcg"
)

// Spec is what a rackboot VM is made of. Every field is validated by XML.
type Spec struct {
	// Name is the libvirt domain name and the guest's hostname: a
	// lower-case DNS label, so one name works in virsh, DNS and the API.
	Name string
	// UUID is the domain UUID and the guest's SMBIOS system UUID, in the
	// canonical 36-character form.
	UUID string
	// Arch is the guest architecture: boot.ArchX86_64 or boot.ArchAArch64.
	Arch boot.Arch
	// VCPUs is the number of virtual CPUs, at least 1.
	VCPUs int
	// MemoryMiB is the guest memory, at least 64 MiB.
	MemoryMiB int64
	// Accel is AccelKVM or AccelTCG.
	Accel Accel
	// CPUModel is the QEMU CPU model under TCG (<cpu mode='custom'>); empty
	// means DefaultCPUModel. Under KVM the guest always sees the host's CPU,
	// and a model is refused rather than ignored.
	CPUModel string
	// Firmware is the UEFI build the guest boots; zero means the arch's
	// Debian build (DefaultFirmware).
	Firmware Firmware
	// Disk is the guest's system disk, a volume of a libvirt storage pool.
	Disk Disk
	// NIC is the guest's one network interface, which it network-boots from.
	NIC NIC
	// PCI lists host PCI devices passed through whole, as DDDD:BB:SS.F
	// (0000:41:00.0). Every function of an IOMMU group must be listed.
	PCI []string
	// Mdevs lists mediated devices by UUID: vGPUs and MIG partitions alike.
	Mdevs []string
	// VFs lists vGPUs that are SR-IOV virtual functions (NVIDIA's
	// vendor-specific VFIO framework), as DDDD:BB:SS.F. They are passed
	// through unmanaged: the hypervisor's agent gave each its vGPU type
	// and keeps it bound to the NVIDIA driver, which libvirt's managed
	// rebinding to vfio-pci would undo.
	VFs []string
	// Emulator is the QEMU binary on the hypervisor; empty lets libvirt
	// pick the one its capabilities list for Arch and Accel.
	Emulator string
}

// Firmware is a UEFI build as two files on the hypervisor. Both are set, or
// neither.
type Firmware struct {
	// Loader is the read-only firmware code, mapped as the first pflash.
	Loader string
	// NVRAMTemplate is the variable store that libvirt copies for each
	// domain when it first starts, then keeps as the domain's NVRAM.
	NVRAMTemplate string
}

// Disk is a libvirt storage volume.
type Disk struct {
	Pool   string
	Volume string
	// Format is the volume's image format, "raw" or "qcow2"; empty means
	// raw. It is written out because libvirt does not probe formats: a
	// qcow2 volume read as raw boots nothing, and a raw one read as qcow2
	// is refused.
	Format string
}

// NIC is a network interface on a host bridge.
type NIC struct {
	// Bridge is the host bridge the guest's tap joins.
	Bridge string
	// MAC is the guest's unicast MAC: the address rackboot knows the node by.
	MAC string
	// VLAN is an 802.1Q tag from 1 to 4094, 0 for none. A tag makes the
	// interface an Open vSwitch port, and Bridge must be an OVS bridge:
	// libvirt tags ports of OVS bridges only, never of Linux bridges.
	VLAN int
}

// ErrInvalid is wrapped by every *SpecError.
var ErrInvalid = errors.New("invalid")

// SpecError is a Spec field that XML refuses.
type SpecError struct {
	// Field names the field as Go does: "Name", "NIC.MAC", "PCI[1]".
	Field  string
	Value  string
	Reason string
}

func (e *SpecError) Error() string {
	return fmt.Sprintf("domain spec %s %q: %s", e.Field, e.Value, e.Reason)
}

func (e *SpecError) Unwrap() error { return ErrInvalid }

// DefaultCPUModel is the QEMU CPU model a TCG guest of arch gets.
//
// x86-64: Westmere. It is the newest Intel model that libvirt's domain
// capabilities call usable under the TCG of Debian bookworm's QEMU 7.2
// (SandyBridge and every later model are not), and it is x86-64-v2 (SSE4.2,
// POPCNT), which RHEL 9 and its rebuilds require; QEMU's own default,
// qemu64, is not.
//
// AArch64: cortex-a57, an ARMv8.0 core that every arm64 distribution kernel
// runs on and AAVMF boots under TCG. "max" changes with each QEMU release and
// emulates pointer authentication, which makes TCG guests markedly slower.
func DefaultCPUModel(arch boot.Arch) string {
	switch arch {
	case boot.ArchX86_64:
		return "Westmere"
	case boot.ArchAArch64:
		return "cortex-a57"
	}
	return ""
}

// DefaultFirmware is Debian's UEFI build for arch: OVMF from package ovmf
// (the 4 MiB build without Secure Boot, which needs no SMM) and AAVMF from
// package qemu-efi-aarch64.
func DefaultFirmware(arch boot.Arch) Firmware {
	switch arch {
	case boot.ArchX86_64:
		return Firmware{
			Loader:        "/usr/share/OVMF/OVMF_CODE_4M.fd",
			NVRAMTemplate: "/usr/share/OVMF/OVMF_VARS_4M.fd",
		}
	case boot.ArchAArch64:
		return Firmware{
			Loader:        "/usr/share/AAVMF/AAVMF_CODE.fd",
			NVRAMTemplate: "/usr/share/AAVMF/AAVMF_VARS.fd",
		}
	}
	return Firmware{}
}

// minMemoryMiB is below what OVMF and a Linux ramdisk need; smaller values
// are typing mistakes (a size in GiB) rather than guests.
const minMemoryMiB = 64

// validate reports every field s gets wrong, so an operator fixes a spec in
// one go.
func (s Spec) validate() error {
	var errs []error
	bad := func(field, value, reason string) {
		errs = append(errs, &SpecError{Field: field, Value: value, Reason: reason})
	}
	if !isLabel(s.Name) {
		bad("Name", s.Name, "want a lower-case hostname label: a-z, 0-9 and '-', 1 to 63 characters, no '-' at either end")
	}
	if !isUUID(s.UUID) {
		bad("UUID", s.UUID, "want a non-nil UUID as 8-4-4-4-12 hex digits")
	}
	switch s.Arch {
	case boot.ArchX86_64, boot.ArchAArch64:
	default:
		bad("Arch", string(s.Arch), fmt.Sprintf("want %q or %q", boot.ArchX86_64, boot.ArchAArch64))
	}
	if s.VCPUs < 1 {
		bad("VCPUs", fmt.Sprint(s.VCPUs), "want at least 1")
	}
	if s.MemoryMiB < minMemoryMiB {
		bad("MemoryMiB", fmt.Sprint(s.MemoryMiB), fmt.Sprintf("want at least %d", minMemoryMiB))
	}
	switch s.Accel {
	case AccelKVM:
		if s.CPUModel != "" {
			bad("CPUModel", s.CPUModel, "a KVM guest runs on the host's CPU; a model applies under tcg only")
		}
	case AccelTCG:
		if s.CPUModel != "" && !isToken(s.CPUModel, 64) {
			bad("CPUModel", s.CPUModel, "want a QEMU CPU model name: letters, digits, '.', '_', '-'")
		}
	default:
		bad("Accel", string(s.Accel), fmt.Sprintf("want %q or %q", AccelKVM, AccelTCG))
	}
	switch {
	case s.Firmware == Firmware{}:
	case s.Firmware.Loader == "" || s.Firmware.NVRAMTemplate == "":
		bad("Firmware", s.Firmware.Loader+s.Firmware.NVRAMTemplate, "set both Loader and NVRAMTemplate, or neither")
	default:
		if why := pathProblem(s.Firmware.Loader); why != "" {
			bad("Firmware.Loader", s.Firmware.Loader, why)
		}
		if why := pathProblem(s.Firmware.NVRAMTemplate); why != "" {
			bad("Firmware.NVRAMTemplate", s.Firmware.NVRAMTemplate, why)
		}
	}
	if !isObjectName(s.Disk.Pool) {
		bad("Disk.Pool", s.Disk.Pool, "want a storage pool name: letters, digits, '.', '_', '+', '-', not starting with '.'")
	}
	if !isObjectName(s.Disk.Volume) {
		bad("Disk.Volume", s.Disk.Volume, "want a volume name: letters, digits, '.', '_', '+', '-', not starting with '.'")
	}
	switch s.Disk.Format {
	case "", "raw", "qcow2":
	default:
		bad("Disk.Format", s.Disk.Format, `want "raw" or "qcow2"`)
	}
	if !isIfName(s.NIC.Bridge) {
		bad("NIC.Bridge", s.NIC.Bridge, "want a Linux interface name: 1 to 15 letters, digits, '.', '_', '-'")
	}
	if _, err := parseMAC(s.NIC.MAC); err != nil {
		bad("NIC.MAC", s.NIC.MAC, err.Error())
	}
	if s.NIC.VLAN < 0 || s.NIC.VLAN > 4094 {
		bad("NIC.VLAN", fmt.Sprint(s.NIC.VLAN), "want 1 to 4094, or 0 for none")
	}
	seen := make(map[string]bool)
	for i, a := range s.PCI {
		field := fmt.Sprintf("PCI[%d]", i)
		p, err := parsePCI(a)
		switch {
		case err != nil:
			bad(field, a, err.Error())
		case seen[p.String()]:
			bad(field, a, "listed twice")
		default:
			seen[p.String()] = true
		}
	}
	for i, a := range s.VFs {
		field := fmt.Sprintf("VFs[%d]", i)
		p, err := parsePCI(a)
		switch {
		case err != nil:
			bad(field, a, err.Error())
		case seen[p.String()]:
			bad(field, a, "listed twice")
		default:
			seen[p.String()] = true
		}
	}
	seen = make(map[string]bool)
	for i, m := range s.Mdevs {
		field := fmt.Sprintf("Mdevs[%d]", i)
		switch {
		case !isUUID(m):
			bad(field, m, "want a non-nil mdev UUID as 8-4-4-4-12 hex digits")
		case seen[strings.ToLower(m)]:
			bad(field, m, "listed twice")
		default:
			seen[strings.ToLower(m)] = true
		}
	}
	if s.Emulator != "" {
		if why := pathProblem(s.Emulator); why != "" {
			bad("Emulator", s.Emulator, why)
		}
	}
	return errors.Join(errs...)
}

// isLabel reports whether s is an RFC 1123 host name label in lower case.
// libvirt refuses only '/' and newlines in a name, but the name is also the
// guest's hostname and part of file names under /etc/libvirt and
// /var/lib/libvirt; upper case would let two domains share one hostname.
func isLabel(s string) bool {
	if len(s) < 1 || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for _, c := range []byte(s) {
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// isUUID accepts the canonical form only: google/uuid also parses braces,
// urn:uuid: and bare hex, which libvirt would read differently or refuse.
func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	u, err := uuid.Parse(s)
	return err == nil && u != uuid.Nil
}

func isToken(s string, max int) bool {
	if len(s) < 1 || len(s) > max {
		return false
	}
	for _, c := range []byte(s) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// isObjectName keeps pool and volume names to what every pool type stores
// as a file or an LV name: no '/', no leading '.', nothing a shell quotes.
func isObjectName(s string) bool {
	if s == "" || len(s) > 255 || s[0] == '.' {
		return false
	}
	return isToken(strings.ReplaceAll(s, "+", "_"), 255)
}

// isIfName follows the kernel's IFNAMSIZ (15 characters) and leaves out
// '/', ':' and spaces, which it or iproute2 refuse or misread.
func isIfName(s string) bool {
	return isToken(s, 15) && s != "." && s != ".."
}

// pathProblem says what is wrong with a path on the hypervisor, or "".
// Quotes, '&' and '<' are fine: the encoder escapes them. Control
// characters are not, as XML 1.0 cannot carry them.
func pathProblem(p string) string {
	switch {
	case !utf8.ValidString(p):
		return "want valid UTF-8"
	case strings.IndexFunc(p, unicode.IsControl) >= 0:
		return "want no control characters"
	case !filepath.IsAbs(p):
		return "want an absolute path"
	case filepath.Clean(p) != p:
		return "want a clean path (no '.', '..', '//' or trailing '/')"
	}
	return ""
}

func parseMAC(s string) (net.HardwareAddr, error) {
	mac, err := net.ParseMAC(s)
	switch {
	case err != nil:
		return nil, fmt.Errorf("want a MAC such as 52:54:00:12:34:56")
	case len(mac) != 6:
		return nil, fmt.Errorf("want a 48-bit MAC")
	case mac[0]&1 != 0:
		return nil, fmt.Errorf("want a unicast MAC (the first octet's lowest bit clear)")
	case string(mac) == "\x00\x00\x00\x00\x00\x00":
		return nil, fmt.Errorf("want a MAC other than all zeros")
	}
	return mac, nil
}

// pciAddr is a host PCI function.
type pciAddr struct {
	domain, bus, slot, function uint
}

func (p pciAddr) String() string {
	return fmt.Sprintf("%04x:%02x:%02x.%x", p.domain, p.bus, p.slot, p.function)
}

// parsePCI reads the DDDD:BB:SS.F form that sysfs and lspci -D print.
func parsePCI(s string) (pciAddr, error) {
	var p pciAddr
	if len(s) != len("0000:00:00.0") || s[4] != ':' || s[7] != ':' || s[10] != '.' {
		return p, fmt.Errorf("want a PCI address as DDDD:BB:SS.F, such as 0000:41:00.0")
	}
	for _, part := range []struct {
		hex string
		max uint
		to  *uint
	}{
		{s[0:4], 0xffff, &p.domain},
		{s[5:7], 0xff, &p.bus},
		{s[8:10], 0x1f, &p.slot},
		{s[11:12], 7, &p.function},
	} {
		var v uint
		for _, c := range []byte(part.hex) {
			var d byte
			switch {
			case '0' <= c && c <= '9':
				d = c - '0'
			case 'a' <= c && c <= 'f':
				d = c - 'a' + 10
			case 'A' <= c && c <= 'F':
				d = c - 'A' + 10
			default:
				return p, fmt.Errorf("want a PCI address as DDDD:BB:SS.F in hex digits")
			}
			v = v<<4 | uint(d)
		}
		if v > part.max {
			return p, fmt.Errorf("want a slot from 00 to 1f and a function from 0 to 7")
		}
		*part.to = v
	}
	return p, nil
}
