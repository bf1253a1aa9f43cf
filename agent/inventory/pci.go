package inventory

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

var pciAddr = regexp.MustCompile(`^[0-9a-f]{4,}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$`)

// pciDev is a PCI function as read, with what the GPU verdicts need
// beyond the JSON.
type pciDev struct {
	PCIDevice
	dir      string // canonical sysfs directory, under root
	upstream []string
	config   []byte
	resource string
	mdev     []MdevType
}

type pciBus struct {
	devs   map[string]*pciDev
	order  []string
	groups map[int][]string // IOMMU group → members
	iommu  bool             // /sys/kernel/iommu_groups has groups
}

func (b *pciBus) list() []PCIDevice {
	out := make([]PCIDevice, 0, len(b.order))
	for _, a := range b.order {
		out = append(out, b.devs[a].PCIDevice)
	}
	return out
}

func (rd *reading) readPCI() *pciBus {
	bus := &pciBus{devs: map[string]*pciDev{}, groups: map[int][]string{}}
	gdir := rd.path("sys/kernel/iommu_groups")
	for _, g := range dirNames(gdir) {
		n, err := strconv.Atoi(g)
		if err != nil {
			continue
		}
		members := dirNames(filepath.Join(gdir, g, "devices"))
		bus.groups[n] = members
		bus.iommu = true
	}
	base := rd.path("sys/bus/pci/devices")
	for _, addr := range dirNames(base) {
		if !pciAddr.MatchString(addr) {
			continue
		}
		dir, err := filepath.EvalSymlinks(filepath.Join(base, addr))
		if err != nil {
			rd.warn(fmt.Errorf("read pci device %s: %w", addr, err))
			continue
		}
		d := rd.readPCIDev(addr, dir)
		bus.devs[addr] = d
		bus.order = append(bus.order, addr)
	}
	sort.Strings(bus.order)
	return bus
}

func (rd *reading) readPCIDev(addr, dir string) *pciDev {
	at := func(n string) string { return filepath.Join(dir, n) }
	d := &pciDev{dir: dir}
	p := &d.PCIDevice
	p.Address = addr
	p.VendorID = hex4(str(at("vendor")))
	p.DeviceID = hex4(str(at("device")))
	p.SubsystemVendorID = hex4(str(at("subsystem_vendor")))
	p.SubsystemDeviceID = hex4(str(at("subsystem_device")))
	p.Class = hex4(str(at("class")))
	p.Revision = hex4(str(at("revision")))
	p.Driver = linkBase(at("driver"))
	p.NUMANode = int(num(at("numa_node"), -1))
	if g := linkBase(at("iommu_group")); g != "" {
		if n, err := strconv.Atoi(g); err == nil {
			p.IOMMUGroup = &n
		}
	}
	p.Link = Link{
		CurrentLinkSpeed: linkSpeed(str(at("current_link_speed"))),
		MaxLinkSpeed:     linkSpeed(str(at("max_link_speed"))),
		CurrentLinkWidth: int(num(at("current_link_width"), 0)),
		MaxLinkWidth:     int(num(at("max_link_width"), 0)),
	}
	if total := num(at("sriov_totalvfs"), -1); total >= 0 {
		p.SRIOV = &SRIOV{TotalVFs: int(total), NumVFs: int(num(at("sriov_numvfs"), 0))}
	}
	// The sysfs path names every bridge between the root bus and the
	// device: /sys/devices/pci0000:00/0000:00:01.1/0000:01:00.0.
	parts := strings.Split(filepath.ToSlash(dir), "/")
	for i := len(parts) - 2; i >= 0 && pciAddr.MatchString(parts[i]); i-- {
		d.upstream = append(d.upstream, parts[i])
	}
	if len(d.upstream) > 0 {
		p.Parent = d.upstream[0]
	}
	d.config, _ = os.ReadFile(at("config"))
	d.resource = str(at("resource"))
	for _, t := range dirNames(at("mdev_supported_types")) {
		td := filepath.Join(at("mdev_supported_types"), t)
		d.mdev = append(d.mdev, MdevType{ID: t, Name: str(filepath.Join(td, "name")), AvailableInstances: int(num(filepath.Join(td, "available_instances"), 0))})
	}
	rd.name(p)
	return d
}

// linkSpeed drops the "Unknown" sysfs reports for links that are down or
// devices that are not PCIe.
func linkSpeed(s string) string {
	if strings.HasPrefix(s, "Unknown") {
		return ""
	}
	return s
}

func (rd *reading) name(p *PCIDevice) {
	v, _ := strconv.ParseUint(p.VendorID, 16, 16)
	dv, _ := strconv.ParseUint(p.DeviceID, 16, 16)
	sv, _ := strconv.ParseUint(p.SubsystemVendorID, 16, 16)
	sd, _ := strconv.ParseUint(p.SubsystemDeviceID, 16, 16)
	p.VendorName = rd.ids.Vendor(uint16(v))
	p.DeviceName = rd.ids.Device(uint16(v), uint16(dv))
	p.SubsystemName = rd.ids.Subsystem(uint16(v), uint16(dv), uint16(sv), uint16(sd))
	if c, err := strconv.ParseUint(p.Class, 16, 32); err == nil {
		p.ClassName = rd.ids.Class(uint8(c>>16), uint8(c>>8))
	}
}

// isBridge says whether a class code is a PCI bridge (06xx other than
// host bridges, which are not in the data path).
func isBridge(class string) bool {
	return strings.HasPrefix(class, "0604") || strings.HasPrefix(class, "0609")
}

// bars decodes the first six lines of sysfs' resource file (start, end,
// flags; the seventh is the expansion ROM, and later lines are bridge
// windows or SR-IOV BARs).
func bars(resource string) []BAR {
	const (
		ioresourceMem      = 0x200
		ioresourcePrefetch = 0x2000
		ioresourceMem64    = 0x100000
	)
	var out []BAR
	for i, line := range strings.Split(resource, "\n") {
		if i >= 6 {
			break
		}
		f := strings.Fields(line)
		if len(f) != 3 {
			continue
		}
		start, err1 := strconv.ParseUint(f[0], 0, 64)
		end, err2 := strconv.ParseUint(f[1], 0, 64)
		flags, err3 := strconv.ParseUint(f[2], 0, 64)
		if err1 != nil || err2 != nil || err3 != nil || end <= start || flags&ioresourceMem == 0 {
			continue
		}
		out = append(out, BAR{Index: i, Size: int64(end - start + 1), Prefetchable: flags&ioresourcePrefetch != 0, Bits64: flags&ioresourceMem64 != 0})
	}
	return out
}

// acsControl returns a bridge's ACS control register and whether the
// capability was found. readable is false when sysfs gave only the first
// 256 bytes of config space (not root) or less: the extended
// capabilities, where ACS lives, are beyond them.
func acsControl(config []byte) (capability, control uint16, found, readable bool) {
	if len(config) <= 256 {
		return 0, 0, false, false
	}
	off, seen := 0x100, 0
	for off >= 0x100 && off+8 <= len(config) && seen < 64 {
		h := binary.LittleEndian.Uint32(config[off:])
		if h == 0 || h == 0xffffffff {
			break
		}
		if h&0xffff == 0x000d {
			return binary.LittleEndian.Uint16(config[off+4:]), binary.LittleEndian.Uint16(config[off+6:]), true, true
		}
		off = int(h>>20) &^ 3
		seen++
		if off == 0 {
			break
		}
	}
	return 0, 0, false, true
}
