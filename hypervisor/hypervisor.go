// Package hypervisor runs rackboot's VMs. It registers inspected nodes as
// hypervisors with their libvirt endpoints, keeps flavors, places each VM
// with package placement inside the store's transaction (so two servers
// never give one GPU or partition twice), writes its domain with package
// domain and drives the hypervisor's libvirt to create, start, stop and
// delete it. A VM is a node of kind vm from its creation: its MAC is
// enrolled before it first boots, and it network-boots through rackboot
// like metal.
package hypervisor

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/rackboot/rackboot/agent/inventory"
	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/hypervisor/domain"
	"github.com/rackboot/rackboot/hypervisor/placement"
	"github.com/rackboot/rackboot/store"
)

// Store is what the service reads and writes; store.Store implements it.
type Store interface {
	Node(ctx context.Context, ref string) (store.Node, error)
	NodeHeaders(ctx context.Context, ids []string) ([]store.Node, error)
	NodeInventories(ctx context.Context, ids []string) (map[string]store.NodeInventory, error)
	Image(ctx context.Context, name string) (store.Image, error)
	AddEvent(ctx context.Context, e store.Event) (store.Event, error)

	PutHypervisor(ctx context.Context, h store.Hypervisor) error
	Hypervisor(ctx context.Context, nodeID string) (store.Hypervisor, error)
	Hypervisors(ctx context.Context) ([]store.Hypervisor, error)
	DeleteHypervisor(ctx context.Context, nodeID string) error
	PutHypervisorAgent(ctx context.Context, a store.HypervisorAgent) error
	HypervisorAgent(ctx context.Context, nodeID string) (store.HypervisorAgent, error)
	HypervisorFleet(ctx context.Context) ([]store.FleetHost, error)

	CreateFlavor(ctx context.Context, f store.Flavor) error
	Flavor(ctx context.Context, name string) (store.Flavor, error)
	Flavors(ctx context.Context) ([]store.Flavor, error)
	DeleteFlavor(ctx context.Context, name string) error

	CreateVM(ctx context.Context, vm store.VM, name string, check store.PlaceCheck) (store.VM, error)
	VM(ctx context.Context, nodeID string) (store.VM, error)
	VMs(ctx context.Context, hypervisor string) ([]store.VM, error)
	DeleteVM(ctx context.Context, nodeID string) error
}

// Conn is one connection to a hypervisor's libvirt daemon; package
// libvirt's Conn is one, through LibvirtDialer. Calls on a missing domain
// or volume wrap ErrGone.
type Conn interface {
	Capabilities(ctx context.Context) (string, error)
	CreateVolume(ctx context.Context, pool, name string, bytes int64) (string, error)
	DeleteVolume(ctx context.Context, pool, name string) error
	Define(ctx context.Context, xml string) error
	Start(ctx context.Context, name string) error
	Shutdown(ctx context.Context, name string) error
	Reboot(ctx context.Context, name string) error
	Destroy(ctx context.Context, name string) error
	Undefine(ctx context.Context, name string) error
	State(ctx context.Context, name string) (string, error)
	Console(ctx context.Context, name string, w io.Writer) error
	Close() error
}

// Dialer connects to the libvirt daemon at a hypervisor's URI.
type Dialer func(ctx context.Context, uri string) (Conn, error)

// Errors the API maps to its answers; each is wrapped with the detail.
var (
	// ErrInvalid is a request that is wrong as written.
	ErrInvalid = errors.New("invalid")
	// ErrGone is a domain or volume the hypervisor does not have.
	ErrGone = errors.New("not on the hypervisor")
	// ErrHypervisor is a hypervisor that did not do what it was asked:
	// unreachable, or its libvirt refused.
	ErrHypervisor = errors.New("hypervisor failed")
)

