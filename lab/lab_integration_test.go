//go:build integration

package lab

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/internal/syncbuf"
)

// cacheDir is shared with the end-to-end tests, so the kernels are
// fetched once per checkout.
const cacheDir = "../.cache/e2e/payload"

var payloadRE = regexp.MustCompile(`RACKBOOT-PAYLOAD arch=(\S+) cmdline=(.*)`)

// nsName returns a namespace name unique to this process and test.
func nsName(t *testing.T, suffix string) string {
	return fmt.Sprintf("rblab%d-%s", os.Getpid(), suffix)
}

var directBoots = []struct {
	arch    boot.Arch
	console string
}{
	{boot.ArchX86_64, "ttyS0"},
	{boot.ArchAArch64, "ttyAMA0"},
}

// TestDirectBoot boots each architecture's payload with QEMU loading the
// kernel itself (no firmware, no network) and waits for its marker and
// its power-off: the kernel and initrd the end-to-end tests hand out must
// work on their own, without modules.
func TestDirectBoot(t *testing.T) {
	for _, tc := range directBoots {
		t.Run(string(tc.arch), func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
			defer cancel()
			kernel, initrd, err := Payload(ctx, tc.arch, cacheDir)
			if err != nil {
				t.Fatal(err)
			}
			bootDirect(ctx, t, tc.arch, tc.console, kernel, initrd)
		})
	}
}

// TestAptKernelsBoot fetches the kernels a second way, with apt through
// scripts/fetch-test-kernels.sh, and boots them with the same initrd.
func TestAptKernelsBoot(t *testing.T) {
	Require(t, "apt-get", "apt-cache", "dpkg-deb", "dpkg")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	// The parallel subtests outlive this function's body.
	t.Cleanup(cancel)
	dir := filepath.Join(cacheDir, "apt")
	kernels, err := AptKernels(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range directBoots {
		t.Run(string(tc.arch), func(t *testing.T) {
			t.Parallel()
			pkg, err := os.ReadFile(kernels[tc.arch] + ".package")
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s kernel from apt: %s", tc.arch, strings.TrimSpace(string(pkg)))
			_, initrd, err := Payload(ctx, tc.arch, cacheDir)
			if err != nil {
				t.Fatal(err)
			}
			bootDirect(ctx, t, tc.arch, tc.console, kernels[tc.arch], initrd)
		})
	}
}

func bootDirect(ctx context.Context, t *testing.T, arch boot.Arch, console, kernel, initrd string) {
	t.Helper()
	vm := &VM{Name: "direct-" + string(arch), Arch: arch, MemoryMB: 512,
		Kernel: kernel, Initrd: initrd, Append: "console=" + console + " panic=-1 rackboot.test=" + string(arch)}
	Require(t, vm.Needs()...)
	start := time.Now()
	if err := vm.Start(ctx, nil, t.TempDir()); err != nil {
		t.Fatal(err)
	}
	defer vm.Stop()
	line, err := vm.WaitFor(ctx, payloadRE)
	if err != nil {
		t.Fatal(err)
	}
	up := time.Since(start)
	m := payloadRE.FindStringSubmatch(line)
	if m[1] != string(arch) {
		t.Errorf("payload reports arch %q, want %q: %q", m[1], arch, line)
	}
	if !strings.Contains(m[2], "rackboot.test="+string(arch)) {
		t.Errorf("payload's cmdline %q lacks the one QEMU passed", m[2])
	}
	// The payload powers off; with -no-reboot QEMU then exits cleanly.
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := vm.Wait(wctx); err != nil {
		t.Errorf("after the marker: %v; console ends:\n%s", err, Tail(vm.Console(), 1500))
	}
	t.Logf("%s payload marker %.1f s after power-on, powered off at %.1f s", arch, up.Seconds(), time.Since(start).Seconds())
}

// TestNetPlumbing checks that a lab network holds a bridge with the
// server's address and taps enslaved to it, and that Close removes it all
// even with a program still running inside.
func TestNetPlumbing(t *testing.T) {
	RequireRoot(t)
	Require(t, "ip", "sleep")
	ctx := context.Background()
	name := nsName(t, "plumb")
	n, err := NewNet(ctx, name, netip.MustParsePrefix("10.251.7.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if got, want := n.ServerIP(), netip.MustParseAddr("10.251.7.1"); got != want {
		t.Errorf("server address %s, want %s", got, want)
	}
	for _, tap := range []string{"tap-a", "tap-b"} {
		if _, err := n.AddTap(tap); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := n.AddTap("tap-a"); err == nil {
		t.Error("a second tap-a: no error")
	}
	out, err := n.Command(ctx, "ip", "-o", "link", "show", "master", n.Bridge()).CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	for _, tap := range []string{"tap-a", "tap-b"} {
		if !strings.Contains(string(out), tap+":") {
			t.Errorf("%s not on the bridge: %s", tap, out)
		}
	}
	out, err = n.Command(ctx, "ip", "-o", "-4", "addr", "show", "dev", n.Bridge()).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "10.251.7.1/24") {
		t.Errorf("bridge address: %v: %s", err, out)
	}
	out, err = n.Command(ctx, "ip", "-o", "link", "show", "lo").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "UP") {
		t.Errorf("loopback not up: %v: %s", err, out)
	}
	// A program left running must not keep the namespace alive.
	sleeper := n.Command(ctx, "sleep", "600")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- sleeper.Wait() }()
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		sleeper.Process.Kill()
		t.Error("Close left a program running in the namespace")
	}
	if out, _ := exec.Command("ip", "netns", "list").Output(); strings.Contains(string(out), name) {
		t.Errorf("namespace %s still listed after Close: %s", name, out)
	}
}

