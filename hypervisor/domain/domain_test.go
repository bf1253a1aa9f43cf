package domain

import (
	"encoding/xml"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"libvirt.org/go/libvirtxml"

	"github.com/rackboot/rackboot/boot"
)

var update = flag.Bool("update", false, "rewrite the golden domain XML files in testdata")

// x86 is a valid x86-64 KVM spec that cases change.
func x86() Spec {
	return Spec{
		Name:      "gpu-node-07",
		UUID:      "0b9f3a52-8c61-4c1e-9a57-3f2d7e5b1c08",
		Arch:      boot.ArchX86_64,
		VCPUs:     16,
		MemoryMiB: 65536,
		Accel:     AccelKVM,
		Disk:      Disk{Pool: "vms", Volume: "gpu-node-07.qcow2", Format: "qcow2"},
		NIC:       NIC{Bridge: "br-prov", MAC: "52:54:00:6b:3c:07"},
	}
}

// arm is a valid AArch64 KVM spec that cases change.
func arm() Spec {
	return Spec{
		Name:      "arm-node-02",
		UUID:      "6f1c2d3e-4b5a-4978-8e9f-0a1b2c3d4e5f",
		Arch:      boot.ArchAArch64,
		VCPUs:     8,
		MemoryMiB: 32768,
		Accel:     AccelKVM,
		Disk:      Disk{Pool: "vms", Volume: "arm-node-02"},
		NIC:       NIC{Bridge: "br-prov", MAC: "52:54:00:a1:00:02"},
	}
}

// goldenCases are the specs whose XML is kept in testdata/<name>.xml.
func goldenCases() []struct {
	name string
	spec Spec
} {
	return []struct {
		name string
		spec Spec
	}{
		{"x86_64-kvm-passthrough", with(x86(), func(s *Spec) {
			s.PCI = []string{"0000:41:00.0", "0000:41:00.1"}
		})},
		{"x86_64-kvm-vgpu", with(x86(), func(s *Spec) {
			s.Mdevs = []string{"c5a1e6f0-3b7d-4e2a-9f10-8d6c4b2a1e3f"}
		})},
		{"x86_64-kvm-vgpu-vf", with(x86(), func(s *Spec) {
			s.VFs = []string{"0000:b4:00.5"}
		})},
		{"x86_64-tcg", with(x86(), func(s *Spec) {
			s.Name, s.Accel, s.VCPUs, s.MemoryMiB = "tcg-node-01", AccelTCG, 2, 2048
			s.Disk = Disk{Pool: "default", Volume: "tcg-node-01.img"}
			s.Emulator = "/usr/bin/qemu-system-x86_64"
		})},
		{"aarch64-kvm-mig", with(arm(), func(s *Spec) {
			s.Mdevs = []string{"9e8d7c6b-5a49-4382-a1b0-c9d8e7f6a5b4"}
		})},
		{"aarch64-tcg", with(arm(), func(s *Spec) {
			s.Accel, s.VCPUs, s.MemoryMiB = AccelTCG, 2, 2048
		})},
		{"aarch64-tcg-16vcpu", with(arm(), func(s *Spec) {
			s.Accel, s.VCPUs, s.CPUModel = AccelTCG, 16, "max"
		})},
		{"x86_64-kvm-vlan", with(x86(), func(s *Spec) {
			s.NIC = NIC{Bridge: "br-ovs", MAC: "52:54:00:6B:3C:08", VLAN: 204}
			s.Firmware = Firmware{
				Loader:        "/opt/firmware/OVMF_CODE_4M.fd",
				NVRAMTemplate: "/opt/firmware/OVMF_VARS_4M.fd",
			}
		})},
	}
}

func with(s Spec, change func(*Spec)) Spec {
	change(&s)
	return s
}

func TestXMLGolden(t *testing.T) {
	for _, tc := range goldenCases() {
		t.Run(tc.name, func(t *testing.T) {
			got, err := XML(tc.spec)
			if err != nil {
				t.Fatalf("XML: %v", err)
			}
			path := filepath.Join("testdata", tc.name+".xml")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -update to write it)", err)
			}
			if diff := cmp.Diff(string(want), got); diff != "" {
				t.Errorf("XML differs from %s (-want +got):\n%s", path, diff)
			}
		})
	}
}

