package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/rackboot/rackboot/agent/inventory"
	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/ironic/handover"
	"github.com/rackboot/rackboot/lifecycle"
	"github.com/rackboot/rackboot/store"
	"github.com/rackboot/rackboot/trace"
)

// Node is a node as the API shows it. Inventory is only in single-node
// answers, not in lists.
type Node struct {
	ID           string    `json:"id"`
	Name         string    `json:"name"`
	Kind         string    `json:"kind"`
	State        string    `json:"state"`
	Arch         string    `json:"arch"`
	Firmware     string    `json:"firmware"`
	ClientArch   string    `json:"client_arch"`
	SecureBoot   *bool     `json:"secure_boot"`
	UUID         string    `json:"uuid,omitempty"`
	MACs         []string  `json:"macs"`
	Rack         string    `json:"rack"`
	Position     int       `json:"position"`
	Tags         []string  `json:"tags"`
	Owner        string    `json:"owner"`
	GPUModels    []string  `json:"gpu_models"`
	LastError    string    `json:"last_error"`
	Actions      []string  `json:"actions"`
	StateChanged time.Time `json:"state_changed"`
	FirstSeen    time.Time `json:"first_seen"`
	LastSeen     time.Time `json:"last_seen"`
	// PowerManaged: the node has a BMC, so its actions power it into
	// the agent; false, an action waits for somebody to reboot it.
	PowerManaged bool `json:"power_managed"`
	// Power is the node's power state as rackboot last asked its BMC;
	// absent for a node never asked (no BMC, or not polled yet).
	Power     *NodePower      `json:"power,omitempty"`
	Inventory json.RawMessage `json:"inventory,omitempty"`
}

// NodePower is a node's last known power state.
type NodePower struct {
	// State is on, off or unknown (the BMC did not answer: Error says why).
	State   string    `json:"state"`
	Error   string    `json:"error,omitempty"`
	Checked time.Time `json:"checked"`
	Changed time.Time `json:"changed"`
}

// NodePowerFrom converts a stored power state.
func NodePowerFrom(p store.PowerState) *NodePower {
	return &NodePower{State: p.State, Error: p.Error, Checked: p.Checked, Changed: p.Changed}
}

// view is NodeFrom with PowerManaged read from the store; a read that
// fails says false.
func (s *Server) view(r *http.Request, n store.Node) Node {
	out := NodeFrom(n)
	_, err := s.Store.BMC(r.Context(), n.ID)
	out.PowerManaged = err == nil
	return out
}

// NodeFrom converts a stored node, without its inventory, and without
// PowerManaged (false).
func NodeFrom(n store.Node) Node {
	out := Node{ID: n.ID, Name: n.Name, Kind: n.Kind, State: string(n.State), Arch: string(n.Arch), Firmware: string(n.Firmware),
		ClientArch: n.ClientArch.String(), SecureBoot: n.SecureBoot, UUID: n.UUID, MACs: n.MACs,
		Rack: n.Rack, Position: n.Position, Tags: n.Tags, Owner: n.Owner, GPUModels: n.GPUModels, LastError: n.LastError,
		Actions: []string{}, StateChanged: n.StateChanged, FirstSeen: n.FirstSeen, LastSeen: n.LastSeen}
	for _, a := range lifecycle.Allowed(n.State) {
		out.Actions = append(out.Actions, string(a))
	}
	for _, p := range []*[]string{&out.MACs, &out.Tags, &out.GPUModels} {
		if *p == nil {
			*p = []string{}
		}
	}
	return out
}

// NodeList is a page of nodes. NextCursor, when not empty, fetches the
// next page as ?cursor=.
type NodeList struct {
	Items      []Node `json:"items"`
	NextCursor string `json:"next_cursor"`
}

