package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/rackboot/rackboot/api"
	"github.com/rackboot/rackboot/appliance"
	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/hypervisor"
)

// gpuFlag parses --gpu MODE[:PROFILE] for hypervisors (vgpu TYPE, mig
// LAYOUT) and flavors (mig PROFILE, vgpu TYPE, passthrough).
func gpuFlag(s string) (mode, profile string) {
	mode, profile, _ = strings.Cut(s, ":")
	return mode, profile
}

func archList(s string) []boot.Arch {
	out := []boot.Arch{}
	for _, a := range strings.Split(s, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, boot.Arch(a))
		}
	}
	return out
}

func hypervisorCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageError{"hypervisor: want add, set, drain, undrain, list, show, agent-token or remove"}
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("hypervisor "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := clientFlags(fs)
	var f struct {
		uri, gpu, emulated, bridge, pool string
		vgpuMax, vlan                    int
		cpuRatio, ramRatio               float64
		reserved                         int64
		noKVM                            bool
	}
	if sub == "add" || sub == "set" {
		fs.StringVar(&f.uri, "uri", "", "the libvirt endpoint: qemu+tls://HOST/system, qemu+tcp://HOST/system, qemu+ssh://USER@HOST/system or qemu+unix:///system?socket=PATH")
		fs.StringVar(&f.gpu, "gpu", "", "how its GPUs are offered: passthrough, vgpu:TYPE (with --vgpu-max), mig:LAYOUT (e.g. mig:3g.40gb,2g.20gb,1g.10gb,1g.10gb), or none")
		fs.IntVar(&f.vgpuMax, "vgpu-max", 0, "vGPU instances of the type one GPU holds")
		fs.Float64Var(&f.cpuRatio, "cpu-allocation-ratio", 0, "vCPUs per host CPU (default Nova's 16)")
		fs.Float64Var(&f.ramRatio, "ram-allocation-ratio", 0, "memory overcommit (default Nova's 1.5)")
		fs.Int64Var(&f.reserved, "reserved-host-memory-mb", 0, "memory kept for the host (default Nova's 512)")
		fs.StringVar(&f.emulated, "emulated", "", "architectures it may run under TCG, comma-separated (x86_64,aarch64)")
		fs.BoolVar(&f.noKVM, "no-kvm", false, "run every VM under TCG even where libvirt offers KVM")
		fs.StringVar(&f.bridge, "bridge", "", "the host bridge VM NICs join")
		fs.IntVar(&f.vlan, "vlan", 0, "tag the VMs' ports with this VLAN (the bridge is then an Open vSwitch bridge)")
		fs.StringVar(&f.pool, "pool", "", "the libvirt storage pool of VM disks (default \"default\")")
	}
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	if sub != "list" && len(pos) != 1 {
		return usageError{"hypervisor " + sub + ": which node? (id, name or MAC)"}
	}
	var out api.Hypervisor
	show := func(h api.Hypervisor) error {
		return c.print(stdout, h, func(tw *tabwriter.Writer) { showHypervisor(tw, h) })
	}
	switch sub {
	case "list":
		var l api.HypervisorList
		if err := c.do(ctx, "GET", "/api/v1/hypervisors", nil, &l); err != nil {
			return err
		}
		return c.print(stdout, l, func(tw *tabwriter.Writer) {
			fmt.Fprintln(tw, "NODE\tNAME\tARCH\tGPU MODE\tVMS\tVCPUS USED/FREE\tMEMORY MIB USED/FREE\tGPUS USED/FREE\tPARTITIONS USED/FREE\tDRAINED")
			for _, h := range l.Items {
				u := h.Usage
				if u == nil {
					u = &api.Usage{}
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d/%d\t%d/%d\t%d/%d\t%d/%d\t%v\n", h.Node, orDash(h.Name), h.Arch, orDash(strings.TrimSpace(h.Settings.GPUMode+" "+h.Settings.GPUProfile)),
					len(h.VMs), u.VCPUs, u.VCPUsFree, u.MemoryMiB, u.MemoryFreeMiB, u.GPUs, u.GPUsFree, u.Partitions+u.VGPUs, u.PartitionsFree+u.VGPUsFree, h.Settings.Drained)
			}
			t := l.Total
			fmt.Fprintf(tw, "total\t\t\t\t%d\t%d/%d\t%d/%d\t%d/%d\t%d/%d\t\n", t.VMs, t.VCPUs, t.VCPUsFree, t.MemoryMiB, t.MemoryFreeMiB, t.GPUs, t.GPUsFree, t.Partitions+t.VGPUs, t.PartitionsFree+t.VGPUsFree)
		})
	case "show":
		if err := c.do(ctx, "GET", "/api/v1/hypervisors/"+url.PathEscape(pos[0]), nil, &out); err != nil {
			return err
		}
		return show(out)
	case "add":
		if f.uri == "" || f.bridge == "" {
			return usageError{"hypervisor add: --uri and --bridge are needed"}
		}
		in := api.HypervisorSettings{URI: f.uri, VGPUMax: f.vgpuMax, CPURatio: f.cpuRatio, RAMRatio: f.ramRatio, ReservedMiB: f.reserved,
			Emulated: archList(f.emulated), NoKVM: f.noKVM, Bridge: f.bridge, VLAN: f.vlan, Pool: f.pool}
		if f.gpu != "none" {
			in.GPUMode, in.GPUProfile = gpuFlag(f.gpu)
		}
		if err := c.do(ctx, "PUT", "/api/v1/hypervisors/"+url.PathEscape(pos[0]), in, &out); err != nil {
			return err
		}
		return show(out)
	case "set":
		var p api.HypervisorPatch
		if set["uri"] {
			p.URI = &f.uri
		}
		if set["gpu"] {
			mode, profile := gpuFlag(f.gpu)
			if mode == "none" {
				mode = ""
			}
			p.GPUMode, p.GPUProfile = &mode, &profile
		}
		if set["vgpu-max"] {
			p.VGPUMax = &f.vgpuMax
		}
		if set["cpu-allocation-ratio"] {
			p.CPURatio = &f.cpuRatio
		}
		if set["ram-allocation-ratio"] {
			p.RAMRatio = &f.ramRatio
		}
		if set["reserved-host-memory-mb"] {
			p.ReservedMiB = &f.reserved
		}
		if set["emulated"] {
			e := archList(f.emulated)
			p.Emulated = &e
		}
		if set["no-kvm"] {
			p.NoKVM = &f.noKVM
		}
		if set["bridge"] {
			p.Bridge = &f.bridge
		}
		if set["pool"] {
			p.Pool = &f.pool
		}
		if set["vlan"] {
			p.VLAN = &f.vlan
		}
		if err := c.do(ctx, "PATCH", "/api/v1/hypervisors/"+url.PathEscape(pos[0]), p, &out); err != nil {
			return err
		}
		return show(out)
	case "drain", "undrain":
		on := sub == "drain"
		if err := c.do(ctx, "PATCH", "/api/v1/hypervisors/"+url.PathEscape(pos[0]), api.HypervisorPatch{Drained: &on}, &out); err != nil {
			return err
		}
		return show(out)
	case "remove":
		return c.do(ctx, "DELETE", "/api/v1/hypervisors/"+url.PathEscape(pos[0]), nil, nil)
	case "agent-token":
		var t api.HypervisorAgentToken
		if err := c.do(ctx, "POST", "/api/v1/hypervisors/"+url.PathEscape(pos[0])+"/agent-token", nil, &t); err != nil {
			return err
		}
		return c.print(stdout, t, func(tw *tabwriter.Writer) {
			fmt.Fprintf(tw, "token\t%s\t(shown once: put it in %s, mode 0600)\n", t.Token, hypervisor.AgentTokenPath)
			fmt.Fprintf(tw, "config\t%s\t(%s)\n", t.Config, hypervisor.AgentConfigPath)
			fmt.Fprintf(tw, "agent\t%s\t(sha256 %s, to %s; run as %s)\n", t.Binary, t.SHA256, hypervisor.AgentBinaryPath, hypervisor.AgentUnit)
		})
	}
	return usageError{"hypervisor: unknown subcommand " + sub}
}