// TestXMLContents checks the choices that the golden files only show.
func TestXMLContents(t *testing.T) {
	for _, tc := range goldenCases() {
		t.Run(tc.name, func(t *testing.T) {
			out, err := XML(tc.spec)
			if err != nil {
				t.Fatal(err)
			}
			var d libvirtxml.Domain
			if err := d.Unmarshal(out); err != nil {
				t.Fatalf("the document does not parse back: %v", err)
			}
			s := tc.spec
			wantType := map[Accel]string{AccelKVM: "kvm", AccelTCG: "qemu"}[s.Accel]
			if d.Type != wantType {
				t.Errorf("domain type %q, want %q", d.Type, wantType)
			}
			wantMachine := map[boot.Arch]string{boot.ArchX86_64: "q35", boot.ArchAArch64: "virt"}[s.Arch]
			if d.OS.Type.Machine != wantMachine || d.OS.Type.Arch != string(s.Arch) {
				t.Errorf("os type %+v, want arch %s machine %s", d.OS.Type, s.Arch, wantMachine)
			}
			fw := s.Firmware
			if fw == (Firmware{}) {
				fw = DefaultFirmware(s.Arch)
			}
			if d.OS.Loader.Path != fw.Loader || d.OS.Loader.Readonly != "yes" || d.OS.Loader.Type != "pflash" || d.OS.NVRam.Template != fw.NVRAMTemplate {
				t.Errorf("firmware %+v %+v, want read-only pflash %+v", d.OS.Loader, d.OS.NVRam, fw)
			}
			switch s.Accel {
			case AccelKVM:
				if d.CPU.Mode != "host-passthrough" || d.CPU.Model != nil {
					t.Errorf("KVM cpu %+v, want host-passthrough", d.CPU)
				}
			case AccelTCG:
				want := s.CPUModel
				if want == "" {
					want = DefaultCPUModel(s.Arch)
				}
				if d.CPU.Mode != "custom" || d.CPU.Model == nil || d.CPU.Model.Value != want {
					t.Errorf("TCG cpu %+v, want custom %s", d.CPU, want)
				}
			}
			wantGIC := s.Arch == boot.ArchAArch64 && s.Accel == AccelTCG && s.VCPUs > 8
			if gotGIC := d.Features.GIC != nil && d.Features.GIC.Version == "3"; gotGIC != wantGIC {
				t.Errorf("GICv3 feature %v, want %v", gotGIC, wantGIC)
			}

			nic := d.Devices.Interfaces[0]
			if nic.Boot.Order != 1 || d.Devices.Disks[0].Boot.Order != 2 {
				t.Errorf("boot order NIC %d disk %d, want 1 and 2", nic.Boot.Order, d.Devices.Disks[0].Boot.Order)
			}
			if nic.Source.Bridge.Bridge != s.NIC.Bridge || nic.Model.Type != "virtio" || nic.MAC.Address != strings.ToLower(s.NIC.MAC) {
				t.Errorf("NIC %+v, want virtio on %s with %s", nic, s.NIC.Bridge, s.NIC.MAC)
			}
			ovs := nic.VirtualPort != nil && nic.VirtualPort.Params.OpenVSwitch != nil
			if ovs != (s.NIC.VLAN != 0) {
				t.Errorf("openvswitch port %v with VLAN %d", ovs, s.NIC.VLAN)
			}
			if s.NIC.VLAN != 0 && (nic.VLan == nil || len(nic.VLan.Tags) != 1 || nic.VLan.Tags[0].ID != uint(s.NIC.VLAN)) {
				t.Errorf("VLAN %+v, want tag %d", nic.VLan, s.NIC.VLAN)
			}
			disk := d.Devices.Disks[0]
			if v := disk.Source.Volume; v == nil || v.Pool != s.Disk.Pool || v.Volume != s.Disk.Volume || disk.Target.Bus != "virtio" {
				t.Errorf("disk %+v, want virtio volume %s/%s", disk, s.Disk.Pool, s.Disk.Volume)
			}
			if len(d.Devices.RNGs) != 1 || d.Devices.RNGs[0].Model != "virtio" || d.Devices.RNGs[0].Backend.Random.Device != "/dev/urandom" {
				t.Errorf("RNG %+v, want virtio from /dev/urandom", d.Devices.RNGs)
			}
			if len(d.Devices.Serials) != 1 || d.Devices.Serials[0].Source.Pty == nil || len(d.Devices.Consoles) != 1 || d.Devices.Consoles[0].Source.Pty == nil {
				t.Errorf("serial %+v console %+v, want one pty each", d.Devices.Serials, d.Devices.Consoles)
			}
			var pci, vfs, mdevs []string
			for _, h := range d.Devices.Hostdevs {
				switch {
				case h.SubsysPCI != nil:
					a := h.SubsysPCI.Source.Address
					addr := pciAddr{*a.Domain, *a.Bus, *a.Slot, *a.Function}.String()
					switch h.Managed {
					case "yes":
						pci = append(pci, addr)
					case "no":
						vfs = append(vfs, addr)
					default:
						t.Errorf("PCI hostdev %s managed=%q", addr, h.Managed)
					}
				case h.SubsysMDev != nil:
					if h.SubsysMDev.Model != "vfio-pci" {
						t.Errorf("mdev model %q, want vfio-pci", h.SubsysMDev.Model)
					}
					mdevs = append(mdevs, h.SubsysMDev.Source.Address.UUID)
				}
			}
			if !slices.Equal(pci, s.PCI) || !slices.Equal(vfs, s.VFs) || !slices.Equal(mdevs, s.Mdevs) {
				t.Errorf("hostdevs PCI %v VFs %v mdev %v, want %v, %v and %v", pci, vfs, mdevs, s.PCI, s.VFs, s.Mdevs)
			}
			if d.OnPoweroff != "destroy" || d.OnReboot != "restart" || d.OnCrash != "destroy" {
				t.Errorf("lifecycle %s/%s/%s, want destroy/restart/destroy", d.OnPoweroff, d.OnReboot, d.OnCrash)
			}
		})
	}
}

