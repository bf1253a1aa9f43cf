// Package domain writes the libvirt domain XML of a rackboot VM and reads
// which guests a hypervisor's libvirt can run.
//
// Every VM is a UEFI machine (q35 with OVMF on x86-64, virt with AAVMF on
// AArch64) that network-boots first, so rackboot decides on each power-on
// whether it runs the agent or exits to the VM's disk, as for metal. It gets
// a virtio disk from a libvirt storage pool, one virtio NIC on a host bridge,
// a virtio RNG, a serial console, and its GPUs as whole PCI devices
// (passthrough) or mediated devices (vGPU, MIG).
//
// A NIC with a VLAN tag is an Open vSwitch port: libvirt sets a per-port
// 802.1Q tag on OVS bridges only, so a tagged VM needs an OVS bridge on its
// hypervisor, and an untagged one may use a Linux bridge.
//
// XML validates a Spec before it writes anything; ParseCaps reads
// "virsh capabilities" to say which architectures a host runs under KVM and
// which only under TCG.
package domain

import (
	"fmt"
	"strings"

	"libvirt.org/go/libvirtxml"

	"github.com/rackboot/rackboot/boot"
)

// Boot order: the NIC first, so rackboot is asked on every power-on; the
// disk second, for when rackboot's answer is "exit to the local disk".
const (
	bootOrderNIC  = 1
	bootOrderDisk = 2
)

// gicV2MaxCPUs is the most vCPUs a GICv2 interrupt controller serves.
const gicV2MaxCPUs = 8

// XML validates s and returns its libvirt domain XML. An invalid s gives an
// error wrapping a *SpecError for each field it gets wrong, all of which
// wrap ErrInvalid.
func XML(s Spec) (string, error) {
	if err := s.validate(); err != nil {
		return "", err
	}
	d := build(s)
	out, err := d.Marshal()
	if err != nil {
		return "", fmt.Errorf("marshal domain %s: %w", s.Name, err)
	}
	return out + "\n", nil
}

func build(s Spec) *libvirtxml.Domain {
	fw := s.Firmware
	if fw == (Firmware{}) {
		fw = DefaultFirmware(s.Arch)
	}
	d := &libvirtxml.Domain{
		Type:   "kvm",
		Name:   s.Name,
		UUID:   strings.ToLower(s.UUID),
		Memory: &libvirtxml.DomainMemory{Value: uint(s.MemoryMiB), Unit: "MiB"},
		VCPU:   &libvirtxml.DomainVCPU{Placement: "static", Value: uint(s.VCPUs)},
		OS: &libvirtxml.DomainOS{
			Type: &libvirtxml.DomainOSType{Arch: string(s.Arch), Machine: machine(s.Arch), Type: "hvm"},
			Loader: &libvirtxml.DomainLoader{
				Path:     fw.Loader,
				Readonly: "yes",
				Type:     "pflash",
			},
			NVRam: &libvirtxml.DomainNVRam{Template: fw.NVRAMTemplate},
		},
		// ACPI is how "virsh shutdown" asks the guest to power off, and
		// how UEFI Linux on AArch64 finds its devices.
		Features: &libvirtxml.DomainFeatureList{ACPI: &libvirtxml.DomainFeature{}},
		CPU:      cpu(s),
		Clock:    &libvirtxml.DomainClock{Offset: "utc"},
		// A guest reboot restarts QEMU, so the VM network-boots again like
		// metal would. A crashed guest is stopped, not restarted: it stays
		// off where the API and libvirt's lifecycle event show it, instead
		// of boot-looping a broken image while it holds GPUs; "preserve"
		// would keep its memory and devices held by a dead guest, and a
		// core dump writes all of its memory to the hypervisor's disk.
		OnPoweroff: "destroy",
		OnReboot:   "restart",
		OnCrash:    "destroy",
		Devices:    devices(s),
	}
	if s.Accel == AccelTCG {
		d.Type = "qemu"
	}
	switch s.Arch {
	case boot.ArchX86_64:
		d.Features.APIC = &libvirtxml.DomainFeatureAPIC{}
		// Suspend to RAM or disk leaves a VM that libvirt reports running
		// but that does nothing, and passthrough and mediated GPUs do not
		// come back from it. libvirt refuses these settings on AArch64's
		// virt machine, which has no S3 or S4 to switch off.
		d.PM = &libvirtxml.DomainPM{
			SuspendToMem:  &libvirtxml.DomainPMPolicy{Enabled: "no"},
			SuspendToDisk: &libvirtxml.DomainPMPolicy{Enabled: "no"},
		}
	case boot.ArchAArch64:
		// Under KVM libvirt picks the newest GIC the host has (GICv3 on
		// Ampere Altra and Neoverse hosts, which have no GICv2). Under TCG
		// it falls back to GICv2, which serves at most 8 vCPUs.
		if s.Accel == AccelTCG && s.VCPUs > gicV2MaxCPUs {
			d.Features.GIC = &libvirtxml.DomainFeatureGIC{Version: "3"}
		}
	}
	return d
}

func machine(arch boot.Arch) string {
	if arch == boot.ArchAArch64 {
		return "virt"
	}
	return "q35"
}

func cpu(s Spec) *libvirtxml.DomainCPU {
	if s.Accel == AccelKVM {
		// The host's CPU as it is: the fastest, what GPU drivers expect,
		// and it spares libvirt matching the host against its CPU map,
		// which fails as "unknown processor" on Ampere Altra and
		// Neoverse-N1 hosts.
		return &libvirtxml.DomainCPU{Mode: "host-passthrough"}
	}
	model := s.CPUModel
	if model == "" {
		model = DefaultCPUModel(s.Arch)
	}
	return &libvirtxml.DomainCPU{
		Mode:  "custom",
		Match: "exact",
		// forbid: a model QEMU cannot run is an error at start, not a
		// silently different CPU.
		Model: &libvirtxml.DomainCPUModel{Value: model, Fallback: "forbid"},
	}
}

