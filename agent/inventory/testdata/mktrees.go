//go:build ignore

// mktrees writes the synthetic machine trees under testdata from the
// machine shapes below (public facts: CPU topologies, PCI ids, SMBIOS
// layouts). Run it from agent/inventory: go run testdata/mktrees.go.
// h100-real is recorded (record.sh), not generated.
package main

import (
	"encoding/binary"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strings"
)

type pci struct {
	addr, path        string // path: the bridges above, e.g. "pci0000:00/0000:00:01.1"
	vendor, device    string
	subVendor, subDev string
	class             string
	numa              int
	group             int // IOMMU group; -1 none
	driver            string
	speed, maxSpeed   string
	width, maxWidth   int
	portType          int   // PCIe port type for bridges: 4 root, 5 upstream, 6 downstream
	acs               int   // 0 none, 1 enabled, 2 present but off
	bar               int64 // largest prefetchable BAR
	totalVFs          int
}

type nic struct {
	name, pci, mac string
	speed          int
	carrier        bool
}
type disk struct {
	name, pci, model, vendor, serial, wwid, byPath string
	sectors                                        int64
	rot                                            bool
}
type dimm struct {
	loc   string
	gib   int
	typ   byte
	speed int
	maker string
	part  string
}

type machine struct {
	name                                      string
	arm                                       bool
	cpuModel, vendor, family, model, stepping string
	flags                                     string
	sockets, coresPer, threadsPer             int
	maxKHz                                    int
	numa                                      [][2]string // cpulist, MemTotal kB
	memKB                                     int64
	dmi                                       map[string]string
	dimms                                     []dimm
	procVersion                               string
	procMHz                                   int
	uefi                                      bool
	secureBoot                                bool
	bootif                                    string
	pcis                                      []pci
	nics                                      []nic
	disks                                     []disk
}

var root string

func write(p string, s string) {
	p = filepath.Join(root, p)
	must(os.MkdirAll(filepath.Dir(p), 0o755))
	must(os.WriteFile(p, []byte(s), 0o644))
}

func link(target, at string) {
	rel, err := filepath.Rel(filepath.Dir(at), target)
	must(err)
	p := filepath.Join(root, at)
	must(os.MkdirAll(filepath.Dir(p), 0o755))
	os.Remove(p)
	must(os.Symlink(rel, p))
}

func must(err error) {
	if err != nil {
		log.Fatal(err)
	}
}

func dev(p pci) string { return "/sys/devices/" + p.path + "/" + p.addr }

// config builds 4 KiB of config space: header, PCIe capability at 0x40
// and, when asked, ACS at 0x100.
func config(p pci) []byte {
	c := make([]byte, 4096)
	var v, d uint16
	fmt.Sscanf(p.vendor, "%x", &v)
	fmt.Sscanf(p.device, "%x", &d)
	binary.LittleEndian.PutUint16(c[0:], v)
	binary.LittleEndian.PutUint16(c[2:], d)
	c[0x06] = 0x10
	c[0x34] = 0x40
	c[0x40], c[0x41] = 0x10, 0
	binary.LittleEndian.PutUint16(c[0x42:], uint16(2|p.portType<<4))
	if p.acs > 0 {
		binary.LittleEndian.PutUint32(c[0x100:], 0x000d|1<<16)
		binary.LittleEndian.PutUint16(c[0x104:], 0x1f)
		if p.acs == 1 {
			binary.LittleEndian.PutUint16(c[0x106:], 0x1d)
		}
	}
	return c
}

func dmiTable(m machine) []byte {
	var b []byte
	str := func(ss ...string) []byte {
		var o []byte
		for _, s := range ss {
			o = append(append(o, s...), 0)
		}
		if len(o) == 0 {
			o = []byte{0}
		}
		return append(o, 0)
	}
	h := uint16(0x100)
	for s := 0; s < m.sockets; s++ {
		f := make([]byte, 0x2a)
		f[0], f[1] = 4, 0x2a
		binary.LittleEndian.PutUint16(f[2:], h)
		f[0x04] = 1 // socket designation
		f[0x10] = 2 // version
		binary.LittleEndian.PutUint16(f[0x14:], uint16(m.procMHz))
		f[0x18] = 0x41
		b = append(append(b, f...), str(fmt.Sprintf("CPU%d", s), m.procVersion)...)
		h++
	}
	for _, dm := range m.dimms {
		f := make([]byte, 0x28)
		f[0], f[1] = 17, 0x28
		binary.LittleEndian.PutUint16(f[2:], h)
		if dm.gib >= 32 {
			binary.LittleEndian.PutUint16(f[0x0c:], 0x7fff)
			binary.LittleEndian.PutUint32(f[0x1c:], uint32(dm.gib*1024))
		} else {
			binary.LittleEndian.PutUint16(f[0x0c:], uint16(dm.gib*1024))
		}
		f[0x0e] = 0x09
		f[0x10], f[0x11], f[0x17], f[0x18], f[0x1a] = 1, 2, 3, 4, 5
		f[0x12] = dm.typ
		binary.LittleEndian.PutUint16(f[0x15:], uint16(dm.speed))
		binary.LittleEndian.PutUint16(f[0x20:], uint16(dm.speed))
		b = append(append(b, f...), str(dm.loc, "P0_Node0_Channel0", dm.maker, "FAKE"+strings.ReplaceAll(dm.loc, "_", ""), dm.part)...)
		h++
	}
	// An empty slot, which the reader must skip.
	f := make([]byte, 0x28)
	f[0], f[1] = 17, 0x28
	b = append(append(b, f...), str("EMPTY")...)
	return append(b, 127, 4, 0xff, 0xff, 0, 0)
}

