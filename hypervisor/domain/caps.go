package domain

import (
	"cmp"
	"fmt"
	"slices"

	"libvirt.org/go/libvirtxml"

	"github.com/rackboot/rackboot/boot"
)

// Caps is what a hypervisor's libvirt says it runs, from its capabilities
// XML ("virsh capabilities"), for the architectures rackboot boots.
type Caps struct {
	// Guests has one entry per architecture, sorted by Arch.
	Guests []Guest
}

// Guest is one guest architecture of a hypervisor.
type Guest struct {
	Arch boot.Arch
	// Emulators maps each accelerator libvirt offers for Arch to the QEMU
	// binary it runs: AccelKVM for <domain type='kvm'>, AccelTCG for
	// <domain type='qemu'>.
	Emulators map[Accel]string
}

// ParseCaps reads libvirt's capabilities XML. Guests of other OS types than
// hvm, other architectures than boot's, and other domain types than kvm
// and qemu are left out.
func ParseCaps(doc string) (Caps, error) {
	var lc libvirtxml.Caps
	if err := lc.Unmarshal(doc); err != nil {
		return Caps{}, fmt.Errorf("parse libvirt capabilities: %w", err)
	}
	byArch := make(map[boot.Arch]map[Accel]string)
	for _, g := range lc.Guests {
		arch := boot.Arch(g.Arch.Name)
		if g.OSType != "hvm" || (arch != boot.ArchX86_64 && arch != boot.ArchAArch64) {
			continue
		}
		for _, d := range g.Arch.Domains {
			var accel Accel
			switch d.Type {
			case "kvm":
				accel = AccelKVM
			case "qemu":
				accel = AccelTCG
			default:
				continue
			}
			// A <domain> may name its own emulator; otherwise the arch's
			// applies.
			emu := d.Emulator
			if emu == "" {
				emu = g.Arch.Emulator
			}
			if emu == "" {
				return Caps{}, fmt.Errorf("parse libvirt capabilities: guest %s domain %s: no emulator", arch, d.Type)
			}
			if byArch[arch] == nil {
				byArch[arch] = make(map[Accel]string)
			}
			byArch[arch][accel] = emu
		}
	}
	var c Caps
	for arch, emus := range byArch {
		c.Guests = append(c.Guests, Guest{Arch: arch, Emulators: emus})
	}
	slices.SortFunc(c.Guests, func(a, b Guest) int { return cmp.Compare(a.Arch, b.Arch) })
	return c, nil
}

// Native lists the architectures the host runs under KVM. libvirt lists
// kvm when /dev/kvm opens, which does not prove that guests run: nested
// virtualisation can offer a KVM that fails on the first instruction.
func (c Caps) Native() []boot.Arch {
	return c.archs(func(g Guest) bool { return g.Emulators[AccelKVM] != "" })
}

// Emulated lists the architectures the host runs under TCG only.
func (c Caps) Emulated() []boot.Arch {
	return c.archs(func(g Guest) bool { return g.Emulators[AccelKVM] == "" && g.Emulators[AccelTCG] != "" })
}

// Emulator is the QEMU binary libvirt runs for arch under accel, or "" when
// it offers none.
func (c Caps) Emulator(arch boot.Arch, accel Accel) string {
	for _, g := range c.Guests {
		if g.Arch == arch {
			return g.Emulators[accel]
		}
	}
	return ""
}

func (c Caps) archs(keep func(Guest) bool) []boot.Arch {
	var out []boot.Arch
	for _, g := range c.Guests {
		if keep(g) {
			out = append(out, g.Arch)
		}
	}
	return out
}