func showHypervisor(tw *tabwriter.Writer, h api.Hypervisor) {
	fmt.Fprintf(tw, "node\t%s\nname\t%s\narch\t%s\nuri\t%s\n", h.Node, orDash(h.Name), h.Arch, h.Settings.URI)
	fmt.Fprintf(tw, "gpu mode\t%s\n", orDash(strings.TrimSpace(h.Settings.GPUMode+" "+h.Settings.GPUProfile)))
	fmt.Fprintf(tw, "native (kvm)\t%v\nemulated (tcg)\t%v\nbridge\t%s\n", h.Native, h.Settings.Emulated, orDash(h.Settings.Bridge))
	if h.Settings.VLAN != 0 {
		fmt.Fprintf(tw, "vlan\t%d\n", h.Settings.VLAN)
	}
	fmt.Fprintf(tw, "pool\t%s\ndrained\t%v\n", h.Settings.Pool, h.Settings.Drained)
	fmt.Fprintf(tw, "ratios\tcpu %g, ram %g, reserved %d MiB (0: Nova's defaults)\n", h.Settings.CPURatio, h.Settings.RAMRatio, h.Settings.ReservedMiB)
	if h.Unplaceable != "" {
		fmt.Fprintf(tw, "takes no VMs\t%s\n", h.Unplaceable)
	}
	if u := h.Usage; u != nil {
		fmt.Fprintf(tw, "vcpus used/free\t%d/%d\nmemory MiB used/free\t%d/%d\ngpus used/free\t%d/%d\n", u.VCPUs, u.VCPUsFree, u.MemoryMiB, u.MemoryFreeMiB, u.GPUs, u.GPUsFree)
		if u.Partitions+u.PartitionsFree > 0 {
			fmt.Fprintf(tw, "mig partitions used/free\t%d/%d\n", u.Partitions, u.PartitionsFree)
		}
		if u.VGPUs+u.VGPUsFree > 0 {
			fmt.Fprintf(tw, "vgpus used/free\t%d/%d\n", u.VGPUs, u.VGPUsFree)
		}
	}
	var names []string
	for _, v := range h.VMs {
		names = append(names, v.Name)
	}
	fmt.Fprintf(tw, "vms\t%s\n", orDash(strings.Join(names, ", ")))
	if a := h.Agent; a != nil {
		state := "seen " + a.Seen.Format(time.RFC3339)
		if a.Stale {
			state += " (silent since)"
		}
		fmt.Fprintf(tw, "agent\t%s, booted %s, applied %s\n", state, a.Booted.Format(time.RFC3339), orDash(a.Applied))
		if a.GPUs != nil {
			for _, g := range a.GPUs.GPUs {
				fmt.Fprintf(tw, "  gpu %d\t%s %s: mig %s, %d MIG instances, %d mdevs\n", g.Index, g.PCIAddress, orDash(g.Name), g.MIGMode, len(g.Instances), len(g.Mdevs))
			}
		}
		for _, e := range a.Errors {
			fmt.Fprintf(tw, "  agent error\t%s\n", e)
		}
	} else {
		fmt.Fprintf(tw, "agent\tnever called in\n")
	}
}

func flavorCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageError{"flavor: want create, list or delete"}
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("flavor "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := clientFlags(fs)
	var in api.Flavor
	var arch, gpu, mem string
	if sub == "create" {
		fs.IntVar(&in.VCPUs, "vcpus", 1, "virtual CPUs")
		fs.StringVar(&mem, "memory", "2GiB", "memory (MiB, or with a unit: 64GiB)")
		fs.IntVar(&in.DiskGiB, "disk", 20, "disk GiB")
		fs.StringVar(&arch, "arch", "x86_64", "x86_64 or aarch64")
		fs.StringVar(&gpu, "gpu", "", "passthrough, vgpu:TYPE or mig:PROFILE (e.g. mig:3g.40gb)")
		fs.StringVar(&in.GPUModel, "gpu-model", "", "only GPUs whose model contains this (A100, H100 NVL)")
		fs.IntVar(&in.GPUCount, "gpu-count", 1, "GPUs of a passthrough flavor")
	}
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	switch sub {
	case "list":
		var l api.FlavorList
		if err := c.do(ctx, "GET", "/api/v1/flavors", nil, &l); err != nil {
			return err
		}
		return c.print(stdout, l, func(tw *tabwriter.Writer) {
			fmt.Fprintln(tw, "NAME\tARCH\tVCPUS\tMEMORY MIB\tDISK GIB\tGPU")
			for _, f := range l.Items {
				fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%s\n", f.Name, f.Arch, f.VCPUs, f.MemoryMiB, f.DiskGiB, orDash(flavorGPU(f)))
			}
		})
	case "create":
		if len(pos) != 1 {
			return usageError{"flavor create: one NAME"}
		}
		in.Name, in.Arch = pos[0], boot.Arch(arch)
		size, err := parseMiB(mem)
		if err != nil {
			return usageError{"flavor create: --memory: " + err.Error()}
		}
		in.MemoryMiB = size
		in.GPUMode, in.GPUProfile = gpuFlag(gpu)
		if in.GPUMode == "" {
			in.GPUCount = 0
		}
		var out api.Flavor
		if err := c.do(ctx, "POST", "/api/v1/flavors", in, &out); err != nil {
			return err
		}
		return c.print(stdout, out, func(tw *tabwriter.Writer) {
			fmt.Fprintf(tw, "name\t%s\narch\t%s\nvcpus\t%d\nmemory MiB\t%d\ndisk GiB\t%d\ngpu\t%s\n", out.Name, out.Arch, out.VCPUs, out.MemoryMiB, out.DiskGiB, orDash(flavorGPU(out)))
		})
	case "delete":
		if len(pos) != 1 {
			return usageError{"flavor delete: one NAME"}
		}
		return c.do(ctx, "DELETE", "/api/v1/flavors/"+url.PathEscape(pos[0]), nil, nil)
	}
	return usageError{"flavor: unknown subcommand " + sub}
}

