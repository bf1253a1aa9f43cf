package inventory

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
)

// smbiosTables is what the inventory takes from the raw SMBIOS table:
// DIMMs (type 17) and processor sockets (type 4). System, board and BIOS
// strings come from /sys/class/dmi/id instead, which the kernel already
// decoded.
type smbiosTables struct {
	dimms            []DIMM
	populatedSockets int
	maxSpeedMHz      int
	processorVersion string
}

var errSMBIOSTruncated = errors.New("truncated structure")

func (rd *reading) readSMBIOS() *smbiosTables {
	b, err := os.ReadFile(rd.path("sys/firmware/dmi/tables/DMI"))
	if err != nil {
		rd.warn(fmt.Errorf("read smbios: %w", err))
		return nil
	}
	t, err := parseSMBIOS(b)
	if err != nil {
		rd.warn(fmt.Errorf("parse smbios: %w", err))
	}
	return t
}

// parseSMBIOS reads the structure table (not the entry point). It keeps
// what it read before a malformed structure, and says why it stopped.
func parseSMBIOS(b []byte) (*smbiosTables, error) {
	t := &smbiosTables{}
	for len(b) >= 4 {
		typ, length := b[0], int(b[1])
		if length < 4 || length > len(b) {
			return t, fmt.Errorf("structure type %d: %w", typ, errSMBIOSTruncated)
		}
		formatted := b[:length]
		// The string set follows the formatted area and ends with two NULs.
		end := length
		for end+1 < len(b) && (b[end] != 0 || b[end+1] != 0) {
			end++
		}
		if end+1 >= len(b) {
			return t, fmt.Errorf("structure type %d strings: %w", typ, errSMBIOSTruncated)
		}
		strs := strings.Split(string(b[length:end]), "\x00")
		if length == end {
			strs = nil
		}
		s := structure{data: formatted, strs: strs}
		switch typ {
		case 4:
			// Status bit 6: the socket holds a CPU.
			if s.byte(0x18)&0x40 != 0 {
				t.populatedSockets++
				t.maxSpeedMHz = max(t.maxSpeedMHz, int(s.word(0x14)))
				if t.processorVersion == "" {
					t.processorVersion = s.str(0x10)
				}
			}
		case 17:
			if d, ok := s.dimm(); ok {
				t.dimms = append(t.dimms, d)
			}
		case 127:
			return t, nil
		}
		b = b[end+2:]
	}
	return t, nil
}

type structure struct {
	data []byte
	strs []string
}

func (s structure) byte(off int) byte {
	if off >= len(s.data) {
		return 0
	}
	return s.data[off]
}

func (s structure) word(off int) uint16 {
	if off+2 > len(s.data) {
		return 0
	}
	return binary.LittleEndian.Uint16(s.data[off:])
}

func (s structure) dword(off int) uint32 {
	if off+4 > len(s.data) {
		return 0
	}
	return binary.LittleEndian.Uint32(s.data[off:])
}

// str resolves a string number (1-based; 0 means none).
func (s structure) str(off int) string {
	i := int(s.byte(off))
	if i == 0 || i > len(s.strs) {
		return ""
	}
	v := strings.TrimSpace(s.strs[i-1])
	// Firmware fills empty slots with placeholders; they are not data.
	switch strings.ToLower(v) {
	case "not specified", "unknown", "no dimm", "none", "to be filled by o.e.m.", "default string":
		return ""
	}
	return v
}

var memoryTypes = map[byte]string{
	0x01: "Other", 0x02: "Unknown", 0x03: "DRAM", 0x07: "RAM", 0x0f: "SDRAM",
	0x12: "DDR", 0x13: "DDR2", 0x18: "DDR3", 0x1a: "DDR4", 0x1b: "LPDDR", 0x1c: "LPDDR2",
	0x1d: "LPDDR3", 0x1e: "LPDDR4", 0x1f: "Logical non-volatile device", 0x20: "HBM",
	0x21: "HBM2", 0x22: "DDR5", 0x23: "LPDDR5", 0x24: "HBM3",
}

var formFactors = map[byte]string{
	0x01: "Other", 0x02: "Unknown", 0x03: "SIMM", 0x09: "DIMM", 0x0d: "SODIMM",
	0x0f: "FB-DIMM", 0x10: "Die", 0x11: "CAMM",
}

// dimm decodes a type 17 Memory Device; ok is false for an empty slot.
func (s structure) dimm() (DIMM, bool) {
	var size int64
	switch raw := s.word(0x0c); {
	case raw == 0 || raw == 0xffff:
		return DIMM{}, false
	case raw == 0x7fff:
		// Extended Size, in MiB, for modules of 32 GiB and more.
		size = int64(s.dword(0x1c)&0x7fffffff) << 20
	case raw&0x8000 != 0:
		size = int64(raw&0x7fff) << 10
	default:
		size = int64(raw) << 20
	}
	if size == 0 {
		return DIMM{}, false
	}
	speed := int(s.word(0x15))
	if speed == 0xffff {
		speed = int(s.dword(0x54))
	}
	conf := int(s.word(0x20))
	if conf == 0xffff {
		conf = int(s.dword(0x58))
	}
	return DIMM{
		Locator:      s.str(0x10),
		BankLocator:  s.str(0x11),
		Size:         size,
		Type:         memoryTypes[s.byte(0x12)],
		FormFactor:   formFactors[s.byte(0x0e)],
		Speed:        speed,
		ConfiguredMT: conf,
		Manufacturer: s.str(0x17),
		SerialNumber: s.str(0x18),
		PartNumber:   s.str(0x1a),
	}, true
}