func gen(m machine) {
	root = filepath.Join("testdata", m.name)
	must(os.RemoveAll(root))
	threads := m.sockets * m.coresPer * m.threadsPer
	var ci strings.Builder
	for t := 0; t < threads; t++ {
		// Linux numbers the first thread of every core before the
		// siblings.
		core := t % (m.sockets * m.coresPer)
		sock := core / m.coresPer
		if m.arm {
			fmt.Fprintf(&ci, "processor\t: %d\nBogoMIPS\t: 50.00\nFeatures\t: %s\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x3\nCPU part\t: 0xd0c\nCPU revision\t: 1\n\n", t, m.flags)
		} else {
			fmt.Fprintf(&ci, "processor\t: %d\nvendor_id\t: %s\ncpu family\t: %s\nmodel\t\t: %s\nmodel name\t: %s\nstepping\t: %s\ncpu MHz\t\t: 1500.000\nphysical id\t: %d\ncore id\t\t: %d\nflags\t\t: %s\n\n",
				t, m.vendor, m.family, m.model, m.cpuModel, m.stepping, sock, core%m.coresPer, m.flags)
		}
		base := fmt.Sprintf("sys/devices/system/cpu/cpu%d/", t)
		write(base+"topology/physical_package_id", fmt.Sprintf("%d\n", sock))
		write(base+"topology/core_id", fmt.Sprintf("%d\n", core%m.coresPer))
		if t == 0 {
			write(base+"cpufreq/cpuinfo_max_freq", fmt.Sprintf("%d\n", m.maxKHz))
		}
	}
	write("proc/cpuinfo", ci.String())
	write("sys/devices/system/cpu/online", fmt.Sprintf("0-%d\n", threads-1))
	write("proc/meminfo", fmt.Sprintf("MemTotal:       %d kB\nMemFree:        %d kB\n", m.memKB, m.memKB-4000000))
	for i, n := range m.numa {
		write(fmt.Sprintf("sys/devices/system/node/node%d/cpulist", i), n[0]+"\n")
		write(fmt.Sprintf("sys/devices/system/node/node%d/meminfo", i), fmt.Sprintf("Node %d MemTotal:       %s kB\n", i, n[1]))
	}
	for k, v := range m.dmi {
		write("sys/devices/virtual/dmi/id/"+k, v+"\n")
	}
	link("/sys/devices/virtual/dmi/id", "/sys/class/dmi/id")
	write("sys/firmware/dmi/tables/DMI", string(dmiTable(m)))
	if m.uefi {
		sb := byte(0)
		if m.secureBoot {
			sb = 1
		}
		write("sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c", string([]byte{6, 0, 0, 0, sb}))
	}
	write("proc/cmdline", "BOOT_IMAGE=/agent console=ttyS0 rackboot.node=n1 BOOTIF=01-"+strings.ReplaceAll(m.bootif, ":", "-")+"\n")
	for _, p := range m.pcis {
		d := dev(p)
		link(d, "/sys/bus/pci/devices/"+p.addr)
		w := func(n, v string) { write(d+"/"+n, v+"\n") }
		w("vendor", "0x"+p.vendor)
		w("device", "0x"+p.device)
		w("subsystem_vendor", "0x"+p.subVendor)
		w("subsystem_device", "0x"+p.subDev)
		w("class", "0x"+p.class)
		w("revision", "0xa1")
		w("numa_node", fmt.Sprint(p.numa))
		if p.maxSpeed != "" {
			w("current_link_speed", p.speed)
			w("max_link_speed", p.maxSpeed)
			w("current_link_width", fmt.Sprint(p.width))
			w("max_link_width", fmt.Sprint(p.maxWidth))
		}
		if p.driver != "" {
			link("/sys/bus/pci/drivers/"+p.driver, d+"/driver")
		}
		if p.group >= 0 {
			g := fmt.Sprintf("/sys/kernel/iommu_groups/%d", p.group)
			link(g, d+"/iommu_group")
			link(d, g+"/devices/"+p.addr)
		}
		if p.totalVFs > 0 {
			w("sriov_totalvfs", fmt.Sprint(p.totalVFs))
			w("sriov_numvfs", "0")
		}
		res := strings.Repeat("0x0000000000000000 0x0000000000000000 0x0000000000000000\n", 13)
		if p.bar > 0 {
			res = fmt.Sprintf("0x00000000fa000000 0x00000000faffffff 0x0000000000040200\n"+
				"0x0000000000000000 0x0000000000000000 0x0000000000000000\n"+
				"0x0000200000000000 0x%016x 0x000000000014220c\n", 0x200000000000+p.bar-1) + strings.Repeat("0x0000000000000000 0x0000000000000000 0x0000000000000000\n", 10)
		}
		write(d+"/resource", res)
		write(d+"/config", string(config(p)))
	}
	byAddr := map[string]pci{}
	for _, p := range m.pcis {
		byAddr[p.addr] = p
	}
	for _, n := range m.nics {
		d := dev(byAddr[n.pci]) + "/net/" + n.name
		link(d, "/sys/class/net/"+n.name)
		link(dev(byAddr[n.pci]), d+"/device")
		write(d+"/address", n.mac+"\n")
		car := "0"
		if n.carrier {
			car = "1"
		}
		write(d+"/carrier", car+"\n")
		spd := -1
		if n.carrier {
			spd = n.speed
		}
		write(d+"/speed", fmt.Sprint(spd)+"\n")
	}
	write("sys/devices/virtual/net/lo/address", "00:00:00:00:00:00\n")
	link("/sys/devices/virtual/net/lo", "/sys/class/net/lo")
	write("sys/devices/virtual/block/loop0/size", "0\n")
	link("/sys/devices/virtual/block/loop0", "/sys/block/loop0")
	for _, k := range m.disks {
		var d, devdir string
		if strings.HasPrefix(k.name, "nvme") {
			ctrl := strings.TrimSuffix(k.name, "n1")
			devdir = dev(byAddr[k.pci]) + "/nvme/" + ctrl
			d = devdir + "/" + k.name
			write(d+"/wwid", k.wwid+"\n")
		} else {
			devdir = dev(byAddr[k.pci]) + "/ata1/host0/target0:0:0/0:0:0:0"
			d = devdir + "/block/" + k.name
			write(devdir+"/wwid", k.wwid+"\n")
			write(devdir+"/vendor", k.vendor+"\n")
		}
		link(d, "/sys/block/"+k.name)
		link(devdir, d+"/device")
		write(d+"/size", fmt.Sprint(k.sectors)+"\n")
		rot := "0"
		if k.rot {
			rot = "1"
		}
		write(d+"/queue/rotational", rot+"\n")
		write(devdir+"/model", k.model+"\n")
		write(devdir+"/serial", k.serial+"\n")
		if k.byPath != "" {
			link("/dev/"+k.name, "/dev/disk/by-path/"+k.byPath)
		}
	}
}

