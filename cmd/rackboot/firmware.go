package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sort"

	"github.com/rackboot/rackboot/appliance"
	"github.com/rackboot/rackboot/firmware"
)

func firmwareCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "fetch" && args[0] != "verify") {
		return usageError{"firmware: want fetch or verify"}
	}
	fs := flag.NewFlagSet("firmware "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data-dir", "data", "data dir; loaders go to DATA_DIR/firmware")
	mirror := fs.String("mirror", "", "Debian archive URL (default: from the host's apt configuration)")
	suite := fs.String("suite", "", "Debian release, e.g. bookworm (default: from the host's apt configuration)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	dir := filepath.Join(*dataDir, appliance.FirmwareDir)
	if args[0] == "verify" {
		if err := firmware.VerifyWanted(dir, firmware.Loaders()); err != nil {
			return err
		}
		fmt.Fprintln(stdout, "firmware verified:", dir)
		return nil
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	m, err := firmware.Fetch(ctx, firmware.Options{Mirror: *mirror, Suite: *suite, Dest: dir, Logger: log})
	if err != nil {
		return err
	}
	if err := firmware.VerifyWanted(dir, firmware.Loaders()); err != nil {
		return err
	}
	// AArch64 HTTP boot's GRUB is built, not downloaded; without
	// grub-mkimage the rest still serves.
	if _, err := firmware.BuildGRUBHTTP(ctx, firmware.Options{Mirror: *mirror, Suite: *suite, Dest: dir, Logger: log}); errors.Is(err, firmware.ErrNoGRUBMkimage) {
		log.Warn("AArch64 UEFI HTTP boot will not work: install grub-common and fetch again", "err", err)
	} else if err != nil {
		return err
	}
	if m, err = firmware.ReadManifest(dir); err != nil {
		return err
	}
	dests := make([]string, 0, len(m.Files))
	for d := range m.Files {
		dests = append(dests, d)
	}
	sort.Strings(dests)
	for _, d := range dests {
		e := m.Files[d]
		fmt.Fprintf(stdout, "%-26s %9d  %s  %s %s\n", d, e.Size, e.SHA256[:16], e.Package, e.Version)
	}
	fmt.Fprintf(stdout, "from %s %s into %s\n", m.Mirror, m.Suite, dir)
	return nil
}