// fieldsOf lists the Field of every *SpecError in err.
func fieldsOf(err error) []string {
	var out []string
	var walk func(error)
	walk = func(err error) {
		var se *SpecError
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(e)
			}
		} else if errors.As(err, &se) {
			out = append(out, se.Field)
		}
	}
	walk(err)
	return out
}

func TestXMLInvalid(t *testing.T) {
	tests := []struct {
		name   string
		change func(*Spec)
		fields []string
	}{
		{"empty name", func(s *Spec) { s.Name = "" }, []string{"Name"}},
		{"upper-case name", func(s *Spec) { s.Name = "Node1" }, []string{"Name"}},
		{"dotted name", func(s *Spec) { s.Name = "node1.example.org" }, []string{"Name"}},
		{"leading hyphen", func(s *Spec) { s.Name = "-node" }, []string{"Name"}},
		{"trailing hyphen", func(s *Spec) { s.Name = "node-" }, []string{"Name"}},
		{"underscore", func(s *Spec) { s.Name = "node_1" }, []string{"Name"}},
		{"64-character name", func(s *Spec) { s.Name = strings.Repeat("a", 64) }, []string{"Name"}},
		{"empty UUID", func(s *Spec) { s.UUID = "" }, []string{"UUID"}},
		{"nil UUID", func(s *Spec) { s.UUID = "00000000-0000-0000-0000-000000000000" }, []string{"UUID"}},
		{"UUID without dashes", func(s *Spec) { s.UUID = "0b9f3a528c614c1e9a573f2d7e5b1c08" }, []string{"UUID"}},
		{"UUID in braces", func(s *Spec) { s.UUID = "{0b9f3a52-8c61-4c1e-9a57-3f2d7e5b1c08}" }, []string{"UUID"}},
		{"UUID not hex", func(s *Spec) { s.UUID = "0b9f3a52-8c61-4c1e-9a57-3f2d7e5b1cxx" }, []string{"UUID"}},
		{"no arch", func(s *Spec) { s.Arch = "" }, []string{"Arch"}},
		{"unknown arch", func(s *Spec) { s.Arch = "riscv64" }, []string{"Arch"}},
		{"zero vcpus", func(s *Spec) { s.VCPUs = 0 }, []string{"VCPUs"}},
		{"negative vcpus", func(s *Spec) { s.VCPUs = -2 }, []string{"VCPUs"}},
		{"63 MiB", func(s *Spec) { s.MemoryMiB = 63 }, []string{"MemoryMiB"}},
		{"negative memory", func(s *Spec) { s.MemoryMiB = -1 }, []string{"MemoryMiB"}},
		{"no accel", func(s *Spec) { s.Accel = "" }, []string{"Accel"}},
		{"unknown accel", func(s *Spec) { s.Accel = "hvf" }, []string{"Accel"}},
		{"CPU model under KVM", func(s *Spec) { s.CPUModel = "Westmere" }, []string{"CPUModel"}},
		{"CPU model with a space", func(s *Spec) { s.Accel, s.CPUModel = AccelTCG, "Skylake Client" }, []string{"CPUModel"}},
		{"loader only", func(s *Spec) { s.Firmware.Loader = "/usr/share/OVMF/OVMF_CODE_4M.fd" }, []string{"Firmware"}},
		{"template only", func(s *Spec) { s.Firmware.NVRAMTemplate = "/usr/share/OVMF/OVMF_VARS_4M.fd" }, []string{"Firmware"}},
		{"relative loader", func(s *Spec) {
			s.Firmware = Firmware{Loader: "OVMF_CODE_4M.fd", NVRAMTemplate: "/usr/share/OVMF/OVMF_VARS_4M.fd"}
		}, []string{"Firmware.Loader"}},
		{"template with ..", func(s *Spec) {
			s.Firmware = Firmware{Loader: "/usr/share/OVMF/OVMF_CODE_4M.fd", NVRAMTemplate: "/usr/share/OVMF/../../../etc/shadow"}
		}, []string{"Firmware.NVRAMTemplate"}},
		{"loader with a control character", func(s *Spec) {
			s.Firmware = Firmware{Loader: "/usr/share/OVMF/OVMF\x01.fd", NVRAMTemplate: "/usr/share/OVMF/OVMF_VARS_4M.fd"}
		}, []string{"Firmware.Loader"}},
		{"loader not UTF-8", func(s *Spec) {
			s.Firmware = Firmware{Loader: "/usr/share/OVMF/\xff.fd", NVRAMTemplate: "/usr/share/OVMF/OVMF_VARS_4M.fd"}
		}, []string{"Firmware.Loader"}},
		{"no pool", func(s *Spec) { s.Disk.Pool = "" }, []string{"Disk.Pool"}},
		{"pool with a slash", func(s *Spec) { s.Disk.Pool = "a/b" }, []string{"Disk.Pool"}},
		{"no volume", func(s *Spec) { s.Disk.Volume = "" }, []string{"Disk.Volume"}},
		{"volume ..", func(s *Spec) { s.Disk.Volume = ".." }, []string{"Disk.Volume"}},
		{"volume path", func(s *Spec) { s.Disk.Volume = "../../etc/shadow" }, []string{"Disk.Volume"}},
		{"unknown disk format", func(s *Spec) { s.Disk.Format = "vmdk" }, []string{"Disk.Format"}},
		{"no bridge", func(s *Spec) { s.NIC.Bridge = "" }, []string{"NIC.Bridge"}},
		{"16-character bridge", func(s *Spec) { s.NIC.Bridge = "br-provisioning0" }, []string{"NIC.Bridge"}},
		{"bridge with a space", func(s *Spec) { s.NIC.Bridge = "br prov" }, []string{"NIC.Bridge"}},
		{"no MAC", func(s *Spec) { s.NIC.MAC = "" }, []string{"NIC.MAC"}},
		{"malformed MAC", func(s *Spec) { s.NIC.MAC = "52:54:00:6b:3c" }, []string{"NIC.MAC"}},
		{"multicast MAC", func(s *Spec) { s.NIC.MAC = "01:00:5e:00:00:01" }, []string{"NIC.MAC"}},
		{"broadcast MAC", func(s *Spec) { s.NIC.MAC = "ff:ff:ff:ff:ff:ff" }, []string{"NIC.MAC"}},
		{"zero MAC", func(s *Spec) { s.NIC.MAC = "00:00:00:00:00:00" }, []string{"NIC.MAC"}},
		{"EUI-64 MAC", func(s *Spec) { s.NIC.MAC = "52:54:00:ff:fe:6b:3c:07" }, []string{"NIC.MAC"}},
		{"negative VLAN", func(s *Spec) { s.NIC.VLAN = -1 }, []string{"NIC.VLAN"}},
		{"VLAN 4095", func(s *Spec) { s.NIC.VLAN = 4095 }, []string{"NIC.VLAN"}},
		{"PCI without domain", func(s *Spec) { s.PCI = []string{"41:00.0"} }, []string{"PCI[0]"}},
		{"PCI slot 20", func(s *Spec) { s.PCI = []string{"0000:41:20.0"} }, []string{"PCI[0]"}},
		{"PCI function 8", func(s *Spec) { s.PCI = []string{"0000:41:00.8"} }, []string{"PCI[0]"}},
		{"PCI not hex", func(s *Spec) { s.PCI = []string{"0000:4g:00.0"} }, []string{"PCI[0]"}},
		{"PCI twice", func(s *Spec) { s.PCI = []string{"0000:41:00.0", "0000:41:00.0"} }, []string{"PCI[1]"}},
		{"VF not an address", func(s *Spec) { s.VFs = []string{"b4:00.5"} }, []string{"VFs[0]"}},
		{"VF also passed through", func(s *Spec) { s.PCI, s.VFs = []string{"0000:b4:00.5"}, []string{"0000:B4:00.5"} }, []string{"VFs[0]"}},
		{"PCI twice in two cases", func(s *Spec) { s.PCI = []string{"0000:af:00.0", "0000:AF:00.0"} }, []string{"PCI[1]"}},
		{"bad PCI, then the zero address", func(s *Spec) { s.PCI = []string{"41:00.0", "0000:00:00.0"} }, []string{"PCI[0]"}},
		{"mdev not a UUID", func(s *Spec) { s.Mdevs = []string{"nvidia-474"} }, []string{"Mdevs[0]"}},
		{"mdev twice", func(s *Spec) {
			s.Mdevs = []string{"c5a1e6f0-3b7d-4e2a-9f10-8d6c4b2a1e3f", "C5A1E6F0-3B7D-4E2A-9F10-8D6C4B2A1E3F"}
		}, []string{"Mdevs[1]"}},
		{"relative emulator", func(s *Spec) { s.Emulator = "qemu-system-x86_64" }, []string{"Emulator"}},
		{"everything at once", func(s *Spec) { *s = Spec{} }, []string{
			"Name", "UUID", "Arch", "VCPUs", "MemoryMiB", "Accel",
			"Disk.Pool", "Disk.Volume", "NIC.Bridge", "NIC.MAC",
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := XML(with(x86(), tc.change))
			if err == nil {
				t.Fatalf("XML accepted the spec:\n%s", out)
			}
			if out != "" {
				t.Errorf("XML returned a document with its error")
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error %v does not wrap ErrInvalid", err)
			}
			if diff := cmp.Diff(tc.fields, fieldsOf(err)); diff != "" {
				t.Errorf("fields refused (-want +got):\n%s\nerror: %v", diff, err)
			}
		})
	}
}

