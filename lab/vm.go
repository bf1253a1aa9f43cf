package lab

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/internal/syncbuf"
)

// Firmware kinds a VM can have.
const (
	// FirmwareBIOS is SeaBIOS booting from the NIC's option ROM. Debian's
	// ROMs (package ipxe-qemu) are iPXE, so the client rackboot sees first
	// is iPXE, not a vendor PXE ROM: Debian ships no plain PXE ROM.
	FirmwareBIOS = "bios"
	// FirmwareUEFI is OVMF (x86-64) or AAVMF (AArch64) with its own PXE
	// client, as on real servers: the NIC carries no option ROM.
	FirmwareUEFI = "uefi"
	// FirmwareUEFISecureBoot is OVMF or AAVMF enforcing Secure Boot with
	// Microsoft's keys enrolled: only signed loaders (shim) start.
	FirmwareUEFISecureBoot = "uefi-secureboot"
)

// Firmware images from Debian's ovmf, qemu-efi-aarch64, seabios and
// ipxe-qemu packages. AAVMF_CODE.fd is QEMU_EFI.fd already padded to the
// 64 MiB that the virt machine's flash bank needs.
const (
	ovmfCode       = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	ovmfVars       = "/usr/share/OVMF/OVMF_VARS_4M.fd"
	ovmfSecureCode = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd"
	ovmfSecureVars = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd"
	aavmfCode      = "/usr/share/AAVMF/AAVMF_CODE.fd"
	aavmfVars      = "/usr/share/AAVMF/AAVMF_VARS.fd"
	// The .ms images enforce Secure Boot with Microsoft's keys enrolled.
	aavmfSecureCode = "/usr/share/AAVMF/AAVMF_CODE.ms.fd"
	aavmfSecureVars = "/usr/share/AAVMF/AAVMF_VARS.ms.fd"
	seabios         = "/usr/share/seabios/bios-256k.bin"
	ipxeROMDir      = "/usr/lib/ipxe/qemu"
)

// NIC is one network card of a VM.
type NIC struct {
	MAC net.HardwareAddr
	Tap string // a tap from Net.AddTap
	// Model is the QEMU device: "virtio-net-pci" (the default) or
	// "e1000". It picks the iPXE option ROM SeaBIOS boots from.
	Model string
}

// VM is a QEMU machine, on a lab network or on none. Zero values are
// defaults. QEMU always runs under TCG: KVM guests die with emulation
// failures on the machines this was built on.
type VM struct {
	Name     string
	Arch     boot.Arch // boot.ArchX86_64 or boot.ArchAArch64
	Firmware string    // FirmwareBIOS, FirmwareUEFI or FirmwareUEFISecureBoot; "" for a direct kernel boot
	MAC      net.HardwareAddr
	Tap      string // the first NIC's tap; none means no network
	NIC      string // the first NIC's model, as NIC.Model
	// ExtraNICs come after the first and are not booted from.
	ExtraNICs []NIC
	MemoryMB  int    // default 1024
	CPUs      int    // default 1
	Disk      string // optional disk image; qcow2 when named *.qcow2, else raw
	// NVMe is an optional raw image behind an emulated NVMe controller
	// (serial "rackboot-nvme"), never booted from.
	NVMe string
	// Kernel, Initrd and Append make QEMU load a kernel itself, skipping
	// firmware and network boot: Firmware must be "".
	Kernel, Initrd, Append string
	// Reboot lets the guest reboot; by default a reboot ends QEMU, so a
	// test sees a node that would loop.
	Reboot bool
	// IPMI, on x86-64, is the HOST:PORT of a BMC simulator (ipmi_sim)
	// that QEMU's ipmi-bmc-extern connects to, behind an ISA KCS
	// interface: the guest's in-band path to its BMC.
	IPMI string
	// NoRNG leaves the hardware RNG (virtio-rng) out, as on a server
	// without one: the guest's random pool then takes minutes to seed.
	NoRNG bool
	// HTTPBoot turns the firmware's PXE (TFTP) client off, so the UEFI
	// firmware boots over HTTP (DHCP client type 16 or 19) instead.
	HTTPBoot bool
	// Monitor, when set, is a unix socket where QEMU's monitor listens
	// (a BMC presses the power button and the reset through it).
	Monitor string

	cmd     *exec.Cmd
	console *syncbuf.Buffer // all the serial output: a few hundred kilobytes at most
	logFile *os.File
	done    chan struct{}
	waitErr error
	stop    sync.Once
}

func (v *VM) nics() []NIC {
	var all []NIC
	if v.Tap != "" || v.MAC != nil {
		all = append(all, NIC{MAC: v.MAC, Tap: v.Tap, Model: v.NIC})
	}
	return append(all, v.ExtraNICs...)
}

