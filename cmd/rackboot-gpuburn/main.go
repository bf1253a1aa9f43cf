// Command rackboot-gpuburn loads every NVIDIA GPU through the CUDA driver
// API for a while, checks what they computed, and prints a JSON report per
// GPU on stdout: errors counted, TFLOP/s, memory bandwidth. It exits 0
// when it ran, errors counted or not (the burn-in judges them), and
// non-zero, with the reason on stderr (and in the report's "error" or a
// GPU's "failed"), when the driver could not be loaded or a call failed.
//
// It is separate from the agent because it loads libcuda.so.1 at run
// time: it needs the C library and the dynamic loader a driver overlay
// brings, where the agent stays static.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/rackboot/rackboot/agent/gpuburn"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "rackboot-gpuburn:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("rackboot-gpuburn", flag.ContinueOnError)
	secs := fs.Float64("seconds", 60, "how long to load each GPU")
	lib := fs.String("lib", "libcuda.so.1", "the CUDA driver library")
	devices := fs.String("devices", "", "CUDA device ordinals to load, comma-separated (default all)")
	blocks := fs.Int("blocks", 0, "kernel grid blocks (default 2048)")
	threads := fs.Int("threads", 0, "threads per block (default 256)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *secs < 0 {
		return fmt.Errorf("--seconds %g: negative", *secs)
	}
	o := gpuburn.Options{Lib: *lib, Duration: time.Duration(*secs * float64(time.Second)), Blocks: *blocks, Threads: *threads}
	if *devices != "" {
		for _, s := range strings.Split(*devices, ",") {
			i, err := strconv.Atoi(strings.TrimSpace(s))
			if err != nil {
				return fmt.Errorf("--devices %q: %w", *devices, err)
			}
			o.Devices = append(o.Devices, i)
		}
	}
	// CUDA's default order is fastest first; PCI order matches what
	// nvidia-smi and the inventory list.
	os.Setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := gpuburn.Run(ctx, o)
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if jerr := enc.Encode(rep); jerr != nil && err == nil {
		err = fmt.Errorf("write the report: %w", jerr)
	}
	return err
}
