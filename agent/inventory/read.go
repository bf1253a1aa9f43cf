package inventory

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// Reader reads an inventory. The zero value reads the running machine.
type Reader struct {
	// Root is where /sys, /proc and /dev are; "" means "/".
	Root string
	// PCIIDs is a pci.ids file for device names. Empty means
	// usr/share/misc/pci.ids or usr/share/hwdata/pci.ids under Root, then
	// on this machine; when none exists the names stay empty.
	PCIIDs string
	// Addrs lists an interface's addresses. Nil means the running
	// machine's when Root is "/", none otherwise: a recorded tree has no
	// sockets to ask.
	Addrs func(iface string) ([]net.Addr, error)
}

// Read reads the inventory of the machine whose /sys and /proc are under
// root.
func Read(root string) (*Inventory, error) {
	return Reader{Root: root}.Read()
}

// reading carries one Read's state.
type reading struct {
	root     string
	ids      *PCIIDs
	warnings []string
	smbios   *smbiosTables
}

// Read reads the inventory. It fails only when root holds no machine at
// all; a part that cannot be read is left out and named in Warnings.
func (r Reader) Read() (*Inventory, error) {
	root := r.Root
	if root == "" {
		root = "/"
	}
	if _, err := os.Stat(filepath.Join(root, "proc", "cpuinfo")); err != nil {
		return nil, fmt.Errorf("read inventory %s: %w", root, err)
	}
	rd := &reading{root: root}
	ids, err := r.loadPCIIDs(root)
	if err != nil {
		return nil, err
	}
	rd.ids = ids
	rd.smbios = rd.readSMBIOS()

	inv := &Inventory{Version: Version}
	inv.CPU = rd.readCPU()
	inv.Memory = rd.readMemory()
	inv.Disks = rd.readDisks()
	addrs := r.Addrs
	if addrs == nil && filepath.Clean(root) == "/" {
		addrs = hostAddrs
	}
	inv.Interfaces = rd.readInterfaces(addrs)
	inv.SystemVendor, inv.Board, inv.BIOS = rd.readDMI()
	inv.Boot = rd.readBoot()
	pci := rd.readPCI()
	inv.PCIDevices = pci.list()
	inv.Unclaimed = UnclaimedOf(inv.PCIDevices)
	inv.GPUs = rd.gpus(pci)
	inv.NVSwitches = nvswitchesOf(inv.PCIDevices)
	inv.GPUVerdict = nodeVerdict(inv.GPUs)
	if inv.GPUVerdict != nil && len(inv.NVSwitches) > 0 {
		inv.GPUVerdict.Warnings = append(inv.GPUVerdict.Warnings, fmt.Sprintf(
			"%d NVSwitches join the GPUs: passthrough of them all needs NVIDIA's fabric manager (a host service, or a service VM holding the switches)", len(inv.NVSwitches)))
	}
	inv.Warnings = rd.warnings
	return inv, nil
}

func (r Reader) loadPCIIDs(root string) (*PCIIDs, error) {
	if r.PCIIDs != "" {
		f, err := os.Open(r.PCIIDs)
		if err != nil {
			return nil, fmt.Errorf("open pci.ids: %w", err)
		}
		defer f.Close()
		return ParsePCIIDs(f)
	}
	var tries []string
	for _, base := range []string{root, "/"} {
		tries = append(tries, filepath.Join(base, "usr/share/misc/pci.ids"), filepath.Join(base, "usr/share/hwdata/pci.ids"))
	}
	for _, p := range tries {
		f, err := os.Open(p)
		if err != nil {
			continue
		}
		defer f.Close()
		return ParsePCIIDs(f)
	}
	return &PCIIDs{}, nil
}

func hostAddrs(name string) ([]net.Addr, error) {
	ifc, err := net.InterfaceByName(name)
	if err != nil {
		return nil, err
	}
	return ifc.Addrs()
}

func (rd *reading) path(p string) string { return filepath.Join(rd.root, p) }

// warn records a part that could not be read. A missing file is not
// worth a warning: sysfs leaves out what the hardware does not have.
func (rd *reading) warn(err error) {
	if err == nil || errors.Is(err, fs.ErrNotExist) {
		return
	}
	rd.warnings = append(rd.warnings, err.Error())
}

// str reads a sysfs attribute, trimmed; "" when absent.
func str(p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(bytes.TrimRight(b, "\x00")))
}

// num reads a decimal or 0x-prefixed attribute; def when absent or bad.
func num(p string, def int64) int64 {
	s := str(p)
	if s == "" {
		return def
	}
	v, err := strconv.ParseInt(s, 0, 64)
	if err != nil {
		return def
	}
	return v
}

// hex4 turns sysfs' "0x10de" into "10de".
func hex4(s string) string { return strings.ToLower(strings.TrimPrefix(s, "0x")) }

// linkBase is the last element of a symlink's target, e.g. a driver's
// name; "" when p is not a link.
func linkBase(p string) string {
	t, err := os.Readlink(p)
	if err != nil {
		return ""
	}
	return filepath.Base(t)
}

// dirNames lists a directory, sorted; nil when absent.
func dirNames(p string) []string {
	es, err := os.ReadDir(p)
	if err != nil {
		return nil
	}
	out := make([]string, 0, len(es))
	for _, e := range es {
		out = append(out, e.Name())
	}
	sort.Strings(out)
	return out
}

// parseCPUList reads a kernel cpulist ("0-3,8,10-11").
func parseCPUList(s string) []int {
	var out []int
	for _, part := range strings.Split(strings.TrimSpace(s), ",") {
		if part == "" {
			continue
		}
		lo, hi, ok := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			continue
		}
		b := a
		if ok {
			if b, err = strconv.Atoi(hi); err != nil || b < a || b-a > 1<<16 {
				continue
			}
		}
		for i := a; i <= b; i++ {
			out = append(out, i)
		}
	}
	return out
}
