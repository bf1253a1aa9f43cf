// Package inventory describes a machine's hardware as the agent reports
// it and the server stores it: CPUs and NUMA, memory and DIMMs, disks,
// NICs, every PCI device, and the GPUs with what they are ready for
// (passthrough, vGPU, MIG). The JSON uses ironic-python-agent's field
// names and units where IPA has the field, so Ironic tooling reads it as
// is; rackboot's extra detail sits beside them.
//
// Read builds an Inventory from /sys, /proc and the DMI tables under a
// root directory ("/" on a real machine, a recorded tree in tests). It
// never runs a program and needs no device driver: GPUs are found by PCI
// class, not by a loaded driver, because the agent ramdisk has none.
package inventory

import "strings"

// Version is the version of the JSON shape; a reader of an inventory
// with another version must not guess.
const Version = 1

// Inventory is one machine's hardware.
type Inventory struct {
	Version      int          `json:"version"`
	CPU          CPU          `json:"cpu"`
	Memory       Memory       `json:"memory"`
	Disks        []Disk       `json:"disks"`
	Interfaces   []Interface  `json:"interfaces"`
	SystemVendor SystemVendor `json:"system_vendor"`
	Boot         Boot         `json:"boot"`
	// BMCAddress, BMCV6Address and BMCMAC are the BMC's LAN addresses as
	// the BMC reports them through the in-band interface (/dev/ipmi0);
	// empty when the machine has none or the agent could not ask it.
	BMCAddress   string `json:"bmc_address,omitempty"`
	BMCV6Address string `json:"bmc_v6address,omitempty"`
	BMCMAC       string `json:"bmc_mac,omitempty"`

	Board      Board       `json:"board"`
	BIOS       BIOS        `json:"bios"`
	PCIDevices []PCIDevice `json:"pci_devices"`
	// GPUs are the display controllers and processing accelerators.
	GPUs []GPU `json:"gpus"`
	// NVSwitches are an HGX board's NVLink switches: bridges, not GPUs.
	NVSwitches []NVSwitch `json:"nvswitches,omitempty"`
	// GPUVerdict sums the GPUs up for the placement engine: a hypervisor
	// offers its GPUs one way, so the node is ready for a mode only when
	// every GPU is.
	GPUVerdict *Verdict `json:"gpu_verdict,omitempty"`
	// Unclaimed are the network and storage controllers no driver took:
	// a NIC or disk the ramdisk cannot use, so a node that cannot be
	// deployed or cannot reach the network says why.
	Unclaimed []Unclaimed `json:"unclaimed_devices,omitempty"`
	// Warnings name the parts that could not be read; the rest is still
	// reported.
	Warnings []string `json:"warnings,omitempty"`
}

// NVSwitch is one NVLink switch of an HGX board.
type NVSwitch struct {
	Address  string `json:"pci_address"`
	DeviceID string `json:"device_id"`
	Name     string `json:"name"`
}

// Unclaimed is a network or storage controller with no driver bound.
type Unclaimed struct {
	Address string `json:"pci_address"`
	// ID is VENDOR:DEVICE in hex, as modules.alias and lspci -n spell it.
	ID   string `json:"id"`
	Kind string `json:"kind"` // network or storage
	Name string `json:"name,omitempty"`
}

// unclaimedKinds are the PCI class prefixes of the controllers a node
// needs a driver for: network (02), InfiniBand (0c06) and Fibre Channel
// (0c04) as network; mass storage (01) as storage.
var unclaimedKinds = []struct{ prefix, kind string }{{"02", "network"}, {"0c06", "network"}, {"0c04", "storage"}, {"01", "storage"}}

// UnclaimedOf lists the network and storage controllers of devs that no
// driver claims.
func UnclaimedOf(devs []PCIDevice) []Unclaimed {
	var out []Unclaimed
	for _, d := range devs {
		if d.Driver != "" {
			continue
		}
		for _, k := range unclaimedKinds {
			if strings.HasPrefix(d.Class, k.prefix) {
				name := strings.TrimSpace(d.VendorName + " " + d.DeviceName)
				out = append(out, Unclaimed{Address: d.Address, ID: d.VendorID + ":" + d.DeviceID, Kind: k.kind, Name: name})
				break
			}
		}
	}
	return out
}

// CPU is IPA's cpu plus topology.
type CPU struct {
	// Count is the number of logical CPUs online (IPA).
	Count        int    `json:"count"`
	Architecture string `json:"architecture"` // x86_64, aarch64
	ModelName    string `json:"model_name"`
	// Frequency is the maximum clock in MHz, a string as IPA has it.
	Frequency string   `json:"frequency"`
	Flags     []string `json:"flags"`

	Vendor string `json:"vendor"` // GenuineIntel, AuthenticAMD, ARM, Ampere
	// Model is family/model/stepping on x86 and the MIDR on Arm.
	Model     string     `json:"model,omitempty"`
	Sockets   int        `json:"sockets"`
	Cores     int        `json:"cores"`   // physical cores, all sockets
	Threads   int        `json:"threads"` // logical CPUs
	NUMANodes []NUMANode `json:"numa_nodes"`
}

