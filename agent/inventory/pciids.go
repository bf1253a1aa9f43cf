package inventory

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// PCIIDs holds the names from a pci.ids database
// (https://pci-ids.ucw.cz, Debian package pci.ids). The zero value knows
// no names.
type PCIIDs struct {
	vendors    map[uint16]string
	devices    map[uint32]string // vendor<<16 | device
	subsystems map[uint64]string // vendor<<48 | device<<32 | subvendor<<16 | subdevice
	classes    map[uint16]string // class<<8 | 0xff for the class, class<<8 | subclass
}

// ParsePCIIDs reads a pci.ids file. Lines it does not understand are
// skipped, as lspci does: the file is data from the internet, and a bad
// line must not cost the other names.
func ParsePCIIDs(r io.Reader) (*PCIIDs, error) {
	ids := &PCIIDs{
		vendors:    map[uint16]string{},
		devices:    map[uint32]string{},
		subsystems: map[uint64]string{},
		classes:    map[uint16]string{},
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 1<<20)
	var (
		inClass     bool
		vendor, dev uint16
		haveVendor  bool
		haveDevice  bool
		class       uint8
		haveClass   bool
	)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		tabs := len(line) - len(strings.TrimLeft(line, "\t"))
		rest := line[tabs:]
		switch {
		case tabs == 0 && strings.HasPrefix(rest, "C "):
			inClass, haveVendor, haveDevice = true, false, false
			id, name, ok := hexName(rest[2:], 2)
			haveClass = ok
			if ok {
				class = uint8(id)
				ids.classes[uint16(class)<<8|0xff] = name
			}
		case tabs == 0:
			inClass, haveClass, haveDevice = false, false, false
			id, name, ok := hexName(rest, 4)
			haveVendor = ok
			if ok {
				vendor = uint16(id)
				ids.vendors[vendor] = name
			}
		case tabs == 1 && inClass && haveClass:
			if id, name, ok := hexName(rest, 2); ok {
				ids.classes[uint16(class)<<8|uint16(id)] = name
			}
		case tabs == 1 && haveVendor:
			id, name, ok := hexName(rest, 4)
			haveDevice = ok
			if ok {
				dev = uint16(id)
				ids.devices[uint32(vendor)<<16|uint32(dev)] = name
			}
		case tabs == 2 && haveVendor && haveDevice:
			sv, rest2, ok := hexField(rest, 4)
			if !ok {
				continue
			}
			sd, name, ok := hexName(strings.TrimLeft(rest2, " "), 4)
			if ok {
				ids.subsystems[uint64(vendor)<<48|uint64(dev)<<32|uint64(sv)<<16|sd] = name
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read pci.ids: %w", err)
	}
	return ids, nil
}

// hexField splits off a hex id of exactly n digits.
func hexField(s string, n int) (uint64, string, bool) {
	if len(s) < n {
		return 0, "", false
	}
	v, err := strconv.ParseUint(s[:n], 16, 16)
	if err != nil {
		return 0, "", false
	}
	return v, s[n:], true
}

// hexName reads "<id>  <name>".
func hexName(s string, n int) (uint64, string, bool) {
	v, rest, ok := hexField(s, n)
	if !ok || (rest != "" && rest[0] != ' ' && rest[0] != '\t') {
		return 0, "", false
	}
	name := strings.TrimSpace(rest)
	return v, name, name != ""
}

// Vendor names a vendor id; "" when unknown.
func (ids *PCIIDs) Vendor(v uint16) string { return ids.vendors[v] }

// Device names a device; "" when unknown.
func (ids *PCIIDs) Device(v, d uint16) string { return ids.devices[uint32(v)<<16|uint32(d)] }

// Subsystem names a device's subsystem; "" when unknown.
func (ids *PCIIDs) Subsystem(v, d, sv, sd uint16) string {
	return ids.subsystems[uint64(v)<<48|uint64(d)<<32|uint64(sv)<<16|uint64(sd)]
}

// Class names a class code (class, subclass): the subclass's name when
// known, else the class's.
func (ids *PCIIDs) Class(class, subclass uint8) string {
	if n := ids.classes[uint16(class)<<8|uint16(subclass)]; n != "" {
		return n
	}
	return ids.classes[uint16(class)<<8|0xff]
}
