package domain

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/rackboot/rackboot/boot"
)

func TestParseCaps(t *testing.T) {
	tests := []struct {
		name     string
		file     string // under testdata/caps, or doc
		doc      string
		want     Caps
		native   []boot.Arch
		emulated []boot.Arch
	}{
		{
			// "virsh capabilities" from libvirtd 9.0.0 on an x86-64 Debian
			// bookworm host with /dev/kvm.
			name: "x86-64 host, captured",
			file: "x86_64-host-libvirt-9.0.xml",
			want: Caps{Guests: []Guest{
				{Arch: boot.ArchAArch64, Emulators: map[Accel]string{AccelTCG: "/usr/bin/qemu-system-aarch64"}},
				{Arch: boot.ArchX86_64, Emulators: map[Accel]string{
					AccelKVM: "/usr/bin/qemu-system-x86_64",
					AccelTCG: "/usr/bin/qemu-system-x86_64",
				}},
			}},
			native:   []boot.Arch{boot.ArchX86_64},
			emulated: []boot.Arch{boot.ArchAArch64},
		},
		{
			// Written by hand after libvirt's format and the capture above,
			// for an AArch64 KVM host.
			name: "aarch64 host, written",
			file: "aarch64-host.xml",
			want: Caps{Guests: []Guest{
				{Arch: boot.ArchAArch64, Emulators: map[Accel]string{
					AccelKVM: "/usr/bin/qemu-system-aarch64",
					AccelTCG: "/usr/bin/qemu-system-aarch64",
				}},
				{Arch: boot.ArchX86_64, Emulators: map[Accel]string{AccelTCG: "/usr/bin/qemu-system-x86_64"}},
			}},
			native:   []boot.Arch{boot.ArchAArch64},
			emulated: []boot.Arch{boot.ArchX86_64},
		},
		{
			name: "a domain type's own emulator wins",
			doc: `<capabilities><host/><guest><os_type>hvm</os_type><arch name='x86_64'>
				<emulator>/usr/bin/qemu-system-x86_64</emulator>
				<domain type='qemu'/>
				<domain type='kvm'><emulator>/usr/libexec/qemu-kvm</emulator></domain>
				</arch></guest></capabilities>`,
			want: Caps{Guests: []Guest{{Arch: boot.ArchX86_64, Emulators: map[Accel]string{
				AccelKVM: "/usr/libexec/qemu-kvm",
				AccelTCG: "/usr/bin/qemu-system-x86_64",
			}}}},
			native: []boot.Arch{boot.ArchX86_64},
		},
		{
			name: "other OS types, archs and domain types are left out",
			doc: `<capabilities><host/>
				<guest><os_type>xen</os_type><arch name='x86_64'><emulator>/usr/lib/xen/bin/qemu-dm</emulator><domain type='xen'/></arch></guest>
				<guest><os_type>hvm</os_type><arch name='riscv64'><emulator>/usr/bin/qemu-system-riscv64</emulator><domain type='qemu'/></arch></guest>
				<guest><os_type>hvm</os_type><arch name='aarch64'><emulator>/usr/bin/qemu-system-aarch64</emulator><domain type='hvf'/><domain type='qemu'/></arch></guest>
				</capabilities>`,
			want: Caps{Guests: []Guest{
				{Arch: boot.ArchAArch64, Emulators: map[Accel]string{AccelTCG: "/usr/bin/qemu-system-aarch64"}},
			}},
			emulated: []boot.Arch{boot.ArchAArch64},
		},
		{
			name: "no guests",
			doc:  `<capabilities><host/></capabilities>`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			doc := tc.doc
			if tc.file != "" {
				b, err := os.ReadFile(filepath.Join("testdata", "caps", tc.file))
				if err != nil {
					t.Fatal(err)
				}
				doc = string(b)
			}
			got, err := ParseCaps(doc)
			if err != nil {
				t.Fatalf("ParseCaps: %v", err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("caps (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.native, got.Native()); diff != "" {
				t.Errorf("Native (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.emulated, got.Emulated()); diff != "" {
				t.Errorf("Emulated (-want +got):\n%s", diff)
			}
			for _, g := range tc.want.Guests {
				for accel, emu := range g.Emulators {
					if e := got.Emulator(g.Arch, accel); e != emu {
						t.Errorf("Emulator(%s, %s) = %q, want %q", g.Arch, accel, e, emu)
					}
				}
			}
		})
	}
}

func TestParseCapsErrors(t *testing.T) {
	for _, tc := range []struct{ name, doc string }{
		{"empty", ""},
		{"not XML", "capabilities"},
		{"unclosed", "<capabilities><guest>"},
		{"another document", "<domain type='kvm'><name>x</name></domain>"},
		{"no emulator", `<capabilities><guest><os_type>hvm</os_type><arch name='x86_64'><domain type='kvm'/></arch></guest></capabilities>`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if c, err := ParseCaps(tc.doc); err == nil {
				t.Errorf("ParseCaps accepted %q: %+v", tc.doc, c)
			}
		})
	}
}

func TestEmulatorUnknown(t *testing.T) {
	c := Caps{Guests: []Guest{{Arch: boot.ArchX86_64, Emulators: map[Accel]string{AccelTCG: "/usr/bin/qemu-system-x86_64"}}}}
	for _, tc := range []struct {
		arch  boot.Arch
		accel Accel
	}{{boot.ArchX86_64, AccelKVM}, {boot.ArchAArch64, AccelTCG}} {
		if e := c.Emulator(tc.arch, tc.accel); e != "" {
			t.Errorf("Emulator(%s, %s) = %q, want none", tc.arch, tc.accel, e)
		}
	}
}

// FuzzParseCaps: capabilities come from each hypervisor's libvirtd, which
// rackboot does not control.
func FuzzParseCaps(f *testing.F) {
	for _, name := range []string{"x86_64-host-libvirt-9.0.xml", "aarch64-host.xml"} {
		b, err := os.ReadFile(filepath.Join("testdata", "caps", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(b))
	}
	f.Fuzz(func(t *testing.T, doc string) {
		c, err := ParseCaps(doc)
		if err != nil {
			return
		}
		for _, g := range c.Guests {
			if g.Arch != boot.ArchX86_64 && g.Arch != boot.ArchAArch64 {
				t.Errorf("guest arch %q is none of boot's", g.Arch)
			}
			for accel, emu := range g.Emulators {
				if emu == "" || (accel != AccelKVM && accel != AccelTCG) {
					t.Errorf("guest %s: accel %q emulator %q", g.Arch, accel, emu)
				}
			}
		}
		if n, e := len(c.Native()), len(c.Emulated()); n+e > len(c.Guests) {
			t.Errorf("%d native and %d emulated archs out of %d guests", n, e, len(c.Guests))
		}
	})
}
