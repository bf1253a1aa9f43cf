//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rackboot/rackboot/api"
	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/lab"
)

// TestIronicConductor deploys two QEMU nodes with a real OpenStack Ironic
// (Debian's ironic-api and two ironic-conductors, in the rig's namespace)
// whose dnsmasq DHCP provider writes into rackboot's Ironic directories
// and whose tftp_root and http_root rackboot serves (ironic.roots), each
// conductor's http_url and tftp_server naming rackboot:
//
//   - an x86-64 UEFI node of conductor c1 (boot interface ipxe), handed
//     to Ironic by rackboot node handover: its firmware gets snponly.efi
//     from c1's tftp_root, iPXE Ironic's boot.ipxe from c1's http_root,
//     and boots the kernel and ramdisk Ironic configured for it;
//   - an AArch64 UEFI node of conductor c2 (boot interface pxe, GRUB),
//     made in Ironic directly: grubaa64.efi, GRUB's fixed grub/grub.cfg
//     and the MAC's config come from c2's tftp_root, the kernel too;
//
// each node's trace shows exactly its own conductor's files, and each
// VM's console the kernel command line Ironic wrote. A node Ironic has
// deployed is not taken back; once Ironic has undeployed it, rackboot
// node handover --to rackboot deletes it in Ironic and owns it again. A
// third MAC, Ironic's without any dnsmasq file (ironic.macs, as with
// dhcp_provider = none), gets its conductor's answers from a real DHCP
// client.
func TestIronicConductor(t *testing.T) {
	t.Parallel()
	if err := lab.Check("ironic-api", "ironic-conductor", "baremetal"); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	hostsdir, optsdir, leases := filepath.Join(dir, "hostsdir.d"), filepath.Join(dir, "optsdir.d"), filepath.Join(dir, "dnsmasq.leases")
	for _, d := range []string{hostsdir, optsdir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	const noneMAC = "52:54:00:60:00:30"
	cfg := filepath.Join(dir, "rackboot.yaml")
	writeCfg := func(extra string) {
		os.WriteFile(cfg, []byte(fmt.Sprintf("ironic:\n  hostsdir: %s\n  optsdir: %s\n  leasefile: %s\n%s", hostsdir, optsdir, leases, extra)), 0o644)
	}
	writeCfg("")
	r := newRig(t, rigOptions{name: "rbirc", prefix: "10.77.60.0/24", mode: "authoritative",
		arches: []boot.Arch{boot.ArchX86_64, boot.ArchAArch64}, extra: []string{"--config", cfg}})
	server := r.server.String()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()

	began := time.Now()
	ir, err := lab.StartIronic(ctx, lab.IronicOptions{
		Dir: filepath.Join(dir, "ironic"), HostsDir: hostsdir, OptsDir: optsdir, LeaseFile: leases,
		Conductors: []lab.IronicConductor{
			{Name: "c1", Group: "g1", HTTPURL: "http://" + server + ":8080/ironic/c1", TFTPServer: server},
			{Name: "c2", Group: "g2", HTTPURL: "http://" + server + ":8080/ironic/c2", TFTPServer: server},
		},
		Conf:    "[service_catalog]\nendpoint_override = http://" + server + ":6385\n",
		Command: r.net.Command,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ir.Stop()
	defer func() {
		if t.Failed() {
			t.Logf("ironic logs:\n%s", ir.Logs(6000))
		}
	}()
	t.Logf("Ironic up in %v at %s", time.Since(began).Round(time.Second), ir.URL)
	c1, c2 := ir.Conductors[0], ir.Conductors[1]

	// rackboot serves both conductors' trees and reaches Ironic's API.
	writeCfg(fmt.Sprintf("  macs: [%q]\n  api_url: %s\n  api_interval: 2s\n  driver: fake-hardware\n  roots:\n"+
		"    - {name: c1, tftp_root: %s, http_root: %s, conductor_groups: [g1]}\n    - {name: c2, tftp_root: %s, http_root: %s, conductor_groups: [g2]}\n",
		noneMAC, ir.URL, c1.TFTPRoot, c1.HTTPRoot, c2.TFTPRoot, c2.HTTPRoot))
	r.stop()
	r.start()

	// The loaders each conductor's DHCP options name, in its tftp_root,
	// as an operator puts them there ([pxe]loader_file_paths).
	for src, dst := range map[string]string{
		"ipxe/snponly.efi":         filepath.Join(c1.TFTPRoot, "snponly.efi"),
		"efi/aa64/grubnetaa64.efi": filepath.Join(c2.TFTPRoot, "grubaa64.efi"),
	} {
		if err := lab.CopyFile(filepath.Join(r.dataDir, "firmware", src), dst); err != nil {
			t.Fatal(err)
		}
	}
	// Kernels and ramdisks Ironic boots: the payloads, under Ironic's Dir
	// ([conductor]file_url_allowed_paths).
	files := filepath.Join(ir.Dir, "files")
	os.MkdirAll(files, 0o755)
	payload := map[boot.Arch][2]string{}
	for _, a := range []boot.Arch{boot.ArchX86_64, boot.ArchAArch64} {
		k, i, err := lab.Payload(ctx, a, filepath.Join(cacheDir, "payload"))
		if err != nil {
			t.Fatal(err)
		}
		pk, pi := filepath.Join(files, "kernel-"+string(a)), filepath.Join(files, "ramdisk-"+string(a))
		if err := lab.CopyFile(k, pk); err != nil {
			t.Fatal(err)
		}
		if err := lab.CopyFile(i, pi); err != nil {
			t.Fatal(err)
		}
		payload[a] = [2]string{pk, pi}
	}
	bm := func(args ...string) string {
		t.Helper()
		out, err := ir.Baremetal(ctx, args...)
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(out))
	}
	// The interfaces and images of a ramdisk deploy: Ironic boots the
	// instance's kernel and ramdisk and calls the node active.
	setup := func(uuid string, arch boot.Arch, bootIface, group, console string) {
		t.Helper()
		bm("node", "set", uuid, "--boot-interface", bootIface, "--deploy-interface", "ramdisk",
			"--power-interface", "fake", "--management-interface", "fake", "--conductor-group", group,
			"--driver-info", "deploy_kernel=file://"+payload[arch][0], "--driver-info", "deploy_ramdisk=file://"+payload[arch][1],
			"--driver-info", "kernel_append_params=console="+console+" ironic-e2e-"+group,
			"--instance-info", "kernel=file://"+payload[arch][0], "--instance-info", "ramdisk=file://"+payload[arch][1],
			"--property", "capabilities=boot_mode:uefi")
		bm("node", "manage", uuid, "--wait", "180")
		bm("node", "provide", uuid, "--wait", "180")
		bm("node", "deploy", uuid, "--wait", "180")
	}

	// The x86-64 node: rackboot's, handed to Ironic.
	x86 := &lab.VM{Name: "ironic-x86", Arch: boot.ArchX86_64, Firmware: lab.FirmwareUEFI, MAC: mustMAC("52:54:00:60:00:10"), MemoryMB: 1024}
	var added []api.Node
	r.cli(&added, "node", "add", x86.MAC.String(), "--name", "ironic-x86", "--arch", "x86_64")
	var ho api.HandoverResult
	r.cli(&ho, "node", "handover", "ironic-x86", "--to", "ironic", "--conductor-group", "g1")
	if ho.Node.Owner != "ironic" || ho.IronicUUID == "" {
		t.Fatalf("handover: %+v", ho)
	}
	var port []map[string]any
	json.Unmarshal([]byte(bm("port", "list", "--node", ho.IronicUUID, "-f", "json", "-c", "Address")), &port)
	if len(port) != 1 || port[0]["Address"] != x86.MAC.String() {
		t.Fatalf("Ironic's ports of the handed-over node: %v", port)
	}
	setup(ho.IronicUUID, boot.ArchX86_64, "ipxe", "g1", "ttyS0")

	// The AArch64 node: Ironic's from the start; its hosts file makes it
	// a node Ironic owns in rackboot too.
	arm := &lab.VM{Name: "ironic-arm", Arch: boot.ArchAArch64, Firmware: lab.FirmwareUEFI, MAC: mustMAC("52:54:00:60:00:20"), MemoryMB: 1024}
	armUUID := bm("node", "create", "--name", "ironic-arm", "--driver", "fake-hardware", "--conductor-group", "g2", "--property", "cpu_arch=aarch64", "-f", "value", "-c", "uuid")
	bm("port", "create", "--node", armUUID, arm.MAC.String())
	setup(armUUID, boot.ArchAArch64, "pxe", "g2", "ttyAMA0")

	// A node Ironic has deployed stays Ironic's.
	if out, err := r.cliErr("node", "handover", "ironic-x86", "--to", "rackboot"); err == nil || !strings.Contains(out, "active") {
		t.Errorf("taking back a node Ironic deployed: %v\n%s", err, out)
	}

	// Both power on at once (Ironic's power is fake: the test is the
	// power button), then each is waited for.
	bootCtx, bootCancel := context.WithTimeout(ctx, bootWithin)
	defer bootCancel()
	start := time.Now()
	for _, vm := range []*lab.VM{x86, arm} {
		tap, err := r.net.AddTap("tap-" + vm.MAC.String()[12:14] + vm.MAC.String()[15:])
		if err != nil {
			t.Fatal(err)
		}
		vm.Tap = tap
		if err := vm.Start(bootCtx, r.net, t.TempDir()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(vm.Stop)
	}
	lines := map[string]string{}
	for _, vm := range []*lab.VM{x86, arm} {
		line, err := vm.WaitFor(bootCtx, payloadRE)
		if err != nil {
			t.Fatalf("%s never booted Ironic's kernel: %v\nconsole:\n%s\nrackboot log:\n%s", vm.Name, err, tail(vm.Console(), 3000), tail(r.Log(), 20000))
		}
		t.Logf("%s: Ironic's kernel up %.0f s after power-on: %s", vm.Name, time.Since(start).Seconds(), strings.TrimSpace(line))
		lines[vm.Name] = line
	}
	for _, tc := range []struct {
		vm          *lab.VM
		uuid, group string
		files       []string
		other       string
	}{
		{x86, ho.IronicUUID, "g1", []string{"snponly.efi", "/ironic/c1/boot.ipxe", "/ironic/c1/pxelinux.cfg/52-54-00-60-00-10",
			"/ironic/c1/" + ho.IronicUUID + "/kernel", "/ironic/c1/" + ho.IronicUUID + "/ramdisk"}, "/ironic/c2/"},
		{arm, armUUID, "g2", []string{"grubaa64.efi", "grub/grub.cfg", "52:54:00:60:00:20.conf",
			armUUID + "/kernel", armUUID + "/ramdisk"}, "/ironic/c1/"},
	} {
		line := lines[tc.vm.Name]
		if !strings.Contains(line, "ironic-e2e-"+tc.group) || !strings.Contains(line, "root=/dev/ram0") {
			t.Errorf("%s booted %q: want the command line Ironic's conductor wrote (ironic-e2e-%s, root=/dev/ram0)", tc.vm.Name, line, tc.group)
		}
		var tr api.Trace
		r.cli(&tr, "node", "trace", tc.vm.MAC.String())
		for _, f := range tc.files {
			found := false
			for _, e := range tr.Events {
				if e.Kind == "file" && strings.HasSuffix(e.File, f) && e.Complete && e.Size > 0 {
					found = true
				}
			}
			if !found {
				t.Errorf("trace of %s has no complete transfer of %s", tc.vm.Name, f)
			}
		}
		for _, e := range tr.Events {
			if strings.Contains(e.File, tc.other) || strings.Contains(e.File, "/artifacts/") {
				t.Errorf("%s fetched %s: not its conductor's", tc.vm.Name, e.File)
			}
		}
		var n api.Node
		r.cli(&n, "node", "show", tc.vm.MAC.String())
		if n.Owner != "ironic" {
			t.Errorf("%s is owned by %q in rackboot, want ironic", tc.vm.Name, n.Owner)
		}
		if t.Failed() {
			b, _ := json.MarshalIndent(tr, "", "  ")
			t.Logf("trace of %s:\n%s", tc.vm.Name, b)
		}
	}

	// Ironic undeploys the x86 node; then rackboot takes it back.
	bm("node", "undeploy", ho.IronicUUID, "--wait", "180")
	var back api.HandoverResult
	r.cli(&back, "node", "handover", "ironic-x86", "--to", "rackboot")
	if back.Node.Owner != "rackboot" || back.IronicUUID != ho.IronicUUID {
		t.Errorf("take back: %+v", back)
	}
	if out, err := ir.Baremetal(ctx, "node", "show", ho.IronicUUID); err == nil {
		t.Errorf("Ironic still has the node taken back: %s", out)
	}

	// Ironic's without dnsmasq files: the answers of the root that serves
	// the subnet (c1, the first without subnets), on rackboot's servers.
	h := addHost(t, r, "n", "")
	uefi := []string{"-x", "0x5d:0007", "-V", "PXEClient:Arch:00007:UNDI:003000"}
	got := udhcpc(t, h, noneMAC, uefi...)
	if got["bootfile"] != "snponly.efi" || got["siaddr"] != server {
		t.Errorf("the firmware of a node of ironic.macs got %v; want snponly.efi from %s", got, server)
	}
	got = udhcpc(t, h, noneMAC, append(uefi, "-x", "0x4d:69505845")...)
	if want := "http://" + server + ":8080/ironic/c1/boot.ipxe"; got["bootfile"] != want {
		t.Errorf("the iPXE of a node of ironic.macs got %v; want %s", got, want)
	}
	// A node only Ironic's API names (dhcp_provider = none): rackboot
	// reads its port, conductor group and boot interface, and answers it
	// as its own conductor, c2, would.
	const apiMAC = "52:54:00:60:00:40"
	apiUUID := bm("node", "create", "--name", "ironic-api-only", "--driver", "fake-hardware", "--conductor-group", "g2",
		"--boot-interface", "ipxe", "-f", "value", "-c", "uuid")
	bm("port", "create", "--node", apiUUID, apiMAC)
	want := "http://" + server + ":8080/ironic/c2/boot.ipxe"
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(time.Second) {
		got = udhcpc(t, h, apiMAC, append(uefi, "-x", "0x4d:69505845")...)
		if got["bootfile"] == want || time.Now().After(deadline) {
			break
		}
	}
	if got["bootfile"] != want {
		t.Errorf("the iPXE of a node Ironic's API puts in group g2 got %v; want %s", got, want)
	}
	var apiNode api.Node
	r.cli(&apiNode, "node", "show", apiMAC)
	if apiNode.Owner != "ironic" {
		t.Errorf("the node Ironic's API names is owned by %q in rackboot", apiNode.Owner)
	}
	// The node taken back is rackboot's at DHCP again, whatever line
	// Ironic's cleanup left in its hosts file.
	host, _ := os.ReadFile(filepath.Join(hostsdir, "ironic-"+x86.MAC.String()+".conf"))
	if got := udhcpc(t, h, x86.MAC.String(), uefi...); got["bootfile"] != "ipxe/snponly.efi" {
		t.Errorf("the node taken back got %v; want rackboot's ipxe/snponly.efi (Ironic's hosts line: %q)", got, host)
	}
}
