package hypervisor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/rackboot/rackboot/agent/inventory"
	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/hypervisor/domain"
	"github.com/rackboot/rackboot/hypervisor/placement"
	"github.com/rackboot/rackboot/store"
)

func jsonUnmarshal(b []byte, v any) error {
	if len(b) == 0 {
		return invalid("the node has no inventory: inspect it first")
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("inventory: %w", err)
	}
	return nil
}

// CreateFlavor checks a flavor and stores it.
func (s *Service) CreateFlavor(ctx context.Context, f store.Flavor) (store.Flavor, error) {
	if !vmName.MatchString(f.Name) && !flavorName.MatchString(f.Name) {
		return store.Flavor{}, invalid("flavor name %q: letters, digits, '.', '-' and '_'", f.Name)
	}
	if err := checkShape(f.Arch, f.VCPUs, f.MemoryMiB, f.DiskGiB); err != nil {
		return store.Flavor{}, err
	}
	if _, err := gpuRequest(f); err != nil {
		return store.Flavor{}, err
	}
	if err := s.Store.CreateFlavor(ctx, f); err != nil {
		return store.Flavor{}, err
	}
	return s.Store.Flavor(ctx, f.Name)
}

var flavorName = volumeName

func checkShape(arch boot.Arch, vcpus int, mem int64, disk int) error {
	switch {
	case arch != boot.ArchX86_64 && arch != boot.ArchAArch64:
		return invalid("architecture %q (x86_64 or aarch64)", arch)
	case vcpus < 1 || vcpus > 1024:
		return invalid("%d vCPUs (1 to 1024)", vcpus)
	case mem < 64 || mem > 16<<20:
		return invalid("%d MiB of memory (64 MiB to 16 TiB)", mem)
	case disk < 1 || disk > 64<<10:
		return invalid("%d GiB of disk (1 GiB to 64 TiB)", disk)
	}
	return nil
}

// gpuRequest is a flavor's GPU as the engine asks for it; nil for none.
func gpuRequest(f store.Flavor) (*placement.GPURequest, error) {
	if f.GPUMode == "" {
		if f.GPUCount != 0 || f.GPUProfile != "" || f.GPUModel != "" {
			return nil, invalid("a GPU model, profile or count needs a GPU mode (passthrough, vgpu or mig)")
		}
		return nil, nil
	}
	g := &placement.GPURequest{Kind: placement.Kind(f.GPUMode), Model: f.GPUModel, Profile: f.GPUProfile, Count: f.GPUCount}
	if g.Count == 0 {
		g.Count = 1
	}
	switch g.Kind {
	case placement.Passthrough:
		if g.Profile != "" {
			return nil, invalid("passthrough takes whole GPUs, no profile")
		}
		if g.Count < 1 || g.Count > 16 {
			return nil, invalid("%d GPUs (1 to 16)", g.Count)
		}
	case placement.VGPU, placement.MIG:
		if g.Profile == "" {
			return nil, invalid("GPU mode %s needs a profile (the vGPU type or MIG profile)", g.Kind)
		}
		if g.Count != 1 {
			return nil, invalid("a VM gets one %s device, not %d", g.Kind, g.Count)
		}
	default:
		return nil, invalid("GPU mode %q (passthrough, vgpu or mig)", f.GPUMode)
	}
	return g, nil
}

// VMRequest asks for a VM: a flavor, or the shape inline, and an image.
type VMRequest struct {
	Name   string
	Flavor string
	// Shape is used when Flavor is empty; its Name is ignored.
	Shape store.Flavor
	Image string
	// Hypervisor, when set, is the only host considered.
	Hypervisor string
}

// Plan is where a VM would go and what would be written.
type Plan struct {
	Decision placement.Decision
	// Hypervisor and Host are the chosen host's record and node.
	Hypervisor store.Hypervisor
	Host       store.Node
	VM         store.VM
	Name       string
	// XML is the libvirt domain.
	XML string
	// agentRound is the agent's last report when the VM was placed:
	// only a later one can have been told of its devices.
	agentRound int64
	// inv is what the chosen host's inventory says (Host is without it).
	inv inventory.Inventory
}

