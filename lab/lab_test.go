package lab

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/rackboot/rackboot/boot"
)

// cpioEntry is one member of a newc archive as the kernel reads it.
type cpioEntry struct {
	Name         string
	Mode         uint32
	Major, Minor uint32
	Data         string
}

// readCPIO parses a newc archive as strictly as the kernel's initramfs
// unpacker: magic, hex fields, NUL-terminated names, 4-byte alignment of
// header+name and of data, a trailer.
func readCPIO(b []byte) ([]cpioEntry, error) {
	var out []cpioEntry
	off := 0
	for {
		if off%4 != 0 {
			return nil, fmt.Errorf("entry at %d: not 4-byte aligned", off)
		}
		if len(b)-off < 110 {
			return nil, fmt.Errorf("entry at %d: short header", off)
		}
		h := b[off : off+110]
		if string(h[:6]) != "070701" {
			return nil, fmt.Errorf("entry at %d: magic %q", off, h[:6])
		}
		field := func(i int) uint32 {
			v, err := strconv.ParseUint(string(h[6+8*i:14+8*i]), 16, 32)
			if err != nil {
				panic(err)
			}
			return uint32(v)
		}
		mode, size, rmaj, rmin, namesize, check := field(1), field(6), field(9), field(10), field(11), field(12)
		if check != 0 {
			return nil, fmt.Errorf("entry at %d: check %d", off, check)
		}
		nameEnd := off + 110 + int(namesize)
		if namesize == 0 || nameEnd > len(b) || b[nameEnd-1] != 0 {
			return nil, fmt.Errorf("entry at %d: bad name size %d", off, namesize)
		}
		name := string(b[off+110 : nameEnd-1])
		data := (nameEnd + 3) &^ 3
		end := data + int(size)
		if end > len(b) {
			return nil, fmt.Errorf("entry %q: data past the end", name)
		}
		if name == "TRAILER!!!" {
			if rest := b[(end+3)&^3:]; len(rest) != 0 {
				return nil, fmt.Errorf("%d bytes after the trailer", len(rest))
			}
			return out, nil
		}
		out = append(out, cpioEntry{Name: name, Mode: mode, Major: rmaj, Minor: rmin, Data: string(b[data:end])})
		off = (end + 3) &^ 3
	}
}

func TestCPIORoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name  string
		write func(c *CPIO)
		want  []cpioEntry
	}{
		{"empty", func(c *CPIO) {}, nil},
		{
			"every kind",
			func(c *CPIO) {
				c.Dir("dev", 0o755)
				c.CharDev("/dev/console", 0o600, 5, 1)
				c.File("init", 0o755, []byte("#!/bin/sh\n"))
			},
			[]cpioEntry{
				{Name: "dev", Mode: 0o040755},
				{Name: "dev/console", Mode: 0o020600, Major: 5, Minor: 1},
				{Name: "init", Mode: 0o100755, Data: "#!/bin/sh\n"},
			},
		},
		{
			// Names and sizes that leave every remainder mod 4, so each
			// padding rule is exercised.
			"padding",
			func(c *CPIO) {
				for i := 1; i <= 4; i++ {
					c.File(strings.Repeat("n", i), 0o644, bytes.Repeat([]byte{byte('a' + i)}, i))
				}
				c.File("empty", 0o600, nil)
			},
			[]cpioEntry{
				{Name: "n", Mode: 0o100644, Data: "b"},
				{Name: "nn", Mode: 0o100644, Data: "cc"},
				{Name: "nnn", Mode: 0o100644, Data: "ddd"},
				{Name: "nnnn", Mode: 0o100644, Data: "eeee"},
				{Name: "empty", Mode: 0o100600},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			c := NewCPIO(&buf)
			tc.write(c)
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			got, err := readCPIO(buf.Bytes())
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("entries (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCPIOInodesDistinct(t *testing.T) {
	// The kernel links entries that share an inode number and nlink > 1;
	// distinct numbers keep files apart.
	var buf bytes.Buffer
	c := NewCPIO(&buf)
	c.File("a", 0o644, []byte("a"))
	c.File("b", 0o644, []byte("b"))
	c.Close()
	b := buf.String()
	first, second := b[6:14], b[strings.Index(b[1:], "070701")+1+6:][:8]
	if first == second {
		t.Errorf("both entries have inode %s", first)
	}
}

type failWriter struct{ n int }

func (f *failWriter) Write(p []byte) (int, error) {
	if f.n == 0 {
		return 0, io.ErrShortWrite
	}
	f.n--
	return len(p), nil
}

func TestCPIOWriteError(t *testing.T) {
	c := NewCPIO(&failWriter{n: 1})
	c.Dir("a", 0o755)
	c.File("b", 0o644, []byte("x"))
	if err := c.Close(); err == nil {
		t.Error("Close after a failed write: no error")
	}
}

func TestInitrdLayout(t *testing.T) {
	var buf bytes.Buffer
	if err := writeInitrd(&buf, []byte("\x7fELF")); err != nil {
		t.Fatal(err)
	}
	got, err := readCPIO(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	want := []cpioEntry{
		{Name: "dev", Mode: 0o040755},
		{Name: "dev/console", Mode: 0o020600, Major: 5, Minor: 1},
		{Name: "proc", Mode: 0o040555},
		{Name: "init", Mode: 0o100755, Data: "\x7fELF"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("initrd (-want +got):\n%s", diff)
	}
}

func mac(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

func TestArgs(t *testing.T) {
	common := func(name string) []string {
		return []string{"-name", name, "-accel", "tcg", "-m", "1024", "-smp", "1",
			"-display", "none", "-monitor", "none", "-serial", "stdio", "-no-reboot"}
	}
	join := func(parts ...[]string) []string {
		var out []string
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	// Every machine has a hardware RNG, then its NICs.
	tap0 := []string{"-device", "virtio-rng-pci", "-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no"}
	for _, tc := range []struct {
		name     string
		vm       *VM
		wantProg string
		want     []string
		wantErr  string
	}{
		{
			name:     "x86 bios",
			vm:       &VM{Name: "b", Arch: boot.ArchX86_64, Firmware: FirmwareBIOS, MAC: mac("52:54:00:00:00:01"), Tap: "tap0"},
			wantProg: "qemu-system-x86_64",
			// The default option ROM stays: it is what SeaBIOS boots.
			want: join(common("b"), []string{"-M", "pc,graphics=off"}, tap0,
				[]string{"-device", "virtio-net-pci,netdev=n0,mac=52:54:00:00:00:01", "-boot", "n"}),
		},
		{
			name:     "x86 bios e1000",
			vm:       &VM{Name: "e", Arch: boot.ArchX86_64, Firmware: FirmwareBIOS, MAC: mac("52:54:00:00:00:02"), Tap: "tap0", NIC: "e1000"},
			wantProg: "qemu-system-x86_64",
			want: join(common("e"), []string{"-M", "pc,graphics=off"}, tap0,
				[]string{"-device", "e1000,netdev=n0,mac=52:54:00:00:00:02", "-boot", "n"}),
		},
		{
			name:     "x86 uefi",
			vm:       &VM{Name: "u", Arch: boot.ArchX86_64, Firmware: FirmwareUEFI, MAC: mac("52:54:00:00:00:03"), Tap: "tap0", MemoryMB: 2048},
			wantProg: "qemu-system-x86_64",
			want: join([]string{"-name", "u", "-accel", "tcg", "-m", "2048", "-smp", "1",
				"-display", "none", "-monitor", "none", "-serial", "stdio", "-no-reboot"},
				[]string{"-M", "q35", "-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=n",
					"-drive", "if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd",
					"-drive", "if=pflash,format=raw,file=/d/u-vars.fd"}, tap0,
				[]string{"-device", "virtio-net-pci,netdev=n0,mac=52:54:00:00:00:03,romfile=", "-boot", "n"}),
		},
		{
			name:     "x86 secure boot with a disk and a second NIC",
			vm:       &VM{Name: "s", Arch: boot.ArchX86_64, Firmware: FirmwareUEFISecureBoot, MAC: mac("52:54:00:00:00:04"), Tap: "tap0", Disk: "/d/disk.qcow2", ExtraNICs: []NIC{{MAC: mac("52:54:00:00:01:04"), Tap: "tap1", Model: "e1000"}}},
			wantProg: "qemu-system-x86_64",
			want: join(common("s"),
				[]string{"-M", "q35,smm=on", "-global", "driver=cfi.pflash01,property=secure,value=on",
					"-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=n",
					"-drive", "if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.secboot.fd",
					"-drive", "if=pflash,format=raw,file=/d/s-vars.fd"}, tap0,
				[]string{"-device", "virtio-net-pci,netdev=n0,mac=52:54:00:00:00:04,bootindex=1,romfile=",
					"-netdev", "tap,id=n1,ifname=tap1,script=no,downscript=no", "-device", "e1000,netdev=n1,mac=52:54:00:00:01:04,romfile=",
					"-drive", "if=none,id=d0,format=qcow2,file=/d/disk.qcow2", "-device", "virtio-blk-pci,drive=d0,bootindex=2"}),
		},
		{
			name:     "aarch64 uefi",
			vm:       &VM{Name: "a", Arch: boot.ArchAArch64, Firmware: FirmwareUEFI, MAC: mac("52:54:00:00:00:05"), Tap: "tap0", Disk: "/d/disk.img"},
			wantProg: "qemu-system-aarch64",
			want: join(common("a"),
				[]string{"-M", "virt", "-cpu", "cortex-a57",
					"-drive", "if=pflash,format=raw,readonly=on,file=/usr/share/AAVMF/AAVMF_CODE.fd",
					"-drive", "if=pflash,format=raw,file=/d/a-vars.fd"}, tap0,
				[]string{"-device", "virtio-net-pci,netdev=n0,mac=52:54:00:00:00:05,bootindex=1,romfile=",
					"-drive", "if=none,id=d0,format=raw,file=/d/disk.img", "-device", "virtio-blk-pci,drive=d0,bootindex=2"}),
		},
		{
			name:     "aarch64 uefi with an NVMe drive",
			vm:       &VM{Name: "n", Arch: boot.ArchAArch64, Firmware: FirmwareUEFI, MAC: mac("52:54:00:00:00:07"), Tap: "tap0", Disk: "/d/disk.img", NVMe: "/d/nvme.img"},
			wantProg: "qemu-system-aarch64",
			want: join(common("n"),
				[]string{"-M", "virt", "-cpu", "cortex-a57",
					"-drive", "if=pflash,format=raw,readonly=on,file=/usr/share/AAVMF/AAVMF_CODE.fd",
					"-drive", "if=pflash,format=raw,file=/d/n-vars.fd"}, tap0,
				[]string{"-device", "virtio-net-pci,netdev=n0,mac=52:54:00:00:00:07,bootindex=1,romfile=",
					"-drive", "if=none,id=d0,format=raw,file=/d/disk.img", "-device", "virtio-blk-pci,drive=d0,bootindex=2",
					"-drive", "if=none,id=nv0,format=raw,file=/d/nvme.img", "-device", "nvme,serial=rackboot-nvme,drive=nv0"}),
		},
		{
			name:     "x86 direct kernel",
			vm:       &VM{Name: "k", Arch: boot.ArchX86_64, Kernel: "/k", Initrd: "/i", Append: "console=ttyS0", MemoryMB: 512, CPUs: 2},
			wantProg: "qemu-system-x86_64",
			want: []string{"-name", "k", "-accel", "tcg", "-m", "512", "-smp", "2",
				"-display", "none", "-monitor", "none", "-serial", "stdio", "-no-reboot",
				"-M", "q35", "-device", "virtio-rng-pci", "-nic", "none", "-kernel", "/k", "-initrd", "/i", "-append", "console=ttyS0"},
		},
		{
			name:     "aarch64 direct kernel",
			vm:       &VM{Name: "k", Arch: boot.ArchAArch64, Kernel: "/k"},
			wantProg: "qemu-system-aarch64",
			want:     join(common("k"), []string{"-M", "virt", "-cpu", "cortex-a57", "-device", "virtio-rng-pci", "-nic", "none", "-kernel", "/k"}),
		},
		{name: "aarch64 bios", vm: &VM{Name: "x", Arch: boot.ArchAArch64, Firmware: FirmwareBIOS, MAC: mac("52:54:00:00:00:06"), Tap: "t"}, wantErr: "no aarch64 machine with firmware"},
		{
			name:     "aarch64 secure boot over HTTP without an RNG",
			vm:       &VM{Name: "h", Arch: boot.ArchAArch64, Firmware: FirmwareUEFISecureBoot, MAC: mac("52:54:00:00:00:08"), Tap: "tap0", HTTPBoot: true, NoRNG: true},
			wantProg: "qemu-system-aarch64",
			want: join(common("h"),
				[]string{"-M", "virt", "-cpu", "cortex-a57",
					"-fw_cfg", "name=opt/org.tianocore/IPv4PXESupport,string=n", "-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=n",
					"-drive", "if=pflash,format=raw,readonly=on,file=/usr/share/AAVMF/AAVMF_CODE.ms.fd",
					"-drive", "if=pflash,format=raw,file=/d/h-vars.fd",
					"-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no",
					"-device", "virtio-net-pci,netdev=n0,mac=52:54:00:00:00:08,romfile="}),
		},
		{
			name:     "x86 uefi with an in-band BMC and a monitor",
			vm:       &VM{Name: "i", Arch: boot.ArchX86_64, Firmware: FirmwareUEFI, MAC: mac("52:54:00:00:00:09"), Tap: "tap0", IPMI: "10.0.0.250:9002", Monitor: "/d/i.monitor", Reboot: true},
			wantProg: "qemu-system-x86_64",
			want: join([]string{"-name", "i", "-accel", "tcg", "-m", "1024", "-smp", "1",
				"-display", "none", "-monitor", "unix:/d/i.monitor,server=on,wait=off", "-serial", "stdio"},
				[]string{"-M", "q35", "-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=n",
					"-drive", "if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd",
					"-drive", "if=pflash,format=raw,file=/d/i-vars.fd", "-device", "virtio-rng-pci",
					"-chardev", "socket,id=ipmi0,host=10.0.0.250,port=9002,reconnect=1",
					"-device", "ipmi-bmc-extern,id=bmc0,chardev=ipmi0", "-device", "isa-ipmi-kcs,bmc=bmc0",
					"-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no"},
				[]string{"-device", "virtio-net-pci,netdev=n0,mac=52:54:00:00:00:09,romfile=", "-boot", "n"}),
		},
		{name: "aarch64 in-band BMC", vm: &VM{Name: "x", Arch: boot.ArchAArch64, Firmware: FirmwareUEFI, MAC: mac("52:54:00:00:00:06"), Tap: "t", IPMI: "10.0.0.250:9002"}, wantErr: "x86-64 only"},
		{name: "bios http boot", vm: &VM{Name: "x", Arch: boot.ArchX86_64, Firmware: FirmwareBIOS, MAC: mac("52:54:00:00:00:06"), Tap: "t", HTTPBoot: true}, wantErr: "HTTP boot is UEFI"},
		{name: "unknown arch", vm: &VM{Name: "x", Arch: "riscv64", Firmware: FirmwareUEFI}, wantErr: "no QEMU for architecture"},
		{name: "unknown firmware", vm: &VM{Name: "x", Arch: boot.ArchX86_64, Firmware: "coreboot", MAC: mac("52:54:00:00:00:06"), Tap: "t"}, wantErr: `firmware "coreboot"`},
		{name: "network boot without NIC", vm: &VM{Name: "x", Arch: boot.ArchX86_64, Firmware: FirmwareUEFI}, wantErr: "nothing to boot"},
		{name: "NIC without tap", vm: &VM{Name: "x", Arch: boot.ArchX86_64, Firmware: FirmwareUEFI, MAC: mac("52:54:00:00:00:06")}, wantErr: "needs a MAC and a tap"},
		{name: "NIC without MAC", vm: &VM{Name: "x", Arch: boot.ArchX86_64, Firmware: FirmwareUEFI, Tap: "t"}, wantErr: "needs a MAC and a tap"},
		{name: "kernel with firmware", vm: &VM{Name: "x", Arch: boot.ArchX86_64, Firmware: FirmwareUEFI, Kernel: "/k"}, wantErr: "direct kernel boot takes no firmware"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			prog, args, err := tc.vm.Args("/d")
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if prog != tc.wantProg {
				t.Errorf("program %q, want %q", prog, tc.wantProg)
			}
			if diff := cmp.Diff(tc.want, args); diff != "" {
				t.Errorf("args (-want +got):\n%s", diff)
			}
		})
	}
}

func TestNeeds(t *testing.T) {
	for _, tc := range []struct {
		name string
		vm   *VM
		want []string
	}{
		{"bios", &VM{Arch: boot.ArchX86_64, Firmware: FirmwareBIOS, Tap: "t", MAC: mac("52:54:00:00:00:01")},
			[]string{"qemu-system-x86_64", "/usr/share/seabios/bios-256k.bin", "/usr/lib/ipxe/qemu/efi-virtio.rom", "ip"}},
		{"bios e1000", &VM{Arch: boot.ArchX86_64, Firmware: FirmwareBIOS, Tap: "t", MAC: mac("52:54:00:00:00:01"), NIC: "e1000"},
			[]string{"qemu-system-x86_64", "/usr/share/seabios/bios-256k.bin", "/usr/lib/ipxe/qemu/efi-e1000.rom", "ip"}},
		{"secure boot", &VM{Arch: boot.ArchX86_64, Firmware: FirmwareUEFISecureBoot, Tap: "t", MAC: mac("52:54:00:00:00:01")},
			[]string{"qemu-system-x86_64", "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd", "/usr/share/OVMF/OVMF_VARS_4M.ms.fd", "ip"}},
		{"aarch64", &VM{Arch: boot.ArchAArch64, Firmware: FirmwareUEFI, Tap: "t", MAC: mac("52:54:00:00:00:01")},
			[]string{"qemu-system-aarch64", "/usr/share/AAVMF/AAVMF_CODE.fd", "/usr/share/AAVMF/AAVMF_VARS.fd", "ip"}},
		{"direct", &VM{Arch: boot.ArchAArch64, Kernel: "/k"}, []string{"qemu-system-aarch64"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, tc.vm.Needs()); diff != "" {
				t.Errorf("needs (-want +got):\n%s", diff)
			}
		})
	}
}

func TestMissingAndHint(t *testing.T) {
	have := map[string]bool{"ip": true, "/usr/share/OVMF/OVMF_CODE_4M.fd": true}
	needs := []string{"ip", "qemu-system-x86_64", "/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd",
		"qemu-system-x86_64", "/usr/lib/ipxe/qemu/efi-virtio.rom", "/usr/lib/ipxe/snponly.efi", "frobnicate"}
	got := missing(needs, func(s string) bool { return have[s] })
	want := []string{"qemu-system-x86_64", "/usr/share/OVMF/OVMF_VARS_4M.fd", "/usr/lib/ipxe/qemu/efi-virtio.rom", "/usr/lib/ipxe/snponly.efi", "frobnicate"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("missing (-want +got):\n%s", diff)
	}
	wantHint := "apt-get install -y qemu-system-x86 ovmf ipxe-qemu ipxe, or run scripts/install-test-deps.sh; no known package for frobnicate"
	if diff := cmp.Diff(wantHint, installHint(got)); diff != "" {
		t.Errorf("hint (-want +got):\n%s", diff)
	}
}

func TestRequire(t *testing.T) {
	ft := &fakeTB{TB: t}
	Require(ft, "go", "/no/such/firmware.fd", "no-such-program-rackboot")
	if !ft.failed || !strings.Contains(ft.msg, "/no/such/firmware.fd, no-such-program-rackboot") {
		t.Errorf("Require with missing needs: failed=%v %q", ft.failed, ft.msg)
	}
	ft = &fakeTB{TB: t}
	Require(ft, "go")
	if ft.failed {
		t.Errorf("Require(go) failed: %s", ft.msg)
	}
}

// fakeTB records a Fatalf instead of ending the test.
type fakeTB struct {
	testing.TB
	failed bool
	msg    string
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.failed, f.msg = true, fmt.Sprintf(format, args...)
}

func TestNetValidation(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name, ns, prefix, want string
	}{
		{"empty name", "", "10.0.0.0/24", "not a usable namespace name"},
		{"slash", "a/b", "10.0.0.0/24", "not a usable namespace name"},
		{"ipv6", "n", "fd00::/64", "need an IPv4 prefix"},
		{"too narrow", "n", "10.0.0.0/31", "need an IPv4 prefix"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewNet(ctx, tc.ns, netip.MustParsePrefix(tc.prefix))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("NewNet: %v, want an error containing %q", err, tc.want)
			}
		})
	}
	n := &Net{name: "unused"}
	for _, tap := range []string{"", "a-name-of-16-chr", "a b"} {
		if _, err := n.AddTap(tap); err == nil {
			t.Errorf("AddTap(%q): no error", tap)
		}
	}
}

func TestVMNotStarted(t *testing.T) {
	v := &VM{Name: "idle"}
	v.Stop()
	v.Kill()
	if v.Console() != "" {
		t.Error("console of a VM that never started is not empty")
	}
	if _, err := v.WaitFor(context.Background(), nil); err == nil {
		t.Error("WaitFor on a VM that never started: no error")
	}
}

// A host link whose addresses the host already has is refused up front:
// loopback's 127.0.0.1 stands in for a link a killed lab left behind.
func TestLinkFree(t *testing.T) {
	err := linkFree(netip.MustParsePrefix("127.0.0.0/30"))
	if err == nil || !strings.Contains(err.Error(), "already has 127.0.0.1") {
		t.Errorf("taken link: %v", err)
	}
	if err := linkFree(netip.MustParsePrefix("192.0.2.252/30")); err != nil {
		t.Errorf("free link: %v", err)
	}
}
