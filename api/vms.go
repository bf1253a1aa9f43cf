package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/hypervisor"
	"github.com/rackboot/rackboot/hypervisor/domain"
	"github.com/rackboot/rackboot/hypervisor/placement"
	"github.com/rackboot/rackboot/store"
)

// vmCallTimeout bounds one call to a hypervisor's libvirt from the API.
const vmCallTimeout = 2 * time.Minute

// Hypervisor is a hypervisor as the API shows it, with what it holds and
// has free, and its VMs (the ones to move when it is drained).
type Hypervisor struct {
	Node string `json:"node"`
	Name string `json:"name"`
	Arch string `json:"arch"`
	// Settings are what the operator set.
	Settings HypervisorSettings `json:"settings"`
	// Native are the architectures it runs under KVM.
	Native  []boot.Arch `json:"native"`
	Created time.Time   `json:"created"`
	Updated time.Time   `json:"updated"`
	Usage   *Usage      `json:"usage,omitempty"`
	// Unplaceable says why it takes no VMs (no inventory, over its
	// limits), when it takes none.
	Unplaceable string  `json:"unplaceable,omitempty"`
	VMs         []VMRef `json:"vms"`
	// Agent is what its agent (rackboot-agent hypervisor) last reported
	// of its GPUs; absent when none ever called in.
	Agent *hypervisor.AgentView `json:"agent,omitempty"`
}

// HypervisorSettings are what an operator sets on a hypervisor (PUT
// /api/v1/hypervisors/{id}).
type HypervisorSettings struct {
	// URI is the libvirt endpoint: qemu+tls://HOST/system,
	// qemu+tcp://HOST/system, qemu+ssh://USER@HOST/system or
	// qemu+unix:///system?socket=PATH.
	URI string `json:"uri"`
	// GPUMode is "", passthrough, vgpu or mig; GPUProfile the vGPU type
	// or the MIG layout (comma-separated profiles, one set per card).
	GPUMode    string `json:"gpu_mode,omitempty"`
	GPUProfile string `json:"gpu_profile,omitempty"`
	VGPUMax    int    `json:"vgpu_max,omitempty"`
	// Overcommit as Nova counts it; zero takes Nova's defaults (16, 1.5,
	// 512 MiB).
	CPURatio    float64 `json:"cpu_allocation_ratio,omitempty"`
	RAMRatio    float64 `json:"ram_allocation_ratio,omitempty"`
	ReservedMiB int64   `json:"reserved_host_memory_mb,omitempty"`
	// Emulated are the architectures it may run under TCG.
	Emulated []boot.Arch `json:"emulated"`
	// NoKVM runs every VM under TCG although libvirt offers KVM.
	NoKVM  bool   `json:"no_kvm,omitempty"`
	Bridge string `json:"bridge"`
	// VLAN tags the VMs' ports (an Open vSwitch bridge); 0 for none.
	VLAN    int    `json:"vlan,omitempty"`
	Pool    string `json:"pool"`
	Drained bool   `json:"drained"`
}

// HypervisorPatch changes some settings (PATCH /api/v1/hypervisors/{id});
// absent fields stay.
type HypervisorPatch struct {
	URI         *string      `json:"uri,omitempty"`
	GPUMode     *string      `json:"gpu_mode,omitempty"`
	GPUProfile  *string      `json:"gpu_profile,omitempty"`
	VGPUMax     *int         `json:"vgpu_max,omitempty"`
	CPURatio    *float64     `json:"cpu_allocation_ratio,omitempty"`
	RAMRatio    *float64     `json:"ram_allocation_ratio,omitempty"`
	ReservedMiB *int64       `json:"reserved_host_memory_mb,omitempty"`
	Emulated    *[]boot.Arch `json:"emulated,omitempty"`
	NoKVM       *bool        `json:"no_kvm,omitempty"`
	Bridge      *string      `json:"bridge,omitempty"`
	VLAN        *int         `json:"vlan,omitempty"`
	Pool        *string      `json:"pool,omitempty"`
	Drained     *bool        `json:"drained,omitempty"`
}