// Plan decides where a VM would go and writes its domain, storing
// nothing: what `vm create --dry-run` prints. A refusal is a
// *placement.Refusal that explains itself.
func (s *Service) Plan(ctx context.Context, r VMRequest) (Plan, error) {
	f, err := s.fleet(ctx)
	if err != nil {
		return Plan{}, err
	}
	return s.plan(ctx, f, r)
}

func (s *Service) plan(ctx context.Context, f *fleet, r VMRequest) (Plan, error) {
	if !vmName.MatchString(r.Name) {
		return Plan{}, invalid("VM name %q: a DNS label (lower-case letters, digits and '-', at most 63)", r.Name)
	}
	shape := r.Shape
	if r.Flavor != "" {
		var err error
		if shape, err = s.Store.Flavor(ctx, r.Flavor); err != nil {
			return Plan{}, err
		}
	}
	if err := checkShape(shape.Arch, shape.VCPUs, shape.MemoryMiB, shape.DiskGiB); err != nil {
		return Plan{}, err
	}
	g, err := gpuRequest(shape)
	if err != nil {
		return Plan{}, err
	}
	if r.Image != "" {
		im, err := s.Store.Image(ctx, r.Image)
		if err != nil {
			return Plan{}, fmt.Errorf("image %s: %w", r.Image, err)
		}
		if im.Arch != shape.Arch {
			return Plan{}, invalid("image %s is %s, the VM %s", im.Name, im.Arch, shape.Arch)
		}
	}
	if _, err := s.Store.Node(ctx, r.Name); err == nil {
		return Plan{}, fmt.Errorf("a node is already named %s: %w", r.Name, store.ErrConflict)
	}
	req := placement.Request{VM: r.Name, Arch: shape.Arch, VCPUs: shape.VCPUs, MemoryMiB: shape.MemoryMiB, GPU: g}
	place := f.Fleet
	if r.Hypervisor != "" {
		n, err := s.Store.Node(ctx, r.Hypervisor)
		if err != nil {
			return Plan{}, fmt.Errorf("hypervisor %s: %w", r.Hypervisor, err)
		}
		h, ok := f.hypervisors[n.ID]
		if !ok {
			if why := f.broken[n.ID]; why != nil {
				return Plan{}, invalid("hypervisor %s: %v", r.Hypervisor, why)
			}
			return Plan{}, fmt.Errorf("hypervisor %s: %w", r.Hypervisor, store.ErrNotFound)
		}
		if place, err = one(h, n, f.invs[n.ID], f.vms, f.vfs[n.ID]); err != nil {
			return Plan{}, err
		}
	}
	d, err := place.Place(req)
	if err != nil {
		return Plan{}, err
	}
	h := f.hypervisors[d.Host]
	host := f.nodes[d.Host]
	vm := store.VM{
		NodeID: uuid.NewString(), Hypervisor: d.Host, Flavor: r.Flavor, Image: r.Image, Arch: shape.Arch,
		VCPUs: shape.VCPUs, MemoryMiB: shape.MemoryMiB, DiskGiB: shape.DiskGiB, NUMA: d.NUMA,
		MAC: randomMAC(), UUID: uuid.NewString(), Note: d.Note,
	}
	// The volume's name is the VM's own: nothing else in the pool has it.
	vm.Volume = r.Name + "-" + vm.UUID[:8] + ".img"
	vm.Devices = devices(d.Allocation)
	d.Allocation.VM = vm.NodeID
	x, err := domainXML(h, r.Name, vm)
	if err != nil {
		return Plan{}, err
	}
	return Plan{Decision: d, Hypervisor: h, Host: host, inv: f.invs[d.Host], VM: vm, Name: r.Name, XML: x}, nil
}