// Service runs the VMs of one rackboot. Every method is safe for
// concurrent use; two services on one database place VMs safely side by
// side.
type Service struct {
	Store  Store
	Dial   Dialer
	Logger *slog.Logger
	// DeviceWait bounds how long a VM's start waits for the
	// hypervisor's agent to make its mediated devices (DeviceWait when
	// zero).
	DeviceWait time.Duration
	// AgentInterval is how often hypervisors' agents are asked to call
	// in (AgentInterval when zero).
	AgentInterval time.Duration

	invs inventories
}

func (s *Service) log() *slog.Logger {
	if s.Logger == nil {
		return slog.Default()
	}
	return s.Logger
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

func (s *Service) dial(ctx context.Context, h store.Hypervisor) (Conn, error) {
	c, err := s.Dial(ctx, h.URI)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrHypervisor, err)
	}
	return c, nil
}

// Settings are what an operator says of a hypervisor.
type Settings struct {
	// URI is the libvirt endpoint: qemu+tls://HOST/system,
	// qemu+tcp://HOST/system, qemu+ssh://USER@HOST/system or
	// qemu+unix:///system?socket=PATH.
	URI string
	// GPUMode is "", "passthrough", "vgpu" or "mig"; GPUProfile the vGPU
	// type or the MIG layout (comma-separated profiles); VGPUMax the vGPU
	// instances one GPU holds.
	GPUMode, GPUProfile string
	VGPUMax             int
	// Ratios and reserve: zero takes Nova's defaults.
	CPURatio, RAMRatio float64
	ReservedMiB        int64
	// Emulated are the architectures the operator lets it run under TCG.
	Emulated []boot.Arch
	// NoKVM runs every VM under TCG even where libvirt offers KVM: a
	// /dev/kvm that opens but faults (nested virtualisation) says kvm in
	// the capabilities all the same.
	NoKVM bool
	// Bridge is the host bridge VM NICs join; Pool the libvirt storage
	// pool of their disks ("default" when empty).
	Bridge, Pool string
	// VLAN tags the VMs' ports (1 to 4094, 0 for none): Bridge is then
	// an Open vSwitch bridge, as libvirt tags no Linux bridge's ports.
	VLAN    int
	Drained bool
}

