package inventory

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// Block devices that are not disks an image can go to.
var notDisk = regexp.MustCompile(`^(loop|ram|zram|dm-|sr|fd|nbd|md)`)

var nvmeNS = regexp.MustCompile(`^nvme\d+n(\d+)$`)

// lastPCI is the PCI function nearest the end of a sysfs path: the
// controller a disk or NIC hangs off.
func lastPCI(dir string) string {
	parts := strings.Split(filepath.ToSlash(dir), "/")
	for i := len(parts) - 1; i >= 0; i-- {
		if pciAddr.MatchString(parts[i]) {
			return parts[i]
		}
	}
	return ""
}

func (rd *reading) readDisks() []Disk {
	byPath := map[string]string{}
	links := rd.path("dev/disk/by-path")
	for _, n := range dirNames(links) {
		t, err := os.Readlink(filepath.Join(links, n))
		if err != nil {
			continue
		}
		dev := filepath.Base(t)
		// Several names may lead to one disk (udev keeps legacy ones);
		// the shortest is the canonical one.
		if old, ok := byPath[dev]; !ok || len(n) < len(old) || (len(n) == len(old) && n < old) {
			byPath[dev] = n
		}
	}
	out := []Disk{}
	base := rd.path("sys/block")
	for _, name := range dirNames(base) {
		if notDisk.MatchString(name) {
			continue
		}
		dir, err := filepath.EvalSymlinks(filepath.Join(base, name))
		if err != nil {
			rd.warn(fmt.Errorf("read disk %s: %w", name, err))
			continue
		}
		at := func(n string) string { return filepath.Join(dir, n) }
		d := Disk{
			Name:       "/dev/" + name,
			Size:       num(at("size"), 0) * 512,
			Model:      str(at("device/model")),
			Vendor:     str(at("device/vendor")),
			Serial:     str(at("device/serial")),
			Rotational: num(at("queue/rotational"), 0) == 1,
			PCIAddress: lastPCI(dir),
		}
		if d.Size == 0 {
			continue
		}
		if d.Serial == "" {
			d.Serial = vpdSerial(at("device/vpd_pg80"))
		}
		d.WWN = wwn(str(at("wwid")), str(at("device/wwid")))
		if p, ok := byPath[name]; ok {
			d.ByPath = "/dev/disk/by-path/" + p
		} else if d.PCIAddress != "" {
			// No udev in the ramdisk: build udev's name where its rule is
			// simple.
			if m := nvmeNS.FindStringSubmatch(name); m != nil {
				d.ByPath = "/dev/disk/by-path/pci-" + d.PCIAddress + "-nvme-" + m[1]
			} else if strings.HasPrefix(name, "vd") {
				d.ByPath = "/dev/disk/by-path/pci-" + d.PCIAddress
			}
		}
		out = append(out, d)
	}
	return out
}

// vpdSerial reads the unit serial number page (SCSI VPD 0x80): a 4-byte
// header whose last byte is the length, then ASCII.
func vpdSerial(p string) string {
	b, err := os.ReadFile(p)
	if err != nil || len(b) < 4 || b[1] != 0x80 {
		return ""
	}
	n := int(b[3])
	if 4+n > len(b) {
		n = len(b) - 4
	}
	return strings.TrimSpace(strings.Trim(string(b[4:4+n]), "\x00"))
}

// wwn gives the WWN as udev's ID_WWN (and so IPA) writes it: an NAA id
// as 0x and 16 hex digits, an EUI or NGUID as the kernel gives it.
func wwn(nsWWID, scsiWWID string) string {
	w := nsWWID
	if w == "" {
		w = scsiWWID
	}
	if v, ok := strings.CutPrefix(w, "naa."); ok && len(v) >= 16 {
		return "0x" + strings.ToLower(v[:16])
	}
	if strings.HasPrefix(w, "t10.") {
		return ""
	}
	return w
}

func (rd *reading) readInterfaces(addrs func(string) ([]net.Addr, error)) []Interface {
	out := []Interface{}
	base := rd.path("sys/class/net")
	for _, name := range dirNames(base) {
		dir, err := filepath.EvalSymlinks(filepath.Join(base, name))
		if err != nil {
			continue
		}
		// Bridges, bonds, VLANs, tunnels and lo live under virtual/.
		if strings.Contains(filepath.ToSlash(dir), "/devices/virtual/") {
			continue
		}
		at := func(n string) string { return filepath.Join(dir, n) }
		n := Interface{
			Name:       name,
			MACAddress: strings.ToLower(str(at("address"))),
			HasCarrier: str(at("carrier")) == "1",
			Driver:     linkBase(at("device/driver")),
			PCIAddress: lastPCI(dir),
		}
		if s := num(at("speed"), 0); s > 0 {
			n.SpeedMbps = int(s)
		}
		if n.PCIAddress != "" {
			pci := rd.path(filepath.Join("sys/bus/pci/devices", n.PCIAddress))
			n.Vendor, n.Product = str(filepath.Join(pci, "vendor")), str(filepath.Join(pci, "device"))
		}
		if addrs != nil {
			as, err := addrs(name)
			if err != nil {
				rd.warn(fmt.Errorf("read addresses %s: %w", name, err))
			}
			for _, a := range as {
				ipn, ok := a.(*net.IPNet)
				if !ok {
					continue
				}
				if ip4 := ipn.IP.To4(); ip4 != nil && n.IPv4Address == "" {
					n.IPv4Address = ip4.String()
				} else if ip4 == nil && n.IPv6Address == "" && !ipn.IP.IsLinkLocalUnicast() {
					n.IPv6Address = ipn.IP.String()
				}
			}
		}
		out = append(out, n)
	}
	return out
}
