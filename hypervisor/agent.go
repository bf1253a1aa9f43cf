package hypervisor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/rackboot/rackboot/agent/gpuconf"
	"github.com/rackboot/rackboot/agent/protocol"
	"github.com/rackboot/rackboot/hypervisor/placement"
	"github.com/rackboot/rackboot/store"
)

// How often a hypervisor's agent is asked to call in: soon while a VM
// waits for a device the agent has not reported yet, seldom otherwise.
const (
	AgentIntervalPending = 2 * time.Second
	AgentInterval        = 15 * time.Second
)

// AgentRound keeps what a hypervisor's agent reported and answers with
// the layout its GPUs must carry and the devices its VMs hold.
func (s *Service) AgentRound(ctx context.Context, nodeID string, rep protocol.HypervisorReport) (protocol.HypervisorWork, error) {
	h, err := s.Store.Hypervisor(ctx, nodeID)
	if err != nil {
		return protocol.HypervisorWork{}, fmt.Errorf("hypervisor agent %s: %w", nodeID, err)
	}
	if len(rep.GPUs) > 0 && string(rep.GPUs) != "null" {
		var st gpuconf.State
		if err := json.Unmarshal(rep.GPUs, &st); err != nil {
			return protocol.HypervisorWork{}, invalid("gpus: %v", err)
		}
	} else {
		rep.GPUs = nil
	}
	if len(rep.Errors) > 64 {
		rep.Errors = append(rep.Errors[:63], fmt.Sprintf("and %d more", len(rep.Errors)-63))
	}
	prev, perr := s.Store.HypervisorAgent(ctx, nodeID)
	a := store.HypervisorAgent{NodeID: nodeID, Booted: rep.Booted, Applied: rep.Applied, GPUs: rep.GPUs, Errors: rep.Errors, Version: rep.Version}
	a.Round, a.ErrorSince = prev.Round+1, errorSince(prev, rep.Errors)
	if err := s.Store.PutHypervisorAgent(ctx, a); err != nil {
		return protocol.HypervisorWork{}, err
	}
	if perr == nil && !prev.Booted.IsZero() && !rep.Booted.Equal(prev.Booted) {
		s.event(ctx, nodeID, "hypervisor:"+nodeID, "rebooted", fmt.Sprintf("the hypervisor booted at %s; its agent applied %q again", rep.Booted.Format(time.RFC3339), rep.Applied))
	}
	vms, err := s.Store.VMs(ctx, nodeID)
	if err != nil {
		return protocol.HypervisorWork{}, err
	}
	every := s.agentInterval()
	w := protocol.HypervisorWork{GPUMode: h.GPUMode, GPUProfile: h.GPUProfile, Devices: []protocol.HypervisorDevice{}, Interval: protocol.Duration(every)}
	have := reportedMdevs(rep.GPUs)
	vfs := reportedVFs(rep.GPUs)
	for _, vm := range vms {
		for _, d := range vm.Devices {
			switch d.Kind {
			case string(placement.Passthrough):
				w.Devices = append(w.Devices, protocol.HypervisorDevice{VM: vm.NodeID, Kind: protocol.DevicePassthrough, GPU: d.GPU})
			case string(placement.VGPU), string(placement.MIG):
				hd := protocol.HypervisorDevice{VM: vm.NodeID, Kind: d.Kind, GPU: d.GPU, Profile: mdevProfile(h, d), Mdev: d.Mdev, VF: VFOf(d)}
				w.Devices = append(w.Devices, hd)
				if !ready(hd, have, vfs) {
					w.Interval = protocol.Duration(min(every, AgentIntervalPending))
				}
			}
		}
	}
	sort.Slice(w.Devices, func(i, j int) bool {
		if w.Devices[i].GPU != w.Devices[j].GPU {
			return w.Devices[i].GPU < w.Devices[j].GPU
		}
		if w.Devices[i].VF != w.Devices[j].VF {
			return w.Devices[i].VF < w.Devices[j].VF
		}
		return w.Devices[i].Mdev < w.Devices[j].Mdev
	})
	return w, nil
}

// mdevProfile is what the agent makes a VM's mediated device of: the
// hypervisor's vGPU type, or the VM's MIG profile (the agent finds the
// MIG-backed vGPU type that carries it).
func mdevProfile(h store.Hypervisor, d store.VMDevice) string {
	if d.Kind == string(placement.VGPU) {
		return h.GPUProfile
	}
	return d.Profile
}

