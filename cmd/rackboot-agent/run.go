package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/rackboot/rackboot/agent"
	"github.com/rackboot/rackboot/agent/deploy"
	"github.com/rackboot/rackboot/agent/inventory"
	"github.com/rackboot/rackboot/agent/kmod"
	"github.com/rackboot/rackboot/agent/netup"
	"github.com/rackboot/rackboot/agent/protocol"
	"golang.org/x/sys/unix"
)

// Banner starts the console line the agent prints once it knows where
// its API is; the lab and the end-to-end tests watch for it.
const Banner = "rackboot-agent: serving node"

// runOptions is what the run subcommand reads from its flags.
type runOptions struct {
	cmdline  string
	api      string
	node     string
	modules  bool
	network  bool
	reboot   bool
	logLevel slog.Level
	// stall is how long an image download may receive nothing; disk how
	// long a disk operation may hang before the disk counts as wedged.
	stall, disk time.Duration
	// supervise runs the serving part in a child process, started again
	// when it dies; keep is where its token outlives it.
	supervise bool
	keep      string
	args      []string
	// proc is where /proc is ("" for /proc); started is told each child
	// the supervisor starts (tests).
	proc    string
	started func(*os.Process)
}

// keepFile is where the agent keeps its token for the rest of the boot:
// the ramdisk lives in memory, so it ends with the boot.
const keepFile = "/run/rackboot-agent/token"

func runAgent(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o runOptions
	fs.StringVar(&o.cmdline, "cmdline", "/proc/cmdline", "file holding the kernel command line (rackboot.api=URL rackboot.node=ID rackboot.boot=SECRET)")
	fs.StringVar(&o.api, "api", "", "the API URL, instead of rackboot.api= from the command line")
	fs.StringVar(&o.node, "node", "", "the node id, instead of rackboot.node= from the command line")
	fs.BoolVar(&o.modules, "modules", true, "load the kernel modules for the hardware found in /sys")
	fs.BoolVar(&o.network, "network", true, "bring up every physical NIC and run DHCP on them")
	fs.BoolVar(&o.reboot, "reboot", true, "reboot the machine after a successful deploy (into its disk)")
	fs.DurationVar(&o.stall, "download-stall", deploy.DefaultStallTimeout, "give up an image download's connection that sends nothing for this long, and resume on a new one")
	fs.DurationVar(&o.disk, "disk-timeout", deploy.DefaultDiskTimeout, "fail a deploy whose disk has not finished one write, the flush or a read of the verification for this long (a wedged disk): the task is reported failed while the stuck I/O stays in the kernel")
	fs.BoolVar(&o.supervise, "supervise", true, "serve from a child process, started again when it dies (a crash, the OOM killer): the task it had is handed to the new one")
	fs.StringVar(&o.keep, "keep", keepFile, "file that keeps the agent's token for the rest of the boot, for an agent started again (\"\": none)")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: rackboot-agent run [flags]\n\nThe ramdisk's init program: loads drivers, brings the network up and serves the node's tasks.")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	if err := o.logLevel.UnmarshalText([]byte(*level)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	// The child gets the flags as parsed, not the words given: what
	// parsed here (a trailing "--", say) must parse there too.
	fs.Visit(func(f *flag.Flag) { o.args = append(o.args, "--"+f.Name+"="+f.Value.String()) })
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: o.logLevel}))
	return serve(ctx, o, log, stdout, stderr)
}