const (
	g4   = "16.0 GT/s PCIe"
	g3   = "8.0 GT/s PCIe"
	g5   = "32.0 GT/s PCIe"
	g1   = "2.5 GT/s PCIe"
	ddr4 = 0x1a
	ddr5 = 0x22
)

func dimms(n, gib, speed int, typ byte, maker, part string) []dimm {
	var out []dimm
	for i := 0; i < n; i++ {
		out = append(out, dimm{loc: fmt.Sprintf("P%d_DIMM_%c1", i/(n/2)+1, 'A'+i%(n/2)), gib: gib, typ: typ, speed: speed, maker: maker, part: part})
	}
	return out
}

func bridge(addr, path, vendor, device string, numa, group, portType, acs int, speed string) pci {
	return pci{addr: addr, path: path, vendor: vendor, device: device, subVendor: vendor, subDev: "0000", class: "060400", numa: numa, group: group,
		driver: "pcieport", speed: speed, maxSpeed: speed, width: 16, maxWidth: 16, portType: portType, acs: acs}
}

func nvgpu(addr, path, device, sub string, numa, group int, speed string, mem int64, vfs int) pci {
	return pci{addr: addr, path: path, vendor: "10de", device: device, subVendor: "10de", subDev: sub, class: "030200", numa: numa, group: group,
		speed: speed, maxSpeed: speed, width: 16, maxWidth: 16, bar: mem, totalVFs: vfs}
}