func devices(s Spec) *libvirtxml.DomainDeviceList {
	format := s.Disk.Format
	if format == "" {
		format = "raw"
	}
	mac, _ := parseMAC(s.NIC.MAC) // validated
	port := uint(0)
	nic := libvirtxml.DomainInterface{
		MAC:    &libvirtxml.DomainInterfaceMAC{Address: mac.String()},
		Source: &libvirtxml.DomainInterfaceSource{Bridge: &libvirtxml.DomainInterfaceSourceBridge{Bridge: s.NIC.Bridge}},
		Model:  &libvirtxml.DomainInterfaceModel{Type: "virtio"},
		Boot:   &libvirtxml.DomainDeviceBoot{Order: bootOrderNIC},
		// No option ROM: the firmware's own virtio-net driver and PXE
		// client boot, the path OVMF and AAVMF take against rackboot.
		// QEMU's iPXE ROM would put a second iPXE in front of the one
		// rackboot serves, and its UEFI driver is x86-64 code.
		ROM: &libvirtxml.DomainROM{Enabled: "no"},
	}
	if s.NIC.VLAN != 0 {
		nic.VirtualPort = &libvirtxml.DomainInterfaceVirtualPort{
			Params: &libvirtxml.DomainInterfaceVirtualPortParams{OpenVSwitch: &libvirtxml.DomainInterfaceVirtualPortParamsOpenVSwitch{}},
		}
		nic.VLan = &libvirtxml.DomainInterfaceVLan{Tags: []libvirtxml.DomainInterfaceVLanTag{{ID: uint(s.NIC.VLAN)}}}
	}
	dev := &libvirtxml.DomainDeviceList{
		Emulator: s.Emulator,
		Disks: []libvirtxml.DomainDisk{{
			Device: "disk",
			Driver: &libvirtxml.DomainDiskDriver{Name: "qemu", Type: format},
			Source: &libvirtxml.DomainDiskSource{Volume: &libvirtxml.DomainDiskSourceVolume{Pool: s.Disk.Pool, Volume: s.Disk.Volume}},
			Target: &libvirtxml.DomainDiskTarget{Dev: "vda", Bus: "virtio"},
			Boot:   &libvirtxml.DomainDeviceBoot{Order: bootOrderDisk},
		}},
		Interfaces: []libvirtxml.DomainInterface{nic},
		// "vm console" attaches here; there is no graphics device.
		Serials: []libvirtxml.DomainSerial{{
			Source: &libvirtxml.DomainChardevSource{Pty: &libvirtxml.DomainChardevSourcePty{}},
			Target: &libvirtxml.DomainSerialTarget{Port: &port},
		}},
		Consoles: []libvirtxml.DomainConsole{{
			Source: &libvirtxml.DomainChardevSource{Pty: &libvirtxml.DomainChardevSourcePty{}},
			Target: &libvirtxml.DomainConsoleTarget{Type: "serial", Port: &port},
		}},
		// A guest without a hardware RNG can wait minutes at boot for the
		// kernel's entropy pool, and rackboot's agent waits with it.
		RNGs: []libvirtxml.DomainRNG{{
			Model:   "virtio",
			Backend: &libvirtxml.DomainRNGBackend{Random: &libvirtxml.DomainRNGBackendRandom{Device: "/dev/urandom"}},
		}},
	}
	if s.Arch == boot.ArchX86_64 {
		// Without a panic device QEMU never learns that the guest
		// crashed, and on_crash is never taken. libvirt 9.0 has no panic
		// model for AArch64's virt machine.
		dev.Panics = []libvirtxml.DomainPanic{{Model: "isa"}}
	}
	for _, a := range s.PCI {
		p, _ := parsePCI(a) // validated
		dev.Hostdevs = append(dev.Hostdevs, libvirtxml.DomainHostdev{
			// managed: libvirt binds the device to vfio-pci when the VM
			// starts and gives it back to its host driver when it stops.
			Managed: "yes",
			SubsysPCI: &libvirtxml.DomainHostdevSubsysPCI{
				Source: &libvirtxml.DomainHostdevSubsysPCISource{
					Address: &libvirtxml.DomainAddressPCI{Domain: &p.domain, Bus: &p.bus, Slot: &p.slot, Function: &p.function},
				},
			},
		})
	}
	for _, a := range s.VFs {
		p, _ := parsePCI(a) // validated
		dev.Hostdevs = append(dev.Hostdevs, libvirtxml.DomainHostdev{
			Managed: "no",
			SubsysPCI: &libvirtxml.DomainHostdevSubsysPCI{
				Source: &libvirtxml.DomainHostdevSubsysPCISource{
					Address: &libvirtxml.DomainAddressPCI{Domain: &p.domain, Bus: &p.bus, Slot: &p.slot, Function: &p.function},
				},
			},
		})
	}
	for _, m := range s.Mdevs {
		dev.Hostdevs = append(dev.Hostdevs, libvirtxml.DomainHostdev{
			SubsysMDev: &libvirtxml.DomainHostdevSubsysMDev{
				Model:  "vfio-pci",
				Source: &libvirtxml.DomainHostdevSubsysMDevSource{Address: &libvirtxml.DomainAddressMDev{UUID: strings.ToLower(m)}},
			},
		})
	}
	return dev
}
