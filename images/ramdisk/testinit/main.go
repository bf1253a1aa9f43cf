// Command testinit is the uinit of the ramdisk integration test: it loads
// the modules for the hardware it finds with agent/kmod, reads the
// disks and NICs the kernel then sees with agent/inventory, prints one line
// "RACKBOOT-RAMDISK-OK <json>" on the console and powers the machine off.
// The test boots it under QEMU with a virtio disk and two virtio NICs.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/rackboot/rackboot/agent/inventory"
	"github.com/rackboot/rackboot/agent/kmod"
	"golang.org/x/sys/unix"
)

// Marker starts the line the test waits for.
const Marker = "RACKBOOT-RAMDISK-OK"

type nic struct {
	Name string `json:"name"`
	MAC  string `json:"mac"`
}

type disk struct {
	Name  string `json:"name"`
	Bytes int64  `json:"bytes"`
}

type report struct {
	Arch    string      `json:"arch"`
	Release string      `json:"release"`
	Kmod    kmod.Result `json:"kmod"`
	NICs    []nic       `json:"nics"`
	Disks   []disk      `json:"disks"`
	// Inventory is how inventory.Read went: "ok", or its error, when
	// NICs and disks were read from sysfs directly instead.
	Inventory string   `json:"inventory"`
	Warnings  []string `json:"warnings,omitempty"`
	Seconds   float64  `json:"seconds"` // from uinit start to the marker
}

func read(p string) string {
	b, _ := os.ReadFile(p)
	return strings.TrimSpace(string(b))
}

func nics() []nic {
	var out []nic
	ents, _ := os.ReadDir("/sys/class/net")
	for _, e := range ents {
		if e.Name() == "lo" {
			continue
		}
		out = append(out, nic{e.Name(), read(filepath.Join("/sys/class/net", e.Name(), "address"))})
	}
	return out
}

func disks() []disk {
	var out []disk
	ents, _ := os.ReadDir("/sys/block")
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "loop") || strings.HasPrefix(e.Name(), "ram") {
			continue
		}
		sectors, _ := strconv.ParseInt(read(filepath.Join("/sys/block", e.Name(), "size")), 10, 64)
		out = append(out, disk{e.Name(), sectors * 512})
	}
	return out
}

func main() {
	start := time.Now()
	con, err := os.OpenFile("/dev/console", os.O_WRONLY, 0)
	if err != nil {
		con = os.Stdout
	}
	dir, err := kmod.ModulesDir()
	if err != nil {
		fmt.Fprintln(con, "testinit:", err)
	}
	r := report{Arch: runtime.GOARCH, Release: filepath.Base(dir)}
	l := &kmod.Loader{Dir: dir}
	if r.Kmod, err = l.Hardware(); err != nil {
		fmt.Fprintln(con, "testinit: load modules:", err)
	}
	// Drivers probe as they load, but let late devices settle: wait until
	// a NIC and a disk show up, at most ten seconds.
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if len(nics()) > 0 && len(disks()) > 0 {
			break
		}
	}
	time.Sleep(500 * time.Millisecond)
	if inv, err := inventory.Read("/"); err != nil {
		r.Inventory = err.Error()
		r.NICs, r.Disks = nics(), disks()
	} else {
		r.Inventory, r.Warnings = "ok", inv.Warnings
		for _, i := range inv.Interfaces {
			r.NICs = append(r.NICs, nic{i.Name, i.MACAddress})
		}
		for _, d := range inv.Disks {
			r.Disks = append(r.Disks, disk{d.Name, d.Size})
		}
	}
	sort.Slice(r.NICs, func(i, j int) bool { return r.NICs[i].MAC < r.NICs[j].MAC })
	r.Seconds = time.Since(start).Seconds()
	b, _ := json.Marshal(r)
	fmt.Fprintf(con, "\n%s %s\n", Marker, b)
	con.Sync()
	unix.Sync()
	time.Sleep(time.Second)
	unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	select {}
}