// parseMiB reads a memory size: a plain number is MiB.
func parseMiB(s string) (int64, error) {
	var n int64
	if _, err := fmt.Sscanf(s, "%d", &n); err == nil && fmt.Sprint(n) == s {
		return n, nil
	}
	b, err := appliance.ParseSize(s)
	if err != nil {
		return 0, err
	}
	return b >> 20, nil
}

func flavorGPU(f api.Flavor) string {
	switch f.GPUMode {
	case "":
		return ""
	case "passthrough":
		return fmt.Sprintf("passthrough %s ×%d", f.GPUModel, f.GPUCount)
	}
	return strings.TrimSpace(fmt.Sprintf("%s %s %s", f.GPUMode, f.GPUProfile, f.GPUModel))
}

func vmCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageError{"vm: want create, list, show, start, stop, poweroff, reboot, delete or console"}
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("vm "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := clientFlags(fs)
	var in api.NewVM
	var hypervisor string
	if sub == "create" {
		fs.StringVar(&in.Flavor, "flavor", "", "the VM's flavor (required)")
		fs.StringVar(&in.Image, "image", "", "the image it is deployed with (its architecture must be the flavor's)")
		fs.StringVar(&in.Hypervisor, "hypervisor", "", "place it on this hypervisor only")
		fs.BoolVar(&in.DryRun, "dry-run", false, "print where it would go and its domain XML; create nothing")
	}
	if sub == "list" {
		fs.StringVar(&hypervisor, "hypervisor", "", "only the VMs of this hypervisor")
	}
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if sub != "list" && len(pos) != 1 {
		return usageError{"vm " + sub + ": which VM? (id, name or MAC)"}
	}
	show := func(v api.VM) error {
		return c.print(stdout, v, func(tw *tabwriter.Writer) { showVM(tw, v) })
	}
	var out api.VM
	switch sub {
	case "list":
		q := ""
		if hypervisor != "" {
			q = "?hypervisor=" + url.QueryEscape(hypervisor)
		}
		var l api.VMList
		if err := c.do(ctx, "GET", "/api/v1/vms"+q, nil, &l); err != nil {
			return err
		}
		return c.print(stdout, l, func(tw *tabwriter.Writer) {
			fmt.Fprintln(tw, "NAME\tID\tHYPERVISOR\tNODE STATE\tARCH\tVCPUS\tMEMORY MIB\tGPU\tMAC")
			for _, v := range l.Items {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\n", v.Name, v.ID, orDash(v.Hypervisor.Name), v.NodeState, v.Arch, v.VCPUs, v.MemoryMiB, orDash(vmGPU(v)), v.MAC)
			}
		})
	case "create":
		if in.Flavor == "" {
			return usageError{"vm create: --flavor is needed"}
		}
		in.Name = pos[0]
		if err := c.do(ctx, "POST", "/api/v1/vms", in, &out); err != nil {
			return err
		}
		if in.DryRun && c.output == "table" {
			fmt.Fprintf(stdout, "# dry run: on hypervisor %s (%s); %s\n", orDash(out.Hypervisor.Name), out.Hypervisor.ID, out.Placement)
			_, err := io.WriteString(stdout, out.XML)
			return err
		}
		return show(out)
	case "show":
		if err := c.do(ctx, "GET", "/api/v1/vms/"+url.PathEscape(pos[0]), nil, &out); err != nil {
			return err
		}
		return show(out)
	case "start", "stop", "poweroff", "reboot":
		if err := c.do(ctx, "POST", "/api/v1/vms/"+url.PathEscape(pos[0])+"/actions/"+sub, nil, &out); err != nil {
			return err
		}
		return show(out)
	case "delete":
		return c.do(ctx, "DELETE", "/api/v1/vms/"+url.PathEscape(pos[0]), nil, nil)
	case "console":
		return c.stream(ctx, "/api/v1/vms/"+url.PathEscape(pos[0])+"/console", stdout)
	}
	return usageError{"vm: unknown subcommand " + sub}
}