// program is the QEMU binary for the VM's architecture.
func (v *VM) program() (string, error) {
	switch v.Arch {
	case boot.ArchX86_64:
		return "qemu-system-x86_64", nil
	case boot.ArchAArch64:
		return "qemu-system-aarch64", nil
	}
	return "", fmt.Errorf("vm %s: no QEMU for architecture %q", v.Name, v.Arch)
}

// firmwareFiles returns the read-only code image and the template of the
// writable variables for the VM's flash, or "" for neither.
func (v *VM) firmwareFiles() (code, vars string, err error) {
	switch {
	case v.Kernel != "" && v.Firmware == "":
		return "", "", nil
	case v.Kernel != "":
		return "", "", fmt.Errorf("vm %s: a direct kernel boot takes no firmware, not %q", v.Name, v.Firmware)
	case v.Arch == boot.ArchX86_64 && v.Firmware == FirmwareBIOS:
		return "", "", nil
	case v.Arch == boot.ArchX86_64 && v.Firmware == FirmwareUEFI:
		return ovmfCode, ovmfVars, nil
	case v.Arch == boot.ArchX86_64 && v.Firmware == FirmwareUEFISecureBoot:
		return ovmfSecureCode, ovmfSecureVars, nil
	case v.Arch == boot.ArchAArch64 && v.Firmware == FirmwareUEFI:
		return aavmfCode, aavmfVars, nil
	case v.Arch == boot.ArchAArch64 && v.Firmware == FirmwareUEFISecureBoot:
		return aavmfSecureCode, aavmfSecureVars, nil
	}
	return "", "", fmt.Errorf("vm %s: no %s machine with firmware %q", v.Name, v.Arch, v.Firmware)
}

// romFile is the option ROM QEMU loads for a NIC model by default; only
// SeaBIOS machines use it.
func romFile(model string) string {
	if model == "" {
		model = "virtio-net-pci"
	}
	return filepath.Join(ipxeROMDir, "efi-"+strings.TrimSuffix(model, "-net-pci")+".rom")
}

