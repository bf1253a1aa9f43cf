//go:build e2e

package e2e

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rackboot/rackboot/api"
	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/lab"
	"github.com/rackboot/rackboot/trace"
)

// A boot under TCG on a loaded 2-core machine: generous, and never a
// performance assertion; the tests log the real figures.
var bootWithin = func() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("RACKBOOT_E2E_BOOT_TIMEOUT")); err == nil {
		return d
	}
	return 12 * time.Minute
}()

func TestX86UEFIPXE(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{name: "rbe2e1", prefix: "10.77.1.0/24", mode: "authoritative", arches: []boot.Arch{boot.ArchX86_64}})
	vm := &lab.VM{Name: "uefi-x86", Arch: boot.ArchX86_64, Firmware: lab.FirmwareUEFI, MAC: mustMAC("52:54:00:77:01:10"), MemoryMB: 1024}
	line := r.bootVM(vm, bootWithin)
	if !strings.Contains(line, "arch=x86_64") || !strings.Contains(line, "rackboot.node=") {
		t.Errorf("payload line %q: want arch=x86_64 and rackboot.node= on the command line", line)
	}
	r.checkNode(vm.MAC, boot.ArchX86_64, []string{"ipxe/snponly.efi", "/boot.ipxe", "/artifacts/x86_64/vmlinuz", "/artifacts/x86_64/initrd"}, trace.StageHandover)
}

func TestX86BIOSPXE(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{name: "rbe2e2", prefix: "10.77.2.0/24", mode: "authoritative", arches: []boot.Arch{boot.ArchX86_64}})
	vm := &lab.VM{Name: "bios-x86", Arch: boot.ArchX86_64, Firmware: lab.FirmwareBIOS, MAC: mustMAC("52:54:00:77:02:10"), MemoryMB: 1024}
	r.bootVM(vm, bootWithin)
	tr := r.checkNode(vm.MAC, boot.ArchX86_64, []string{"/boot.ipxe", "/artifacts/x86_64/vmlinuz", "/artifacts/x86_64/initrd"}, trace.StageHandover)
	if tr.Events[0].Options["93"] != "0" {
		t.Errorf("first DHCP event options %v: want option 93 = 0 (x86 BIOS)", tr.Events[0].Options)
	}
}

func TestAArch64UEFIPXE(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{name: "rbe2e3", prefix: "10.77.3.0/24", mode: "authoritative", arches: []boot.Arch{boot.ArchAArch64}})
	vm := &lab.VM{Name: "uefi-arm", Arch: boot.ArchAArch64, Firmware: lab.FirmwareUEFI, MAC: mustMAC("52:54:00:77:03:10"), MemoryMB: 1024}
	line := r.bootVM(vm, bootWithin)
	if !strings.Contains(line, "arch=aarch64") {
		t.Errorf("payload line %q: want arch=aarch64", line)
	}
	r.checkNode(vm.MAC, boot.ArchAArch64, []string{"efi/aa64/grubnetaa64.efi", "grub/grub.cfg", "/artifacts/aarch64/vmlinuz", "/artifacts/aarch64/initrd"}, trace.StageHandover)
}

func TestX86SecureBoot(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{name: "rbe2e4", prefix: "10.77.4.0/24", mode: "authoritative", arches: []boot.Arch{boot.ArchX86_64}, extra: []string{"--secure-boot"}})
	vm := &lab.VM{Name: "sb-x86", Arch: boot.ArchX86_64, Firmware: lab.FirmwareUEFISecureBoot, MAC: mustMAC("52:54:00:77:04:10"), MemoryMB: 1024}
	r.bootVM(vm, bootWithin)
	if !regexp.MustCompile(`(?i)secure ?boot enabled`).MatchString(vm.Console()) {
		t.Errorf("the kernel did not report Secure Boot enabled; console:\n%s", tail(vm.Console(), 3000))
	}
	r.checkNode(vm.MAC, boot.ArchX86_64, []string{"efi/x64/shimx64.efi", "efi/x64/grubx64.efi", "grub/grub.cfg", "/artifacts/x86_64/vmlinuz", "/artifacts/x86_64/initrd"}, trace.StageHandover)
}