// serve is the agent's life in the ramdisk. Nothing here gives up: a
// node with no console must keep trying until someone fixes the network
// or the server, so each step retries rather than returning.
func serve(ctx context.Context, o runOptions, log *slog.Logger, stdout, stderr io.Writer) error {
	start := time.Now()
	if o.modules {
		loader := &kmod.Loader{Logger: log.With("part", "kmod")}
		res, err := loader.Hardware()
		if err != nil {
			// Built-in drivers may still be enough to reach the server.
			log.Warn("load kernel modules", "err", err)
		}
		log.Info("kernel modules", "loaded", len(res.Loaded), "failed", len(res.Failed))
		for _, f := range res.Failed {
			log.Warn("module failed", "module", f.Module, "reason", f.Reason)
		}
		// ipmi_devintf matches no device, and ipmi_si's interface may be
		// described by SMBIOS alone: both are asked for by name.
		loadBMCModules(loader, log.With("part", "kmod"))
	}
	// Said on the console whatever happens next: with no driver for its
	// NIC the agent never reaches the API to report it.
	if o.modules {
		if inv, err := inventory.Read("/"); err == nil {
			for _, u := range inv.Unclaimed {
				fmt.Fprintf(stdout, "rackboot-agent: no driver for %s %s at %s (%s): the ramdisk has no module for it\n", u.Kind, u.ID, u.Address, u.Name)
			}
		}
	}
	var nics []netup.NIC
	if o.network {
		for wait := 5 * time.Second; ; wait = min(wait*2, time.Minute) {
			var err error
			nics, err = netup.Up(ctx, log.With("part", "net"), 10*time.Second, 30*time.Second)
			if err == nil {
				break
			}
			log.Warn("network not up, trying again", "err", err, "in", wait)
			if agent.Sleep(ctx, wait) != nil {
				return nil
			}
		}
	} else {
		var err error
		if nics, err = netup.Physical("/"); err != nil {
			return err
		}
	}
	cl, err := readCmdline(o)
	if err != nil {
		return err
	}
	if o.network && strings.HasPrefix(cl.API, "https://") {
		// TLS needs the random pool; say so rather than hang in silence.
		if err := netup.WaitCRNG(ctx, stdout, netup.CRNGReady); err != nil {
			return nil
		}
	}
	if o.supervise {
		return supervise(ctx, o, log, stdout, stderr)
	}
	var macs []string
	for _, n := range nics {
		macs = append(macs, n.MAC)
	}
	fmt.Fprintf(stdout, "%s %s via %s (macs %s) after %.1f s\n", Banner, cl.Node, cl.API, strings.Join(macs, ","), time.Since(start).Seconds())

	work := &agent.Work{Base: cl.Files, Arch: archName(), Disks: disks, GPUs: gpuCount, HTTP: cl.Client(0), StallTimeout: o.stall, DiskTimeout: o.disk}
	if o.keep != "" {
		if err := os.MkdirAll(filepath.Dir(o.keep), 0o700); err != nil {
			log.Warn("no place to keep the agent token", "err", err)
		}
	}
	a := &agent.Agent{
		API: cl.API, NodeID: cl.Node, BootSecret: cl.BootSecret, MACs: macs, Logger: log.With("part", "agent"), Keep: o.keep,
		HTTP: cl.Client(30 * time.Second),
		Inventory: func(ctx context.Context) (json.RawMessage, error) {
			inv, err := inventory.Read("/")
			if err != nil {
				return nil, err
			}
			addBMC(ctx, inv, openBMC)
			return json.Marshal(inv)
		},
		EnrollBMC: func(ctx context.Context) (protocol.BMCEnrollment, error) { return enrollBMC(ctx, openBMC) },
		Tasks:     work.Funcs(),
	}
	work.Token = a.Token
	if o.reboot {
		work.Reboot = reboot
		a.After = func(t protocol.Task, rep protocol.TaskReport) {
			if t.Kind == protocol.TaskDeploy && rep.State == protocol.Done {
				log.Info("deployed: rebooting into the disk")
				if err := reboot(); err != nil {
					log.Error("reboot", "err", err)
				}
			}
		}
	}
	for {
		err := a.Run(ctx)
		if ctx.Err() != nil {
			return nil
		}
		// Only a refused lookup ends Run; the server may be fixed.
		log.Error("agent stopped, starting again in a minute", "err", err)
		if agent.Sleep(ctx, time.Minute) != nil {
			return nil
		}
	}
}