// NUMANode is one memory node.
type NUMANode struct {
	ID     int    `json:"id"`
	CPUs   string `json:"cpus"`   // kernel cpulist, e.g. 0-31,64-95
	Memory int64  `json:"memory"` // bytes
}

// CPUCount is how many logical CPUs the node's cpulist holds.
func (n NUMANode) CPUCount() int { return len(parseCPUList(n.CPUs)) }

// Memory is IPA's memory plus the DIMMs.
type Memory struct {
	// Total is the memory the kernel manages, in bytes (IPA).
	Total int64 `json:"total"`
	// PhysicalMB is the installed memory in MiB: the DIMMs' sum, or Total
	// when SMBIOS has no memory devices (IPA).
	PhysicalMB int64  `json:"physical_mb"`
	DIMMs      []DIMM `json:"dimms,omitempty"`
}

// DIMM is an installed memory device (SMBIOS type 17).
type DIMM struct {
	Locator      string `json:"locator"`
	BankLocator  string `json:"bank_locator,omitempty"`
	Size         int64  `json:"size"` // bytes
	Type         string `json:"type,omitempty"`
	FormFactor   string `json:"form_factor,omitempty"`
	Speed        int    `json:"speed,omitempty"`            // MT/s, the rated speed
	ConfiguredMT int    `json:"configured_speed,omitempty"` // MT/s, as the firmware set it
	Manufacturer string `json:"manufacturer,omitempty"`
	SerialNumber string `json:"serial_number,omitempty"`
	PartNumber   string `json:"part_number,omitempty"`
}

// Disk is a whole block device (IPA's BlockDevice).
type Disk struct {
	Name       string `json:"name"` // /dev/sda
	Size       int64  `json:"size"` // bytes
	Model      string `json:"model"`
	Vendor     string `json:"vendor"`
	Serial     string `json:"serial"`
	WWN        string `json:"wwn"`
	Rotational bool   `json:"rotational"`
	ByPath     string `json:"by_path"`
	PCIAddress string `json:"pci_address,omitempty"`
}

// Interface is a physical network interface (IPA's NetworkInterface).
type Interface struct {
	Name        string `json:"name"`
	MACAddress  string `json:"mac_address"`
	IPv4Address string `json:"ipv4_address,omitempty"`
	IPv6Address string `json:"ipv6_address,omitempty"`
	HasCarrier  bool   `json:"has_carrier"`
	SpeedMbps   int    `json:"speed_mbps"` // 0 when unknown or down
	Driver      string `json:"driver"`
	PCIAddress  string `json:"pci_address,omitempty"`
	// Vendor and Product are PCI ids, 0x-prefixed as in IPA.
	Vendor  string `json:"vendor,omitempty"`
	Product string `json:"product,omitempty"`
}

// SystemVendor is DMI's system information (IPA).
type SystemVendor struct {
	ProductName  string   `json:"product_name"`
	SerialNumber string   `json:"serial_number"`
	Manufacturer string   `json:"manufacturer"`
	Firmware     Firmware `json:"firmware"`
	UUID         string   `json:"uuid,omitempty"`
	SKU          string   `json:"sku,omitempty"`
	Family       string   `json:"family,omitempty"`
}

// Firmware is the BIOS/UEFI firmware as IPA names it.
type Firmware struct {
	Vendor    string `json:"vendor"`
	Version   string `json:"version"`
	BuildDate string `json:"build_date"`
}

// Board is DMI's baseboard.
type Board struct {
	Manufacturer string `json:"manufacturer,omitempty"`
	ProductName  string `json:"product_name,omitempty"`
	Version      string `json:"version,omitempty"`
	SerialNumber string `json:"serial_number,omitempty"`
}

// BIOS repeats the firmware where the web UI looks for it.
type BIOS struct {
	Vendor  string `json:"vendor,omitempty"`
	Version string `json:"version,omitempty"`
	Date    string `json:"date,omitempty"`
}

// Boot is how the machine booted (IPA's BootInfo plus Secure Boot).
type Boot struct {
	CurrentBootMode string `json:"current_boot_mode"` // uefi or bios
	// PXEInterface is the MAC the machine booted from (BOOTIF=).
	PXEInterface string `json:"pxe_interface,omitempty"`
	// SecureBoot is absent when it could not be read (BIOS boot, no efivars).
	SecureBoot *bool `json:"secure_boot,omitempty"`
}