func vmGPU(v api.VM) string {
	var parts []string
	for _, d := range v.Devices {
		if d.Kind == "group" {
			continue
		}
		parts = append(parts, strings.TrimSpace(d.Kind+" "+d.Profile+" "+d.GPU))
	}
	return strings.Join(parts, ", ")
}

func showVM(tw *tabwriter.Writer, v api.VM) {
	fmt.Fprintf(tw, "name\t%s\nid\t%s\nhypervisor\t%s (%s)\n", v.Name, v.ID, orDash(v.Hypervisor.Name), v.Hypervisor.ID)
	if v.State != "" {
		fmt.Fprintf(tw, "state\t%s\n", v.State)
	}
	fmt.Fprintf(tw, "node state\t%s\narch\t%s\nvcpus\t%d\nmemory MiB\t%d\ndisk GiB\t%d (volume %s)\nmac\t%s\nuuid\t%s\n",
		v.NodeState, v.Arch, v.VCPUs, v.MemoryMiB, v.DiskGiB, v.Volume, v.MAC, v.UUID)
	fmt.Fprintf(tw, "flavor\t%s\nimage\t%s\ngpu\t%s\nplacement\t%s\n", orDash(v.Flavor), orDash(v.Image), orDash(vmGPU(v)), v.Placement)
}

// stream copies a streamed answer (a console) to w until ctx ends or the
// server ends it.
func (c *client) stream(ctx context.Context, path string, w io.Writer) error {
	if err := c.resolve(ctx); err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, "GET", strings.TrimRight(c.server, "/")+path, nil)
	if err != nil {
		return err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	hc := *c.http
	hc.Timeout = 0 // a console lasts as long as its reader
	resp, err := hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("GET %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		var e api.ErrorBody
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if json.Unmarshal(b, &e) == nil && e.Error.Message != "" {
			return &apiError{Status: resp.StatusCode, ErrorDetail: e.Error}
		}
		return fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	_, err = io.Copy(w, resp.Body)
	if ctx.Err() != nil || errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}
