// Command rackboot is the network boot appliance and its command-line
// client: `rackboot serve` runs DHCP, TFTP, boot-time HTTP and the API;
// the other commands fetch boot loaders and talk to a running server.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// version is stamped by the Makefile with -ldflags.
var version = "dev"

var usage = `rackboot: network boot and provisioning for x86-64 and AArch64 servers

Usage:
  rackboot serve [flags]              run DHCP, TFTP, boot-time HTTP and the API
  rackboot firmware fetch [flags]     download and verify the boot loaders from Debian's archive
  rackboot firmware verify [flags]    check fetched boot loaders against their manifest
  rackboot node add MAC... [--arch x86_64|aarch64] [--name N]
                                      admit machines before they boot (what enroll: known boots)
  rackboot node list [--state S --arch A --gpu MODEL --rack R --tag T --q TEXT]
                                      list nodes
  rackboot node show NODE             show one node (id, name or MAC), with its GPUs' burn-in
                                      figures beside their peers'
  rackboot node inventory NODE [--format rackboot|ironic]
                                      a node's inventory as JSON; ironic: as ironic-python-agent sends it
  rackboot node inventory NODE --set FILE
                                      the inventory of a machine rackboot did not inspect, from
                                      rackboot-agent inventory run on it (admin)
  rackboot node trace NODE            show a node's boots and where each one stopped
  rackboot node events NODE           show a node's audit log
  rackboot node set NODE [--name N --rack R --position U --tags a,b --owner rackboot|ironic
                         --secure-boot on|off|inherit]
  rackboot node set NODE --bmc ipmi://HOST[:623]|redfish://HOST --bmc-user NAME [--bmc-password-file FILE|-]
                         [--bmc-fingerprint SHA256]
                                      give a node its BMC (password encrypted at rest); --no-bmc forgets it
  rackboot node power NODE on|off|soft-off|cycle|reset|status
  rackboot node power [--rack RACK | NODE...] on|off|soft-off|cycle|reset
                                      power control through the BMC (IPMI lanplus or Redfish); power-ons
                                      of many nodes queue through the server's power.max_concurrent_on
                                      and power.on_rate, with a result per node
  rackboot node boot-device NODE pxe|disk [--persistent]
                                      the next boot's device (every boot's, persistent), through the BMC
  rackboot node handover NODE --to ironic|rackboot [--conductor-group GROUP]
                                      create the node in OpenStack Ironic (ironic.api_url) with its ports,
                                      BMC and inventory and make it Ironic's; or take it back once Ironic
                                      has released it (admin)
  rackboot node inspect|release|reboot NODE [--reason TEXT]
  rackboot node deploy NODE --image NAME [--role hypervisor]
  rackboot node wipe NODE [--method quick|full]
  rackboot node burnin NODE [--duration 30m]
  rackboot node maintenance NODE on|off [--reason TEXT]
  rackboot node delete NODE           forget a node (admin)
  rackboot image add NAME --arch x86_64|aarch64 (--file PATH | --url URL) [--sha256 HEX]
                                      add an image (raw, .gz, .zst, .xz; qcow2 is converted)
  rackboot image list|show|delete     the image catalog
  rackboot image build --arch x86_64|aarch64 --output FILE
                                      write a small bootable GPT disk image
  rackboot hypervisor add NODE --uri qemu+tls://HOST/system --bridge BR [--gpu passthrough|vgpu:TYPE|mig:LAYOUT]
                         [--vgpu-max N --cpu-allocation-ratio R --ram-allocation-ratio R
                          --reserved-host-memory-mb M --emulated x86_64,aarch64 --no-kvm --pool P]
                                      make an inspected node a hypervisor (admin); its architectures come
                                      from libvirt's capabilities, its CPUs, memory, NUMA and GPUs from
                                      its inventory
  rackboot hypervisor set|drain|undrain|remove NODE
  rackboot hypervisor list|show [NODE]
                                      hypervisors with vCPUs, memory, GPUs and partitions used and free
  rackboot hypervisor agent-token NODE
                                      issue the hypervisor's agent token (admin), revoking its last, with
                                      the agent's config line and binary: for a host rackboot did not
                                      deploy (node deploy --role hypervisor installs the agent itself)
  rackboot flavor create NAME --vcpus N --memory 64GiB --disk GIB [--arch A]
                         [--gpu passthrough|vgpu:TYPE|mig:PROFILE --gpu-model M --gpu-count N]
  rackboot flavor list|delete         VM shapes
  rackboot vm create NAME --flavor F [--image IMG --hypervisor NODE --dry-run]
                                      place a VM and start it; it network-boots through rackboot as a
                                      node of kind vm; --dry-run prints the placement and domain XML
  rackboot vm list [--hypervisor NODE] | show|start|stop|poweroff|reboot|delete|console VM
  rackboot gpu list [--below] [--model M]
                                      the GPUs of every node's latest burn-in, TFLOP/s and memory GB/s
                                      beside the median of the other cards of their model; --below: only
                                      those under the threshold (default 90%) of it
  rackboot token create --name N --role admin|tech|readonly [--ttl 720h]
                                      print a new API token (shown once)
  rackboot token list|delete          API tokens (admin)
  rackboot token rotate-bootstrap [--data-dir DIR] [--db URL]
                                      on the appliance: a new DATA_DIR/admin.token; the old one dies
  rackboot secrets rotate [--data-dir DIR] [--db URL] [--secret-key-file F] [--drop-old]
                                      on the appliance: a new key for BMC passwords; re-encrypts them all
  rackboot user add NAME --role R [--password-file F]
                                      add a web UI user or reset their password
  rackboot user list|delete           web UI users (admin)
  rackboot ramdisk build [--arch amd64|arm64|all] [--data-dir DIR] [--mirror URL]
                                      build the agent ramdisks (Debian kernel + u-root initrd) into DATA_DIR/artifacts
  rackboot backup FILE [--data-dir DIR]
                                      on the appliance: a consistent copy of the SQLite database, while it serves
  rackboot restore FILE [--data-dir DIR]
                                      on the appliance, server stopped: put a backup in place as the database
  rackboot lab [flags]                a virtual rack of QEMU nodes booting through rackboot (root)
  rackboot version                    print the version

` + clientHelp + `

Run "rackboot COMMAND -h" for a command's flags.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "rackboot:", err)
		var u usageError
		if errors.As(err, &u) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

type usageError struct{ msg string }

func (u usageError) Error() string { return u.msg }

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return usageError{"no command"}
	}
	switch args[0] {
	case "serve":
		return serve(ctx, args[1:], stderr)
	case "firmware":
		return firmwareCmd(ctx, args[1:], stdout, stderr)
	case "node":
		return nodeCmd(ctx, args[1:], os.Stdin, stdout, stderr)
	case "image":
		return imageCmd(ctx, args[1:], stdout, stderr)
	case "token":
		return tokenCmd(ctx, args[1:], stdout, stderr)
	case "hypervisor":
		return hypervisorCmd(ctx, args[1:], stdout, stderr)
	case "flavor":
		return flavorCmd(ctx, args[1:], stdout, stderr)
	case "vm":
		return vmCmd(ctx, args[1:], stdout, stderr)
	case "gpu":
		return gpuCmd(ctx, args[1:], stdout, stderr)
	case "user":
		return userCmd(ctx, args[1:], os.Stdin, stdout, stderr)
	case "backup", "restore":
		return backupCmd(ctx, args[0], args[1:], stdout, stderr)
	case "secrets":
		return secretsCmd(ctx, args[1:], stdout, stderr)
	case "lab":
		return labCmd(ctx, args[1:], stdout, stderr)
	case "ramdisk":
		return ramdiskCmd(ctx, args[1:], stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, "rackboot", version)
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return usageError{fmt.Sprintf("unknown command %q", args[0])}
}