// Args returns the QEMU program and arguments that start the VM, its
// firmware variables in dir. Its serial console is QEMU's standard output.
func (v *VM) Args(dir string) (string, []string, error) {
	prog, err := v.program()
	if err != nil {
		return "", nil, err
	}
	code, _, err := v.firmwareFiles()
	if err != nil {
		return "", nil, err
	}
	nics := v.nics()
	if v.Kernel == "" && len(nics) == 0 && v.Disk == "" {
		return "", nil, fmt.Errorf("vm %s: nothing to boot: no NIC (Tap and MAC), disk or kernel", v.Name)
	}
	mem, cpus := v.MemoryMB, v.CPUs
	if mem == 0 {
		mem = 1024
	}
	if cpus == 0 {
		cpus = 1
	}
	monitor := "none"
	if v.Monitor != "" {
		monitor = "unix:" + v.Monitor + ",server=on,wait=off"
	}
	args := []string{"-name", v.Name, "-accel", "tcg", "-m", strconv.Itoa(mem), "-smp", strconv.Itoa(cpus),
		"-display", "none", "-monitor", monitor, "-serial", "stdio"}
	if !v.Reboot {
		args = append(args, "-no-reboot")
	}
	switch {
	case v.Arch == boot.ArchAArch64:
		args = append(args, "-M", "virt", "-cpu", "cortex-a57")
	case v.Firmware == FirmwareUEFISecureBoot:
		// SMM keeps the variable store out of the OS's reach; without it
		// OVMF's Secure Boot build does not start.
		args = append(args, "-M", "q35,smm=on", "-global", "driver=cfi.pflash01,property=secure,value=on")
	case v.Firmware == FirmwareBIOS:
		// graphics=off makes SeaBIOS (and the option ROM it runs) write
		// to the serial port: there is no screen to read.
		args = append(args, "-M", "pc,graphics=off")
	default:
		args = append(args, "-M", "q35")
	}
	if v.Arch == boot.ArchX86_64 && v.Firmware != FirmwareBIOS && v.Kernel == "" {
		// As most racks have it: no IPv6 PXE. With it, a node told to
		// boot locally waits out a DHCPv6 timeout (about 100 s under
		// TCG) before its firmware tries the disk.
		args = append(args, "-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=n")
	}
	if v.HTTPBoot {
		if v.Firmware == FirmwareBIOS || v.Firmware == "" {
			return "", nil, fmt.Errorf("vm %s: HTTP boot is UEFI firmware's", v.Name)
		}
		// The firmware's boot manager then offers its HTTP boot entries
		// only.
		args = append(args, "-fw_cfg", "name=opt/org.tianocore/IPv4PXESupport,string=n")
		if v.Arch == boot.ArchAArch64 {
			args = append(args, "-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=n")
		}
	}
	if code != "" {
		args = append(args, "-drive", "if=pflash,format=raw,readonly=on,file="+code,
			"-drive", "if=pflash,format=raw,file="+v.varsPath(dir))
	}
	// A hardware RNG, as servers have (RDRAND, a TPM): without one a
	// TCG guest's kernel takes minutes to seed its random pool, and every
	// getrandom(2), the DHCP client's transaction id among them, waits.
	if !v.NoRNG {
		args = append(args, "-device", "virtio-rng-pci")
	}
	if v.IPMI != "" {
		if v.Arch != boot.ArchX86_64 {
			return "", nil, fmt.Errorf("vm %s: an in-band IPMI interface (ISA KCS) is x86-64 only", v.Name)
		}
		host, port, err := net.SplitHostPort(v.IPMI)
		if err != nil {
			return "", nil, fmt.Errorf("vm %s: IPMI %q: %w", v.Name, v.IPMI, err)
		}
		// reconnect: the BMC may start after the host, or restart.
		args = append(args, "-chardev", "socket,id=ipmi0,host="+host+",port="+port+",reconnect=1",
			"-device", "ipmi-bmc-extern,id=bmc0,chardev=ipmi0", "-device", "isa-ipmi-kcs,bmc=bmc0")
	}
	if len(nics) == 0 {
		args = append(args, "-nic", "none")
	}
	for i, nic := range nics {
		if len(nic.MAC) != 6 || nic.Tap == "" {
			return "", nil, fmt.Errorf("vm %s: NIC %d needs a MAC and a tap", v.Name, i)
		}
		model := nic.Model
		if model == "" {
			model = "virtio-net-pci"
		}
		id := "n" + strconv.Itoa(i)
		dev := fmt.Sprintf("%s,netdev=%s,mac=%s", model, id, nic.MAC)
		if i == 0 && v.Disk != "" {
			// Network first, then the disk: the firmware asks rackboot
			// every time, and boots the disk when told to.
			dev += ",bootindex=1"
		}
		if v.Firmware != FirmwareBIOS || i > 0 {
			// UEFI firmware brings its own network stack and PXE client;
			// an iPXE ROM would take the boot away from it.
			dev += ",romfile="
		}
		args = append(args, "-netdev", "tap,id="+id+",ifname="+nic.Tap+",script=no,downscript=no", "-device", dev)
	}
	if v.Disk != "" {
		format := "raw"
		if strings.HasSuffix(v.Disk, ".qcow2") {
			format = "qcow2"
		}
		if len(nics) > 0 {
			args = append(args, "-drive", "if=none,id=d0,format="+format+",file="+v.Disk, "-device", "virtio-blk-pci,drive=d0,bootindex=2")
		} else {
			args = append(args, "-drive", "if=virtio,format="+format+",file="+v.Disk)
		}
	}
	if v.NVMe != "" {
		args = append(args, "-drive", "if=none,id=nv0,format=raw,file="+v.NVMe, "-device", "nvme,serial=rackboot-nvme,drive=nv0")
	}
	if v.Kernel != "" {
		args = append(args, "-kernel", v.Kernel)
		if v.Initrd != "" {
			args = append(args, "-initrd", v.Initrd)
		}
		if v.Append != "" {
			args = append(args, "-append", v.Append)
		}
	} else if v.Arch == boot.ArchX86_64 && len(nics) > 0 && v.Disk == "" {
		args = append(args, "-boot", "n")
	}
	return prog, args, nil
}

// clone is a powered-off copy of the VM's hardware and disks, named name.
func (v *VM) clone(name string) *VM {
	return &VM{Name: name, Arch: v.Arch, Firmware: v.Firmware, MAC: v.MAC, Tap: v.Tap, NIC: v.NIC,
		ExtraNICs: v.ExtraNICs, MemoryMB: v.MemoryMB, CPUs: v.CPUs, Disk: v.Disk, NVMe: v.NVMe,
		Kernel: v.Kernel, Initrd: v.Initrd, Append: v.Append, Reboot: v.Reboot, IPMI: v.IPMI, Monitor: v.Monitor, HTTPBoot: v.HTTPBoot, NoRNG: v.NoRNG}
}

func (v *VM) varsPath(dir string) string { return filepath.Join(dir, v.Name+"-vars.fd") }

// Needs lists the programs and firmware files the VM needs on the host,
// for Require.
func (v *VM) Needs() []string {
	prog, err := v.program()
	if err != nil {
		return nil
	}
	needs := []string{prog}
	if code, vars, err := v.firmwareFiles(); err == nil && code != "" {
		needs = append(needs, code, vars)
	}
	if v.Firmware == FirmwareBIOS {
		needs = append(needs, seabios)
		if nics := v.nics(); len(nics) > 0 {
			needs = append(needs, romFile(nics[0].Model))
		}
	}
	if len(v.nics()) > 0 {
		needs = append(needs, "ip")
	}
	return needs
}