// one is a fleet of the one hypervisor h with the VMs on it.
func one(h store.Hypervisor, n store.Node, inv inventory.Inventory, vms []store.VM, vfs AgentCards) (*placement.Fleet, error) {
	ph, err := host(h, n, inv, vfs, heldVFs(h.NodeID, vms))
	if err != nil {
		return nil, invalid("%v", err)
	}
	broken := map[string]error{}
	f, err := load([]placement.Host{ph}, vms, broken)
	if err != nil {
		return nil, err
	}
	if why := broken[h.NodeID]; why != nil {
		return nil, fmt.Errorf("hypervisor %s is over its limits: %v: %w", nodeName(n), why, placement.ErrConflict)
	}
	return f, nil
}

// domainXML writes a VM's libvirt domain: KVM where the host runs the
// VM's architecture natively, else TCG.
func domainXML(h store.Hypervisor, name string, vm store.VM) (string, error) {
	if h.Bridge == "" {
		return "", invalid("hypervisor %s has no bridge for VM NICs: set one", h.NodeID)
	}
	accel := domain.AccelTCG
	if slices.Contains(h.Native, vm.Arch) {
		accel = domain.AccelKVM
	}
	spec := domain.Spec{
		Name: name, UUID: vm.UUID, Arch: vm.Arch, VCPUs: vm.VCPUs, MemoryMiB: vm.MemoryMiB, Accel: accel,
		Disk: domain.Disk{Pool: h.Pool, Volume: vm.Volume},
		NIC:  domain.NIC{Bridge: h.Bridge, MAC: vm.MAC, VLAN: h.VLAN},
	}
	for _, d := range vm.Devices {
		switch d.Kind {
		case string(placement.Passthrough), kindGroup:
			spec.PCI = append(spec.PCI, d.Device)
		case string(placement.VGPU), string(placement.MIG):
			if vf := VFOf(d); vf != "" {
				spec.VFs = append(spec.VFs, vf)
			} else {
				spec.Mdevs = append(spec.Mdevs, d.Mdev)
			}
		}
	}
	sort.Strings(spec.PCI)
	return domain.XML(spec)
}

// maxPlaceAttempts bounds how often CreateVM decides again after losing a
// device to another server: each loss means another VM got in, so a
// request that loses them all met a crowd larger than the host.
const maxPlaceAttempts = 12

// CreateVM places a VM, stores it with its node (so its MAC is known
// before it first boots), creates its disk volume, defines its domain and
// starts it. A placement another server won meanwhile is placed again; a
// hypervisor that fails undoes what was done, and the VM is not kept.
func (s *Service) CreateVM(ctx context.Context, r VMRequest, actor string) (Plan, error) {
	var p Plan
	for attempt := 1; ; attempt++ {
		f, err := s.fleet(ctx)
		if err != nil {
			return Plan{}, err
		}
		if p, err = s.plan(ctx, f, r); err != nil {
			return Plan{}, err
		}
		alloc := p.Decision.Allocation
		var stored store.VM
		var round int64
		stored, err = s.Store.CreateVM(ctx, p.VM, p.Name, func(ps store.PlaceState) error {
			// The agent's functions as the transaction reads them, not
			// as they were when the decision was taken: one an operator
			// took meanwhile is refused here.
			var ac AgentCards
			if ps.HasAgent {
				ac, round = Cards(ps.Agent.GPUs, true), ps.Agent.Round
			}
			f, err := one(ps.Hypervisor, p.Host, p.inv, ps.VMs, ac)
			if err != nil {
				return err
			}
			return f.Commit(alloc)
		})
		if err == nil {
			p.VM, p.agentRound = stored, round
			break
		}
		if attempt == maxPlaceAttempts || !(errors.Is(err, placement.ErrConflict) || errors.Is(err, store.ErrConflict) && len(p.VM.Devices) > 0) {
			return Plan{}, err
		}
		// Another server took what this decision chose: decide again
		// on what is left, after a pause that lets the winners commit.
		select {
		case <-ctx.Done():
			return Plan{}, ctx.Err()
		case <-time.After(time.Duration(mrand.IntN(20*attempt)+5) * time.Millisecond):
		}
	}
	s.event(ctx, p.VM.NodeID, actor, "created", fmt.Sprintf("on hypervisor %s: %s", nodeName(p.Host), p.Decision.Note))
	if err := s.start(ctx, p); err != nil {
		s.log().Warn("vm create failed on the hypervisor", "vm", p.Name, "hypervisor", p.Host.ID, "err", err)
		if derr := s.Store.DeleteVM(context.WithoutCancel(ctx), p.VM.NodeID); derr != nil {
			s.log().Error("vm create: forget the failed VM", "vm", p.Name, "err", derr)
		}
		s.event(ctx, p.VM.NodeID, actor, "failed", err.Error())
		return Plan{}, err
	}
	return p, nil
}

