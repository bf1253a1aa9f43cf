package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"strings"
	"time"

	"github.com/rackboot/rackboot/agent/gpuconf"
	"github.com/rackboot/rackboot/agent/hypervisor"
)

func runHypervisor(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("hypervisor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	conf := fs.String("config", "/etc/rackboot/hypervisor.conf", "file holding rackboot.api=URL rackboot.node=ID rackboot.ca=PINS on one line")
	tokenFile := fs.String("token-file", "/etc/rackboot/hypervisor.token", "file holding the hypervisor token (mode 0600); read again when the server refuses the token")
	stateFile := fs.String("state-file", "/var/lib/rackboot/hypervisor-agent.json", "where the agent keeps what a restart must not forget: the passthrough GPUs VMs hold and the resets owed, the mdevs it made, the GPU mode it applied")
	root := fs.String("root", "/", "directory holding the host's /sys and /proc (a fake tree in tests)")
	smi := fs.String("nvidia-smi", "", "nvidia-smi's path (default: found on PATH)")
	once := fs.Bool("once", false, "call in once, apply the answer, print it as JSON and exit; non-zero when anything failed")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: rackboot-agent hypervisor [flags]\n\nThe service on a deployed GPU hypervisor: reports its GPUs to the rackboot API and applies\nthe MIG layout, vGPU devices and passthrough resets the answers ask for.")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(*level)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lv}))
	cl, token, err := hypervisor.LoadConfig(*conf, *tokenFile)
	if err != nil {
		return err
	}
	a := &hypervisor.Agent{
		API: cl.API, NodeID: cl.Node, Token: token, TokenFile: *tokenFile,
		HTTP:      cl.Client(30 * time.Second),
		GPUs:      &gpuconf.Host{Root: *root, SMI: *smi, Log: log.With("part", "gpuconf")},
		StateFile: *stateFile,
		Root:      *root,
		Logger:    log.With("part", "hypervisor"),
		Version:   buildVersion(),
	}
	if !*once {
		log.Info("hypervisor agent calling in", "api", cl.API, "node", cl.Node)
		return a.Run(ctx)
	}
	work, err := a.Round(ctx)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(work); err != nil {
		return err
	}
	if errs := a.LastErrors(); len(errs) > 0 {
		return errors.New("applying the answer: " + strings.Join(errs, "; "))
	}
	return nil
}

// buildVersion is the module version, or the VCS revision the binary was
// built from.
func buildVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" {
			return s.Value
		}
	}
	return bi.Main.Version
}