var bridgeName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$`)

// SetHypervisor makes node ref a hypervisor, or changes one: it reads the
// daemon's capabilities at the URI for the architectures it runs, and
// checks the GPU mode against the node's inventory (a MIG layout must fit
// every card). A mode change while VMs hold GPUs is refused.
func (s *Service) SetHypervisor(ctx context.Context, ref string, set Settings, actor string) (store.Hypervisor, error) {
	n, err := s.Store.Node(ctx, ref)
	if err != nil {
		return store.Hypervisor{}, fmt.Errorf("hypervisor %s: %w", ref, err)
	}
	if n.Kind == "vm" {
		return store.Hypervisor{}, invalid("%s is a VM", nodeName(n))
	}
	if set.Pool == "" {
		set.Pool = "default"
	}
	if set.Bridge != "" && !bridgeName.MatchString(set.Bridge) {
		return store.Hypervisor{}, invalid("bridge %q is not an interface name", set.Bridge)
	}
	if set.VLAN < 0 || set.VLAN > 4094 {
		return store.Hypervisor{}, invalid("VLAN %d (1 to 4094, 0 for none)", set.VLAN)
	}
	if !volumeName.MatchString(set.Pool) {
		return store.Hypervisor{}, invalid("pool %q is not a libvirt pool name", set.Pool)
	}
	for _, a := range set.Emulated {
		if a != boot.ArchX86_64 && a != boot.ArchAArch64 {
			return store.Hypervisor{}, invalid("architecture %q (x86_64 or aarch64)", a)
		}
	}
	h := store.Hypervisor{
		NodeID: n.ID, URI: set.URI, GPUMode: set.GPUMode, GPUProfile: set.GPUProfile, VGPUMax: set.VGPUMax,
		CPURatio: set.CPURatio, RAMRatio: set.RAMRatio, ReservedMiB: set.ReservedMiB, Emulated: set.Emulated,
		Bridge: set.Bridge, VLAN: set.VLAN, Pool: set.Pool, Drained: set.Drained,
	}
	if h.GPUMode == string(placement.MIG) {
		h.GPUProfile = strings.Join(Layout(h.GPUProfile), ",")
	}
	if h.CPURatio < 0 || h.RAMRatio < 0 {
		return store.Hypervisor{}, invalid("negative overcommit ratio")
	}
	ph, err := Host(h, n, AgentCards{}, nil)
	if err != nil {
		return store.Hypervisor{}, invalid("%v", err)
	}
	if err := checkGPUs(n, h); err != nil {
		return store.Hypervisor{}, err
	}
	old, err := s.Store.Hypervisor(ctx, n.ID)
	switch {
	case err == nil:
		if old.GPUMode != h.GPUMode || old.GPUProfile != h.GPUProfile || old.VGPUMax != h.VGPUMax {
			vms, err := s.Store.VMs(ctx, n.ID)
			if err != nil {
				return store.Hypervisor{}, err
			}
			for _, vm := range vms {
				if len(vm.Devices) > 0 {
					return store.Hypervisor{}, fmt.Errorf("hypervisor %s: its GPU mode cannot change while VM %s holds GPUs: %w", nodeName(n), vm.NodeID, store.ErrConflict)
				}
			}
		}
		h.Created = old.Created
	case !errors.Is(err, store.ErrNotFound):
		return store.Hypervisor{}, err
	}

	conn, err := s.dial(ctx, h)
	if err != nil {
		return store.Hypervisor{}, err
	}
	defer conn.Close()
	doc, err := conn.Capabilities(ctx)
	if err != nil {
		return store.Hypervisor{}, fmt.Errorf("%w: %w", ErrHypervisor, err)
	}
	caps, err := domain.ParseCaps(doc)
	if err != nil {
		return store.Hypervisor{}, fmt.Errorf("%w: %w", ErrHypervisor, err)
	}
	runs := append(caps.Native(), caps.Emulated()...)
	for _, a := range set.Emulated {
		if !slices.Contains(runs, a) {
			return store.Hypervisor{}, invalid("libvirt on %s runs no %s guests (is qemu-system for it installed?)", nodeName(n), a)
		}
	}
	if !set.NoKVM {
		h.Native = caps.Native()
	}
	if !slices.Contains(h.Native, ph.Arch) && !slices.Contains(h.Emulated, ph.Arch) {
		return store.Hypervisor{}, invalid("libvirt on %s offers no KVM for %s (is /dev/kvm there?); allow %s under TCG with emulated", nodeName(n), ph.Arch, ph.Arch)
	}
	if h.Emulated == nil {
		h.Emulated = []boot.Arch{}
	}
	if err := s.Store.PutHypervisor(ctx, h); err != nil {
		return store.Hypervisor{}, err
	}
	msg := fmt.Sprintf("hypervisor %s: gpu mode %q %s, native %v, emulated %v, drained %v", h.URI, h.GPUMode, h.GPUProfile, h.Native, h.Emulated, h.Drained)
	if _, err := s.Store.AddEvent(ctx, store.Event{NodeID: n.ID, Actor: actor, Kind: "hypervisor", Reason: "set", Message: msg}); err != nil {
		s.log().Warn("hypervisor event", "node", n.ID, "err", err)
	}
	return s.Store.Hypervisor(ctx, n.ID)
}

// checkGPUs refuses a GPU mode the node's cards cannot take.
func checkGPUs(n store.Node, h store.Hypervisor) error {
	if h.GPUMode == "" {
		return nil
	}
	var inv inventory.Inventory
	if err := jsonUnmarshal(n.Inventory, &inv); err != nil {
		return err
	}
	if len(inv.GPUs) == 0 {
		return invalid("GPU mode %s on %s, which has no GPUs", h.GPUMode, nodeName(n))
	}
	if h.GPUMode == string(placement.MIG) {
		layout := Layout(h.GPUProfile)
		for _, g := range inv.GPUs {
			if err := inventory.CheckMIGLayout(g, layout); err != nil {
				return invalid("MIG layout %s on %s (%s): %v", h.GPUProfile, g.PCIAddress, modelOf(g), err)
			}
		}
	}
	return nil
}

// RemoveHypervisor forgets a hypervisor with no VMs; its node stays.
func (s *Service) RemoveHypervisor(ctx context.Context, ref, actor string) error {
	n, err := s.Store.Node(ctx, ref)
	if err != nil {
		return fmt.Errorf("hypervisor %s: %w", ref, err)
	}
	if err := s.Store.DeleteHypervisor(ctx, n.ID); err != nil {
		return err
	}
	s.Store.AddEvent(ctx, store.Event{NodeID: n.ID, Actor: actor, Kind: "hypervisor", Reason: "removed", Message: "no longer a hypervisor"})
	return nil
}

// fleet is every hypervisor with the VMs on it, as the engine takes it.
type fleet struct {
	*placement.Fleet
	hypervisors map[string]store.Hypervisor
	// nodes are the hypervisors' nodes, without their inventories, and
	// invs what those inventories say.
	nodes map[string]store.Node
	invs  map[string]inventory.Inventory
	vms   []store.VM
	// broken are hypervisors the engine could not take (no inventory),
	// with why.
	broken map[string]error
	// vfs are, by hypervisor, its vendor VFIO cards' virtual functions
	// as its agent last reported them (VFs).
	vfs map[string]AgentCards
}

// fleet reads every hypervisor for a decision. Each decision reads the
// hypervisors, their agents and the VMs afresh, so that what another
// server placed is counted; the inventories, the bulk of a host's record
// and its only costly parse, are taken from the cache unless their
// revision moved.
func (s *Service) fleet(ctx context.Context) (*fleet, error) {
	fhs, vms, byHost, err := s.readFleet(ctx)
	if err != nil {
		return nil, err
	}
	parsed, err := s.invs.get(ctx, s.Store, fhs)
	if err != nil {
		return nil, err
	}
	f := &fleet{hypervisors: map[string]store.Hypervisor{}, nodes: map[string]store.Node{}, invs: map[string]inventory.Inventory{},
		vms: vms, broken: map[string]error{}, vfs: map[string]AgentCards{}}
	var hosts []placement.Host
	for _, fh := range fhs {
		h, n := fh.Hypervisor, fh.Node
		f.nodes[n.ID] = n
		ac := AgentCards{}
		if fh.HasAgent {
			ac = Cards(fh.Agent.GPUs, true)
		}
		f.vfs[n.ID] = ac
		p := parsed[n.ID]
		err := p.err
		var ph placement.Host
		if err == nil {
			ph, err = host(h, n, p.inv, ac, heldVFs(n.ID, byHost[n.ID]))
		}
		if err == nil {
			// One host the engine refuses must not stop placement on
			// every other: it is left out, with why.
			_, err = placement.NewFleet(ph)
		}
		if err != nil {
			f.broken[n.ID] = err
			continue
		}
		f.hypervisors[n.ID] = h
		f.invs[n.ID] = p.inv
		hosts = append(hosts, ph)
	}
	if f.Fleet, err = load(hosts, vms, f.broken); err != nil {
		return nil, err
	}
	return f, nil
}

// readFleet is every hypervisor with its node header and agent, and every
// VM, also grouped by the hypervisor it is on: two reads, whatever the
// fleet's size.
func (s *Service) readFleet(ctx context.Context) ([]store.FleetHost, []store.VM, map[string][]store.VM, error) {
	fhs, err := s.Store.HypervisorFleet(ctx)
	if err != nil {
		return nil, nil, nil, err
	}
	vms, err := s.Store.VMs(ctx, "")
	if err != nil {
		return nil, nil, nil, err
	}
	byHost := map[string][]store.VM{}
	for _, vm := range vms {
		byHost[vm.Hypervisor] = append(byHost[vm.Hypervisor], vm)
	}
	return fhs, vms, byHost, nil
}

// load is a fleet of hosts holding the VMs on them. A VM that no longer
// fits its host (its limits were lowered since) stays where it is, and
// the host takes nothing more: it is drained in the fleet, and broken
// says why.
func load(hosts []placement.Host, vms []store.VM, broken map[string]error) (*placement.Fleet, error) {
	// A drained host still holds its VMs: they are counted on it
	// undrained, then it is drained.
	var drained []placement.Host
	names := map[string]bool{}
	for i := range hosts {
		names[hosts[i].Name] = true
		if hosts[i].Drained {
			drained = append(drained, hosts[i])
			hosts[i].Drained = false
		}
	}
	f, err := placement.NewFleet(hosts...)
	if err != nil {
		return nil, err
	}
	for _, vm := range vms {
		if !names[vm.Hypervisor] {
			continue
		}
		if err := f.Commit(allocation(vm)); err != nil {
			broken[vm.Hypervisor] = fmt.Errorf("VM %s no longer fits it: %w", vm.NodeID, err)
		}
	}
	for _, h := range hosts {
		if broken[h.Name] != nil {
			h.Drained = true
			drained = append(drained, h)
		}
	}
	for _, h := range drained {
		h.Drained = true
		if err := f.SetHost(h); err != nil {
			return nil, err
		}
	}
	return f, nil
}

// allocation is a stored VM as the engine counts it.
func allocation(vm store.VM) placement.Allocation {
	a := placement.Allocation{VM: vm.NodeID, Host: vm.Hypervisor, Arch: vm.Arch, VCPUs: vm.VCPUs, MemoryMiB: vm.MemoryMiB, NUMA: vm.NUMA}
	groups := map[string][]string{}
	for _, d := range vm.Devices {
		if d.Kind == kindGroup {
			groups[d.GPU] = append(groups[d.GPU], d.Device)
		}
	}
	for _, d := range vm.Devices {
		if d.Kind == kindGroup {
			continue
		}
		a.Devices = append(a.Devices, placement.Device{GPU: d.GPU, Kind: placement.Kind(d.Kind), Slot: d.Slot, Profile: d.Profile, Group: groups[d.GPU], VF: VFOf(d)})
	}
	return a
}

// VFOf is the virtual function a VM's vGPU is, on a vendor VFIO card,
// or "": such a device holds the function's address in place of the
// card's, and no mdev.
func VFOf(d store.VMDevice) string {
	if (d.Kind == string(placement.VGPU) || d.Kind == string(placement.MIG)) && d.Mdev == "" && d.Device != d.GPU {
		return d.Device
	}
	return ""
}

// kindGroup marks a device taken with a passed-through GPU: another
// function of its IOMMU group.
const kindGroup = "group"

// devices are an allocation's devices as the store keeps them, each vGPU
// and MIG partition with a fresh mediated device UUID.
func devices(a placement.Allocation) []store.VMDevice {
	var out []store.VMDevice
	for _, d := range a.Devices {
		sd := store.VMDevice{Device: d.GPU, Slot: d.Slot, GPU: d.GPU, Kind: string(d.Kind), Profile: d.Profile}
		switch {
		case d.VF != "":
			// The virtual function is what the VM holds: no mdev.
			sd.Device = d.VF
		case d.Kind == placement.VGPU || d.Kind == placement.MIG:
			sd.Mdev = uuid.NewString()
		}
		out = append(out, sd)
		for _, m := range d.Group {
			if m != d.GPU {
				out = append(out, store.VMDevice{Device: m, GPU: d.GPU, Kind: kindGroup})
			}
		}
	}
	return out
}

// vmName is what a VM may be called: a DNS label, which is also a libvirt
// domain name and a node name.
var vmName = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// volumeName is a libvirt pool or volume name rackboot writes.
var volumeName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

func randomMAC() string {
	b := make([]byte, 3)
	rand.Read(b)
	// 52:54:00 is QEMU's own prefix, locally administered.
	return net.HardwareAddr{0x52, 0x54, 0x00, b[0], b[1], b[2]}.String()
}
