package api

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/rackboot/rackboot/agent/protocol"
	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/lifecycle"
	"github.com/rackboot/rackboot/store"
)

// DefaultAgentHeartbeat is how often agents are asked to call in when
// Server.AgentHeartbeat is not set.
const DefaultAgentHeartbeat = 10 * time.Second

// agentTokenID makes a node's agent token id fixed, so two lookups racing
// each other cannot both be issued one: the second insert conflicts.
func agentTokenID(node string) string { return "agent-" + node }

// lookupEvent is an agent's lookup as its node's boot trace records it.
func lookupEvent(peer netip.Addr) boot.Event {
	return boot.Event{Time: time.Now(), Proto: protocol.ProtoAgent, Kind: protocol.KindLookup, IP: peer}
}

// agentMadeToken says whether a token an agent proposes in its lookup is
// one as NewSecret makes them: the prefix and 32 random bytes in hex.
func agentMadeToken(t string) bool {
	h, ok := strings.CutPrefix(t, TokenPrefix)
	if !ok || len(h) != 64 {
		return false
	}
	for _, c := range h {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func (s *Server) agentLookup(w http.ResponseWriter, r *http.Request) {
	var l protocol.Lookup
	if !decode(w, r, &l) {
		return
	}
	if len(l.MACs) == 0 {
		writeError(w, http.StatusBadRequest, "bad_request", "a lookup needs the agent's MACs")
		return
	}
	// MACs only: a lookup by name or id would hand any node's token to
	// whoever names it.
	var n store.Node
	found := false
	for _, m := range l.MACs {
		mac, err := net.ParseMAC(m)
		if err != nil || len(mac) != 6 {
			writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("%q is not an Ethernet MAC address", m))
			return
		}
		if found {
			continue
		}
		nd, err := s.Store.NodeByMAC(r.Context(), mac)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			s.fail(w, r, err)
			return
		}
		n, found = nd, true
	}
	if !found {
		writeError(w, http.StatusNotFound, "not_found", "no node owns any of "+strings.Join(l.MACs, ", ")+": a node is enrolled when it network-boots through rackboot")
		return
	}
	if l.NodeID != "" && l.NodeID != n.ID {
		writeError(w, http.StatusConflict, "conflict", fmt.Sprintf("these MACs belong to node %s, not %s", n.ID, l.NodeID))
		return
	}
	boot, ok := s.bootSecret(w, r, n, l.BootSecret)
	if !ok {
		return
	}
	if boot.Kind == store.TokenBoot {
		// The first lookup of a new boot: whatever agent came before is
		// gone, and so is the work it had not reported.
		if err := s.Store.DeleteTokens(r.Context(), "agent", n.ID, ""); err != nil {
			s.fail(w, r, err)
			return
		}
		var err error
		if n, err = s.Lifecycle.NewBoot(r.Context(), n.ID, "system"); err != nil {
			s.fail(w, r, err)
			return
		}
		s.Broker.Publish()
		// Marked used last, in one statement: a failure before it leaves
		// the secret unused, so the agent's retry does the steps above
		// again (each is idempotent), and the node never loses its
		// secret between a delete and an insert. A lookup that raced
		// this one to it (ErrConflict) found the same new boot; a secret
		// replaced meanwhile (the node's next boot fetched its script)
		// stays unused for that boot's agent.
		if err := s.Store.SetTokenKind(r.Context(), boot.ID, boot.Hash, store.TokenBoot, store.TokenBootUsed); err != nil && !errors.Is(err, store.ErrConflict) {
			s.fail(w, r, err)
			return
		}
	}
	actor := "agent:" + n.ID
	if n.State == store.StateDiscovered {
		// A new node's agent is its inspection: nobody has to ask.
		var err error
		if n, _, err = s.Lifecycle.Do(r.Context(), n.ID, lifecycle.Inspect, lifecycle.Params{Reason: "the agent came up on a new node"}, "system"); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	if !lifecycle.RunsAgent(n.State) {
		writeError(w, http.StatusConflict, "conflict", fmt.Sprintf("node %s is %s: it has no work for an agent", n.ID, n.State))
		return
	}
	secret, hash := NewSecret()
	if l.Token != "" {
		if !agentMadeToken(l.Token) {
			writeError(w, http.StatusBadRequest, "bad_request", "a lookup's token must be "+TokenPrefix+" and 64 hex digits, made from the agent's random numbers")
			return
		}
		secret, hash = l.Token, HashSecret(l.Token)
	}
	tok := store.Token{ID: agentTokenID(n.ID), Hash: hash, Kind: "agent", Role: store.RoleAgent,
		Name: "agent of " + n.ID, NodeID: n.ID, NodeState: n.State}
	_, err := s.Store.CreateToken(r.Context(), tok)
	if errors.Is(err, store.ErrConflict) && l.Token != "" {
		// The agent the token was issued to, asking again: the answer
		// to its first lookup was lost (a timeout, a reset connection),
		// and without this it would be refused until the agent timeout
		// failed its node. Only it knows the token it chose, which went
		// over TLS. The token is left as it is, never issued anew: a
		// moment without it would let another lookup take its place.
		if old, e := s.Store.TokenByHash(r.Context(), hash); e == nil && old.ID == tok.ID && old.Kind == "agent" && old.NodeState == n.State {
			s.log().Info("agent lookup repeated by the agent its token was issued to: answered again", "node", n.ID, "peer", r.RemoteAddr)
			err = nil
		}
	}
	if errors.Is(err, store.ErrConflict) {
		s.log().Warn("second agent lookup refused", "node", n.ID, "peer", r.RemoteAddr)
		writeError(w, http.StatusConflict, "conflict", "an agent token was already issued for this node; a new one is issued after the node changes state or network-boots again")
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.audit(r, Principal{Actor: actor}, n.ID, "agent token issued to "+r.RemoteAddr)
	// In the boot trace too: a boot whose agent never gets here says so.
	peer, _ := netip.ParseAddrPort(r.RemoteAddr)
	if err := s.Store.AddTrace(context.WithoutCancel(r.Context()), n.ID, lookupEvent(peer.Addr().Unmap())); err != nil {
		s.log().Warn("boot trace of an agent lookup", "node", n.ID, "err", err)
	}
	writeJSON(w, http.StatusOK, protocol.LookupResult{NodeID: n.ID, State: string(n.State), Token: secret, Heartbeat: protocol.Duration(cmp.Or(s.AgentHeartbeat, DefaultAgentHeartbeat))})
}

// bootSecret checks a lookup's boot secret against the node's current
// one, answering the refusal itself. It is the agent's proof that the
// node's own, newest boot script started it: the script is the only
// place the secret was written, and it was served only to the node.
func (s *Server) bootSecret(w http.ResponseWriter, r *http.Request, n store.Node, secret string) (store.Token, bool) {
	refuse := func(why string) (store.Token, bool) {
		s.log().Warn("agent lookup refused", "node", n.ID, "peer", r.RemoteAddr, "why", why)
		writeError(w, http.StatusForbidden, "forbidden", why)
		return store.Token{}, false
	}
	if secret == "" {
		return refuse("no boot secret: the agent's kernel command line has no rackboot.boot= (was its boot script fetched from another address than the node's?)")
	}
	t, err := s.Store.TokenByHash(r.Context(), HashSecret(secret))
	if errors.Is(err, store.ErrNotFound) {
		return refuse("the boot secret is not node " + n.ID + "'s current one (the node booted again since, or the script came from another address)")
	}
	if err != nil {
		s.fail(w, r, err)
		return store.Token{}, false
	}
	if (t.Kind != store.TokenBoot && t.Kind != store.TokenBootUsed) || t.NodeID != n.ID {
		return refuse("the boot secret is not node " + n.ID + "'s current one (the node booted again since, or the script came from another address)")
	}
	if !t.Expires.IsZero() && time.Now().After(t.Expires) {
		return refuse("the boot secret expired: network-boot the node again")
	}
	return t, true
}

// gpuModels picks the accelerator model names out of an inventory, so
// lists can filter on them without knowing the whole inventory.
func gpuModels(inv json.RawMessage) []string {
	var doc struct {
		GPUs []struct {
			Model     string `json:"model"`
			ModelName string `json:"model_name"`
			Name      string `json:"name"`
		} `json:"gpus"`
	}
	json.Unmarshal(inv, &doc)
	out := []string{}
	for _, g := range doc.GPUs {
		for _, m := range []string{g.Model, g.ModelName, g.Name} {
			if m != "" {
				out = append(out, m)
				break
			}
		}
	}
	return out
}

func (s *Server) agentInventory(w http.ResponseWriter, r *http.Request) {
	var inv json.RawMessage
	if !decode(w, r, &inv) {
		return
	}
	var obj map[string]json.RawMessage
	if json.Unmarshal(inv, &obj) != nil || obj["version"] == nil {
		writeError(w, http.StatusBadRequest, "bad_request", "an inventory is a JSON object with a version")
		return
	}
	id := principal(r).NodeID
	var before []byte
	if n, err := s.Store.Node(r.Context(), id); err == nil {
		before = n.Inventory
	}
	if err := s.Store.SetInventory(r.Context(), id, inv, gpuModels(inv)); err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
	s.driverEvents(r, id, before, inv)
}

// unclaimed is what the API reads of an inventory's unclaimed_devices.
type unclaimed struct {
	Address string `json:"pci_address"`
	ID      string `json:"id"`
	Kind    string `json:"kind"`
	Name    string `json:"name"`
}

func unclaimedOf(inv []byte) []unclaimed {
	var v struct {
		Unclaimed []unclaimed `json:"unclaimed_devices"`
	}
	json.Unmarshal(inv, &v)
	return v.Unclaimed
}

// driverEvents writes an event for each network or storage controller of
// a node that no driver claims and that its last inventory did not
// already name: the reason a NIC or disk is missing, where people look.
func (s *Server) driverEvents(r *http.Request, node string, before, after []byte) {
	seen := map[unclaimed]bool{}
	for _, u := range unclaimedOf(before) {
		seen[u] = true
	}
	ctx := context.WithoutCancel(r.Context())
	for i, u := range unclaimedOf(after) {
		if seen[u] || i >= 32 {
			continue
		}
		msg := fmt.Sprintf("no driver for %.16s %.16s at %.16s", u.Kind, u.ID, u.Address)
		if u.Name != "" {
			msg += fmt.Sprintf(" (%.120s)", u.Name)
		}
		msg += ": the agent ramdisk has no module for it"
		if _, err := s.Store.AddEvent(ctx, store.Event{NodeID: node, Actor: "agent:" + node, Kind: "driver", Message: msg}); err != nil {
			s.log().Error("driver event", "node", node, "err", err)
			return
		}
		s.Broker.Publish()
	}
}

func (s *Server) agentHeartbeat(w http.ResponseWriter, r *http.Request) {
	var hb protocol.Heartbeat
	if !decodeOptional(w, r, &hb) {
		return
	}
	n, err := s.Store.Node(r.Context(), principal(r).NodeID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if err := s.Store.TouchNode(r.Context(), n.ID, time.Now()); err != nil {
		s.fail(w, r, err)
		return
	}
	out := protocol.HeartbeatResult{State: string(n.State)}
	if hb.Running != "" && hb.Progress != nil {
		t, err := s.Store.Task(r.Context(), hb.Running)
		if err != nil || t.NodeID != n.ID {
			writeError(w, http.StatusNotFound, "not_found", "no such task for this node")
			return
		}
		b, _ := json.Marshal(hb.Progress)
		// A task that ended meanwhile keeps its end: the progress is late.
		if err := s.Store.TaskProgress(r.Context(), t.ID, b, time.Now()); err != nil && !errors.Is(err, store.ErrConflict) {
			s.fail(w, r, err)
			return
		}
	}
	if hb.Running == "" {
		t, again, err := s.nextTask(r.Context(), n.ID)
		switch {
		case err == nil:
			out.Task = &protocol.Task{ID: t.ID, Kind: t.Kind, Params: t.Params}
			msg := t.Kind + " started (task " + t.ID + ")"
			if again {
				msg = t.Kind + " handed to the agent again (task " + t.ID + "): it asked for work while the task ran, so the answer that handed it out, or its report, was lost"
				s.log().Warn("task handed out again", "node", n.ID, "task", t.ID, "kind", t.Kind)
			}
			s.Store.AddEvent(r.Context(), store.Event{NodeID: n.ID, Actor: "agent:" + n.ID, Kind: "task", Message: msg})
			s.Broker.Publish()
		case !errors.Is(err, store.ErrNotFound):
			s.fail(w, r, err)
			return
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// nextTask is the task for an agent that runs none: one still running
// first, handed out again, then the oldest pending one. An agent asks
// only when it runs nothing, so a task still running was handed out by
// an answer the agent never read, or the agent's report of it was lost;
// the agent keeps the reports of what it ran, and so runs the task or
// reports it again. Without this the task would stay running, and its
// node busy, for as long as the agent kept calling in.
func (s *Server) nextTask(ctx context.Context, node string) (t store.Task, again bool, err error) {
	running, err := s.Store.Tasks(ctx, store.TaskFilter{NodeID: node, State: store.TaskRunning, Limit: 1})
	if err != nil {
		return t, false, err
	}
	if len(running) > 0 {
		return running[0], true, nil
	}
	t, err = s.Store.ClaimTask(ctx, node, time.Now())
	return t, false, err
}

func (s *Server) agentTask(w http.ResponseWriter, r *http.Request) {
	var rep protocol.TaskReport
	if !decode(w, r, &rep) {
		return
	}
	if rep.State != protocol.Done && rep.State != protocol.Failed {
		writeError(w, http.StatusBadRequest, "bad_request", `state must be "done" or "failed"`)
		return
	}
	ctx := r.Context()
	id := principal(r).NodeID
	t, err := s.Store.Task(ctx, chi.URLParam(r, "tid"))
	if err != nil || t.NodeID != id {
		writeError(w, http.StatusNotFound, "not_found", "no such task for this node")
		return
	}
	if t.State != store.TaskRunning {
		writeError(w, http.StatusConflict, "conflict", fmt.Sprintf("task %s is %s, not running", t.ID, t.State))
		return
	}
	n, err := s.Store.Node(ctx, id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if rep.State == protocol.Done && t.Kind == protocol.TaskInspect && len(n.Inventory) == 0 {
		rep.State, rep.Error = protocol.Failed, "the inspection ended without an inventory"
	}
	t.State, t.Result, t.Error = store.TaskState(rep.State), rep.Result, rep.Error
	actor := "agent:" + id
	msg := t.Kind + " " + rep.State + " (task " + t.ID + ")"
	if rep.Error != "" {
		msg += ": " + rep.Error
	}
	if lifecycle.Untested(t) != "" {
		msg = t.Kind + " incomplete (task " + t.ID + "): not everything was tested, so it did not pass"
	}
	report := []store.Event{{NodeID: id, Actor: actor, Kind: "task", Message: msg}}
	if t.Kind == protocol.TaskWipe {
		for _, m := range wipeRecords(rep.Result) {
			report = append(report, store.Event{NodeID: id, Actor: actor, Kind: "wipe", Message: m})
		}
	}
	// The task's end, its log lines and the node's move are stored
	// together or not at all: a failure leaves the task running, and the
	// agent's next report tries again.
	if n, err = s.Lifecycle.TaskEnded(ctx, t, actor, report); err != nil {
		s.fail(w, r, err)
		return
	}
	s.Broker.Publish()
	writeJSON(w, http.StatusOK, protocol.HeartbeatResult{State: string(n.State)})
}

// wipeRecords turns a wipe's per-disk records into audit log lines: which
// disk (by serial, which outlives device names), how, how much, and how
// many sampled blocks read back as zero.
func wipeRecords(result json.RawMessage) []string {
	var r struct {
		Disks []struct {
			Disk    string   `json:"disk"`
			Serial  string   `json:"serial"`
			Method  string   `json:"method"`
			Bytes   int64    `json:"bytes"`
			Samples int      `json:"samples_verified"`
			Tried   []string `json:"tried"`
		} `json:"disks"`
	}
	if json.Unmarshal(result, &r) != nil {
		return nil
	}
	var out []string
	for _, d := range r.Disks {
		serial := d.Serial
		if serial == "" {
			serial = "none"
		}
		m := fmt.Sprintf("wipe of %s (serial %s): %s, %d bytes, %d sampled blocks read back zero", d.Disk, serial, d.Method, d.Bytes, d.Samples)
		if len(d.Tried) > 0 {
			m += "; not used: " + strings.Join(d.Tried, "; ")
		}
		out = append(out, m)
	}
	return out
}