// PCIDevice is one PCI function.
type PCIDevice struct {
	Address           string `json:"pci_address"` // 0000:41:00.0
	VendorID          string `json:"vendor_id"`   // 4 hex digits
	DeviceID          string `json:"device_id"`
	SubsystemVendorID string `json:"subsystem_vendor_id,omitempty"`
	SubsystemDeviceID string `json:"subsystem_device_id,omitempty"`
	Class             string `json:"class"` // 6 hex digits: class, subclass, prog-if
	Revision          string `json:"revision,omitempty"`
	VendorName        string `json:"vendor_name,omitempty"`
	DeviceName        string `json:"device_name,omitempty"`
	SubsystemName     string `json:"subsystem_name,omitempty"`
	ClassName         string `json:"class_name,omitempty"`
	Driver            string `json:"driver,omitempty"`
	// NUMANode is -1 when the platform does not say.
	NUMANode int `json:"numa_node"`
	// IOMMUGroup is absent when the IOMMU is off.
	IOMMUGroup *int `json:"iommu_group,omitempty"`
	// Parent is the upstream bridge; empty on a root bus.
	Parent string `json:"parent,omitempty"`
	Link
	SRIOV *SRIOV `json:"sriov,omitempty"`
}

// Link is a PCIe link as sysfs reports it; empty for conventional PCI.
type Link struct {
	CurrentLinkSpeed string `json:"current_link_speed,omitempty"` // e.g. "16.0 GT/s PCIe"
	MaxLinkSpeed     string `json:"max_link_speed,omitempty"`
	CurrentLinkWidth int    `json:"current_link_width,omitempty"`
	MaxLinkWidth     int    `json:"max_link_width,omitempty"`
}

// SRIOV is a physical function's virtual functions.
type SRIOV struct {
	TotalVFs int `json:"total_vfs"`
	NumVFs   int `json:"num_vfs"`
}

// GPU is a display controller (class 03) or processing accelerator (12).
type GPU struct {
	PCIAddress        string `json:"pci_address"`
	VendorID          string `json:"vendor_id"`
	DeviceID          string `json:"device_id"`
	SubsystemVendorID string `json:"subsystem_vendor_id,omitempty"`
	SubsystemDeviceID string `json:"subsystem_device_id,omitempty"`
	Class             string `json:"class"`
	// Model is the marketing name from rackboot's table of data-centre
	// GPUs, else pci.ids' device name, else empty.
	Model      string `json:"model"`
	VendorName string `json:"vendor_name,omitempty"`
	DeviceName string `json:"device_name,omitempty"`
	Driver     string `json:"driver,omitempty"`
	// Memory in bytes. MemoryEstimated says it is the largest
	// prefetchable BAR, which is only an upper bound's guess.
	Memory          int64    `json:"memory"`
	MemoryEstimated bool     `json:"memory_estimated"`
	BARs            []BAR    `json:"bars,omitempty"`
	NUMANode        int      `json:"numa_node"`
	IOMMUGroup      *int     `json:"iommu_group,omitempty"`
	IOMMUMembers    []string `json:"iommu_group_members,omitempty"`
	ACS             ACS      `json:"acs"`
	Link
	SRIOV     *SRIOV     `json:"sriov,omitempty"`
	MdevTypes []MdevType `json:"mdev_types"`
	MIG       MIG        `json:"mig"`
	Verdict   Verdict    `json:"verdict"`
}

// BAR is one base address register's window.
type BAR struct {
	Index        int   `json:"index"`
	Size         int64 `json:"size"`
	Prefetchable bool  `json:"prefetchable"`
	Bits64       bool  `json:"bits64"`
}

// ACS says whether the bridges above a device isolate it (PCIe Access
// Control Services: source validation, request and completion redirect,
// upstream forwarding).
type ACS struct {
	// State is isolated, not_isolated or unknown (config space unreadable,
	// or no bridge above the device).
	State   string   `json:"state"`
	Bridges []string `json:"bridges,omitempty"` // upstream bridges, nearest first
	Reasons []string `json:"reasons,omitempty"`
}

// ACS states.
const (
	ACSIsolated    = "isolated"
	ACSNotIsolated = "not_isolated"
	ACSUnknown     = "unknown"
)

// MdevType is a mediated-device (vGPU) type the host driver offers.
type MdevType struct {
	ID                 string `json:"id"`
	Name               string `json:"name,omitempty"`
	AvailableInstances int    `json:"available_instances"`
}

// MIG is Multi-Instance GPU support, from the device id: whether MIG is
// on is the driver's to say, and the ramdisk has no driver.
type MIG struct {
	Capable  bool         `json:"capable"`
	Profiles []MIGProfile `json:"profiles,omitempty"`
}

// MIGProfile is one GPU instance profile a card offers and the most
// instances of it the card holds at once.
type MIGProfile struct {
	Name string `json:"name"` // 3g.40gb: compute slices and memory
	Max  int    `json:"max"`
}

// Verdict says which ways a GPU (or a node's GPUs) can be given to VMs.
type Verdict struct {
	Passthrough Readiness `json:"passthrough"`
	VGPU        Readiness `json:"vgpu"`
	MIG         Readiness `json:"mig"`
	// Warnings do not block a mode but an operator should know them.
	Warnings []string `json:"warnings,omitempty"`
}

// Readiness is one mode's verdict.
type Readiness struct {
	Ready   bool     `json:"ready"`
	Reasons []string `json:"reasons,omitempty"`
}
