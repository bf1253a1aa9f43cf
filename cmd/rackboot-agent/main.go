// Command rackboot-agent runs in the node's ramdisk: it loads the drivers
// for the machine's hardware, brings its network up, and serves the node
// for the rackboot API (inspect, deploy, wipe, burn-in). Its inventory
// subcommand is also a hardware report for any Linux machine. Its
// hypervisor subcommand is a service on a deployed GPU hypervisor: it
// keeps the host's MIG layout, vGPUs and passthrough GPUs as the API
// asks (package hypervisor).
//
//	rackboot-agent run [--api URL] [--node ID]
//	rackboot-agent inventory [--root DIR] [--pci-ids FILE]
//	rackboot-agent hypervisor [--config FILE] [--token-file FILE] [--state-file FILE] [--once]
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/rackboot/rackboot/agent/inventory"
)

// command is one subcommand: it parses its own flags from args.
type command struct {
	name, summary string
	run           func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

func commands() []command {
	return []command{
		{"run", "serve this node: load drivers, bring the network up, take tasks from the API", runAgent},
		{"inventory", "print this machine's hardware inventory as JSON", runInventory},
		{"hypervisor", "keep a GPU hypervisor's MIG layout, vGPUs and passthrough GPUs as the API asks", runHypervisor},
	}
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: rackboot-agent <command> [flags]\n\ncommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nrackboot-agent <command> --help describes a command's flags.")
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case errors.Is(err, flag.ErrHelp):
	case errors.Is(err, errUsage):
		os.Exit(2)
	case err != nil:
		fmt.Fprintln(os.Stderr, "rackboot-agent:", err)
		os.Exit(1)
	}
}

var errUsage = errors.New("usage")

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		usage(stderr)
		return errUsage
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		usage(stdout)
		return flag.ErrHelp
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(ctx, args[1:], stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "rackboot-agent: unknown command %q\n", args[0])
	usage(stderr)
	return errUsage
}

// parseFlags parses a subcommand's flags, which take no arguments after
// them: help goes to stdout, a mistake to the usage on stderr.
func parseFlags(fs *flag.FlagSet, args []string, stdout io.Writer) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stdout)
			fs.Usage()
			return err
		}
		return errUsage
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return errUsage
	}
	return nil
}

func runInventory(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("inventory", flag.ContinueOnError)
	fs.SetOutput(stderr)
	root := fs.String("root", "/", "directory holding the machine's /sys, /proc and /dev (a recorded tree in tests)")
	ids := fs.String("pci-ids", "", "pci.ids file for device names (default: usr/share/misc/pci.ids under --root, then on this machine)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: rackboot-agent inventory [--root DIR] [--pci-ids FILE]")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	inv, err := inventory.Reader{Root: *root, PCIIDs: *ids}.Read()
	if err != nil {
		return err
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(inv)
}