func TestXMLRefusesHostileNames(t *testing.T) {
	for _, name := range []string{
		"../x", "x/..", "/etc/passwd", "a b", " node", "node ", "a\tb", "a\nb",
		`a"b`, "a'b", "a<b", "a>b", "a&b", "<domain>", "]]>", "node\x00", "nöde",
	} {
		t.Run(name, func(t *testing.T) {
			out, err := XML(with(x86(), func(s *Spec) { s.Name = name }))
			if err == nil {
				t.Fatalf("XML accepted name %q:\n%s", name, out)
			}
			if diff := cmp.Diff([]string{"Name"}, fieldsOf(err)); diff != "" {
				t.Errorf("fields refused (-want +got):\n%s", diff)
			}
		})
	}
}

// TestXMLEscapes puts XML's special characters into every string field,
// and checks that each value is either refused or reaches the document
// escaped and reads back as it went in.
func TestXMLEscapes(t *testing.T) {
	hostile := []string{`<`, `>`, `&`, `"`, `'`, `]]>`, `&amp;`, `<!--`, `<?xml`, `</loader><kernel>/x</kernel>`}
	fields := []struct {
		name string
		set  func(*Spec, string) string // sets the field, returns what it set
		doc  func(*libvirtxml.Domain) string
	}{
		{"Name", func(s *Spec, v string) string { s.Name = "n" + v; return s.Name },
			func(d *libvirtxml.Domain) string { return d.Name }},
		{"CPUModel", func(s *Spec, v string) string { s.Accel, s.CPUModel = AccelTCG, "m"+v; return s.CPUModel },
			func(d *libvirtxml.Domain) string { return d.CPU.Model.Value }},
		{"Firmware.Loader", func(s *Spec, v string) string {
			s.Firmware = Firmware{Loader: "/srv/fw/" + v + ".fd", NVRAMTemplate: "/srv/fw/VARS.fd"}
			return s.Firmware.Loader
		}, func(d *libvirtxml.Domain) string { return d.OS.Loader.Path }},
		{"Firmware.NVRAMTemplate", func(s *Spec, v string) string {
			s.Firmware = Firmware{Loader: "/srv/fw/CODE.fd", NVRAMTemplate: "/srv/fw/" + v + ".fd"}
			return s.Firmware.NVRAMTemplate
		}, func(d *libvirtxml.Domain) string { return d.OS.NVRam.Template }},
		{"Emulator", func(s *Spec, v string) string { s.Emulator = "/opt/" + v + "/qemu"; return s.Emulator },
			func(d *libvirtxml.Domain) string { return d.Devices.Emulator }},
		{"Disk.Pool", func(s *Spec, v string) string { s.Disk.Pool = "p" + v; return s.Disk.Pool },
			func(d *libvirtxml.Domain) string { return d.Devices.Disks[0].Source.Volume.Pool }},
		{"Disk.Volume", func(s *Spec, v string) string { s.Disk.Volume = "v" + v; return s.Disk.Volume },
			func(d *libvirtxml.Domain) string { return d.Devices.Disks[0].Source.Volume.Volume }},
		{"Disk.Format", func(s *Spec, v string) string { s.Disk.Format = "raw" + v; return s.Disk.Format },
			func(d *libvirtxml.Domain) string { return d.Devices.Disks[0].Driver.Type }},
		{"NIC.Bridge", func(s *Spec, v string) string { s.NIC.Bridge = "b" + v; return s.NIC.Bridge },
			func(d *libvirtxml.Domain) string { return d.Devices.Interfaces[0].Source.Bridge.Bridge }},
		{"NIC.MAC", func(s *Spec, v string) string { s.NIC.MAC = "52:54:00:00:00:01" + v; return s.NIC.MAC },
			func(d *libvirtxml.Domain) string { return d.Devices.Interfaces[0].MAC.Address }},
		{"UUID", func(s *Spec, v string) string { s.UUID = s.UUID[:36-len(v)] + v; return s.UUID },
			func(d *libvirtxml.Domain) string { return d.UUID }},
		{"PCI", func(s *Spec, v string) string { s.PCI = []string{"0000:41:00.0" + v}; return s.PCI[0] },
			func(d *libvirtxml.Domain) string { return "" }},
		{"Mdevs", func(s *Spec, v string) string {
			s.Mdevs = []string{"c5a1e6f0-3b7d-4e2a-9f10-8d6c4b2a1e3f"[:36-len(v)] + v}
			return s.Mdevs[0]
		}, func(d *libvirtxml.Domain) string { return d.Devices.Hostdevs[0].SubsysMDev.Source.Address.UUID }},
	}
	accepted := 0
	for _, f := range fields {
		for _, v := range hostile {
			t.Run(f.name+"/"+v, func(t *testing.T) {
				s := x86()
				want := f.set(&s, v)
				out, err := XML(s)
				if err != nil {
					if !errors.Is(err, ErrInvalid) {
						t.Errorf("refused with %v, which does not wrap ErrInvalid", err)
					}
					return
				}
				accepted++
				assertWellFormed(t, out)
				if strings.Contains(out, want) {
					t.Errorf("%q reached the document unescaped:\n%s", want, out)
				}
				var d libvirtxml.Domain
				if err := d.Unmarshal(out); err != nil {
					t.Fatalf("document does not parse: %v\n%s", err, out)
				}
				if got := f.doc(&d); got != want {
					t.Errorf("read back %q, want %q", got, want)
				}
			})
		}
	}
	if accepted == 0 {
		t.Errorf("every hostile value was refused: the escaping itself went untested")
	}
}

