// Package handover hands rackboot's nodes to OpenStack Ironic and takes
// them back: a node handed over is created in Ironic with its ports, its
// BMC as Ironic's driver info and rackboot's inventory as its properties,
// and becomes owned by Ironic, so rackboot boots it only as Ironic says;
// a node taken back is deleted from Ironic once Ironic has released it.
// Either way the two systems never both drive one machine: each step that
// fails undoes the ones before it.
package handover

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/rackboot/rackboot/agent/inventory"
	"github.com/rackboot/rackboot/ironic/baremetal"
	"github.com/rackboot/rackboot/store"
)

// Store is what the handover reads and changes; store.Store implements it.
type Store interface {
	Node(ctx context.Context, ref string) (store.Node, error)
	BMC(ctx context.Context, nodeID string) (store.BMC, error)
	SetOwner(ctx context.Context, id, from, to string, states ...store.State) (store.Node, error)
}

// Ironic is the part of Ironic's API the handover uses;
// *baremetal.Client implements it.
type Ironic interface {
	CreateNode(ctx context.Context, n baremetal.Node) (baremetal.Node, error)
	CreatePort(ctx context.Context, p baremetal.Port) (baremetal.Port, error)
	PortByAddress(ctx context.Context, mac string) (baremetal.Port, error)
	Node(ctx context.Context, ident string) (baremetal.Node, error)
	Nodes(ctx context.Context) ([]baremetal.Node, error)
	DeleteNode(ctx context.Context, ident string) error
}

// timeout bounds a whole handover. It runs apart from the caller's
// context: a client that goes away halfway must not leave one system
// half-done.
const timeout = 3 * time.Minute

// Secrets opens sealed BMC passwords (package sealbox).
type Secrets interface {
	Open(sealed, ad []byte) ([]byte, error)
}

// ErrState is a node that cannot move now: rackboot or Ironic is busy
// with it, or it is already where it is asked to go.
var ErrState = errors.New("cannot hand over now")

// Service hands nodes over. Store and Ironic must be set.
type Service struct {
	Store  Store
	Ironic Ironic
	// Secrets opens the BMC password Ironic's driver info gets; nil
	// hands a node with a sealed password over without one.
	Secrets Secrets
	// PasswordAD is the additional data a node's password is sealed with
	// (nodepower.PasswordAD).
	PasswordAD func(nodeID string) []byte
	// Driver is Ironic's hardware type for a node without a BMC (default
	// manual-management: Ironic powers nothing).
	Driver string
	// ConductorGroup is the group of the conductors that get a node
	// handed over without one named.
	ConductorGroup string
	Logger         *slog.Logger
}

// Result says what was done.
type Result struct {
	Node store.Node `json:"node"`
	// IronicUUID is the node's UUID in Ironic (created, or deleted).
	IronicUUID string `json:"ironic_uuid,omitempty"`
	// IronicState is its provision state there.
	IronicState string `json:"ironic_state,omitempty"`
}

func (s *Service) log() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}

// IdleStates are the states in which rackboot is doing nothing to a
// node, so that Ironic may take it; whatever moves a node to Ironic
// moves it only from these (store.SetOwner).
var IdleStates = []store.State{store.StateDiscovered, store.StateAvailable, store.StateFailed}

// Idle says whether st is one of IdleStates.
func Idle(st store.State) bool { return slices.Contains(IdleStates, st) }

// released are Ironic's provision states in which Ironic does nothing to
// a node and holds no instance on it.
var released = map[string]bool{baremetal.StateEnroll: true, baremetal.StateManageable: true, baremetal.StateAvailable: true}

// Options are a handover's choices.
type Options struct {
	// ConductorGroup is the Ironic conductor group that drives the node
	// (default: the Service's).
	ConductorGroup string
}