func (s *Service) start(ctx context.Context, p Plan) error {
	conn, err := s.dial(ctx, p.Hypervisor)
	if err != nil {
		return err
	}
	defer conn.Close()
	// Only what this call made is undone: a define that fails (a domain
	// of that name is there already) must not take the other domain
	// down, and the volume's name is this VM's alone.
	c := context.WithoutCancel(ctx)
	if _, err := conn.CreateVolume(ctx, p.Hypervisor.Pool, p.VM.Volume, int64(p.VM.DiskGiB)<<30); err != nil {
		// It may have been made before the error came (a deadline).
		conn.DeleteVolume(c, p.Hypervisor.Pool, p.VM.Volume)
		return fmt.Errorf("%w: %w", ErrHypervisor, err)
	}
	if err := define(ctx, conn, p.XML); err != nil {
		conn.DeleteVolume(c, p.Hypervisor.Pool, p.VM.Volume)
		return fmt.Errorf("%w: %w", ErrHypervisor, err)
	}
	err = s.waitDevices(ctx, p.VM, p.agentRound)
	if err == nil {
		err = conn.Start(ctx, p.Name)
		if err != nil {
			err = fmt.Errorf("%w: %w", ErrHypervisor, err)
		}
	}
	if err != nil {
		conn.Destroy(c, p.Name)
		conn.Undefine(c, p.Name)
		conn.DeleteVolume(c, p.Hypervisor.Pool, p.VM.Volume)
		return err
	}
	return nil
}

func (s *Service) event(ctx context.Context, node, actor, reason, msg string) {
	if _, err := s.Store.AddEvent(ctx, store.Event{NodeID: node, Actor: actor, Kind: "vm", Reason: reason, Message: msg}); err != nil {
		s.log().Warn("vm event", "node", node, "err", err)
	}
}

// VM is a VM with its node, hypervisor and, when asked, its live state.
type VM struct {
	store.VM
	Node       store.Node
	Hypervisor store.Node
	// State is libvirt's ("running", "shut off"), or why it is unknown.
	State string
}

// VM finds a VM by its node's id, name or MAC.
func (s *Service) VM(ctx context.Context, ref string, live bool) (VM, error) {
	n, err := s.Store.Node(ctx, ref)
	if err != nil {
		return VM{}, fmt.Errorf("vm %s: %w", ref, err)
	}
	vm, err := s.Store.VM(ctx, n.ID)
	if err != nil {
		return VM{}, fmt.Errorf("vm %s: %w", ref, err)
	}
	host, _ := s.Store.Node(ctx, vm.Hypervisor)
	out := VM{VM: vm, Node: n, Hypervisor: host}
	if live {
		out.State = s.state(ctx, vm, n.Name)
	}
	return out, nil
}