// limit reads ?limit= (default def, at most 1000).
func limit(w http.ResponseWriter, r *http.Request, def int) (int, bool) {
	v := r.URL.Query().Get("limit")
	if v == "" {
		return def, true
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 || n > 1000 {
		writeError(w, http.StatusBadRequest, "bad_request", "limit must be a number from 1 to 1000")
		return 0, false
	}
	return n, true
}

func (s *Server) listNodes(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	n, ok := limit(w, r, 100)
	if !ok {
		return
	}
	f := store.NodeFilter{State: store.State(q.Get("state")), Arch: boot.Arch(q.Get("arch")), Rack: q.Get("rack"),
		Tag: q.Get("tag"), GPU: q.Get("gpu"), Query: q.Get("q"), After: q.Get("cursor"), Limit: n + 1}
	nodes, err := s.Store.ListNodes(r.Context(), f)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := NodeList{Items: []Node{}}
	if len(nodes) > n {
		nodes = nodes[:n]
		out.NextCursor = nodes[n-1].ID
	}
	bmcs, err := s.Store.BMCs(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	managed := map[string]bool{}
	for _, b := range bmcs {
		managed[b.NodeID] = true
	}
	powers := map[string]store.PowerState{}
	if len(nodes) > 0 {
		ps, err := s.Store.PowerStates(r.Context())
		if err != nil {
			s.fail(w, r, err)
			return
		}
		for _, p := range ps {
			powers[p.NodeID] = p
		}
	}
	for _, nd := range nodes {
		item := NodeFrom(nd)
		item.PowerManaged = managed[nd.ID]
		if p, ok := powers[nd.ID]; ok {
			item.Power = NodePowerFrom(p)
		}
		out.Items = append(out.Items, item)
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) node(w http.ResponseWriter, r *http.Request) (store.Node, bool) {
	n, err := s.Store.Node(r.Context(), chi.URLParam(r, "id"))
	if err != nil {
		s.fail(w, r, err)
		return n, false
	}
	return n, true
}

func (s *Server) getNode(w http.ResponseWriter, r *http.Request) {
	n, ok := s.node(w, r)
	if !ok {
		return
	}
	out := s.view(r, n)
	out.Inventory = n.Inventory
	switch p, err := s.Store.PowerState(r.Context(), n.ID); {
	case err == nil:
		out.Power = NodePowerFrom(p)
	case !errors.Is(err, store.ErrNotFound):
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// NodePatch is the body of PATCH /api/v1/nodes/{id}: each field present
// is set. SecureBoot is "on", "off" or "inherit" (the subnet's setting).
type NodePatch struct {
	Name       *string   `json:"name,omitempty"`
	Rack       *string   `json:"rack,omitempty"`
	Position   *int      `json:"position,omitempty"`
	Tags       *[]string `json:"tags,omitempty"`
	Owner      *string   `json:"owner,omitempty"`
	SecureBoot *string   `json:"secure_boot,omitempty"`
}

// NewNode is the body of POST /api/v1/nodes: a machine admitted before
// it first boots, so that it boots where enroll is known.
type NewNode struct {
	MAC string `json:"mac"`
	// Arch is x86_64 or aarch64, when known; the first boot says it.
	Arch string `json:"arch,omitempty"`
	Name string `json:"name,omitempty"`
}

func (s *Server) createNode(w http.ResponseWriter, r *http.Request) {
	var nn NewNode
	if !decode(w, r, &nn) {
		return
	}
	mac, err := net.ParseMAC(nn.MAC)
	if err != nil || len(mac) != 6 {
		writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("mac %q is not an Ethernet MAC address", nn.MAC))
		return
	}
	arch := boot.ClientArch(0xffff)
	switch nn.Arch {
	case "":
	case string(boot.ArchX86_64):
		arch = boot.ClientX64UEFI
	case string(boot.ArchAArch64):
		arch = boot.ClientARM64UEFI
	default:
		writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("arch %q: want x86_64 or aarch64", nn.Arch))
		return
	}
	if _, err := s.Store.NodeByMAC(r.Context(), mac); err == nil {
		writeError(w, http.StatusConflict, "conflict", "a node already has MAC "+mac.String())
		return
	}
	n, _, err := s.Store.EnrollClient(r.Context(), boot.Client{MAC: mac, Arch: arch}, time.Now())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if nn.Name != "" {
		if n, err = s.Store.UpdateNode(r.Context(), n.ID, store.NodePatch{Name: &nn.Name}); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	writeJSON(w, http.StatusCreated, NodeFrom(n))
}

// ownerChange says whether the caller may move n to owner by a plain
// PATCH, or answers why not: only an admin may, never while an Ironic API
// is configured (node handover checks both sides then), and a node goes
// to Ironic only while rackboot does nothing to it.
func (s *Server) ownerChange(w http.ResponseWriter, r *http.Request, n store.Node, owner string) bool {
	switch {
	case principal(r).Role != store.RoleAdmin:
		writeError(w, http.StatusForbidden, "forbidden", "changing a node's owner needs the admin role")
	case s.Handover != nil:
		writeError(w, http.StatusConflict, "conflict", fmt.Sprintf("this server hands nodes over through Ironic's API: rackboot node handover %s --to %s", n.ID, owner))
	case owner == store.OwnerIronic && !handover.Idle(n.State):
		writeError(w, http.StatusConflict, "conflict", fmt.Sprintf("node %s is %s: rackboot is at work on it; give it to Ironic when it is discovered, available or failed", n.ID, n.State))
	default:
		return true
	}
	return false
}

func (s *Server) patchNode(w http.ResponseWriter, r *http.Request) {
	var p NodePatch
	if !decode(w, r, &p) {
		return
	}
	if p.Owner != nil && *p.Owner != "rackboot" && *p.Owner != "ironic" {
		writeError(w, http.StatusBadRequest, "bad_request", `owner must be "rackboot" or "ironic"`)
		return
	}
	if p.Position != nil && (*p.Position < 0 || *p.Position > 100) {
		writeError(w, http.StatusBadRequest, "bad_request", "position is a rack unit from 0 (unknown) to 100")
		return
	}
	var sb *bool
	if p.SecureBoot != nil {
		switch *p.SecureBoot {
		case "on", "off":
			v := *p.SecureBoot == "on"
			sb = &v
		case "inherit":
		default:
			writeError(w, http.StatusBadRequest, "bad_request", `secure_boot must be "on", "off" or "inherit"`)
			return
		}
	}
	n, ok := s.node(w, r)
	if !ok {
		return
	}
	if p.Owner != nil && *p.Owner != n.Owner && !s.ownerChange(w, r, n, *p.Owner) {
		return
	}
	if n.Kind == "vm" && p.Name != nil && *p.Name != n.Name {
		// The name is its libvirt domain's, by which rackboot drives it.
		writeError(w, http.StatusConflict, "conflict", fmt.Sprintf("node %s is a VM: its name is its domain's and stays %s", n.ID, n.Name))
		return
	}
	if p.Owner != nil && *p.Owner != n.Owner {
		// In one statement with the state check: an action that took
		// the node since it was read wins.
		var states []store.State
		if *p.Owner == store.OwnerIronic {
			states = handover.IdleStates
		}
		if _, err := s.Store.SetOwner(r.Context(), n.ID, n.Owner, *p.Owner, states...); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	n, err := s.Store.UpdateNode(r.Context(), n.ID, store.NodePatch{Name: p.Name, Rack: p.Rack, Position: p.Position, Tags: p.Tags})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if p.SecureBoot != nil {
		if err := s.Store.SetSecureBoot(r.Context(), n.ID, sb); err != nil {
			s.fail(w, r, err)
			return
		}
		if n, err = s.Store.Node(r.Context(), n.ID); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	writeJSON(w, http.StatusOK, s.view(r, n))
}

func (s *Server) deleteNode(w http.ResponseWriter, r *http.Request) {
	n, ok := s.node(w, r)
	if !ok {
		return
	}
	if err := s.Store.DeleteNode(r.Context(), n.ID); err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// ActionResult is the answer to a node action.
type ActionResult struct {
	Node  Node  `json:"node"`
	Event Event `json:"event"`
}

func (s *Server) action(w http.ResponseWriter, r *http.Request) {
	var p lifecycle.Params
	if !decodeOptional(w, r, &p) {
		return
	}
	a := lifecycle.Action(chi.URLParam(r, "action"))
	var hvToken string
	if p.Role != "" {
		// The node gets a server certificate rackboot trusts for
		// hypervisors: making one is an admin's, as adding one is.
		if rank(principal(r).Role) < rank(store.RoleAdmin) {
			writeError(w, http.StatusForbidden, "forbidden", "deploying a hypervisor (role hypervisor) needs admin")
			return
		}
		if a != lifecycle.Deploy || p.Role != "hypervisor" {
			writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("role %q: deploy takes role hypervisor, and no other action a role", p.Role))
			return
		}
		seed, id, err := s.hypervisorSeed(r.Context(), chi.URLParam(r, "id"), p.CloudInit)
		if err != nil {
			s.failVM(w, r, err)
			return
		}
		p.CloudInit, hvToken = seed, id
	}
	n, ev, err := s.Lifecycle.Do(r.Context(), chi.URLParam(r, "id"), a, p, principal(r).Actor)
	if err != nil {
		if hvToken != "" {
			s.dropHypervisorToken(r.Context(), hvToken)
		}
		s.fail(w, r, err)
		return
	}
	switch {
	case hvToken != "":
		// The node is deploying with the new token: its old agent,
		// whose disk is being written, needs its own no more.
		if err := s.replaceHypervisorToken(r.Context(), n.ID, hvToken); err != nil {
			s.log().Warn("revoke the node's old hypervisor agent tokens", "node", n.ID, "err", err)
		}
	case a == lifecycle.Deploy || a == lifecycle.Wipe:
		// Its disk gets another system, or none: no hypervisor agent
		// of it will call in again.
		if err := s.Store.DeleteTokens(context.WithoutCancel(r.Context()), store.TokenHypervisor, n.ID, ""); err != nil {
			s.log().Warn("revoke the node's hypervisor agent tokens", "node", n.ID, "err", err)
		}
	}
	writeJSON(w, http.StatusOK, ActionResult{Node: s.view(r, n), Event: EventFrom(ev)})
}

// BootEvent is one stored boot event.
type BootEvent struct {
	Seq        int64             `json:"seq"`
	Time       time.Time         `json:"time"`
	MAC        string            `json:"mac,omitempty"`
	IP         string            `json:"ip,omitempty"`
	Proto      string            `json:"proto"`
	Kind       string            `json:"kind"`
	File       string            `json:"file,omitempty"`
	Bytes      int64             `json:"bytes"`
	Size       int64             `json:"size"`
	BlockSize  int               `json:"block_size,omitempty"`
	WindowSize int               `json:"window_size,omitempty"`
	Complete   bool              `json:"complete"`
	Error      string            `json:"error,omitempty"`
	Options    map[string]string `json:"options,omitempty"`
}

// Trace is a node's boot trace: the boots with their verdicts, and the
// raw events.
type Trace struct {
	Node   string       `json:"node"`
	Boots  []trace.Boot `json:"boots"`
	Events []BootEvent  `json:"events"`
}

func (s *Server) getInventory(w http.ResponseWriter, r *http.Request) {
	n, ok := s.node(w, r)
	if !ok {
		return
	}
	if len(n.Inventory) == 0 {
		writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("node %s has not been inspected", n.ID))
		return
	}
	f := r.URL.Query().Get("format")
	if f != "" && f != "rackboot" && f != "ironic" {
		writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("format %q: want rackboot or ironic", f))
		return
	}
	var inv inventory.Inventory
	if err := json.Unmarshal(n.Inventory, &inv); err != nil || inv.Version != inventory.Version {
		writeError(w, http.StatusConflict, "conflict", fmt.Sprintf("node %s's inventory (version %d) is not this server's version %d: inspect it again", n.ID, inv.Version, inventory.Version))
		return
	}
	if f == "ironic" {
		writeJSON(w, http.StatusOK, inv.Ironic())
		return
	}
	writeJSON(w, http.StatusOK, inv)
}

// putInventory stores an inventory taken on a machine rackboot did not
// inspect (rackboot-agent inventory run on an existing hypervisor, say),
// so that it can be placed on like an inspected one.
func (s *Server) putInventory(w http.ResponseWriter, r *http.Request) {
	var raw json.RawMessage
	if !decode(w, r, &raw) {
		return
	}
	n, ok := s.node(w, r)
	if !ok {
		return
	}
	var inv inventory.Inventory
	if err := json.Unmarshal(raw, &inv); err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", "not an inventory: "+err.Error())
		return
	}
	switch {
	case inv.Version != inventory.Version:
		writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("inventory version %d, this server reads %d: take it with this release's rackboot-agent inventory", inv.Version, inventory.Version))
		return
	case inv.CPU.Architecture != string(boot.ArchX86_64) && inv.CPU.Architecture != string(boot.ArchAArch64):
		writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("inventory CPU architecture %q: want x86_64 or aarch64", inv.CPU.Architecture))
		return
	case n.Arch != "" && string(n.Arch) != inv.CPU.Architecture:
		writeError(w, http.StatusConflict, "conflict", fmt.Sprintf("node %s boots as %s, the inventory is of an %s machine", n.ID, n.Arch, inv.CPU.Architecture))
		return
	case n.State == store.StateInspecting:
		writeError(w, http.StatusConflict, "conflict", fmt.Sprintf("node %s is being inspected: its agent writes the inventory", n.ID))
		return
	}
	if err := s.Store.SetInventory(r.Context(), n.ID, raw, gpuModels(raw)); err != nil {
		s.fail(w, r, err)
		return
	}
	s.audit(r, principal(r), n.ID, fmt.Sprintf("inventory set by hand: %s, %d CPUs, %d GPUs", inv.CPU.Architecture, inv.CPU.Threads, len(inv.GPUs)))
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) getTrace(w http.ResponseWriter, r *http.Request) {
	n, ok := s.node(w, r)
	if !ok {
		return
	}
	lim, ok := limit(w, r, 1000)
	if !ok {
		return
	}
	events, err := s.Store.Trace(r.Context(), n.ID, lim)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := Trace{Node: n.ID, Events: []BootEvent{}, Boots: []trace.Boot{}}
	raw := make([]boot.Event, 0, len(events))
	for _, e := range events {
		raw = append(raw, e.Event)
		be := BootEvent{Seq: e.Seq, Time: e.Time, Proto: e.Proto, Kind: e.Kind, File: e.File, Bytes: e.Bytes, Size: e.Size,
			BlockSize: e.BlockSize, WindowSize: e.WindowSize, Complete: e.Complete, Error: e.Error, Options: e.Options}
		if len(e.MAC) > 0 {
			be.MAC = e.MAC.String()
		}
		if e.IP.IsValid() {
			be.IP = e.IP.String()
		}
		out.Events = append(out.Events, be)
	}
	if b := trace.Summarize(raw); b != nil {
		out.Boots = b
	}
	writeJSON(w, http.StatusOK, out)
}