// reportedMdevs are the mediated devices a report says the cards carry.
func reportedMdevs(gpus json.RawMessage) map[string]bool {
	have := map[string]bool{}
	var st gpuconf.State
	if len(gpus) == 0 || json.Unmarshal(gpus, &st) != nil {
		return have
	}
	for _, g := range st.GPUs {
		for _, m := range g.Mdevs {
			have[strings.ToLower(m.UUID)] = true
		}
	}
	return have
}

// reportedVFs are the vendor VFIO virtual functions a report gives, by
// address.
func reportedVFs(gpus json.RawMessage) map[string]gpuconf.VF {
	out := map[string]gpuconf.VF{}
	var st gpuconf.State
	if len(gpus) == 0 || json.Unmarshal(gpus, &st) != nil {
		return out
	}
	for _, g := range st.GPUs {
		for _, v := range g.VFs {
			out[strings.ToLower(v.Address)] = v
		}
	}
	return out
}

// ready says whether a report shows a VM's vGPU device made: its mdev
// there, or its virtual function carrying its type.
func ready(d protocol.HypervisorDevice, mdevs map[string]bool, vfs map[string]gpuconf.VF) bool {
	if d.VF != "" {
		v, ok := vfs[strings.ToLower(d.VF)]
		return ok && gpuconf.Carries(v, d.Kind, d.Profile)
	}
	return mdevs[strings.ToLower(d.Mdev)]
}

// ErrDevices is a VM's mediated device its hypervisor's agent did not
// make in time, or said it could not make.
var ErrDevices = fmt.Errorf("%w: devices not ready", ErrHypervisor)

// DeviceWait is how long a VM's start waits for the hypervisor's agent to
// report its mediated devices: under the minute an API client waits for
// its answer.
const DeviceWait = 40 * time.Second

// errorReports is how many of the agent's reports must name a VM's device
// in an error before its start gives up early: the agent tries again on
// each round, and a first failure (the room of a device just removed not
// yet given back) often passes.
const errorReports = 3