// Start powers the VM on inside network n (nil: no network, for direct
// kernel boots). dir receives its firmware variables and a copy of its
// console, NAME.console. ctx bounds the VM's life.
func (v *VM) Start(ctx context.Context, n *Net, dir string) error {
	if v.cmd != nil {
		return fmt.Errorf("vm %s: already started", v.Name)
	}
	prog, args, err := v.Args(dir)
	if err != nil {
		return err
	}
	if n == nil && len(v.nics()) > 0 {
		return fmt.Errorf("vm %s: has NICs but no lab network", v.Name)
	}
	if _, err := exec.LookPath(prog); err != nil {
		return fmt.Errorf("vm %s: %w (%s)", v.Name, err, installHint([]string{prog}))
	}
	if _, vars, _ := v.firmwareFiles(); vars != "" {
		// Each machine writes its own boot entries and variables.
		if err := CopyFile(vars, v.varsPath(dir)); err != nil {
			return fmt.Errorf("vm %s: firmware variables: %w (%s)", v.Name, err, installHint([]string{vars}))
		}
	}
	log, err := os.Create(filepath.Join(dir, v.Name+".console"))
	if err != nil {
		return fmt.Errorf("vm %s: %w", v.Name, err)
	}
	v.console = &syncbuf.Buffer{}
	if n != nil {
		v.cmd = n.Command(ctx, prog, args...)
	} else {
		v.cmd = exec.CommandContext(ctx, prog, args...)
	}
	w := io.MultiWriter(v.console, log)
	v.cmd.Stdout, v.cmd.Stderr = w, w
	v.cmd.WaitDelay = 5 * time.Second
	v.done = make(chan struct{})
	if err := v.cmd.Start(); err != nil {
		log.Close()
		close(v.done)
		return fmt.Errorf("vm %s: start %s: %w", v.Name, prog, err)
	}
	v.logFile = log
	go func() {
		v.waitErr = v.cmd.Wait()
		v.logFile.Close()
		close(v.done)
	}()
	return nil
}

// Console returns everything the VM printed so far: firmware, loaders,
// kernel, and QEMU's own complaints.
func (v *VM) Console() string {
	if v.console == nil {
		return ""
	}
	return v.console.String()
}

// WaitFor waits until the console shows text matching re and returns the
// match. It fails when ctx ends or the VM stops first, with the console's
// tail in the error.
func (v *VM) WaitFor(ctx context.Context, re *regexp.Regexp) (string, error) {
	if v.done == nil {
		return "", fmt.Errorf("vm %s: not started", v.Name)
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if m := re.FindString(v.Console()); m != "" {
			return m, nil
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("vm %s: wait for %q: %w; console ends:\n%s", v.Name, re, ctx.Err(), Tail(v.Console(), 3000))
		case <-v.done:
			if m := re.FindString(v.Console()); m != "" {
				return m, nil
			}
			return "", fmt.Errorf("vm %s: wait for %q: QEMU exited (%v); console ends:\n%s", v.Name, re, v.waitErr, Tail(v.Console(), 3000))
		case <-tick.C:
		}
	}
}

// Done is closed once QEMU has exited (nil before Start): a wait for
// something the guest should do next ends there, not at its timeout.
func (v *VM) Done() <-chan struct{} { return v.done }

// Wait waits for QEMU to exit, as it does when the guest powers off.
func (v *VM) Wait(ctx context.Context) error {
	if v.done == nil {
		return fmt.Errorf("vm %s: not started", v.Name)
	}
	select {
	case <-ctx.Done():
		return fmt.Errorf("vm %s: wait for power-off: %w", v.Name, ctx.Err())
	case <-v.done:
		if v.waitErr != nil {
			return fmt.Errorf("vm %s: %w", v.Name, v.waitErr)
		}
		return nil
	}
}

// Kill cuts the VM's power at once and waits for QEMU to go.
func (v *VM) Kill() {
	if v.cmd == nil || v.cmd.Process == nil {
		return
	}
	select {
	case <-v.done:
		return
	default:
	}
	v.cmd.Process.Kill()
	<-v.done
}

// Stop shuts QEMU down (SIGTERM, then SIGKILL after five seconds) and
// waits for it. It is safe to call more than once and on a VM that never
// started, so tests can defer it.
func (v *VM) Stop() {
	v.stop.Do(func() {
		if v.cmd == nil || v.cmd.Process == nil {
			return
		}
		select {
		case <-v.done:
			return
		default:
		}
		v.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-v.done:
		case <-time.After(5 * time.Second):
			v.Kill()
		}
	})
}

// CopyFile copies a file, for firmware variables and test fixtures.
func CopyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copy %s: %w", src, err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	return nil
}
