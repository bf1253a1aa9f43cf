package gpuconf

import (
	"context"
	"fmt"
	"sort"
)

// State is what the host's GPUs really carry.
type State struct {
	GPUs []GPUState `json:"gpus"`
}

// GPUState is one card.
type GPUState struct {
	Index      int    `json:"index"`
	PCIAddress string `json:"pci_address"`
	Name       string `json:"name,omitempty"`
	UUID       string `json:"uuid,omitempty"` // GPU-…
	// MIGMode is the mode in effect; MIGPending the one after the next
	// GPU reset. "[N/A]" on a card without MIG.
	MIGMode    string        `json:"mig_mode"`
	MIGPending string        `json:"mig_mode_pending"`
	Instances  []GPUInstance `json:"mig_instances,omitempty"`
	// MIGDevices are the MIG devices as `nvidia-smi -L` lists them.
	MIGDevices []MIGDevice `json:"mig_devices,omitempty"`
	// Mdevs are the vGPUs on the card and its virtual functions.
	Mdevs []Mdev `json:"mdevs,omitempty"`
	// VGPU is how the card's driver offers vGPU: VGPUMdev, VGPUVFIO, or
	// "" when it offers none (no vGPU manager, or its virtual functions
	// not enabled yet).
	VGPU string `json:"vgpu,omitempty"`
	// VFs are the card's virtual functions where VGPU is VGPUVFIO, in
	// their order, with the type each carries.
	VFs []VF `json:"vfs,omitempty"`
}

// GPUInstance is a MIG GPU instance.
type GPUInstance struct {
	ID        int               `json:"id"`
	Profile   string            `json:"profile"` // 3g.20gb
	ProfileID int               `json:"profile_id"`
	Placement string            `json:"placement"` // start:size, in memory slices
	Compute   []ComputeInstance `json:"compute_instances"`
}

// ComputeInstance is a compute instance of a GPU instance: the MIG
// device a container or a VM is given.
type ComputeInstance struct {
	ID        int    `json:"id"`
	Profile   string `json:"profile"`
	ProfileID int    `json:"profile_id"`
	Placement string `json:"placement"`
	// UUID is the MIG device's (MIG-…), from `nvidia-smi -L`; empty when
	// its listing could not be matched to the instance.
	UUID string `json:"uuid,omitempty"`
}

// State reads what every NVIDIA GPU carries: MIG mode, GPU and compute
// instances with their MIG device UUIDs, and mdevs.
func (h *Host) State(ctx context.Context) (State, error) {
	st := State{GPUs: []GPUState{}}
	out, err := h.smi(ctx, queryArgs...)
	if err != nil {
		return st, fmt.Errorf("gpu state: %w", err)
	}
	gpus, err := parseQuery(out)
	if err != nil {
		return st, fmt.Errorf("gpu state: %w", err)
	}
	out, err = h.smi(ctx, "-L")
	if err != nil {
		return st, fmt.Errorf("gpu state: %w", err)
	}
	list, err := parseList(out)
	if err != nil {
		return st, fmt.Errorf("gpu state: %w", err)
	}
	byIndex := map[int]listed{}
	open := &openFiles{} // /proc read once for every card's functions
	for _, l := range list {
		byIndex[l.Index] = l
	}
	anyMIG := false
	for _, g := range gpus {
		anyMIG = anyMIG || g.Current == ModeEnabled
	}
	var mig migLayout
	if anyMIG {
		if mig, err = h.readLayout(ctx); err != nil {
			return st, fmt.Errorf("gpu state: %w", err)
		}
	}
	mdevs, err := h.Mdevs(ctx)
	if err != nil {
		return st, fmt.Errorf("gpu state: %w", err)
	}
	for _, g := range gpus {
		l := byIndex[g.Index]
		gs := GPUState{Index: g.Index, PCIAddress: pciAddr(g.BusID), Name: l.Name, UUID: l.UUID, MIGMode: g.Current, MIGPending: g.Pending, MIGDevices: l.MIG}
		for _, gi := range mig.gis[g.Index] {
			inst := GPUInstance{ID: gi.ID, Profile: gi.Profile, ProfileID: gi.ProfileID, Placement: fmt.Sprintf("%d:%d", gi.Start, gi.Size), Compute: []ComputeInstance{}}
			for _, ci := range mig.cis[g.Index] {
				if ci.GI == gi.ID {
					inst.Compute = append(inst.Compute, ComputeInstance{ID: ci.ID, Profile: ci.Profile, ProfileID: ci.ProfileID, Placement: fmt.Sprintf("%d:%d", ci.Start, ci.Size)})
				}
			}
			sort.Slice(inst.Compute, func(i, j int) bool { return inst.Compute[i].ID < inst.Compute[j].ID })
			gs.Instances = append(gs.Instances, inst)
		}
		sort.Slice(gs.Instances, func(i, j int) bool { return gs.Instances[i].ID < gs.Instances[j].ID })
		matchUUIDs(gs.Instances, l.MIG)
		for _, m := range mdevs {
			if m.GPU == gs.PCIAddress {
				gs.Mdevs = append(gs.Mdevs, m)
			}
		}
		if gs.VGPU, gs.VFs, err = h.vgpuWay(gs.PCIAddress, open); err != nil {
			return st, fmt.Errorf("gpu state: %w", err)
		}
		st.GPUs = append(st.GPUs, gs)
	}
	return st, nil
}

// matchUUIDs gives compute instances their MIG device UUIDs. Where the
// UUID spells its instances (older drivers) that decides; otherwise the
// driver numbers MIG devices in the order of their GPU instance id, then
// compute instance id, and the pairing holds only when every profile
// name agrees, so a listing that does not line up leaves the UUIDs empty
// rather than wrong.
func matchUUIDs(gis []GPUInstance, devs []MIGDevice) {
	var cis []*ComputeInstance
	var giOf []int
	for i := range gis {
		for j := range gis[i].Compute {
			cis = append(cis, &gis[i].Compute[j])
			giOf = append(giOf, gis[i].ID)
		}
	}
	spelt := false
	for _, d := range devs {
		if d.GPUInstance < 0 {
			continue
		}
		spelt = true
		for n, c := range cis {
			if giOf[n] == d.GPUInstance && c.ID == d.ComputeInstance {
				c.UUID = d.UUID
			}
		}
	}
	if spelt || len(devs) != len(cis) {
		return
	}
	for k, d := range devs {
		if cis[k].Profile != d.Profile {
			return
		}
	}
	for k, d := range devs {
		cis[k].UUID = d.UUID
	}
}
