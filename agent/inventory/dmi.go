package inventory

import (
	"os"
	"path/filepath"
	"strings"
)

// efiGlobal is the EFI global variable GUID; SecureBoot lives under it.
const efiGlobal = "8be4df61-93ca-11d2-aa0d-00e098032b8c"

func (rd *reading) readDMI() (SystemVendor, Board, BIOS) {
	id := func(name string) string {
		v := str(rd.path(filepath.Join("sys/class/dmi/id", name)))
		switch strings.ToLower(v) {
		case "not specified", "to be filled by o.e.m.", "default string", "none":
			return ""
		}
		return v
	}
	bios := BIOS{Vendor: id("bios_vendor"), Version: id("bios_version"), Date: id("bios_date")}
	sv := SystemVendor{
		ProductName:  id("product_name"),
		SerialNumber: id("product_serial"),
		Manufacturer: id("sys_vendor"),
		Firmware:     Firmware{Vendor: bios.Vendor, Version: bios.Version, BuildDate: bios.Date},
		UUID:         id("product_uuid"),
		SKU:          id("product_sku"),
		Family:       id("product_family"),
	}
	board := Board{
		Manufacturer: id("board_vendor"),
		ProductName:  id("board_name"),
		Version:      id("board_version"),
		SerialNumber: id("board_serial"),
	}
	return sv, board, bios
}

func (rd *reading) readBoot() Boot {
	b := Boot{CurrentBootMode: "bios"}
	if _, err := os.Stat(rd.path("sys/firmware/efi")); err == nil {
		b.CurrentBootMode = "uefi"
		// An efivar file is 4 bytes of attributes, then the value: one
		// byte, 1 when Secure Boot is on.
		v, err := os.ReadFile(rd.path("sys/firmware/efi/efivars/SecureBoot-" + efiGlobal))
		if err == nil && len(v) >= 5 {
			on := v[len(v)-1] == 1
			b.SecureBoot = &on
		}
	}
	// iPXE and pxelinux put the boot NIC on the command line as
	// BOOTIF=01-aa-bb-cc-dd-ee-ff (01 is the ARP hardware type).
	for _, f := range strings.Fields(str(rd.path("proc/cmdline"))) {
		v, ok := strings.CutPrefix(f, "BOOTIF=")
		if !ok {
			continue
		}
		v = strings.ToLower(strings.ReplaceAll(v, "-", ":"))
		if len(v) == 20 && strings.HasPrefix(v, "01:") {
			v = v[3:]
		}
		b.PXEInterface = v
	}
	return b
}