func (s *Service) state(ctx context.Context, vm store.VM, name string) string {
	h, err := s.Store.Hypervisor(ctx, vm.Hypervisor)
	if err != nil {
		return "unknown: " + err.Error()
	}
	conn, err := s.dial(ctx, h)
	if err != nil {
		return "unknown: " + err.Error()
	}
	defer conn.Close()
	st, err := conn.State(ctx, name)
	if err != nil {
		return "unknown: " + err.Error()
	}
	return st
}

// VMs lists the VMs, on one hypervisor or (empty) all.
func (s *Service) VMs(ctx context.Context, hypervisor string) ([]VM, error) {
	id := ""
	if hypervisor != "" {
		n, err := s.Store.Node(ctx, hypervisor)
		if err != nil {
			return nil, fmt.Errorf("hypervisor %s: %w", hypervisor, err)
		}
		id = n.ID
	}
	vms, err := s.Store.VMs(ctx, id)
	if err != nil {
		return nil, err
	}
	ids := make([]string, 0, 2*len(vms))
	for _, vm := range vms {
		ids = append(ids, vm.NodeID, vm.Hypervisor)
	}
	slices.Sort(ids)
	nodes, err := s.Store.NodeHeaders(ctx, slices.Compact(ids))
	if err != nil {
		return nil, err
	}
	byID := map[string]store.Node{}
	for _, n := range nodes {
		byID[n.ID] = n
	}
	out := make([]VM, 0, len(vms))
	for _, vm := range vms {
		out = append(out, VM{VM: vm, Node: byID[vm.NodeID], Hypervisor: byID[vm.Hypervisor]})
	}
	return out, nil
}

// VM actions.
const (
	ActionStart    = "start"
	ActionStop     = "stop"     // ACPI shutdown
	ActionPowerOff = "poweroff" // destroy: pulled power
	ActionReboot   = "reboot"
)

// Do starts, stops, powers off or reboots a VM on its hypervisor.
func (s *Service) Do(ctx context.Context, ref, action, actor string) (VM, error) {
	vm, err := s.VM(ctx, ref, false)
	if err != nil {
		return VM{}, err
	}
	h, err := s.Store.Hypervisor(ctx, vm.Hypervisor.ID)
	if err != nil {
		return VM{}, err
	}
	var op func(Conn, context.Context, string) error
	switch action {
	case ActionStart:
		op = Conn.Start
	case ActionStop:
		op = Conn.Shutdown
	case ActionPowerOff:
		op = Conn.Destroy
	case ActionReboot:
		op = Conn.Reboot
	default:
		return VM{}, invalid("VM action %q (start, stop, poweroff or reboot)", action)
	}
	if action == ActionStart {
		// A rebooted hypervisor's agent makes the VM's vGPU again first.
		stored, err := s.Store.VM(ctx, vm.NodeID)
		if err != nil {
			return VM{}, err
		}
		// What the agent said before this start does not count against
		// it: the room it lacked then may be free now.
		var round int64
		if a, err := s.Store.HypervisorAgent(ctx, stored.Hypervisor); err == nil {
			round = a.Round
		}
		if err := s.waitDevices(ctx, stored, round); err != nil {
			return VM{}, fmt.Errorf("vm %s: start: %w", vm.Node.Name, err)
		}
	}
	conn, err := s.dial(ctx, h)
	if err != nil {
		return VM{}, err
	}
	defer conn.Close()
	if err := op(conn, ctx, vm.Node.Name); err != nil {
		return VM{}, fmt.Errorf("vm %s: %s: %w: %w", vm.Node.Name, action, ErrHypervisor, err)
	}
	s.event(ctx, vm.NodeID, actor, action, "on hypervisor "+nodeName(vm.Hypervisor))
	vm.State, _ = conn.State(ctx, vm.Node.Name)
	return vm, nil
}