// supervise runs the agent as a child process of this one, which has
// loaded the drivers and brought the network up, and starts it again
// whenever it ends: an agent that panicked or that the OOM killer took
// would otherwise leave the node silent until the server's agent
// timeout fails it. The new agent carries on with the token the old one
// kept (--keep), and the server hands it the task that was running. The
// OOM killer is told to spare this process, never the child.
func supervise(ctx context.Context, o runOptions, log *slog.Logger, stdout, stderr io.Writer) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("supervise the agent: %w", err)
	}
	adj := filepath.Join(cmp.Or(o.proc, "/proc"), "self", "oom_score_adj")
	// Flags given last win: the child does only the serving.
	args := append(append([]string{"run"}, o.args...), "--supervise=false", "--modules=false", "--network=false")
	wait := time.Second
	for {
		// The child inherits the score at its start: the OOM killer's
		// to take. This process is spared once the child runs, so a
		// write that fails leaves both open to it, never both closed.
		os.WriteFile(adj, []byte("0"), 0)
		cmd := exec.CommandContext(ctx, self, args...)
		cmd.Stdout, cmd.Stderr = stdout, stderr
		// Its own process group, ended with it: what it started (a GPU
		// load, say) must not run on beside the next agent.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		cmd.Cancel = func() error { return cmd.Process.Signal(unix.SIGTERM) }
		cmd.WaitDelay = 10 * time.Second
		started := time.Now()
		err := cmd.Start()
		if err == nil {
			if werr := os.WriteFile(adj, []byte("-1000"), 0); werr != nil {
				log.Warn("the agent's supervisor stays open to the OOM killer", "err", werr)
			}
			if o.started != nil {
				o.started(cmd.Process)
			}
			err = cmd.Wait()
			unix.Kill(-cmd.Process.Pid, unix.SIGKILL)
		}
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(started) > time.Minute {
			wait = time.Second
		}
		fmt.Fprintf(stdout, "rackboot-agent: the agent ended (%v) after %.1f s: starting it again in %s\n", err, time.Since(started).Seconds(), wait)
		if agent.Sleep(ctx, wait) != nil {
			return nil
		}
		wait = min(2*wait, 30*time.Second)
	}
}

func readCmdline(o runOptions) (agent.Cmdline, error) {
	var text string
	if o.cmdline != "" {
		b, err := os.ReadFile(o.cmdline)
		if err != nil && o.api == "" {
			return agent.Cmdline{}, fmt.Errorf("read kernel command line: %w", err)
		}
		text = string(b)
	}
	if o.api != "" {
		text += " rackboot.api=" + o.api
	}
	if o.node != "" {
		text += " rackboot.node=" + o.node
	}
	return agent.ParseCmdline(text)
}

// disks reads the disks afresh for each task: a disk may have come (a
// late driver) or gone since the inspection.
func disks() ([]deploy.Disk, error) {
	inv, err := inventory.Read("/")
	if err != nil {
		return nil, fmt.Errorf("list disks: %w", err)
	}
	var out []deploy.Disk
	for _, d := range inv.Disks {
		out = append(out, deploy.Disk{Name: d.Name, Size: d.Size, Model: d.Model, Vendor: d.Vendor, Serial: d.Serial,
			WWN: d.WWN, ByPath: d.ByPath, Rotational: d.Rotational})
	}
	if len(out) == 0 {
		return nil, errors.New("list disks: this node has no disk")
	}
	return out, nil
}

// gpuCount is how many GPUs the inventory finds, for the burn-in.
func gpuCount() int {
	inv, err := inventory.Read("/")
	if err != nil {
		return 0
	}
	return len(inv.GPUs)
}

// archName is the artifacts directory of this agent's architecture.
func archName() string {
	switch runtime.GOARCH {
	case "amd64":
		return "x86_64"
	case "arm64":
		return "aarch64"
	}
	return runtime.GOARCH
}

func reboot() error {
	unix.Sync()
	return unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
}
