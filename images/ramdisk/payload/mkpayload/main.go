// Command mkpayload cross-compiles the agent ramdisks' programs (see
// package payload) into images/ramdisk/payload/files, where the next
// build of rackboot embeds them. make build runs it from the module root.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"

	"github.com/rackboot/rackboot/images/ramdisk/payload"
)

func main() {
	out := flag.String("o", payload.Dir, "output directory: <goarch>/<name>.zst")
	arches := flag.String("arch", strings.Join(payload.Arches, ","), "Go architectures, comma-separated")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := payload.Compile(ctx, payload.Options{Dir: *out, Arches: strings.Split(*arches, ","), Logger: log}); err != nil {
		fmt.Fprintln(os.Stderr, "mkpayload:", err)
		os.Exit(1)
	}
}