// waitDevices waits until the hypervisor's agent, in a report it made
// lately, says the cards carry every mediated device the VM names, and
// every vendor VFIO virtual function it holds carries its vGPU type. A
// hypervisor whose agent never called in is managed by hand: its
// operator makes the devices, and libvirt says so when one is missing.
// An error naming a device, said in errorReports reports in a row made
// after the agent's round after, ends the wait early.
func (s *Service) waitDevices(ctx context.Context, vm store.VM, after int64) error {
	var devs []protocol.HypervisorDevice
	var want []string // how the devices are named, in the agent's errors too
	for _, d := range vm.Devices {
		if d.Kind != string(placement.VGPU) && d.Kind != string(placement.MIG) {
			continue
		}
		hd := protocol.HypervisorDevice{Kind: d.Kind, GPU: d.GPU, Profile: d.Profile, Mdev: strings.ToLower(d.Mdev), VF: strings.ToLower(VFOf(d))}
		switch {
		case hd.VF != "":
			want = append(want, hd.VF)
		case hd.Mdev != "":
			want = append(want, hd.Mdev)
		default:
			continue
		}
		devs = append(devs, hd)
	}
	if len(devs) == 0 {
		return nil
	}
	if _, err := s.Store.HypervisorAgent(ctx, vm.Hypervisor); errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if slices.ContainsFunc(devs, func(d protocol.HypervisorDevice) bool { return d.Kind == string(placement.VGPU) }) {
		// A vGPU's type is the hypervisor's, as the agent is told it.
		h, err := s.Store.Hypervisor(ctx, vm.Hypervisor)
		if err != nil {
			return err
		}
		for i := range devs {
			devs[i].Profile = mdevProfile(h, store.VMDevice{Kind: devs[i].Kind, Profile: devs[i].Profile})
		}
	}
	wait := s.DeviceWait
	if wait == 0 {
		wait = DeviceWait
	}
	// A report older than a few of the agent's rounds may predate a
	// reboot that took the devices away (the agent waits at least a
	// second between rounds, and a slow round takes seconds).
	fresh := 3*s.agentInterval() + 10*time.Second
	start := time.Now()
	deadline := start.Add(wait)
	for {
		a, err := s.Store.HypervisorAgent(ctx, vm.Hypervisor)
		if err != nil {
			return err
		}
		var missing []string
		if time.Since(a.Seen) <= fresh {
			have, vfs := reportedMdevs(a.GPUs), reportedVFs(a.GPUs)
			for i, d := range devs {
				if !ready(d, have, vfs) {
					missing = append(missing, want[i])
				}
			}
			if len(missing) == 0 {
				return nil
			}
			for i, e := range a.Errors {
				named := slices.ContainsFunc(missing, func(m string) bool { return strings.Contains(strings.ToLower(e), m) })
				if named && streak(a, i, after) >= errorReports {
					return fmt.Errorf("%w: the hypervisor's agent could not make mediated device or vGPU virtual function %s: %s", ErrDevices, strings.Join(missing, ", "), e)
				}
			}
		}
		if time.Now().After(deadline) {
			if len(missing) == 0 {
				return fmt.Errorf("%w: the hypervisor's agent is silent since %s: it has not reported mediated devices or vGPU virtual functions %s", ErrDevices, a.Seen.Format(time.RFC3339), strings.Join(want, ", "))
			}
			why := "it last called in " + a.Seen.Format(time.RFC3339)
			if len(a.Errors) > 0 {
				why += "; it said: " + strings.Join(a.Errors, "; ")
			}
			return fmt.Errorf("%w: the hypervisor's agent has not reported mediated devices or vGPU virtual functions %s within %s (%s)", ErrDevices, strings.Join(missing, ", "), wait, why)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// errorSince carries on the streak of each error the agent said in its
// previous report too; an error new in this report starts its own.
func errorSince(prev store.HypervisorAgent, errs []string) []int64 {
	since := make([]int64, len(errs))
	for i, e := range errs {
		since[i] = prev.Round + 1
		if j := slices.Index(prev.Errors, e); j >= 0 && j < len(prev.ErrorSince) {
			since[i] = prev.ErrorSince[j]
		}
	}
	return since
}

// streak is how many of the agent's reports in a row, made after round
// after, carried its i-th error.
func streak(a store.HypervisorAgent, i int, after int64) int64 {
	first := a.Round
	if i < len(a.ErrorSince) {
		first = a.ErrorSince[i]
	}
	return a.Round - max(first, after+1) + 1
}

func (s *Service) agentInterval() time.Duration {
	if s.AgentInterval == 0 {
		return AgentInterval
	}
	return s.AgentInterval
}

// AgentView is what a hypervisor's agent last said, for the API and UI.
type AgentView struct {
	Seen    time.Time      `json:"seen"`
	Booted  time.Time      `json:"booted,omitzero"`
	Applied string         `json:"applied"`
	Errors  []string       `json:"errors"`
	Version string         `json:"version,omitempty"`
	GPUs    *gpuconf.State `json:"gpus,omitempty"`
	// Stale says the agent has not called in for three of its intervals.
	Stale bool `json:"stale"`
	// ForeignVFs are the vendor VFIO virtual functions that carry a vGPU
	// type or are held open while none of the host's VMs holds them: an
	// operator's, not rackboot's, and no VM is placed on them.
	ForeignVFs []string `json:"foreign_vfs"`
}

// Agent is what hypervisor ref's agent last reported; ok is false when it
// never called in.
func (s *Service) Agent(ctx context.Context, nodeID string) (AgentView, bool, error) {
	a, err := s.Store.HypervisorAgent(ctx, nodeID)
	if errors.Is(err, store.ErrNotFound) {
		return AgentView{}, false, nil
	}
	if err != nil {
		return AgentView{}, false, err
	}
	vms, err := s.Store.VMs(ctx, nodeID)
	if err != nil {
		return AgentView{}, false, err
	}
	return s.agentView(a, vms), true, nil
}

// Agents is what every hypervisor's agent last reported, by node id, for
// those whose agent called in: two reads for the whole fleet.
func (s *Service) Agents(ctx context.Context) (map[string]AgentView, error) {
	fhs, _, byHost, err := s.readFleet(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string]AgentView{}
	for _, fh := range fhs {
		if fh.HasAgent {
			out[fh.Node.ID] = s.agentView(fh.Agent, byHost[fh.Node.ID])
		}
	}
	return out, nil
}

// agentView is report a of a hypervisor whose VMs are vms.
func (s *Service) agentView(a store.HypervisorAgent, vms []store.VM) AgentView {
	v := AgentView{Seen: a.Seen, Booted: a.Booted, Applied: a.Applied, Errors: slices.Clip(a.Errors), Version: a.Version,
		Stale: time.Since(a.Seen) > 3*s.agentInterval()}
	if v.Errors == nil {
		v.Errors = []string{}
	}
	if len(a.GPUs) > 0 {
		var st gpuconf.State
		if json.Unmarshal(a.GPUs, &st) == nil {
			v.GPUs = &st
		}
	}
	held := heldVFs(a.NodeID, vms)
	v.ForeignVFs = []string{}
	for card, vs := range VFs(a.GPUs) {
		for _, f := range vs {
			if _, ours := held[card][f.Address]; (f.Type != 0 || f.InUse) && !ours {
				v.ForeignVFs = append(v.ForeignVFs, f.Address)
			}
		}
	}
	slices.Sort(v.ForeignVFs)
	return v
}
