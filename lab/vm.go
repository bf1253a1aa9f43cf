package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"time"

	"github.com/rackboot/rackboot/boot"
)

// Firmware kinds a VM can have.
const (
	FirmwareBIOS           = "bios"            // SeaBIOS, PXE through the NIC's option ROM
	FirmwareUEFI           = "uefi"            // OVMF or AAVMF with their own PXE
	FirmwareUEFISecureBoot = "uefi-secureboot" // OVMF enforcing Secure Boot with Microsoft's keys
)

// Firmware images from Debian's ovmf and qemu-efi-aarch64 packages.
const (
	ovmfCode       = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	ovmfVars       = "/usr/share/OVMF/OVMF_VARS_4M.fd"
	ovmfSecureCode = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd"
	ovmfSecureVars = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd"
	aavmfCode      = "/usr/share/AAVMF/AAVMF_CODE.fd"
	aavmfVars      = "/usr/share/AAVMF/AAVMF_VARS.fd"
)

// VM is a QEMU machine on a lab network. Zero values are defaults.
type VM struct {
	Name     string
	Arch     boot.Arch
	Firmware string
	MAC      net.HardwareAddr
	Tap      string
	MemoryMB int    // default 1024
	Disk     string // optional raw or qcow2 image

	cmd     *exec.Cmd
	console *consoleBuffer
	done    chan struct{}
	stop    sync.Once
}

type consoleBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (c *consoleBuffer) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.Write(p)
}

func (c *consoleBuffer) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.String()
}

// Args returns the QEMU program and arguments for the VM. dir holds the
// VM's writable firmware variables.
func (v *VM) Args(dir string) (string, []string, error) {
	mem := v.MemoryMB
	if mem == 0 {
		mem = 1024
	}
	if len(v.MAC) != 6 || v.Tap == "" {
		return "", nil, errors.New("vm needs a MAC and a tap")
	}
	nic := fmt.Sprintf("virtio-net-pci,netdev=n0,mac=%s", v.MAC)
	args := []string{"-accel", "tcg", "-m", strconv.Itoa(mem), "-smp", "1", "-display", "none", "-monitor", "none",
		"-serial", "stdio", "-no-reboot", "-netdev", "tap,id=n0,ifname=" + v.Tap + ",script=no,downscript=no"}
	var prog string
	pflash := func(code, vars string) {
		args = append(args, "-drive", "if=pflash,format=raw,readonly=on,file="+code,
			"-drive", "if=pflash,format=raw,file="+vars)
	}
	vars := filepath.Join(dir, v.Name+"-vars.fd")
	switch {
	case v.Arch == boot.ArchX86_64 && v.Firmware == FirmwareBIOS:
		// SeaBIOS PXE-boots through the NIC's option ROM (Debian's
		// ipxe-qemu): the client that reaches rackboot is iPXE itself.
		prog = "qemu-system-x86_64"
		args = append(args, "-M", "pc", "-device", nic, "-boot", "n")
	case v.Arch == boot.ArchX86_64 && v.Firmware == FirmwareUEFI:
		prog = "qemu-system-x86_64"
		args = append(args, "-M", "q35")
		pflash(ovmfCode, vars)
		// No option ROM: OVMF's own PXE does the boot, as on real servers.
		args = append(args, "-device", nic+",romfile=", "-boot", "n")
	case v.Arch == boot.ArchX86_64 && v.Firmware == FirmwareUEFISecureBoot:
		prog = "qemu-system-x86_64"
		args = append(args, "-M", "q35,smm=on", "-global", "driver=cfi.pflash01,property=secure,value=on")
		pflash(ovmfSecureCode, vars)
		args = append(args, "-device", nic+",romfile=", "-boot", "n")
	case v.Arch == boot.ArchAArch64 && v.Firmware == FirmwareUEFI:
		prog = "qemu-system-aarch64"
		args = append(args, "-M", "virt", "-cpu", "cortex-a57")
		pflash(aavmfCode, vars)
		args = append(args, "-device", nic+",romfile=")
	default:
		return "", nil, fmt.Errorf("vm %s: no %s machine with %s firmware", v.Name, v.Arch, v.Firmware)
	}
	if v.Disk != "" {
		args = append(args, "-drive", "if=virtio,file="+v.Disk)
	}
	return prog, args, nil
}

func varsTemplate(v *VM) string {
	switch {
	case v.Arch == boot.ArchAArch64:
		return aavmfVars
	case v.Firmware == FirmwareUEFISecureBoot:
		return ovmfSecureVars
	case v.Firmware == FirmwareUEFI:
		return ovmfVars
	}
	return ""
}

// Start powers the VM on inside the lab network. dir receives its
// firmware variables; ctx bounds its life.
func (v *VM) Start(ctx context.Context, n *Net, dir string) error {
	prog, args, err := v.Args(dir)
	if err != nil {
		return err
	}
	if t := varsTemplate(v); t != "" {
		if err := CopyFile(t, filepath.Join(dir, v.Name+"-vars.fd")); err != nil {
			return fmt.Errorf("vm %s: firmware variables: %w", v.Name, err)
		}
	}
	if _, err := exec.LookPath(prog); err != nil {
		return fmt.Errorf("vm %s: %s missing (apt-get install qemu-system-x86 qemu-system-arm): %w", v.Name, prog, err)
	}
	v.console = &consoleBuffer{}
	v.cmd = n.Command(ctx, prog, args...)
	v.cmd.Stdout, v.cmd.Stderr = v.console, v.console
	v.done = make(chan struct{})
	if err := v.cmd.Start(); err != nil {
		return fmt.Errorf("vm %s: %w", v.Name, err)
	}
	go func() { v.cmd.Wait(); close(v.done) }()
	return nil
}

// Console returns everything the VM printed so far.
func (v *VM) Console() string {
	if v.console == nil {
		return ""
	}
	return v.console.String()
}

// WaitFor waits until the console shows a line matching re and returns
// it. It fails when ctx ends or the VM exits first, with the console's
// tail in the error.
func (v *VM) WaitFor(ctx context.Context, re *regexp.Regexp) (string, error) {
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		if m := re.FindString(v.Console()); m != "" {
			return m, nil
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("vm %s: waiting for %q: %w; console ends:\n%s", v.Name, re, ctx.Err(), tail(v.Console(), 2000))
		case <-v.done:
			if m := re.FindString(v.Console()); m != "" {
				return m, nil
			}
			return "", fmt.Errorf("vm %s exited before %q; console ends:\n%s", v.Name, re, tail(v.Console(), 2000))
		case <-tick.C:
		}
	}
}

// Kill cuts the VM's power at once.
func (v *VM) Kill() {
	if v.cmd != nil && v.cmd.Process != nil {
		v.cmd.Process.Kill()
		<-v.done
	}
}

// Stop powers the VM off; it is safe to call more than once.
func (v *VM) Stop() { v.stop.Do(v.Kill) }

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// CopyFile copies a file, for firmware variables and test fixtures.
func CopyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