var epycFlags = "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ht syscall nx mmxext fxsr_opt pdpe1gb rdtscp lm constant_tsc rep_good nopl nonstop_tsc cpuid extd_apicid aperfmperf pni pclmulqdq monitor ssse3 fma cx16 sse4_1 sse4_2 x2apic movbe popcnt aes xsave avx f16c rdrand lahf_lm cmp_legacy svm extapic cr8_legacy abm sse4a misalignsse 3dnowprefetch osvw ibs skinit wdt tce topoext perfctr_core perfctr_nb bpext perfctr_llc mwaitx cpb cat_l3 cdp_l3 hw_pstate ssbd mba ibrs ibpb stibp vmmcall fsgsbase bmi1 avx2 smep bmi2 cqm rdt_a rdseed adx smap clflushopt clwb sha_ni xsaveopt xsavec xgetbv1 xsaves cqm_llc cqm_occup_llc cqm_mbm_total cqm_mbm_local clzero irperf xsaveerptr rdpru wbnoinvd arat npt lbrv svm_lock nrip_save tsc_scale vmcb_clean flushbyasid decodeassists pausefilter pfthreshold avic v_vmsave_vmload vgif umip rdpid overflow_recov succor smca sme sev sev_es"
var xeonFlags = "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush dts acpi mmx fxsr sse sse2 ss ht tm pbe syscall nx pdpe1gb rdtscp lm constant_tsc art arch_perfmon pebs bts rep_good nopl xtopology nonstop_tsc cpuid aperfmperf pni pclmulqdq dtes64 monitor ds_cpl vmx smx est tm2 ssse3 sdbg fma cx16 xtpr pdcm pcid dca sse4_1 sse4_2 x2apic movbe popcnt tsc_deadline_timer aes xsave avx f16c rdrand lahf_lm abm 3dnowprefetch cpuid_fault epb cat_l3 cdp_l3 invpcid_single intel_ppin ssbd mba ibrs ibpb stibp ibrs_enhanced tpr_shadow vnmi flexpriority ept vpid ept_ad fsgsbase tsc_adjust bmi1 avx2 smep bmi2 erms invpcid cqm mpx rdt_a avx512f avx512dq rdseed adx smap clflushopt clwb intel_pt avx512cd avx512bw avx512vl xsaveopt xsavec xgetbv1 xsaves cqm_llc cqm_occup_llc cqm_mbm_total cqm_mbm_local dtherm ida arat pln pts pku ospke avx512_vnni md_clear flush_l1d arch_capabilities"
var altraFlags = "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp ssbs"

func dmiOf(vendor, product, board, biosVendor, biosVersion, biosDate, serial string) map[string]string {
	return map[string]string{
		"sys_vendor": vendor, "product_name": product, "product_serial": serial, "product_uuid": "4c4c4544-0000-1000-8000-" + fmt.Sprintf("%012x", len(serial)*7919),
		"board_vendor": vendor, "board_name": board, "board_version": "1.01", "board_serial": "B" + serial,
		"bios_vendor": biosVendor, "bios_version": biosVersion, "bios_date": biosDate, "product_family": "Server",
	}
}

