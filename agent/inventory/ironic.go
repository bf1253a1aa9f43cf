package inventory

import "strings"

// IronicData is an inventory as ironic-python-agent's inspection sends it
// to Ironic (ironic-inspector's /v1/continue, or Ironic's built-in
// inspection): the inventory under "inventory" with IPA's names and
// units, the PCI devices as IPA's pci-devices collector reports them, the
// root disk IPA would pick, and the PXE interface as BOOTIF spells it.
// Rackboot's detail (GPUs and their readiness, NUMA, unclaimed devices)
// goes under "rackboot", where Ironic's inspection rules can match it.
type IronicData struct {
	Inventory     IronicInventory `json:"inventory"`
	RootDisk      *IronicDisk     `json:"root_disk,omitempty"`
	BootInterface string          `json:"boot_interface,omitempty"`
	PCIDevices    []IronicPCI     `json:"pci_devices"`
	Rackboot      IronicExtra     `json:"rackboot"`
}

// IronicInventory is IPA's hardware inventory.
type IronicInventory struct {
	Interfaces   []IronicInterface `json:"interfaces"`
	CPU          IronicCPU         `json:"cpu"`
	Disks        []IronicDisk      `json:"disks"`
	Memory       IronicMemory      `json:"memory"`
	BMCAddress   string            `json:"bmc_address,omitempty"`
	BMCV6Address string            `json:"bmc_v6address,omitempty"`
	BMCMAC       string            `json:"bmc_mac,omitempty"`
	SystemVendor SystemVendor      `json:"system_vendor"`
	Boot         IronicBoot        `json:"boot"`
}

// IronicInterface is IPA's NetworkInterface.
type IronicInterface struct {
	Name        string  `json:"name"`
	MACAddress  string  `json:"mac_address"`
	IPv4Address *string `json:"ipv4_address"`
	IPv6Address *string `json:"ipv6_address"`
	HasCarrier  bool    `json:"has_carrier"`
	Vendor      *string `json:"vendor"`
	Product     *string `json:"product"`
	SpeedMbps   *int    `json:"speed_mbps"`
	PCIAddress  *string `json:"pci_address"`
	Driver      *string `json:"driver"`
}

// IronicCPU is IPA's CPU.
type IronicCPU struct {
	ModelName    string   `json:"model_name"`
	Frequency    string   `json:"frequency"` // MHz, a string
	Count        int      `json:"count"`
	Architecture string   `json:"architecture"`
	Flags        []string `json:"flags"`
	SocketCount  int      `json:"socket_count"`
}

// IronicDisk is IPA's BlockDevice.
type IronicDisk struct {
	Name       string  `json:"name"`
	Model      string  `json:"model"`
	Size       int64   `json:"size"`
	Rotational bool    `json:"rotational"`
	WWN        *string `json:"wwn"`
	Serial     *string `json:"serial"`
	Vendor     *string `json:"vendor"`
	ByPath     *string `json:"by_path"`
}

// IronicMemory is IPA's Memory.
type IronicMemory struct {
	Total      int64 `json:"total"`
	PhysicalMB int64 `json:"physical_mb"`
}

// IronicBoot is IPA's BootInfo.
type IronicBoot struct {
	CurrentBootMode string  `json:"current_boot_mode"`
	PXEInterface    *string `json:"pxe_interface"`
}

// IronicPCI is one device as IPA's pci-devices collector sends it: hex
// ids without 0x.
type IronicPCI struct {
	VendorID  string `json:"vendor_id"`
	ProductID string `json:"product_id"`
	Class     string `json:"class"`
	Revision  string `json:"revision"`
	Bus       string `json:"bus"`
}

// IronicExtra is rackboot's detail beside IPA's schema.
type IronicExtra struct {
	Version    int         `json:"inventory_version"`
	GPUs       []GPU       `json:"gpus"`
	GPUVerdict *Verdict    `json:"gpu_verdict,omitempty"`
	NVSwitches []NVSwitch  `json:"nvswitches,omitempty"`
	NUMANodes  []NUMANode  `json:"numa_nodes,omitempty"`
	Unclaimed  []Unclaimed `json:"unclaimed_devices,omitempty"`
	SecureBoot *bool       `json:"secure_boot,omitempty"`
}

// minRootDisk is IPA's default for a root device without hints: the
// smallest disk of at least 4 GiB.
const minRootDisk = 4 << 30

func orNil[T comparable](v T) *T {
	var zero T
	if v == zero {
		return nil
	}
	return &v
}

// Ironic turns the inventory into what Ironic's inspection reads.
func (inv *Inventory) Ironic() IronicData {
	d := IronicData{PCIDevices: []IronicPCI{}}
	in := &d.Inventory
	in.Interfaces = []IronicInterface{}
	for _, n := range inv.Interfaces {
		in.Interfaces = append(in.Interfaces, IronicInterface{Name: n.Name, MACAddress: strings.ToLower(n.MACAddress),
			IPv4Address: orNil(n.IPv4Address), IPv6Address: orNil(n.IPv6Address), HasCarrier: n.HasCarrier,
			Vendor: orNil(n.Vendor), Product: orNil(n.Product), SpeedMbps: orNil(n.SpeedMbps), PCIAddress: orNil(n.PCIAddress), Driver: orNil(n.Driver)})
	}
	in.CPU = IronicCPU{ModelName: inv.CPU.ModelName, Frequency: inv.CPU.Frequency, Count: inv.CPU.Count,
		Architecture: inv.CPU.Architecture, Flags: inv.CPU.Flags, SocketCount: inv.CPU.Sockets}
	if in.CPU.Flags == nil {
		in.CPU.Flags = []string{}
	}
	in.Disks = []IronicDisk{}
	for _, k := range inv.Disks {
		disk := IronicDisk{Name: k.Name, Model: k.Model, Size: k.Size, Rotational: k.Rotational,
			WWN: orNil(k.WWN), Serial: orNil(k.Serial), Vendor: orNil(k.Vendor), ByPath: orNil(k.ByPath)}
		in.Disks = append(in.Disks, disk)
		if k.Size >= minRootDisk && (d.RootDisk == nil || k.Size < d.RootDisk.Size) {
			root := disk
			d.RootDisk = &root
		}
	}
	in.Memory = IronicMemory{Total: inv.Memory.Total, PhysicalMB: inv.Memory.PhysicalMB}
	in.BMCAddress, in.BMCV6Address, in.BMCMAC = inv.BMCAddress, inv.BMCV6Address, inv.BMCMAC
	in.SystemVendor = inv.SystemVendor
	in.Boot = IronicBoot{CurrentBootMode: inv.Boot.CurrentBootMode, PXEInterface: orNil(strings.ToLower(inv.Boot.PXEInterface))}
	if inv.Boot.PXEInterface != "" {
		d.BootInterface = "01-" + strings.ReplaceAll(strings.ToLower(inv.Boot.PXEInterface), ":", "-")
	}
	for _, p := range inv.PCIDevices {
		d.PCIDevices = append(d.PCIDevices, IronicPCI{VendorID: p.VendorID, ProductID: p.DeviceID, Class: p.Class, Revision: p.Revision, Bus: p.Address})
	}
	gpus := inv.GPUs
	if gpus == nil {
		gpus = []GPU{}
	}
	d.Rackboot = IronicExtra{Version: inv.Version, GPUs: gpus, GPUVerdict: inv.GPUVerdict, NVSwitches: inv.NVSwitches,
		NUMANodes: inv.CPU.NUMANodes, Unclaimed: inv.Unclaimed, SecureBoot: inv.Boot.SecureBoot}
	return d
}