// ToIronic creates the node in Ironic with its ports and marks it owned
// by Ironic.
func (s *Service) ToIronic(ctx context.Context, ref string, o Options) (Result, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	n, err := s.Store.Node(ctx, ref)
	if err != nil {
		return Result{}, fmt.Errorf("hand over %s: %w", ref, err)
	}
	switch {
	case n.Owner == store.OwnerIronic:
		return Result{}, fmt.Errorf("hand over %s: already owned by Ironic: %w", n.ID, ErrState)
	case n.Kind == "vm":
		return Result{}, fmt.Errorf("hand over %s: a VM is its hypervisor's, not Ironic's: %w", n.ID, ErrState)
	case !Idle(n.State):
		return Result{}, fmt.Errorf("hand over %s: it is %s; hand over a node that is discovered, available or failed: %w", n.ID, n.State, ErrState)
	case len(n.MACs) == 0:
		return Result{}, fmt.Errorf("hand over %s: no MAC: Ironic finds nodes by their ports: %w", n.ID, ErrState)
	}
	for _, mac := range n.MACs {
		p, err := s.Ironic.PortByAddress(ctx, mac)
		if err == nil {
			return Result{}, fmt.Errorf("hand over %s: Ironic already has MAC %s (node %s): %w", n.ID, mac, p.NodeUUID, ErrState)
		}
		if !errors.Is(err, baremetal.ErrNotFound) {
			return Result{}, fmt.Errorf("hand over %s: %w", n.ID, err)
		}
	}
	in, err := s.ironicNode(ctx, n)
	if err != nil {
		return Result{}, fmt.Errorf("hand over %s: %w", n.ID, err)
	}
	in.ConductorGroup = o.ConductorGroup
	if in.ConductorGroup == "" {
		in.ConductorGroup = s.ConductorGroup
	}
	created, err := s.Ironic.CreateNode(ctx, in)
	if err != nil {
		var ie *baremetal.Error
		if !errors.As(err, &ie) || ie.Status >= 500 {
			// Ironic may have made it before the answer was lost.
			s.deleteMade(ctx, n.ID)
		}
		return Result{}, fmt.Errorf("hand over %s: %w", n.ID, err)
	}
	undo := func(cause error) error {
		if derr := s.Ironic.DeleteNode(context.WithoutCancel(ctx), created.UUID); derr != nil {
			s.log().Error("handover: the node made in Ironic could not be deleted again", "node", n.ID, "ironic", created.UUID, "err", derr)
			return fmt.Errorf("hand over %s: %w (and deleting Ironic's node %s again failed: %v)", n.ID, cause, created.UUID, derr)
		}
		return fmt.Errorf("hand over %s: %w (Ironic's node %s deleted again)", n.ID, cause, created.UUID)
	}
	pxe := pxeMAC(n)
	for _, mac := range n.MACs {
		on := mac == pxe
		if _, err := s.Ironic.CreatePort(ctx, baremetal.Port{Address: mac, NodeUUID: created.UUID, PXEEnabled: &on}); err != nil {
			return Result{}, undo(err)
		}
	}
	// Only if no action took the node, nor another server handed it
	// over, since it was checked above.
	n, err = s.Store.SetOwner(ctx, n.ID, store.OwnerRackboot, store.OwnerIronic, IdleStates...)
	if errors.Is(err, store.ErrConflict) {
		return Result{}, undo(fmt.Errorf("%w: %w", err, ErrState))
	}
	if err != nil {
		return Result{}, undo(err)
	}
	s.log().Info("node handed over to Ironic", "node", n.ID, "ironic", created.UUID, "driver", created.Driver)
	return Result{Node: n, IronicUUID: created.UUID, IronicState: created.ProvisionState}, nil
}

