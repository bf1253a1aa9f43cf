package inventory

import (
	"encoding/binary"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// consoleVGA are vendors whose display controllers are the BMC's console
// (ASPEED, Matrox G200 on server boards), not GPUs anyone places a VM on.
var consoleVGA = map[string]bool{"1a03": true, "102b": true}

func isGPUClass(class string) bool {
	return strings.HasPrefix(class, "03") || strings.HasPrefix(class, "12")
}

func (rd *reading) gpus(bus *pciBus) []GPU {
	out := []GPU{}
	for _, a := range bus.order {
		d := bus.devs[a]
		if !isGPUClass(d.Class) || consoleVGA[d.VendorID] {
			continue
		}
		out = append(out, gpu(bus, d))
	}
	return out
}

func gpu(bus *pciBus, d *pciDev) GPU {
	g := GPU{
		PCIAddress: d.Address, VendorID: d.VendorID, DeviceID: d.DeviceID,
		SubsystemVendorID: d.SubsystemVendorID, SubsystemDeviceID: d.SubsystemDeviceID,
		Class: d.Class, VendorName: d.VendorName, DeviceName: d.DeviceName, Driver: d.Driver,
		BARs: bars(d.resource), NUMANode: d.NUMANode, IOMMUGroup: d.IOMMUGroup,
		Link: d.Link, SRIOV: d.SRIOV, MdevTypes: d.mdev,
	}
	if g.MdevTypes == nil {
		g.MdevTypes = []MdevType{}
	}
	m, known := gpuModel{}, false
	if d.VendorID == "10de" {
		m, known = nvidiaModel(d.DeviceID)
	}
	g.Model = d.DeviceName
	if known {
		g.Model = m.Name
		g.Memory = m.MemGiB << 30
	} else {
		for _, b := range g.BARs {
			if b.Prefetchable && b.Size > g.Memory {
				g.Memory, g.MemoryEstimated = b.Size, true
			}
		}
	}
	g.MIG = MIG{Capable: len(m.MIG) > 0, Profiles: m.MIG}
	if g.IOMMUGroup != nil {
		g.IOMMUMembers = bus.groups[*g.IOMMUGroup]
	}
	g.ACS = acs(bus, d)
	g.Verdict = verdict(bus, d, g, m, known)
	return g
}

// slot is a function's device: 0000:01:00.1 → 0000:01:00.
func slot(addr string) string {
	i := strings.LastIndexByte(addr, '.')
	if i < 0 {
		return addr
	}
	return addr[:i]
}

func describe(bus *pciBus, addr string) string {
	d := bus.devs[addr]
	if d == nil {
		return addr
	}
	what := d.ClassName
	if d.DeviceName != "" {
		what = strings.TrimSpace(d.VendorName + " " + d.DeviceName)
	}
	if what == "" {
		what = fmt.Sprintf("%s:%s class %s", d.VendorID, d.DeviceID, d.Class)
	}
	return addr + " (" + what + ")"
}

func verdict(bus *pciBus, d *pciDev, g GPU, m gpuModel, known bool) Verdict {
	var v Verdict
	pt := &v.Passthrough
	iommuOK := true
	switch {
	case !bus.iommu:
		iommuOK = false
		pt.Reasons = append(pt.Reasons, "no IOMMU groups: the IOMMU is off or absent (enable VT-d/AMD-Vi in firmware, intel_iommu=on)")
	case g.IOMMUGroup == nil:
		iommuOK = false
		pt.Reasons = append(pt.Reasons, "the device is in no IOMMU group")
	default:
		// VFIO takes a whole group: the GPU's own functions (its audio
		// device) go with it, and bridges stay with their port driver;
		// any other endpoint would have to go to the same VM.
		for _, a := range g.IOMMUMembers {
			if a == d.Address || slot(a) == slot(d.Address) {
				continue
			}
			if o := bus.devs[a]; o != nil && isBridge(o.Class) {
				continue
			}
			pt.Reasons = append(pt.Reasons, fmt.Sprintf("IOMMU group %d also holds %s, which is not part of this GPU", *g.IOMMUGroup, describe(bus, a)))
		}
	}
	pt.Ready = len(pt.Reasons) == 0

	if g.MaxLinkWidth > 0 && g.CurrentLinkWidth > 0 && g.CurrentLinkWidth < g.MaxLinkWidth {
		v.Warnings = append(v.Warnings, fmt.Sprintf("PCIe link runs at x%d of x%d: check the riser and slot", g.CurrentLinkWidth, g.MaxLinkWidth))
	}
	if cur, mx := gts(g.CurrentLinkSpeed), gts(g.MaxLinkSpeed); cur > 0 && mx > 0 && cur < mx {
		v.Warnings = append(v.Warnings, fmt.Sprintf("PCIe link runs at %s of %s (an idle GPU may slow its link; check under load)", g.CurrentLinkSpeed, g.MaxLinkSpeed))
	}
	if g.ACS.State == ACSNotIsolated {
		v.Warnings = append(v.Warnings, g.ACS.Reasons...)
	}

	vg := &v.VGPU
	switch {
	case len(g.MdevTypes) > 0:
	case !known || !m.VGPU:
		vg.Reasons = append(vg.Reasons, fmt.Sprintf("%s is not in rackboot's table of vGPU-capable GPUs", modelOr(g)))
	case m.SRIOV:
		vg.Reasons = append(vg.Reasons, sriovReasons(g, iommuOK, "vGPUs of this GPU are SR-IOV virtual functions")...)
	}
	vg.Ready = len(vg.Reasons) == 0

	mg := &v.MIG
	if !g.MIG.Capable {
		mg.Reasons = append(mg.Reasons, fmt.Sprintf("%s does not support MIG", modelOr(g)))
	} else {
		mg.Reasons = append(mg.Reasons, sriovReasons(g, iommuOK, "MIG instances reach VMs as SR-IOV virtual functions")...)
	}
	mg.Ready = len(mg.Reasons) == 0
	return v
}

func sriovReasons(g GPU, iommuOK bool, why string) []string {
	var out []string
	if !iommuOK {
		out = append(out, "no IOMMU: "+why+", which need it")
	}
	if g.SRIOV == nil || g.SRIOV.TotalVFs == 0 {
		out = append(out, "the device shows no SR-IOV capability: "+why)
	}
	return out
}

func modelOr(g GPU) string {
	if g.Model != "" {
		return g.Model
	}
	return g.VendorID + ":" + g.DeviceID
}

// gts reads "16.0 GT/s PCIe" as 16.
func gts(s string) float64 {
	f := strings.Fields(s)
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

// acsNeeded are the ACS controls that keep peer-to-peer traffic going up
// to the IOMMU: source validation, request redirect, completion redirect,
// upstream forwarding.
const acsNeeded = 0x01 | 0x04 | 0x08 | 0x10

// acs checks the ports above a device that could route its traffic to a
// peer without the IOMMU seeing it: root ports and switch downstream
// ports.
func acs(bus *pciBus, d *pciDev) ACS {
	a := ACS{State: ACSIsolated, Bridges: d.upstream}
	if len(d.upstream) == 0 {
		return ACS{State: ACSUnknown, Reasons: []string{"no bridge above the device: isolation is the root complex's"}}
	}
	unknown := false
	for _, up := range d.upstream {
		b := bus.devs[up]
		if b == nil || !isBridge(b.Class) {
			continue
		}
		if t, ok := pcieType(b.config); ok && t != 4 && t != 6 {
			continue
		}
		capability, control, found, readable := acsControl(b.config)
		switch {
		case !readable:
			unknown = true
		case !found:
			a.State = ACSNotIsolated
			a.Reasons = append(a.Reasons, fmt.Sprintf("bridge %s has no ACS capability", up))
		case control&capability&acsNeeded != capability&acsNeeded || capability&acsNeeded == 0:
			a.State = ACSNotIsolated
			a.Reasons = append(a.Reasons, fmt.Sprintf("bridge %s does not enable ACS redirection (capability %#04x, control %#04x)", up, capability, control))
		}
	}
	if unknown && a.State == ACSIsolated {
		a.State = ACSUnknown
		a.Reasons = append(a.Reasons, "extended config space of an upstream bridge is unreadable (run as root)")
	}
	return a
}

// pcieType finds the PCI Express capability and returns its device/port
// type (4 root port, 5 switch upstream, 6 switch downstream).
func pcieType(config []byte) (int, bool) {
	if len(config) < 0x40 || config[0x06]&0x10 == 0 {
		return 0, false
	}
	off, seen := int(config[0x34]&^3), 0
	for off >= 0x40 && off+4 <= len(config) && seen < 48 {
		if config[off] == 0x10 {
			return int(binary.LittleEndian.Uint16(config[off+2:])>>4) & 0xf, true
		}
		off = int(config[off+1] &^ 3)
		seen++
	}
	return 0, false
}

// nodeVerdict: a hypervisor offers all its GPUs one way, so a mode is
// ready when every GPU is, and MIG also needs one model throughout (every
// card is partitioned the same way).
func nodeVerdict(gpus []GPU) *Verdict {
	if len(gpus) == 0 {
		return nil
	}
	v := &Verdict{Passthrough: Readiness{Ready: true}, VGPU: Readiness{Ready: true}, MIG: Readiness{Ready: true}}
	models := map[string]bool{}
	for _, g := range gpus {
		models[modelOr(g)] = true
		for _, x := range []struct{ node, gpu *Readiness }{{&v.Passthrough, &g.Verdict.Passthrough}, {&v.VGPU, &g.Verdict.VGPU}, {&v.MIG, &g.Verdict.MIG}} {
			if !x.gpu.Ready {
				x.node.Ready = false
			}
			for _, r := range x.gpu.Reasons {
				x.node.Reasons = append(x.node.Reasons, g.PCIAddress+": "+r)
			}
		}
		for _, w := range g.Verdict.Warnings {
			v.Warnings = append(v.Warnings, g.PCIAddress+": "+w)
		}
	}
	if len(models) > 1 {
		names := make([]string, 0, len(models))
		for n := range models {
			names = append(names, n)
		}
		sort.Strings(names)
		v.MIG.Ready = false
		v.MIG.Reasons = append(v.MIG.Reasons, "the GPUs are of different models ("+strings.Join(names, ", ")+"): MIG partitions every card of a hypervisor the same way")
	}
	return v
}