// Usage is what a hypervisor (or all of them) holds and has free; vCPUs
// and memory after overcommit and the host's reserve.
type Usage struct {
	VMs            int   `json:"vms"`
	VCPUs          int   `json:"vcpus"`
	VCPUsFree      int   `json:"vcpus_free"`
	MemoryMiB      int64 `json:"memory_mib"`
	MemoryFreeMiB  int64 `json:"memory_free_mib"`
	GPUs           int   `json:"gpus"`
	GPUsFree       int   `json:"gpus_free"`
	VGPUs          int   `json:"vgpus"`
	VGPUsFree      int   `json:"vgpus_free"`
	Partitions     int   `json:"partitions"`
	PartitionsFree int   `json:"partitions_free"`
}

func usageFrom(c placement.Counts) *Usage {
	return &Usage{VMs: c.VMs, VCPUs: c.VCPUs, VCPUsFree: c.VCPUsFree, MemoryMiB: c.MemoryMiB, MemoryFreeMiB: c.MemoryFreeMiB,
		GPUs: c.GPUs, GPUsFree: c.GPUsFree, VGPUs: c.VGPUs, VGPUsFree: c.VGPUsFree, Partitions: c.Partitions, PartitionsFree: c.PartitionsFree}
}

// HypervisorList is every hypervisor, and the fleet's totals.
type HypervisorList struct {
	Items []Hypervisor `json:"items"`
	Total *Usage       `json:"total"`
}

// VMRef names a VM.
type VMRef struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// Flavor is a named VM shape.
type Flavor struct {
	Name      string    `json:"name"`
	VCPUs     int       `json:"vcpus"`
	MemoryMiB int64     `json:"memory_mib"`
	DiskGiB   int       `json:"disk_gib"`
	Arch      boot.Arch `json:"arch"`
	// GPUMode is passthrough, vgpu or mig; GPUProfile the vGPU type or
	// MIG profile; GPUModel a substring of the GPU model ("A100").
	GPUModel   string    `json:"gpu_model,omitempty"`
	GPUMode    string    `json:"gpu_mode,omitempty"`
	GPUProfile string    `json:"gpu_profile,omitempty"`
	GPUCount   int       `json:"gpu_count,omitempty"`
	Created    time.Time `json:"created,omitzero"`
}

func (f Flavor) store() store.Flavor {
	return store.Flavor{Name: f.Name, VCPUs: f.VCPUs, MemoryMiB: f.MemoryMiB, DiskGiB: f.DiskGiB, Arch: f.Arch,
		GPUModel: f.GPUModel, GPUMode: f.GPUMode, GPUProfile: f.GPUProfile, GPUCount: f.GPUCount}
}

func flavorFrom(f store.Flavor) Flavor {
	return Flavor{Name: f.Name, VCPUs: f.VCPUs, MemoryMiB: f.MemoryMiB, DiskGiB: f.DiskGiB, Arch: f.Arch,
		GPUModel: f.GPUModel, GPUMode: f.GPUMode, GPUProfile: f.GPUProfile, GPUCount: f.GPUCount, Created: f.Created}
}

// FlavorList is every flavor.
type FlavorList struct {
	Items []Flavor `json:"items"`
}

// NewVM is the body of POST /api/v1/vms: a flavor, or a shape inline
// (flavor's fields but name), and an image; dry_run answers with the
// placement and the domain XML and creates nothing.
type NewVM struct {
	Name       string  `json:"name"`
	Flavor     string  `json:"flavor,omitempty"`
	Shape      *Flavor `json:"shape,omitempty"`
	Image      string  `json:"image,omitempty"`
	Hypervisor string  `json:"hypervisor,omitempty"`
	DryRun     bool    `json:"dry_run,omitempty"`
}