func main() {
	// DGX-A100-like: 2x EPYC 7742, 4 A100 SXM4 40GB behind PCIe switches,
	// each GPU in its own IOMMU group, two per NUMA node.
	slow := nvgpu("0000:83:00.0", "pci0000:80/0000:80:01.1/0000:81:00.0/0000:82:00.0", "20b0", "134f", 1, 40, g4, 64<<30, 16)
	slow.speed = g1 // idle: the GPU slowed its link
	a100 := []pci{
		{addr: "0000:00:00.0", path: "pci0000:00", vendor: "1022", device: "1482", subVendor: "1022", subDev: "1482", class: "060000", numa: 0, group: 0},
		bridge("0000:00:01.1", "pci0000:00", "1022", "1483", 0, 1, 4, 1, g4),
		bridge("0000:01:00.0", "pci0000:00/0000:00:01.1", "10b5", "8747", 0, 2, 5, 0, g4),
		bridge("0000:02:00.0", "pci0000:00/0000:00:01.1/0000:01:00.0", "10b5", "8747", 0, 3, 6, 1, g4),
		nvgpu("0000:03:00.0", "pci0000:00/0000:00:01.1/0000:01:00.0/0000:02:00.0", "20b0", "134f", 0, 10, g4, 64<<30, 16),
		bridge("0000:02:08.0", "pci0000:00/0000:00:01.1/0000:01:00.0", "10b5", "8747", 0, 4, 6, 1, g4),
		nvgpu("0000:04:00.0", "pci0000:00/0000:00:01.1/0000:01:00.0/0000:02:08.0", "20b0", "134f", 0, 11, g4, 64<<30, 16),
		{addr: "0000:41:00.0", path: "pci0000:40", vendor: "15b3", device: "101b", subVendor: "15b3", subDev: "0007", class: "020000", numa: 0, group: 20, driver: "mlx5_core", speed: g4, maxSpeed: g4, width: 16, maxWidth: 16},
		{addr: "0000:41:00.1", path: "pci0000:40", vendor: "15b3", device: "101b", subVendor: "15b3", subDev: "0007", class: "020000", numa: 0, group: 21, driver: "mlx5_core", speed: g4, maxSpeed: g4, width: 16, maxWidth: 16},
		{addr: "0000:63:00.0", path: "pci0000:60", vendor: "1a03", device: "2000", subVendor: "1a03", subDev: "2000", class: "030000", numa: 0, group: 22, driver: "ast"},
		bridge("0000:80:01.1", "pci0000:80", "1022", "1483", 1, 30, 4, 1, g4),
		bridge("0000:81:00.0", "pci0000:80/0000:80:01.1", "10b5", "8747", 1, 31, 5, 0, g4),
		bridge("0000:82:00.0", "pci0000:80/0000:80:01.1/0000:81:00.0", "10b5", "8747", 1, 32, 6, 1, g4),
		slow,
		bridge("0000:82:08.0", "pci0000:80/0000:80:01.1/0000:81:00.0", "10b5", "8747", 1, 33, 6, 1, g4),
		nvgpu("0000:84:00.0", "pci0000:80/0000:80:01.1/0000:81:00.0/0000:82:08.0", "20b0", "134f", 1, 41, g4, 64<<30, 16),
		{addr: "0000:c1:00.0", path: "pci0000:c0", vendor: "144d", device: "a80a", subVendor: "144d", subDev: "a812", class: "010802", numa: 1, group: 50, driver: "nvme", speed: g4, maxSpeed: g4, width: 4, maxWidth: 4},
	}
	gen(machine{
		name: "a100x4", cpuModel: "AMD EPYC 7742 64-Core Processor", vendor: "AuthenticAMD", family: "23", model: "49", stepping: "0", flags: epycFlags,
		sockets: 2, coresPer: 64, threadsPer: 2, maxKHz: 2250000,
		numa:  [][2]string{{"0-63,128-191", "528205712"}, {"64-127,192-255", "528441344"}},
		memKB: 1056647056,
		dmi:   dmiOf("NVIDIA", "DGXA100 920-23687-2530-000", "DGXA100", "American Megatrends Inc.", "1.25", "10/28/2021", "FAKE1562820000001"),
		dimms: dimms(16, 64, 3200, ddr4, "Samsung", "M393A8G40AB2-CWE"), procVersion: "AMD EPYC 7742 64-Core Processor", procMHz: 3400,
		uefi: true, bootif: "0c:42:a1:00:00:01", pcis: a100,
		nics:  []nic{{"enp65s0f0", "0000:41:00.0", "0c:42:a1:00:00:01", 100000, true}, {"enp65s0f1", "0000:41:00.1", "0c:42:a1:00:00:02", 0, false}},
		disks: []disk{{name: "nvme0n1", pci: "0000:c1:00.0", model: "SAMSUNG MZQL23T8HCLS-00A07", serial: "FAKES64HNE0T000001", wwid: "eui.36344730526000010025384500000001", sectors: 7501476528}},
	})

	// Dell R740 with one Tesla T4, 2x Xeon Gold 6230, UEFI Secure Boot.
	gen(machine{
		name: "t4", cpuModel: "Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz", vendor: "GenuineIntel", family: "6", model: "85", stepping: "7", flags: xeonFlags,
		sockets: 2, coresPer: 20, threadsPer: 2, maxKHz: 3900000,
		numa:  [][2]string{{"0-19,40-59", "196455256"}, {"20-39,60-79", "198160572"}},
		memKB: 394615828,
		dmi:   dmiOf("Dell Inc.", "PowerEdge R740", "06WXJT", "Dell Inc.", "2.19.1", "06/13/2023", "FAKE7X0001"),
		dimms: dimms(12, 32, 2933, ddr4, "Hynix", "HMA84GR7CJR4N-WM"), procVersion: "Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz", procMHz: 4000,
		uefi: true, secureBoot: true, bootif: "3c:fd:fe:00:00:01",
		pcis: []pci{
			{addr: "0000:00:17.0", path: "pci0000:00", vendor: "8086", device: "a1d2", subVendor: "1028", subDev: "0716", class: "010601", numa: 0, group: 5, driver: "ahci"},
			{addr: "0000:18:00.0", path: "pci0000:17/0000:17:00.0", vendor: "8086", device: "1572", subVendor: "8086", subDev: "0006", class: "020000", numa: 0, group: 20, driver: "i40e", speed: g3, maxSpeed: g3, width: 8, maxWidth: 8},
			bridge("0000:17:00.0", "pci0000:17", "8086", "2030", 0, 19, 4, 1, g3),
			bridge("0000:3a:00.0", "pci0000:3a", "8086", "2030", 0, 30, 4, 1, g3),
			nvgpu("0000:3b:00.0", "pci0000:3a/0000:3a:00.0", "1eb8", "12a2", 0, 31, g3, 256<<20, 0),
		},
		nics:  []nic{{"eno1", "0000:18:00.0", "3c:fd:fe:00:00:01", 10000, true}},
		disks: []disk{{name: "sda", pci: "0000:00:17.0", model: "SSDSC2KB480G8R", vendor: "ATA", serial: "FAKEPHYF000001", wwid: "naa.55cd2e4150000001", sectors: 937703088, byPath: "pci-0000:00:17.0-ata-1"}},
	})

	// HPE DL380 Gen10 with one V100S, one Xeon Gold 6248, legacy BIOS
	// boot, a spinning disk.
	gen(machine{
		name: "v100s", cpuModel: "Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz", vendor: "GenuineIntel", family: "6", model: "85", stepping: "7", flags: xeonFlags,
		sockets: 1, coresPer: 20, threadsPer: 2, maxKHz: 3900000,
		numa:  [][2]string{{"0-39", "196455256"}},
		memKB: 196455256,
		dmi:   dmiOf("HPE", "ProLiant DL380 Gen10", "ProLiant DL380 Gen10", "HPE", "U30", "05/21/2021", "FAKEMXQ0001"),
		dimms: dimms(6, 32, 2933, ddr4, "HPE", "P00924-B21"), procVersion: "Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz", procMHz: 4000,
		bootif: "94:40:c9:00:00:01",
		pcis: []pci{
			{addr: "0000:00:17.0", path: "pci0000:00", vendor: "8086", device: "a1d2", subVendor: "103c", subDev: "0000", class: "010601", numa: 0, group: 5, driver: "ahci"},
			bridge("0000:d7:00.0", "pci0000:d7", "8086", "2030", 0, 60, 4, 1, g3),
			nvgpu("0000:d8:00.0", "pci0000:d7/0000:d7:00.0", "1df6", "13d6", 0, 61, g3, 32<<30, 0),
			{addr: "0000:5d:00.0", path: "pci0000:5d", vendor: "8086", device: "1572", subVendor: "103c", subDev: "22fc", class: "020000", numa: 0, group: 40, driver: "i40e", speed: g3, maxSpeed: g3, width: 8, maxWidth: 8},
		},
		nics:  []nic{{"ens1f0", "0000:5d:00.0", "94:40:c9:00:00:01", 10000, true}},
		disks: []disk{{name: "sda", pci: "0000:00:17.0", model: "MB2000GCWDA", vendor: "ATA", serial: "FAKEZ1X00001", wwid: "naa.5000c500a0000001", sectors: 3907029168, rot: true, byPath: "pci-0000:00:17.0-ata-1"}},
	})

	// Ampere Altra Q80-30: 80 Neoverse-N1 cores, one NUMA node, a T4 on
	// PCIe domain 000d.
	gen(machine{
		name: "altra", arm: true, flags: altraFlags,
		sockets: 1, coresPer: 80, threadsPer: 1, maxKHz: 3000000,
		numa:  [][2]string{{"0-79", "263529612"}},
		memKB: 263529612,
		dmi:   dmiOf("GIGABYTE", "R272-P30-JG", "MP32-AR0-JG", "GIGABYTE", "F31", "09/21/2022", "FAKEGJG0001"),
		dimms: dimms(8, 32, 3200, ddr4, "Samsung", "M393A4K40DB3-CWE"), procVersion: "Ampere(R) Altra(R) Processor Q80-30 CPU @ 3.0GHz", procMHz: 3000,
		uefi: true, bootif: "b8:ce:f6:00:00:01",
		pcis: []pci{
			bridge("000d:00:01.0", "pci000d:00", "1def", "e111", 0, 3, 4, 1, g4),
			nvgpu("000d:01:00.0", "pci000d:00/000d:00:01.0", "1eb8", "12a2", 0, 4, g3, 256<<20, 0),
			bridge("0005:00:01.0", "pci0005:00", "1def", "e111", 0, 7, 4, 1, g4),
			{addr: "0005:01:00.0", path: "pci0005:00/0005:00:01.0", vendor: "15b3", device: "101b", subVendor: "15b3", subDev: "0007", class: "020000", numa: 0, group: 8, driver: "mlx5_core", speed: g4, maxSpeed: g4, width: 16, maxWidth: 16},
			bridge("0004:00:01.0", "pci0004:00", "1def", "e111", 0, 9, 4, 1, g4),
			{addr: "0004:01:00.0", path: "pci0004:00/0004:00:01.0", vendor: "144d", device: "a80a", subVendor: "144d", subDev: "a812", class: "010802", numa: 0, group: 10, driver: "nvme", speed: g4, maxSpeed: g4, width: 4, maxWidth: 4},
		},
		nics:  []nic{{"enP5p1s0f0np0", "0005:01:00.0", "b8:ce:f6:00:00:01", 25000, true}},
		disks: []disk{{name: "nvme0n1", pci: "0004:01:00.0", model: "SAMSUNG MZQL2960HCJR-00A07", serial: "FAKES64F0000001", wwid: "eui.36344630520000010025384500000001", sectors: 1875385008}},
	})

	// Supermicro HGX H100 with 2 H100 SXM5, one per NUMA node.
	gen(machine{
		name: "h100", cpuModel: "Intel(R) Xeon(R) Platinum 8462Y+", vendor: "GenuineIntel", family: "6", model: "143", stepping: "8", flags: xeonFlags + " amx_bf16 avx512_fp16 amx_tile amx_int8",
		sockets: 2, coresPer: 32, threadsPer: 2, maxKHz: 4100000,
		numa:  [][2]string{{"0-31,64-95", "1056478228"}, {"32-63,96-127", "1056895040"}},
		memKB: 2113373268,
		dmi:   dmiOf("Supermicro", "SYS-821GE-TNHR", "X13DEG-OAD", "American Megatrends International, LLC.", "2.1", "04/12/2024", "FAKES8210001"),
		dimms: dimms(16, 128, 4800, ddr5, "Micron Technology", "MTC40F204WS1RC48BB1"), procVersion: "Intel(R) Xeon(R) Platinum 8462Y+", procMHz: 4100,
		uefi: true, bootif: "a0:88:c2:00:00:01",
		pcis: []pci{
			bridge("0000:18:01.0", "pci0000:18", "8086", "2030", 0, 20, 4, 1, g5),
			nvgpu("0000:19:00.0", "pci0000:18/0000:18:01.0", "2330", "16c1", 0, 21, g5, 128<<30, 32),
			bridge("0000:9a:01.0", "pci0000:9a", "8086", "2030", 1, 60, 4, 1, g5),
			nvgpu("0000:9b:00.0", "pci0000:9a/0000:9a:01.0", "2330", "16c1", 1, 61, g5, 128<<30, 32),
			{addr: "0000:29:00.0", path: "pci0000:28", vendor: "15b3", device: "101b", subVendor: "15b3", subDev: "0007", class: "020000", numa: 0, group: 30, driver: "mlx5_core", speed: g4, maxSpeed: g4, width: 16, maxWidth: 16},
		},
		nics: []nic{{"ens1np0", "0000:29:00.0", "a0:88:c2:00:00:01", 200000, true}},
	})

	// HGX H200 8-GPU: two GPUs behind each of four PCIe switches, and the
	// board's four NVSwitches (bridges, not GPUs).
	hgx := []pci{}
	for sw := 0; sw < 4; sw++ {
		numa := sw / 2
		root := fmt.Sprintf("pci0000:%02x", 0x18+sw*0x20)
		port := fmt.Sprintf("0000:%02x:01.0", 0x18+sw*0x20)
		hgx = append(hgx, bridge(port, root, "8086", "352a", numa, 100+sw*10, 4, 1, g5))
		for k := 0; k < 2; k++ {
			addr := fmt.Sprintf("0000:%02x:00.0", 0x19+sw*0x20+k)
			dport := fmt.Sprintf("0000:%02x:0%d.0", 0x18+sw*0x20, 2+k)
			hgx = append(hgx, bridge(dport, root+"/"+port, "1000", "c030", numa, 101+sw*10+k*2, 6, 1, g5))
			hgx = append(hgx, nvgpu(addr, root+"/"+port+"/"+dport, "2335", "18be", numa, 102+sw*10+k*2, g5, 256<<30, 32))
		}
	}
	for i := 0; i < 4; i++ {
		hgx = append(hgx, pci{addr: fmt.Sprintf("0000:%02x:00.0", 0xb0+i), path: "pci0000:af", vendor: "10de", device: "22a3", subVendor: "10de", subDev: "1796",
			class: "068000", numa: 1, group: 200 + i, speed: g1, maxSpeed: g1, width: 1, maxWidth: 1})
	}
	hgx = append(hgx, pci{addr: "0000:29:00.0", path: "pci0000:28", vendor: "15b3", device: "1021", subVendor: "15b3", subDev: "0023", class: "020000", numa: 0, group: 30, driver: "mlx5_core", speed: g5, maxSpeed: g5, width: 16, maxWidth: 16})
	gen(machine{
		name: "hgx-h200", cpuModel: "Intel(R) Xeon(R) Platinum 8480+", vendor: "GenuineIntel", family: "6", model: "143", stepping: "8", flags: xeonFlags + " amx_bf16 avx512_fp16 amx_tile amx_int8",
		sockets: 2, coresPer: 56, threadsPer: 2, maxKHz: 3800000,
		numa:  [][2]string{{"0-55,112-167", "1056478228"}, {"56-111,168-223", "1056895040"}},
		memKB: 2113373268,
		dmi:   dmiOf("Supermicro", "SYS-821GE-TNHR", "X13DEG-OAD", "American Megatrends International, LLC.", "2.4", "09/02/2025", "FAKES8210200"),
		dimms: dimms(32, 64, 4800, ddr5, "Samsung", "M321R8GA0BB0-CQKZJ"), procVersion: "Intel(R) Xeon(R) Platinum 8480+", procMHz: 3800,
		uefi: true, bootif: "a0:88:c2:00:02:01", pcis: hgx,
		nics: []nic{{"ens1np0", "0000:29:00.0", "a0:88:c2:00:02:01", 400000, true}},
	})

	// One card of each family the table knows beyond the machines above,
	// each on a root port of its own: what a mixed lab rack holds.
	mixed := []pci{}
	for i, c := range []struct {
		device, sub string
		bar         int64
		vfs         int
	}{{"1df5", "1212", 32 << 30, 0}, {"20b1", "145f", 64 << 30, 16}, {"20b7", "1532", 32 << 30, 16}, {"2236", "1482", 32 << 30, 32},
		{"27b8", "16ca", 32 << 30, 32}, {"26b9", "1851", 64 << 30, 32}, {"2321", "1839", 128 << 30, 32}, {"233b", "1996", 256 << 30, 32}} {
		port := fmt.Sprintf("0000:%02x:01.0", 0x10+i*0x10)
		root := fmt.Sprintf("pci0000:%02x", 0x10+i*0x10)
		mixed = append(mixed, bridge(port, root, "8086", "352a", i/4, 300+i*2, 4, 1, g4),
			nvgpu(fmt.Sprintf("0000:%02x:00.0", 0x11+i*0x10), root+"/"+port, c.device, c.sub, i/4, 301+i*2, g4, c.bar, c.vfs))
	}
	mixed = append(mixed, pci{addr: "0000:a1:00.0", path: "pci0000:a0", vendor: "8086", device: "1593", subVendor: "8086", subDev: "0002", class: "020000", numa: 1, group: 400, driver: "ice", speed: g4, maxSpeed: g4, width: 16, maxWidth: 16})
	gen(machine{
		name: "gpu-families", cpuModel: "AMD EPYC 9354 32-Core Processor", vendor: "AuthenticAMD", family: "25", model: "17", stepping: "1", flags: epycFlags,
		sockets: 2, coresPer: 32, threadsPer: 2, maxKHz: 3800000,
		numa:  [][2]string{{"0-31,64-95", "528205712"}, {"32-63,96-127", "528441344"}},
		memKB: 1056647056,
		dmi:   dmiOf("Dell Inc.", "PowerEdge XE8640", "0XE864", "Dell Inc.", "1.8.3", "03/11/2025", "FAKEXE8640001"),
		dimms: dimms(16, 64, 4800, ddr5, "Hynix", "HMCG94AEBRA109N"), procVersion: "AMD EPYC 9354 32-Core Processor", procMHz: 3800,
		uefi: true, bootif: "b4:96:91:00:00:01", pcis: mixed,
		nics: []nic{{"ens9f0", "0000:a1:00.0", "b4:96:91:00:00:01", 100000, true}},
	})

	// A GPU server whose firmware does not enable ACS on a PLX switch:
	// two V100 share one IOMMU group, so neither can be passed through
	// alone; a Quadro RTX 6000 with its audio function runs at x8 in an
	// x16 slot.
	gen(machine{
		name: "shared-iommu", cpuModel: "Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz", vendor: "GenuineIntel", family: "6", model: "85", stepping: "7", flags: xeonFlags,
		sockets: 1, coresPer: 20, threadsPer: 2, maxKHz: 3900000,
		numa:  [][2]string{{"0-39", "196455256"}},
		memKB: 196455256,
		dmi:   dmiOf("Supermicro", "SYS-4029GP-TRT", "X11DPG-OT-CPU", "American Megatrends Inc.", "3.4", "11/19/2020", "FAKES40290001"),
		dimms: dimms(6, 32, 2933, ddr4, "Micron", "36ASF4G72PZ-2G9E2"), procVersion: "Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz", procMHz: 4000,
		uefi: true, bootif: "ac:1f:6b:00:00:01",
		pcis: []pci{
			bridge("0000:17:00.0", "pci0000:17", "8086", "2030", 0, 20, 4, 1, g3),
			bridge("0000:18:00.0", "pci0000:17/0000:17:00.0", "10b5", "8747", 0, 21, 5, 0, g3),
			bridge("0000:19:08.0", "pci0000:17/0000:17:00.0/0000:18:00.0", "10b5", "8747", 0, 21, 6, 2, g3),
			nvgpu("0000:1a:00.0", "pci0000:17/0000:17:00.0/0000:18:00.0/0000:19:08.0", "1db6", "124a", 0, 21, g3, 32<<30, 0),
			bridge("0000:19:10.0", "pci0000:17/0000:17:00.0/0000:18:00.0", "10b5", "8747", 0, 21, 6, 2, g3),
			nvgpu("0000:1b:00.0", "pci0000:17/0000:17:00.0/0000:18:00.0/0000:19:10.0", "1db6", "124a", 0, 21, g3, 32<<30, 0),
			bridge("0000:3a:00.0", "pci0000:3a", "8086", "2030", 0, 30, 4, 1, g3),
			{addr: "0000:3b:00.0", path: "pci0000:3a/0000:3a:00.0", vendor: "10de", device: "1e30", subVendor: "10de", subDev: "12ba", class: "030000", numa: 0, group: 31,
				speed: g3, maxSpeed: g3, width: 8, maxWidth: 16, bar: 256 << 20},
			{addr: "0000:3b:00.1", path: "pci0000:3a/0000:3a:00.0", vendor: "10de", device: "10f7", subVendor: "10de", subDev: "12ba", class: "040300", numa: 0, group: 31,
				speed: g3, maxSpeed: g3, width: 8, maxWidth: 16},
			{addr: "0000:5e:00.0", path: "pci0000:5d", vendor: "8086", device: "1572", subVendor: "8086", subDev: "0006", class: "020000", numa: 0, group: 40, driver: "i40e", speed: g3, maxSpeed: g3, width: 8, maxWidth: 8},
		},
		nics: []nic{{"eno1", "0000:5e:00.0", "ac:1f:6b:00:00:01", 10000, true}},
	})
}
