package inventory

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// armParts names Arm cores by MIDR implementer and part, because arm64's
// /proc/cpuinfo has no model name.
var armParts = map[[2]uint64]string{
	{0x41, 0xd03}: "Cortex-A53",
	{0x41, 0xd05}: "Cortex-A55",
	{0x41, 0xd07}: "Cortex-A57",
	{0x41, 0xd08}: "Cortex-A72",
	{0x41, 0xd0c}: "Neoverse-N1",
	{0x41, 0xd40}: "Neoverse-V1",
	{0x41, 0xd49}: "Neoverse-N2",
	{0x41, 0xd4f}: "Neoverse-V2",
	{0xc0, 0xac3}: "Ampere-1",
	{0xc0, 0xac4}: "Ampere-1a",
}

var armImplementers = map[uint64]string{
	0x41: "ARM", 0x42: "Broadcom", 0x43: "Cavium", 0x48: "HiSilicon",
	0x4e: "NVIDIA", 0x51: "Qualcomm", 0x61: "Apple", 0xc0: "Ampere",
}

func (rd *reading) readCPU() CPU {
	cpu := CPU{Flags: []string{}, NUMANodes: []NUMANode{}}
	f, err := os.Open(rd.path("proc/cpuinfo"))
	if err != nil {
		rd.warn(fmt.Errorf("read cpuinfo: %w", err))
		return cpu
	}
	defer f.Close()
	// The first processor's block speaks for all: mixed CPUs in one
	// server do not happen.
	first := map[string]string{}
	processors := 0
	physIDs := map[string]bool{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		switch k {
		case "processor":
			processors++
		case "physical id":
			physIDs[v] = true
		}
		if processors <= 1 {
			if _, seen := first[k]; !seen {
				first[k] = v
			}
		}
	}
	if err := sc.Err(); err != nil {
		rd.warn(fmt.Errorf("read cpuinfo: %w", err))
	}

	if flags, ok := first["flags"]; ok {
		cpu.Architecture = "x86_64"
		if !strings.Contains(" "+flags+" ", " lm ") {
			cpu.Architecture = "i686"
		}
		cpu.Flags = strings.Fields(flags)
		cpu.Vendor = first["vendor_id"]
		cpu.ModelName = first["model name"]
		cpu.Model = fmt.Sprintf("family %s model %s stepping %s", first["cpu family"], first["model"], first["stepping"])
	} else if _, ok := first["CPU implementer"]; ok {
		cpu.Architecture = "aarch64"
		cpu.Flags = strings.Fields(first["Features"])
		impl, _ := strconv.ParseUint(first["CPU implementer"], 0, 64)
		part, _ := strconv.ParseUint(first["CPU part"], 0, 64)
		cpu.Vendor = armImplementers[impl]
		cpu.ModelName = armParts[[2]uint64{impl, part}]
		cpu.Model = fmt.Sprintf("implementer %#x part %#x variant %s revision %s", impl, part, first["CPU variant"], first["CPU revision"])
		if m := first["model name"]; m != "" && cpu.ModelName == "" {
			cpu.ModelName = m
		}
	}

	online := parseCPUList(str(rd.path("sys/devices/system/cpu/online")))
	if len(online) == 0 {
		for i := 0; i < processors; i++ {
			online = append(online, i)
		}
	}
	cpu.Count, cpu.Threads = len(online), len(online)

	packages := map[int64]bool{}
	cores := map[[2]int64]bool{}
	var maxKHz int64
	for _, c := range online {
		base := rd.path(fmt.Sprintf("sys/devices/system/cpu/cpu%d", c))
		pkg := num(filepath.Join(base, "topology/physical_package_id"), -1)
		core := num(filepath.Join(base, "topology/core_id"), -1)
		if pkg >= 0 {
			packages[pkg] = true
		}
		if core >= 0 {
			cores[[2]int64{pkg, core}] = true
		}
		maxKHz = max(maxKHz, num(filepath.Join(base, "cpufreq/cpuinfo_max_freq"), 0))
	}
	cpu.Sockets = max(len(packages), len(physIDs))
	if cpu.Sockets == 0 && rd.smbios != nil {
		cpu.Sockets = rd.smbios.populatedSockets
	}
	if cpu.Sockets == 0 && cpu.Count > 0 {
		cpu.Sockets = 1
	}
	cpu.Cores = len(cores)
	if cpu.Cores == 0 {
		cpu.Cores = cpu.Count
	}

	// IPA reports the highest clock, as lscpu's "CPU max MHz" does; a
	// machine without cpufreq (a VM, a ramdisk without the driver) falls
	// back to SMBIOS, then to the current clock.
	mhz := maxKHz / 1000
	if mhz == 0 && rd.smbios != nil {
		mhz = int64(rd.smbios.maxSpeedMHz)
	}
	if mhz == 0 {
		if v, err := strconv.ParseFloat(first["cpu MHz"], 64); err == nil {
			mhz = int64(v + 0.5)
		}
	}
	if mhz > 0 {
		cpu.Frequency = strconv.FormatInt(mhz, 10)
	}
	if cpu.ModelName == "" && rd.smbios != nil {
		cpu.ModelName = rd.smbios.processorVersion
	}
	cpu.NUMANodes = rd.readNUMA()
	return cpu
}

func (rd *reading) readNUMA() []NUMANode {
	out := []NUMANode{}
	base := rd.path("sys/devices/system/node")
	for _, name := range dirNames(base) {
		id, err := strconv.Atoi(strings.TrimPrefix(name, "node"))
		if !strings.HasPrefix(name, "node") || err != nil {
			continue
		}
		n := NUMANode{ID: id, CPUs: str(filepath.Join(base, name, "cpulist"))}
		n.Memory = meminfoKB(filepath.Join(base, name, "meminfo"), "MemTotal") * 1024
		out = append(out, n)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// meminfoKB reads one kB figure from /proc/meminfo or a node's meminfo
// (whose lines start "Node 0 ").
func meminfoKB(p, key string) int64 {
	b, err := os.ReadFile(p)
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		fs := strings.Fields(k)
		if len(fs) == 0 || fs[len(fs)-1] != key {
			continue
		}
		vs := strings.Fields(v)
		if len(vs) == 0 {
			return 0
		}
		n, _ := strconv.ParseInt(vs[0], 10, 64)
		return n
	}
	return 0
}

func (rd *reading) readMemory() Memory {
	m := Memory{Total: meminfoKB(rd.path("proc/meminfo"), "MemTotal") * 1024}
	var sum int64
	if rd.smbios != nil {
		m.DIMMs = rd.smbios.dimms
		for _, d := range m.DIMMs {
			sum += d.Size
		}
	}
	if sum > 0 {
		m.PhysicalMB = sum >> 20
	} else {
		m.PhysicalMB = m.Total >> 20
	}
	return m
}