// VM is a VM as the API shows it.
type VM struct {
	ID         string    `json:"id"`
	Name       string    `json:"name"`
	Hypervisor VMRef     `json:"hypervisor"`
	State      string    `json:"state,omitempty"` // libvirt's, on show
	NodeState  string    `json:"node_state"`      // the node's lifecycle state
	Flavor     string    `json:"flavor,omitempty"`
	Image      string    `json:"image,omitempty"`
	Arch       boot.Arch `json:"arch"`
	VCPUs      int       `json:"vcpus"`
	MemoryMiB  int64     `json:"memory_mib"`
	DiskGiB    int       `json:"disk_gib"`
	NUMA       int       `json:"numa"` // -1: spread
	MAC        string    `json:"mac"`
	UUID       string    `json:"uuid"`
	Volume     string    `json:"volume"`
	// Placement is what the placement engine said of it.
	Placement string     `json:"placement"`
	Devices   []VMDevice `json:"devices"`
	Created   time.Time  `json:"created"`
	// XML is the domain, in a dry run's answer.
	XML string `json:"xml,omitempty"`
	// DryRun says nothing was created.
	DryRun bool `json:"dry_run,omitempty"`
}

// VMDevice is a host device a VM holds.
type VMDevice struct {
	Device  string `json:"device"`
	GPU     string `json:"gpu"`
	Kind    string `json:"kind"`
	Slot    int    `json:"slot"`
	Profile string `json:"profile,omitempty"`
	Mdev    string `json:"mdev,omitempty"`
	// VF is the virtual function that is the VM's vGPU on a card whose
	// driver offers vGPU through NVIDIA's vendor-specific VFIO framework
	// (then Device too, and no Mdev).
	VF string `json:"vf,omitempty"`
}

// VMList is a list of VMs.
type VMList struct {
	Items []VM `json:"items"`
}

func vmFrom(v store.VM, name string, host store.Node, nodeState store.State) VM {
	out := VM{ID: v.NodeID, Name: name, Hypervisor: VMRef{ID: host.ID, Name: host.Name}, NodeState: string(nodeState), Flavor: v.Flavor,
		Image: v.Image, Arch: v.Arch, VCPUs: v.VCPUs, MemoryMiB: v.MemoryMiB, DiskGiB: v.DiskGiB, NUMA: v.NUMA, MAC: v.MAC, UUID: v.UUID,
		Volume: v.Volume, Placement: v.Note, Devices: []VMDevice{}, Created: v.Created}
	if out.Hypervisor.ID == "" {
		out.Hypervisor.ID = v.Hypervisor
	}
	for _, d := range v.Devices {
		out.Devices = append(out.Devices, VMDevice{Device: d.Device, GPU: d.GPU, Kind: d.Kind, Slot: d.Slot, Profile: d.Profile, Mdev: d.Mdev, VF: hypervisor.VFOf(d)})
	}
	return out
}

// vms is the service, or an answer that there is none.
func (s *Server) vms(w http.ResponseWriter) (*hypervisor.Service, bool) {
	if s.VMs == nil {
		writeError(w, http.StatusNotImplemented, "not_implemented", "this server runs no VMs")
		return nil, false
	}
	return s.VMs, true
}

// failVM answers the service's errors; the rest as fail does.
func (s *Server) failVM(w http.ResponseWriter, r *http.Request, err error) {
	var refusal *placement.Refusal
	var spec *domain.SpecError
	switch {
	case errors.As(err, &refusal):
		writeError(w, http.StatusConflict, "no_host", refusal.Error())
	case errors.Is(err, hypervisor.ErrInvalid), errors.Is(err, placement.ErrInvalidRequest), errors.As(err, &spec):
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
	case errors.Is(err, placement.ErrConflict):
		writeError(w, http.StatusConflict, "conflict", err.Error())
	case errors.Is(err, hypervisor.ErrGone):
		writeError(w, http.StatusNotFound, "not_found", err.Error())
	case errors.Is(err, hypervisor.ErrHypervisor):
		writeError(w, http.StatusBadGateway, "hypervisor", err.Error())
	default:
		s.fail(w, r, err)
	}
}