// TestHarnessPXE is the harness's own network self-test: a VM of each
// firmware kind on a lab network PXE-boots from a throwaway dnsmasq (DHCP
// and TFTP, serving Debian's iPXE builds). The firmware's DHCPDISCOVER
// must arrive with the VM's MAC and its architecture's vendor class, the
// loader must go out over TFTP, and the console must show what that
// firmware does with it: iPXE starting, or (Secure Boot, and AArch64 given
// an x86 loader) the firmware refusing it.
func TestHarnessPXE(t *testing.T) {
	RequireRoot(t)
	for i, tc := range []struct {
		name    string
		vm      *VM
		loader  string // from /usr/lib/ipxe
		vendor  string
		console string
	}{
		{
			name:    "x86-uefi",
			vm:      &VM{Arch: boot.ArchX86_64, Firmware: FirmwareUEFI},
			loader:  "snponly.efi",
			vendor:  `PXEClient:Arch:00007`,
			console: `iPXE initialising devices`,
		},
		{
			// SeaBIOS runs the NIC's iPXE ROM, which then chains the
			// UNDI loader: its banner proves the TFTP fetch ran.
			name:    "x86-bios",
			vm:      &VM{Arch: boot.ArchX86_64, Firmware: FirmwareBIOS},
			loader:  "undionly.kpxe",
			vendor:  `PXEClient:Arch:00000`,
			console: `PXE->EB`,
		},
		{
			// Debian's iPXE is unsigned: enforcing firmware loads it and
			// refuses to start it.
			name:    "x86-secureboot",
			vm:      &VM{Arch: boot.ArchX86_64, Firmware: FirmwareUEFISecureBoot},
			loader:  "snponly.efi",
			vendor:  `PXEClient:Arch:00007`,
			console: `failed to load Boot\d+ "UEFI PXEv4.*Access Denied`,
		},
		{
			// Debian has no arm64 iPXE; an x86 image proves the fetch and
			// is refused.
			name:    "aarch64-uefi",
			vm:      &VM{Arch: boot.ArchAArch64, Firmware: FirmwareUEFI},
			loader:  "snponly.efi",
			vendor:  `PXEClient:Arch:00011`,
			console: `failed to load Boot\d+ "UEFI PXEv4`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			vm := tc.vm
			vm.Name = tc.name
			vm.MAC = mustMAC(t, fmt.Sprintf("52:54:00:7a:00:%02x", i+1))
			loader := filepath.Join("/usr/lib/ipxe", tc.loader)
			Require(t, append(vm.Needs(), "dnsmasq", loader)...)
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			subnet := fmt.Sprintf("10.251.%d", 80+i)
			n, err := NewNet(ctx, nsName(t, fmt.Sprintf("pxe%d", i)), netip.MustParsePrefix(subnet+".0/24"))
			if err != nil {
				t.Fatal(err)
			}
			defer n.Close()
			if vm.Tap, err = n.AddTap("tap-pxe"); err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			root := filepath.Join(dir, "tftp")
			if err := os.Mkdir(root, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := CopyFile(loader, filepath.Join(root, tc.loader)); err != nil {
				t.Fatal(err)
			}
			dnsmasqLog := &syncbuf.Buffer{}
			dns := n.Command(ctx, "dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0", "--user=root",
				"--interface="+n.Bridge(), "--bind-interfaces", "--no-hosts", "--no-resolv",
				"--dhcp-range="+subnet+".100,"+subnet+".150,255.255.255.0,10m",
				"--dhcp-leasefile="+filepath.Join(dir, "leases"), "--pid-file="+filepath.Join(dir, "dnsmasq.pid"),
				"--enable-tftp", "--tftp-root="+root, "--dhcp-boot="+tc.loader, "--log-dhcp", "--log-facility=-")
			dns.Stdout, dns.Stderr = dnsmasqLog, dnsmasqLog
			if err := dns.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { dns.Process.Kill(); dns.Wait() }()
			start := time.Now()
			if err := vm.Start(ctx, n, dir); err != nil {
				t.Fatal(err)
			}
			defer vm.Stop()
			seen, err := vm.WaitFor(ctx, regexp.MustCompile(tc.console))
			if err != nil {
				t.Fatalf("%v\ndnsmasq log:\n%s", err, dnsmasqLog)
			}
			t.Logf("%s: %q on the console %.1f s after power-on", tc.name, seen, time.Since(start).Seconds())
			log := dnsmasqLog.String()
			for _, want := range []string{
				`DHCPDISCOVER\(br0\) ` + vm.MAC.String(),
				`vendor class: ` + tc.vendor,
				`sent \S*` + regexp.QuoteMeta(tc.loader) + ` to ` + regexp.QuoteMeta(subnet) + `\.1\d\d`,
			} {
				if !regexp.MustCompile(want).MatchString(log) {
					t.Errorf("dnsmasq log lacks %q", want)
				}
			}
			if t.Failed() {
				t.Logf("dnsmasq log:\n%s\nconsole ends:\n%s", log, Tail(vm.Console(), 3000))
			}
		})
	}
}

func mustMAC(t testing.TB, s string) net.HardwareAddr {
	t.Helper()
	m, err := net.ParseMAC(s)
	if err != nil {
		t.Fatal(err)
	}
	return m
}
