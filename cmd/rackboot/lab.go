package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/lab"
)

// labKinds are the machines a lab rack can hold.
var labKinds = map[string]lab.NodeSpec{
	"uefi":  {Arch: boot.ArchX86_64, Firmware: lab.FirmwareUEFI},
	"bios":  {Arch: boot.ArchX86_64, Firmware: lab.FirmwareBIOS},
	"arm64": {Arch: boot.ArchAArch64, Firmware: lab.FirmwareUEFI},
	"sb":    {Arch: boot.ArchX86_64, Firmware: lab.FirmwareUEFISecureBoot},
}

func labCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("lab", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data-dir", envOr("RACKBOOT_DATA_DIR", "data"), "rackboot's data dir: boot loaders and agent ramdisks (the lab keeps its disks in DATA_DIR/lab)")
	nodes := fs.String("nodes", "uefi,bios,arm64", "the machines, comma-separated: uefi (x86-64 UEFI), bios (x86 BIOS), arm64 (AArch64 UEFI), sb (x86-64 UEFI with Secure Boot)")
	prefix := fs.String("prefix", "10.99.0.0/24", "the rack's network")
	hostLink := fs.String("host-link", "10.99.255.0/30", "a /30 joining this host to the rack: the UI is at its second address")
	memory := fs.Int("memory", 1024, "MiB of memory per node")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: rackboot lab [flags]\n\nA virtual rack on this machine: a network namespace with a bridge, rackboot serving it\nauthoritatively, and QEMU nodes with empty disks and two NICs that network-boot through it\ninto the agent and show up in the web UI. Ctrl-C powers everything off and removes it.\nNeeds root, QEMU and the firmware packages (make deps), the boot loaders (make firmware)\nand the agent ramdisks (make ramdisks).\n\nFlags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("lab: needs root for network namespaces and taps (sudo make lab)")
	}
	o := lab.RackOptions{DataDir: *dataDir, Dir: filepath.Join(*dataDir, "lab")}
	var err error
	if o.Prefix, err = netip.ParsePrefix(*prefix); err != nil {
		return usageError{fmt.Sprintf("lab: --prefix: %v", err)}
	}
	if o.HostLink, err = netip.ParsePrefix(*hostLink); err != nil {
		return usageError{fmt.Sprintf("lab: --host-link: %v", err)}
	}
	for i, k := range strings.Split(*nodes, ",") {
		spec, ok := labKinds[strings.TrimSpace(k)]
		if !ok {
			return usageError{fmt.Sprintf("lab: --nodes: unknown kind %q (want uefi, bios, arm64 or sb)", k)}
		}
		spec.Name = fmt.Sprintf("%s-%d", strings.TrimSpace(k), i)
		spec.MemoryMB, spec.Reboot = *memory, true
		o.Nodes = append(o.Nodes, spec)
	}
	if o.Binary, err = os.Executable(); err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	if o.DataDir, err = filepath.Abs(o.DataDir); err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	o.Dir = filepath.Join(o.DataDir, "lab")
	for _, a := range []string{"x86_64", "aarch64"} {
		if _, err := os.Stat(filepath.Join(o.DataDir, "artifacts", a, "vmlinuz")); err != nil {
			fmt.Fprintf(stderr, "warning: no agent ramdisk for %s in %s: its nodes will not get past the loader (make ramdisks)\n", a, o.DataDir)
		}
	}
	fmt.Fprintln(stderr, "starting the rack...")
	r, err := lab.StartRack(ctx, o)
	if err != nil {
		return err
	}
	defer r.Close()
	for i := range r.VMs {
		if err := r.PowerOn(ctx, i); err != nil {
			return err
		}
	}
	token, _ := os.ReadFile(filepath.Join(o.DataDir, "admin.token"))
	password, _ := os.ReadFile(filepath.Join(o.DataDir, "admin.password"))
	fmt.Fprintf(stdout, `
rackboot lab is up: %d nodes powering on (watch them appear; TCG emulation takes minutes)

  web UI       %s/ui/   (user admin, password %s)
  API token    %s
  CLI          rackboot node list --server %s --token %s
  consoles     %s/*.console
  server log   %s/rackboot.log

Ctrl-C powers the nodes off and removes the rack.
`, len(r.VMs), r.URL, strings.TrimSpace(string(password)), strings.TrimSpace(string(token)), r.URL, strings.TrimSpace(string(token)), o.Dir, o.Dir)
	<-ctx.Done()
	fmt.Fprintln(stderr, "\npowering off and removing the rack")
	return nil
}