func (s *Server) listHypervisors(w http.ResponseWriter, r *http.Request) {
	svc, ok := s.vms(w)
	if !ok {
		return
	}
	// A read each for the whole fleet, not one per host: the page lists
	// thousands.
	ctx := r.Context()
	fhs, err := s.Store.HypervisorFleet(ctx)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	u, err := svc.Usage(ctx)
	if err != nil {
		s.failVM(w, r, err)
		return
	}
	vms, err := svc.VMs(ctx, "")
	if err != nil {
		s.failVM(w, r, err)
		return
	}
	agents, err := svc.Agents(ctx)
	if err != nil {
		s.failVM(w, r, err)
		return
	}
	hosted := map[string][]hypervisor.VM{}
	for _, vm := range vms {
		hosted[vm.VM.Hypervisor] = append(hosted[vm.VM.Hypervisor], vm)
	}
	out := HypervisorList{Items: []Hypervisor{}, Total: usageFrom(u.Total)}
	for _, fh := range fhs {
		v := hypervisorFrom(fh.Hypervisor, fh.Node, u, hosted[fh.Node.ID])
		if a, ok := agents[fh.Node.ID]; ok {
			v.Agent = &a
		}
		out.Items = append(out.Items, v)
	}
	writeJSON(w, http.StatusOK, out)
}

// hypervisorFrom is hypervisor h on node n (of which it takes the ID,
// Name and Arch), whose VMs are vms.
func hypervisorFrom(h store.Hypervisor, n store.Node, u hypervisor.Usage, vms []hypervisor.VM) Hypervisor {
	out := Hypervisor{Node: n.ID, Name: n.Name, Arch: string(n.Arch), Native: h.Native, Created: h.Created, Updated: h.Updated,
		Settings: HypervisorSettings{URI: h.URI, GPUMode: h.GPUMode, GPUProfile: h.GPUProfile, VGPUMax: h.VGPUMax,
			CPURatio: h.CPURatio, RAMRatio: h.RAMRatio, ReservedMiB: h.ReservedMiB, Emulated: h.Emulated, NoKVM: len(h.Native) == 0,
			Bridge: h.Bridge, VLAN: h.VLAN, Pool: h.Pool, Drained: h.Drained},
		Unplaceable: u.Unplaceable[h.NodeID], VMs: []VMRef{}}
	if c, ok := u.Host(h.NodeID); ok {
		out.Usage = usageFrom(c)
	}
	for _, vm := range vms {
		if vm.VM.Hypervisor == h.NodeID {
			out.VMs = append(out.VMs, VMRef{ID: vm.NodeID, Name: vm.Node.Name})
		}
	}
	return out
}

func (s *Server) hypervisorView(ctx context.Context, svc *hypervisor.Service, id string) (Hypervisor, error) {
	n, err := s.Store.Node(ctx, id)
	if err != nil {
		return Hypervisor{}, err
	}
	h, err := s.Store.Hypervisor(ctx, n.ID)
	if err != nil {
		return Hypervisor{}, err
	}
	u, err := svc.Usage(ctx)
	if err != nil {
		return Hypervisor{}, err
	}
	vms, err := svc.VMs(ctx, n.ID)
	if err != nil {
		return Hypervisor{}, err
	}
	v := hypervisorFrom(h, n, u, vms)
	v.Agent, err = agentView(ctx, svc, n.ID)
	return v, err
}

func agentView(ctx context.Context, svc *hypervisor.Service, id string) (*hypervisor.AgentView, error) {
	a, ok, err := svc.Agent(ctx, id)
	if err != nil || !ok {
		return nil, err
	}
	return &a, nil
}