// assertWellFormed reads doc token by token and fails where it finds a
// character data or attribute value that a raw '<' or '&' would have split.
func assertWellFormed(t *testing.T, doc string) {
	t.Helper()
	dec := xml.NewDecoder(strings.NewReader(doc))
	dec.Strict = true
	depth := 0
	for {
		tok, err := dec.Token()
		if err != nil {
			if errors.Is(err, io.EOF) && depth == 0 {
				return
			}
			t.Fatalf("document is not well-formed XML: %v\n%s", err, doc)
		}
		switch tok.(type) {
		case xml.StartElement:
			depth++
		case xml.EndElement:
			depth--
		case xml.ProcInst, xml.Directive, xml.Comment:
			t.Fatalf("document holds %T %v, which the encoder never writes: markup got in", tok, tok)
		}
	}
}

// FuzzXML feeds arbitrary strings to the fields that reach the document as
// text: whatever XML accepts must come out well-formed and read back as it
// went in.
func FuzzXML(f *testing.F) {
	f.Add("node-1", "/usr/share/OVMF/OVMF_CODE_4M.fd", "vms", "br0", "Westmere")
	f.Add("a<b", "/srv/fw/a&b'\".fd", "p]]>", "b<", "m&")
	f.Add("../x", "/srv/\x01", "", "", "")
	f.Fuzz(func(t *testing.T, name, path, pool, bridge, model string) {
		s := x86()
		s.Name, s.Disk.Pool, s.NIC.Bridge = name, pool, bridge
		s.Firmware = Firmware{Loader: path, NVRAMTemplate: path}
		s.Accel, s.CPUModel = AccelTCG, model
		s.Emulator = path
		out, err := XML(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("refused with %v, which does not wrap ErrInvalid", err)
			}
			return
		}
		assertWellFormed(t, out)
		var d libvirtxml.Domain
		if err := d.Unmarshal(out); err != nil {
			t.Fatalf("document does not parse: %v\n%s", err, out)
		}
		got := []string{d.Name, d.Devices.Disks[0].Source.Volume.Pool, d.Devices.Interfaces[0].Source.Bridge.Bridge, d.CPU.Model.Value, d.OS.Loader.Path, d.OS.NVRam.Template, d.Devices.Emulator}
		want := []string{name, pool, bridge, model, path, path, path}
		if model == "" {
			want[3] = DefaultCPUModel(s.Arch)
		}
		if path == "" {
			fw := DefaultFirmware(s.Arch)
			want[4], want[5] = fw.Loader, fw.NVRAMTemplate
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("read back (-want +got):\n%s", diff)
		}
	})
}