// DeleteVM destroys and undefines a VM's domain, deletes its volume and
// frees its allocation with its node. What the hypervisor no longer has
// is already done; a hypervisor that cannot be reached keeps the VM, so
// nothing is freed that still runs.
func (s *Service) DeleteVM(ctx context.Context, ref, actor string) error {
	vm, err := s.VM(ctx, ref, false)
	if err != nil {
		return err
	}
	h, err := s.Store.Hypervisor(ctx, vm.Hypervisor.ID)
	if err != nil {
		return err
	}
	conn, err := s.dial(ctx, h)
	if err != nil {
		return fmt.Errorf("vm %s: %w", vm.Node.Name, err)
	}
	defer conn.Close()
	gone := func(err error) bool { return err == nil || errors.Is(err, ErrGone) }
	st, err := conn.State(ctx, vm.Node.Name)
	switch {
	case errors.Is(err, ErrGone):
	case err != nil:
		return fmt.Errorf("vm %s: state: %w: %w", vm.Node.Name, ErrHypervisor, err)
	default:
		if st != StateShutoff {
			// The guest may power itself off between the two calls:
			// then the destroy fails and the domain is off all the same.
			if err := conn.Destroy(ctx, vm.Node.Name); !gone(err) {
				if st, serr := conn.State(ctx, vm.Node.Name); serr != nil || st != StateShutoff {
					return fmt.Errorf("vm %s: destroy: %w: %w", vm.Node.Name, ErrHypervisor, err)
				}
			}
		}
		if err := conn.Undefine(ctx, vm.Node.Name); !gone(err) {
			return fmt.Errorf("vm %s: undefine: %w: %w", vm.Node.Name, ErrHypervisor, err)
		}
	}
	if err := conn.DeleteVolume(ctx, h.Pool, vm.Volume); !gone(err) {
		return fmt.Errorf("vm %s: delete volume %s: %w: %w", vm.Node.Name, vm.Volume, ErrHypervisor, err)
	}
	if err := s.Store.DeleteVM(ctx, vm.NodeID); err != nil {
		return err
	}
	s.event(ctx, vm.NodeID, actor, "deleted", "from hypervisor "+nodeName(vm.Hypervisor))
	return nil
}

// StateShutoff is libvirt's state of a domain that is defined and not
// running.
const StateShutoff = "shut off"

// Console streams a VM's serial console to w until ctx ends.
func (s *Service) Console(ctx context.Context, ref string, w io.Writer) error {
	vm, err := s.VM(ctx, ref, false)
	if err != nil {
		return err
	}
	h, err := s.Store.Hypervisor(ctx, vm.Hypervisor.ID)
	if err != nil {
		return err
	}
	conn, err := s.dial(ctx, h)
	if err != nil {
		return err
	}
	defer conn.Close()
	return conn.Console(ctx, vm.Node.Name, w)
}

// Usage is what every hypervisor holds and has free, and why any is left
// out of placement.
type Usage struct {
	placement.Usage
	// Unplaceable are hypervisors that take no VMs, by node id, with why.
	Unplaceable map[string]string
}

// Usage reports what every hypervisor holds and has free.
func (s *Service) Usage(ctx context.Context) (Usage, error) {
	f, err := s.fleet(ctx)
	if err != nil {
		return Usage{}, err
	}
	u := Usage{Usage: f.Usage(), Unplaceable: map[string]string{}}
	for id, why := range f.broken {
		u.Unplaceable[id] = why.Error()
	}
	return u, nil
}

// define defines a domain, again when libvirtd failed to load its own
// domain schema: libxml2 sets up its schema types on first use without a
// lock, and two validating defines at once on a fresh daemon can fail
// with "Unable to parse RNG ... is not exported by type library". The
// domain was not defined; the next try finds the types loaded.
func define(ctx context.Context, conn Conn, xml string) error {
	for try := 1; ; try++ {
		err := conn.Define(ctx, xml)
		if err == nil || try == 3 || !strings.Contains(err.Error(), "Unable to parse RNG") {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(time.Duration(try) * 100 * time.Millisecond):
		}
	}
}
