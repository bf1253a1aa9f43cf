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
  rackboot node show NODE             show one node (id, name or MAC)
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
  rackboot node inspect|release|reboot NODE [--reason TEXT]
  rackboot node deploy NODE --image NAME
  rackboot node wipe NODE [--method quick|full]
  rackboot node burnin NODE [--duration 30m]
  rackboot node maintenance NODE on|off [--reason TEXT]
  rackboot node delete NODE           forget a node (admin)
  rackboot image add NAME --arch x86_64|aarch64 (--file PATH | --url URL) [--sha256 HEX]
                                      add an image (raw, .gz, .zst, .xz; qcow2 is converted)
  rackboot image list|show|delete     the image catalog
  rackboot image build --arch x86_64|aarch64 --output FILE
                                      write a small bootable GPT disk image
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