// TestAArch64SecureBoot: AAVMF enforcing Secure Boot with Microsoft's
// keys, through Debian's shim and signed GRUB to Debian's signed kernel.
func TestAArch64SecureBoot(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{name: "rbe2e7", prefix: "10.77.7.0/24", mode: "authoritative", arches: []boot.Arch{boot.ArchAArch64}, extra: []string{"--secure-boot"}})
	vm := &lab.VM{Name: "sb-arm", Arch: boot.ArchAArch64, Firmware: lab.FirmwareUEFISecureBoot, MAC: mustMAC("52:54:00:77:06:10"), MemoryMB: 1024}
	r.bootVM(vm, bootWithin)
	if !regexp.MustCompile(`(?i)secure ?boot enabled`).MatchString(vm.Console()) {
		t.Errorf("the kernel did not report Secure Boot enabled; console:\n%s", tail(vm.Console(), 3000))
	}
	r.checkNode(vm.MAC, boot.ArchAArch64, []string{"efi/aa64/shimaa64.efi", "efi/aa64/grubaa64.efi", "grub/grub.cfg", "/artifacts/aarch64/vmlinuz", "/artifacts/aarch64/initrd"}, trace.StageHandover)
}

// TestX86UEFIProxy runs rackboot in proxy mode beside dnsmasq, which hands
// out the addresses from its own namespace, as a site's DHCP server would.
func TestX86UEFIProxy(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{name: "rbe2e5", prefix: "10.77.5.0/24", mode: "proxy", arches: []boot.Arch{boot.ArchX86_64}})
	startSiteDHCP(t, r, "10.77.5.2/24", "10.77.5.100,10.77.5.150")
	vm := &lab.VM{Name: "proxy-x86", Arch: boot.ArchX86_64, Firmware: lab.FirmwareUEFI, MAC: mustMAC("52:54:00:77:05:10"), MemoryMB: 1024}
	// Proxy mode boots only the machines admitted first (enroll: known).
	var added []api.Node
	r.cli(&added, "node", "add", vm.MAC.String(), "--arch", "x86_64")
	if len(added) != 1 || added[0].State != "discovered" {
		t.Fatalf("node add: %+v", added)
	}
	r.bootVM(vm, bootWithin)
	tr := r.checkNode(vm.MAC, boot.ArchX86_64, []string{"ipxe/snponly.efi", "/boot.ipxe", "/artifacts/x86_64/vmlinuz", "/artifacts/x86_64/initrd"}, trace.StageHandover)
	for _, e := range tr.Events {
		if e.Proto == "dhcp" && (e.Kind == "offer" || e.Kind == "ack") && e.IP != "" && e.IP != "0.0.0.0" {
			t.Errorf("proxy mode handed out an address: %+v", e)
		}
	}
}

// startSiteDHCP runs dnsmasq as the site's DHCP server (addresses only, no
// PXE) in a namespace of its own, wired to the rig's bridge by a veth pair.
func startSiteDHCP(t *testing.T, r *rig, addr, dhcpRange string) {
	t.Helper()
	ns := addHost(t, r, "d", addr).ns
	leases := filepath.Join(t.TempDir(), "leases")
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns, "dnsmasq", "--no-daemon", "--port=0", "--interface=eth0",
		"--bind-interfaces", "--dhcp-range="+dhcpRange+",10m", "--dhcp-leasefile="+leases, "--log-dhcp", "--conf-file=/dev/null")
	cmd.Stdout, cmd.Stderr = prefixWriter{"dnsmasq: ", r.log}, prefixWriter{"dnsmasq: ", r.log}
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("dnsmasq: %v", err)
	}
	t.Cleanup(func() { cancel(); cmd.Wait() })
}

type prefixWriter struct {
	prefix string
	w      io.Writer
}

func (p prefixWriter) Write(b []byte) (int, error) {
	p.w.Write([]byte(p.prefix + string(b)))
	return len(b), nil
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