// ToRackboot takes a node back from Ironic once Ironic holds nothing on
// it: its Ironic node, found by its ports, must be enroll, manageable or
// available and not in maintenance; it is deleted there, and the node is
// rackboot's again. A node Ironic does not know is taken back at once.
func (s *Service) ToRackboot(ctx context.Context, ref string) (Result, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	n, err := s.Store.Node(ctx, ref)
	if err != nil {
		return Result{}, fmt.Errorf("take back %s: %w", ref, err)
	}
	if n.Owner != store.OwnerIronic {
		return Result{}, fmt.Errorf("take back %s: it is rackboot's already: %w", n.ID, ErrState)
	}
	// Ironic's nodes of this machine: the ones the handover made (by
	// extra.rackboot_node, whatever became of their ports) and any other
	// with one of its MACs, which rackboot did not make and will not
	// delete.
	made, err := s.madeFor(ctx, n.ID)
	if err != nil {
		return Result{}, fmt.Errorf("take back %s: %w", n.ID, err)
	}
	for _, mac := range n.MACs {
		p, err := s.Ironic.PortByAddress(ctx, mac)
		if errors.Is(err, baremetal.ErrNotFound) {
			continue
		}
		if err != nil {
			return Result{}, fmt.Errorf("take back %s: %w", n.ID, err)
		}
		if !slices.ContainsFunc(made, func(m baremetal.Node) bool { return m.UUID == p.NodeUUID }) {
			return Result{}, fmt.Errorf("take back %s: Ironic's node %s has its MAC %s and was not made by rackboot's handover: release and delete it in Ironic first: %w",
				n.ID, p.NodeUUID, mac, ErrState)
		}
	}
	if len(made) > 1 {
		var ids []string
		for _, m := range made {
			ids = append(ids, m.UUID)
		}
		return Result{}, fmt.Errorf("take back %s: Ironic has %d nodes made for it (%s): %w", n.ID, len(made), strings.Join(ids, ", "), ErrState)
	}
	var res Result
	if len(made) == 1 {
		in, err := s.Ironic.Node(ctx, made[0].UUID)
		if err != nil {
			return Result{}, fmt.Errorf("take back %s: %w", n.ID, err)
		}
		res.IronicUUID, res.IronicState = in.UUID, in.ProvisionState
		switch {
		case !released[in.ProvisionState]:
			return Result{}, fmt.Errorf("take back %s: Ironic's node %s is %s; Ironic must clean and release it first (available or manageable): %w",
				n.ID, in.UUID, in.ProvisionState, ErrState)
		case in.Maintenance:
			return Result{}, fmt.Errorf("take back %s: Ironic's node %s is in maintenance: %w", n.ID, in.UUID, ErrState)
		}
		if err := s.Ironic.DeleteNode(ctx, in.UUID); err != nil {
			return Result{}, fmt.Errorf("take back %s: %w", n.ID, err)
		}
	}
	if n, err = s.Store.SetOwner(ctx, n.ID, store.OwnerIronic, store.OwnerRackboot); err != nil {
		return Result{}, fmt.Errorf("take back %s: Ironic's node deleted, but: %w", ref, err)
	}
	res.Node = n
	s.log().Info("node taken back from Ironic", "node", n.ID, "ironic", res.IronicUUID)
	return res, nil
}

// madeFor is Ironic's nodes that a handover made for rackboot node id.
func (s *Service) madeFor(ctx context.Context, id string) ([]baremetal.Node, error) {
	all, err := s.Ironic.Nodes(ctx)
	if err != nil {
		return nil, err
	}
	var out []baremetal.Node
	for _, in := range all {
		if v, _ := in.Extra["rackboot_node"].(string); v == id {
			out = append(out, in)
		}
	}
	return out, nil
}

// deleteMade deletes the nodes a failed handover may have made in Ironic
// for rackboot node id, still in enroll (none of Ironic's work began).
func (s *Service) deleteMade(ctx context.Context, id string) {
	made, err := s.madeFor(ctx, id)
	if err != nil {
		s.log().Error("handover: could not look for a node Ironic may have made; check for one with extra.rackboot_node", "node", id, "err", err)
		return
	}
	for _, in := range made {
		if in.ProvisionState != baremetal.StateEnroll {
			continue
		}
		if err := s.Ironic.DeleteNode(ctx, in.UUID); err != nil {
			s.log().Error("handover: the node Ironic made could not be deleted again", "node", id, "ironic", in.UUID, "err", err)
		}
	}
}

// ironicName is what Ironic accepts as a node name: a host name's
// letters, digits, '-', '.', '_' and '~'.
var ironicName = regexp.MustCompile(`^[A-Za-z0-9\-._~]{1,255}$`)