func (s *Server) getHypervisor(w http.ResponseWriter, r *http.Request) {
	svc, ok := s.vms(w)
	if !ok {
		return
	}
	out, err := s.hypervisorView(r.Context(), svc, chi.URLParam(r, "id"))
	if err != nil {
		s.failVM(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) putHypervisor(w http.ResponseWriter, r *http.Request) {
	svc, ok := s.vms(w)
	if !ok {
		return
	}
	var in HypervisorSettings
	if !decode(w, r, &in) {
		return
	}
	s.setHypervisor(w, r, svc, in)
}

func (s *Server) setHypervisor(w http.ResponseWriter, r *http.Request, svc *hypervisor.Service, in HypervisorSettings) {
	ctx, cancel := context.WithTimeout(r.Context(), vmCallTimeout)
	defer cancel()
	h, err := svc.SetHypervisor(ctx, chi.URLParam(r, "id"), hypervisor.Settings{
		URI: in.URI, GPUMode: in.GPUMode, GPUProfile: in.GPUProfile, VGPUMax: in.VGPUMax, CPURatio: in.CPURatio, RAMRatio: in.RAMRatio,
		ReservedMiB: in.ReservedMiB, Emulated: in.Emulated, NoKVM: in.NoKVM, Bridge: in.Bridge, VLAN: in.VLAN, Pool: in.Pool, Drained: in.Drained,
	}, principal(r).Actor)
	if err != nil {
		s.failVM(w, r, err)
		return
	}
	s.Broker.Publish()
	out, err := s.hypervisorView(r.Context(), svc, h.NodeID)
	if err != nil {
		s.failVM(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) patchHypervisor(w http.ResponseWriter, r *http.Request) {
	svc, ok := s.vms(w)
	if !ok {
		return
	}
	var p HypervisorPatch
	if !decode(w, r, &p) {
		return
	}
	n, ok := s.node(w, r)
	if !ok {
		return
	}
	h, err := s.Store.Hypervisor(r.Context(), n.ID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	in := HypervisorSettings{URI: h.URI, GPUMode: h.GPUMode, GPUProfile: h.GPUProfile, VGPUMax: h.VGPUMax, CPURatio: h.CPURatio,
		RAMRatio: h.RAMRatio, ReservedMiB: h.ReservedMiB, Emulated: h.Emulated, NoKVM: len(h.Native) == 0, Bridge: h.Bridge, VLAN: h.VLAN, Pool: h.Pool, Drained: h.Drained}
	if p.URI != nil {
		in.URI = *p.URI
	}
	if p.GPUMode != nil {
		in.GPUMode = *p.GPUMode
	}
	if p.GPUProfile != nil {
		in.GPUProfile = *p.GPUProfile
	}
	if p.VGPUMax != nil {
		in.VGPUMax = *p.VGPUMax
	}
	if p.CPURatio != nil {
		in.CPURatio = *p.CPURatio
	}
	if p.RAMRatio != nil {
		in.RAMRatio = *p.RAMRatio
	}
	if p.ReservedMiB != nil {
		in.ReservedMiB = *p.ReservedMiB
	}
	if p.Emulated != nil {
		in.Emulated = *p.Emulated
	}
	if p.NoKVM != nil {
		in.NoKVM = *p.NoKVM
	}
	if p.Bridge != nil {
		in.Bridge = *p.Bridge
	}
	if p.VLAN != nil {
		in.VLAN = *p.VLAN
	}
	if p.Pool != nil {
		in.Pool = *p.Pool
	}
	if p.Drained != nil {
		in.Drained = *p.Drained
	}
	s.setHypervisor(w, r, svc, in)
}

func (s *Server) deleteHypervisor(w http.ResponseWriter, r *http.Request) {
	svc, ok := s.vms(w)
	if !ok {
		return
	}
	if err := svc.RemoveHypervisor(r.Context(), chi.URLParam(r, "id"), principal(r).Actor); err != nil {
		s.failVM(w, r, err)
		return
	}
	s.Broker.Publish()
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) listFlavors(w http.ResponseWriter, r *http.Request) {
	fs, err := s.Store.Flavors(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := FlavorList{Items: []Flavor{}}
	for _, f := range fs {
		out.Items = append(out.Items, flavorFrom(f))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) createFlavor(w http.ResponseWriter, r *http.Request) {
	svc, ok := s.vms(w)
	if !ok {
		return
	}
	var in Flavor
	if !decode(w, r, &in) {
		return
	}
	f, err := svc.CreateFlavor(r.Context(), in.store())
	if err != nil {
		s.failVM(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, flavorFrom(f))
}

func (s *Server) deleteFlavor(w http.ResponseWriter, r *http.Request) {
	if err := s.Store.DeleteFlavor(r.Context(), chi.URLParam(r, "name")); err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) listVMs(w http.ResponseWriter, r *http.Request) {
	svc, ok := s.vms(w)
	if !ok {
		return
	}
	vms, err := svc.VMs(r.Context(), r.URL.Query().Get("hypervisor"))
	if err != nil {
		s.failVM(w, r, err)
		return
	}
	out := VMList{Items: []VM{}}
	for _, v := range vms {
		out.Items = append(out.Items, vmFrom(v.VM, v.Node.Name, v.Hypervisor, v.Node.State))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) createVM(w http.ResponseWriter, r *http.Request) {
	svc, ok := s.vms(w)
	if !ok {
		return
	}
	var in NewVM
	if !decode(w, r, &in) {
		return
	}
	req := hypervisor.VMRequest{Name: in.Name, Flavor: in.Flavor, Image: in.Image, Hypervisor: in.Hypervisor}
	switch {
	case in.Flavor != "" && in.Shape != nil:
		writeError(w, http.StatusBadRequest, "bad_request", "a VM has a flavor or a shape, not both")
		return
	case in.Shape != nil:
		req.Shape = in.Shape.store()
	case in.Flavor == "":
		writeError(w, http.StatusBadRequest, "bad_request", "a VM needs a flavor or a shape")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), vmCallTimeout)
	defer cancel()
	var p hypervisor.Plan
	var err error
	if in.DryRun {
		p, err = svc.Plan(ctx, req)
	} else {
		p, err = svc.CreateVM(ctx, req, principal(r).Actor)
	}
	if err != nil {
		s.failVM(w, r, err)
		return
	}
	s.Broker.Publish()
	out := vmFrom(p.VM, p.Name, p.Host, store.StateDiscovered)
	out.XML, out.DryRun = p.XML, in.DryRun
	code := http.StatusCreated
	if in.DryRun {
		code = http.StatusOK
	}
	writeJSON(w, code, out)
}

func (s *Server) getVM(w http.ResponseWriter, r *http.Request) {
	svc, ok := s.vms(w)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 20*time.Second)
	defer cancel()
	v, err := svc.VM(ctx, chi.URLParam(r, "id"), true)
	if err != nil {
		s.failVM(w, r, err)
		return
	}
	out := vmFrom(v.VM, v.Node.Name, v.Hypervisor, v.Node.State)
	out.State = v.State
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) deleteVM(w http.ResponseWriter, r *http.Request) {
	svc, ok := s.vms(w)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), vmCallTimeout)
	defer cancel()
	if err := svc.DeleteVM(ctx, chi.URLParam(r, "id"), principal(r).Actor); err != nil {
		s.failVM(w, r, err)
		return
	}
	s.Broker.Publish()
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) vmAction(w http.ResponseWriter, r *http.Request) {
	svc, ok := s.vms(w)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), vmCallTimeout)
	defer cancel()
	v, err := svc.Do(ctx, chi.URLParam(r, "id"), chi.URLParam(r, "action"), principal(r).Actor)
	if err != nil {
		s.failVM(w, r, err)
		return
	}
	s.Broker.Publish()
	out := vmFrom(v.VM, v.Node.Name, v.Hypervisor, v.Node.State)
	out.State = v.State
	writeJSON(w, http.StatusOK, out)
}

// vmConsole streams the VM's serial console as text until the client
// goes away.
func (s *Server) vmConsole(w http.ResponseWriter, r *http.Request) {
	svc, ok := s.vms(w)
	if !ok {
		return
	}
	if _, err := svc.VM(r.Context(), chi.URLParam(r, "id"), false); err != nil {
		s.failVM(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	fw := flushWriter{w: w, f: http.NewResponseController(w)}
	if err := svc.Console(r.Context(), chi.URLParam(r, "id"), fw); err != nil && r.Context().Err() == nil {
		s.log().Warn("vm console", "vm", chi.URLParam(r, "id"), "err", err)
	}
}

type flushWriter struct {
	w http.ResponseWriter
	f *http.ResponseController
}

func (fw flushWriter) Write(p []byte) (int, error) {
	n, err := fw.w.Write(p)
	fw.f.Flush()
	return n, err
}

// hypervisorSeed is the cloud-init seed of a deploy as a hypervisor: the
// hostname and SSH keys asked for, and rackboot's user data with libvirt's
// TLS files, the server certificate naming the hostname, the node's name
// and its last boot's address.
//
// The seed carries a new hypervisor agent token, whose id is returned: the
// caller revokes the node's other tokens once the deploy is under way, or
// this one when it was refused.
func (s *Server) hypervisorSeed(ctx context.Context, ref string, asked json.RawMessage) (json.RawMessage, string, error) {
	if s.HypervisorTLS == nil {
		return nil, "", fmt.Errorf("%w: this server issues no hypervisor certificates", hypervisor.ErrInvalid)
	}
	if s.HypervisorAgent == nil {
		return nil, "", fmt.Errorf("%w: this server serves no hypervisor agent", hypervisor.ErrInvalid)
	}
	n, err := s.Store.Node(ctx, ref)
	if err != nil {
		return nil, "", err
	}
	var seed struct {
		Hostname string          `json:"hostname"`
		SSHKeys  []string        `json:"ssh_keys,omitempty"`
		Network  json.RawMessage `json:"network,omitempty"`
		UserData string          `json:"user_data,omitempty"`
	}
	if len(asked) > 0 {
		if err := json.Unmarshal(asked, &seed); err != nil {
			return nil, "", fmt.Errorf("%w: cloud_init: %v", hypervisor.ErrInvalid, err)
		}
	}
	if seed.UserData != "" {
		return nil, "", fmt.Errorf("%w: a hypervisor's user data is rackboot's: give a hostname and SSH keys, not user_data", hypervisor.ErrInvalid)
	}
	if seed.Hostname == "" {
		seed.Hostname = n.Name
	}
	if seed.Hostname == "" {
		return nil, "", fmt.Errorf("%w: node %s has no name: give the hypervisor a hostname", hypervisor.ErrInvalid, n.ID)
	}
	// Checked before a key is made for it.
	if err := hypervisor.CheckSeed(seed.Hostname, seed.SSHKeys); err != nil {
		return nil, "", fmt.Errorf("%w: %v", hypervisor.ErrInvalid, err)
	}
	if other, err := s.Store.Node(ctx, seed.Hostname); err == nil && other.ID != n.ID {
		return nil, "", fmt.Errorf("%w: hostname %s is node %s's name", hypervisor.ErrInvalid, seed.Hostname, other.ID)
	}
	hosts := []string{seed.Hostname}
	if n.Name != "" && n.Name != seed.Hostname {
		hosts = append(hosts, n.Name)
	}
	if evs, err := s.Store.Trace(ctx, n.ID, 50); err == nil {
		for i := len(evs) - 1; i >= 0; i-- {
			if evs[i].IP.IsValid() {
				hosts = append(hosts, evs[i].IP.String())
				break
			}
		}
	}
	if n.Arch == boot.ArchUnknown {
		return nil, "", fmt.Errorf("%w: node %s has no known architecture for its agent: inspect it first", hypervisor.ErrInvalid, n.ID)
	}
	if _, err := s.HypervisorAgent(n.ID, n.Arch); err != nil {
		return nil, "", fmt.Errorf("%w: %v", hypervisor.ErrInvalid, err)
	}
	files, err := s.HypervisorTLS(hosts)
	if err != nil {
		return nil, "", err
	}
	agent, id, err := s.issueHypervisorToken(ctx, n)
	if err != nil {
		return nil, "", err
	}
	user, err := hypervisor.CloudConfig(seed.Hostname, seed.SSHKeys, files, agent)
	if err != nil {
		s.dropHypervisorToken(ctx, id)
		return nil, "", fmt.Errorf("%w: %v", hypervisor.ErrInvalid, err)
	}
	seed.UserData = user
	b, err := json.Marshal(seed)
	if err != nil {
		s.dropHypervisorToken(ctx, id)
		return nil, "", err
	}
	return b, id, nil
}
