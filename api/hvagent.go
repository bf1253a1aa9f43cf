package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/rackboot/rackboot/agent/protocol"
	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/hypervisor"
	"github.com/rackboot/rackboot/store"
)

// HypervisorAgentToken is a hypervisor agent's new credential, shown
// once, with the configuration line it reads; the host keeps them in
// hypervisor.AgentConfigPath and hypervisor.AgentTokenPath.
type HypervisorAgentToken struct {
	Node   string `json:"node"`
	Token  string `json:"token"`
	Config string `json:"config"`
	// Binary is where the agent for the node's architecture is served,
	// and its SHA-256.
	Binary string `json:"binary"`
	SHA256 string `json:"sha256"`
}

// issueHypervisorToken makes a new hypervisor agent token for node n,
// the agent's one credential, which opens its own agent path and nothing
// else. The tokens it had stay until the caller, once what the new one is
// for has succeeded, calls replaceHypervisorToken; a failure calls
// dropHypervisorToken, and the running agent keeps working.
func (s *Server) issueHypervisorToken(ctx context.Context, n store.Node) (hypervisor.Agent, string, error) {
	if s.HypervisorAgent == nil {
		return hypervisor.Agent{}, "", fmt.Errorf("%w: this server serves no hypervisor agent", hypervisor.ErrInvalid)
	}
	a, err := s.HypervisorAgent(n.ID, n.Arch)
	if err != nil {
		return hypervisor.Agent{}, "", fmt.Errorf("%w: %v", hypervisor.ErrInvalid, err)
	}
	secret, hash := NewSecret()
	t, err := s.Store.CreateToken(ctx, store.Token{Hash: hash, Kind: store.TokenHypervisor, Name: "hypervisor agent of " + nodeLabel(n), NodeID: n.ID})
	if err != nil {
		return hypervisor.Agent{}, "", err
	}
	a.Token = secret
	return a, t.ID, nil
}

// replaceHypervisorToken revokes node's hypervisor agent tokens but id.
func (s *Server) replaceHypervisorToken(ctx context.Context, node, id string) error {
	return s.Store.DeleteTokensBut(context.WithoutCancel(ctx), store.TokenHypervisor, node, id)
}

// dropHypervisorToken revokes a token issued for something that failed.
func (s *Server) dropHypervisorToken(ctx context.Context, id string) {
	if err := s.Store.DeleteToken(context.WithoutCancel(ctx), id); err != nil {
		s.log().Warn("revoke an unused hypervisor agent token", "token", id, "err", err)
	}
}

func nodeLabel(n store.Node) string {
	if n.Name != "" {
		return n.Name
	}
	return n.ID
}

// hypervisorAgentToken issues a hypervisor's agent token for a host that
// was not deployed by rackboot (hypervisor add): the operator installs it
// with the agent.
func (s *Server) hypervisorAgentToken(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	n, err := s.Store.Node(ctx, chi.URLParam(r, "id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if _, err := s.Store.Hypervisor(ctx, n.ID); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			writeError(w, http.StatusNotFound, "not_found", nodeLabel(n)+" is no hypervisor (rackboot hypervisor add)")
			return
		}
		s.fail(w, r, err)
		return
	}
	if n.Arch == boot.ArchUnknown {
		writeError(w, http.StatusConflict, "conflict", nodeLabel(n)+" has no known architecture: inspect it first")
		return
	}
	a, id, err := s.issueHypervisorToken(ctx, n)
	if err != nil {
		s.failVM(w, r, err)
		return
	}
	if err := s.replaceHypervisorToken(ctx, n.ID, id); err != nil {
		s.dropHypervisorToken(ctx, id)
		s.fail(w, r, err)
		return
	}
	s.Store.AddEvent(ctx, store.Event{NodeID: n.ID, Actor: principal(r).Actor, Kind: "hypervisor", Reason: "agent-token", Message: "a new hypervisor agent token was issued; the previous one is revoked"})
	writeJSON(w, http.StatusOK, HypervisorAgentToken{Node: n.ID, Token: a.Token, Config: a.Config, Binary: a.BinaryURL, SHA256: a.SHA256})
}

// agentHypervisor is a hypervisor's agent calling in: what its GPUs
// carry, answered with what they must carry.
func (s *Server) agentHypervisor(w http.ResponseWriter, r *http.Request) {
	svc, ok := s.vms(w)
	if !ok {
		return
	}
	var rep protocol.HypervisorReport
	if !decode(w, r, &rep) {
		return
	}
	id := principal(r).NodeID
	work, err := svc.AgentRound(r.Context(), id, rep)
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, http.StatusNotFound, "not_found", "node "+id+" is no hypervisor now (rackboot hypervisor add)")
		return
	}
	if err != nil {
		s.failVM(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, work)
}