// ironicNode is n as Ironic's node: its BMC as the driver and driver
// info, its inventory as the scheduling properties, rackboot's id in
// extra.
func (s *Service) ironicNode(ctx context.Context, n store.Node) (baremetal.Node, error) {
	in := baremetal.Node{Extra: map[string]any{"rackboot_node": n.ID}, Properties: map[string]any{}}
	if ironicName.MatchString(n.Name) {
		in.Name = n.Name
	}
	b, err := s.Store.BMC(ctx, n.ID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		in.Driver = s.Driver
		if in.Driver == "" {
			in.Driver = "manual-management"
		}
	case err != nil:
		return baremetal.Node{}, err
	default:
		if in.Driver, in.DriverInfo, err = s.driverInfo(n, b); err != nil {
			return baremetal.Node{}, err
		}
	}
	if arch := string(n.Arch); arch != "" {
		in.Properties["cpu_arch"] = arch
	}
	if len(n.Inventory) > 0 {
		var inv inventory.Inventory
		if err := json.Unmarshal(n.Inventory, &inv); err != nil {
			return baremetal.Node{}, fmt.Errorf("read the inventory: %w", err)
		}
		properties(in.Properties, inv)
	}
	return in, nil
}

// driverInfo is the BMC in Ironic's terms: the ipmi hardware type with
// ipmi_address, ipmi_port, ipmi_username, ipmi_password; or redfish with
// redfish_address (a URL), redfish_system_id, redfish_username,
// redfish_password and redfish_verify_ca.
func (s *Service) driverInfo(n store.Node, b store.BMC) (string, map[string]any, error) {
	u, err := url.Parse(b.URL)
	if err != nil || u.Host == "" {
		return "", nil, fmt.Errorf("BMC URL %q: %v", b.URL, err)
	}
	info := map[string]any{}
	if len(b.Password) > 0 && s.Secrets != nil && s.PasswordAD != nil {
		pw, err := s.Secrets.Open(b.Password, s.PasswordAD(n.ID))
		if err != nil {
			return "", nil, fmt.Errorf("the BMC password does not decrypt: %w", err)
		}
		info["password"] = string(pw)
	}
	switch u.Scheme {
	case "ipmi":
		out := map[string]any{"ipmi_address": u.Hostname(), "ipmi_username": b.User}
		if p := u.Port(); p != "" {
			port, _ := strconv.Atoi(p)
			out["ipmi_port"] = port
		}
		if pw, ok := info["password"]; ok {
			out["ipmi_password"] = pw
		}
		return "ipmi", out, nil
	case "redfish", "redfish+http":
		scheme := "https"
		if u.Scheme == "redfish+http" {
			scheme = "http"
		}
		out := map[string]any{"redfish_address": scheme + "://" + u.Host, "redfish_username": b.User}
		if strings.HasPrefix(u.Path, "/redfish/v1/Systems/") {
			out["redfish_system_id"] = u.Path
		}
		if pw, ok := info["password"]; ok {
			out["redfish_password"] = pw
		}
		// A pinned certificate has no CA Ironic could check it with; the
		// pin itself is rackboot's, so Ironic is told to verify (its
		// default) unless the BMC is plain HTTP.
		if scheme == "http" {
			out["redfish_verify_ca"] = false
		}
		return "redfish", out, nil
	}
	return "", nil, fmt.Errorf("BMC URL %q: Ironic drives ipmi and redfish BMCs", b.URL)
}

// properties are the inventory's figures as Ironic's scheduling reads
// them: cpus, memory_mb, local_gb (the largest disk, less the 1 GiB
// Ironic's own inspection keeps back), cpu_arch, and the boot mode as a
// capability.
func properties(p map[string]any, inv inventory.Inventory) {
	if inv.CPU.Count > 0 {
		p["cpus"] = inv.CPU.Count
	}
	if inv.CPU.Architecture != "" {
		p["cpu_arch"] = inv.CPU.Architecture
	}
	if mb := inv.Memory.PhysicalMB; mb > 0 {
		p["memory_mb"] = mb
	}
	var largest int64
	for _, d := range inv.Disks {
		largest = max(largest, d.Size)
	}
	if gb := largest/(1<<30) - 1; gb > 0 {
		p["local_gb"] = gb
	}
	if m := inv.Boot.CurrentBootMode; m != "" {
		p["capabilities"] = "boot_mode:" + m
	}
}

// pxeMAC is the MAC the node booted from, when the inventory says, else
// its first.
func pxeMAC(n store.Node) string {
	if len(n.Inventory) > 0 {
		var inv inventory.Inventory
		if json.Unmarshal(n.Inventory, &inv) == nil {
			m := strings.ToLower(inv.Boot.PXEInterface)
			if contains(n.MACs, m) {
				return m
			}
		}
	}
	return n.MACs[0]
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
