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

const usage = `rackboot: network boot and provisioning for x86-64 and AArch64 servers

Usage:
  rackboot serve [flags]              run DHCP, TFTP, boot-time HTTP and the API
  rackboot firmware fetch [flags]     download and verify the boot loaders from Debian's archive
  rackboot firmware verify [flags]    check fetched boot loaders against their manifest
  rackboot node list                  list nodes
  rackboot node show NODE             show one node (id, name or MAC)
  rackboot node trace NODE            show a node's boots and where each one stopped
  rackboot node set NODE --secure-boot on|off|inherit
                                      choose the shim → GRUB path for an x86-64 UEFI node
  rackboot version                    print the version

Client commands take --server URL and --token TOKEN (or RACKBOOT_SERVER and
RACKBOOT_TOKEN; the token defaults to DATA_DIR/admin.token when readable) and
--output table|json.

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
		return nodeCmd(ctx, args[1:], stdout, stderr)
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
