package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/rackboot/rackboot/ironic/baremetal"
	"github.com/rackboot/rackboot/ironic/handover"
)

// Handover hands nodes to OpenStack Ironic and takes them back
// (ironic/handover.Service).
type Handover interface {
	ToIronic(ctx context.Context, ref string, o handover.Options) (handover.Result, error)
	ToRackboot(ctx context.Context, ref string) (handover.Result, error)
}

// HandoverRequest is the body of POST /api/v1/nodes/{id}/handover.
type HandoverRequest struct {
	// To is "ironic" or "rackboot".
	To string `json:"to"`
	// ConductorGroup is the Ironic conductor group to drive the node
	// (to ironic; default ironic.conductor_group).
	ConductorGroup string `json:"conductor_group,omitempty"`
}

// HandoverResult is what a handover did.
type HandoverResult struct {
	Node Node `json:"node"`
	// IronicUUID is the node's UUID in Ironic: made by a handover to
	// Ironic, deleted by one back.
	IronicUUID  string `json:"ironic_uuid,omitempty"`
	IronicState string `json:"ironic_state,omitempty"`
}

func (s *Server) handover(w http.ResponseWriter, r *http.Request) {
	var req HandoverRequest
	if !decode(w, r, &req) {
		return
	}
	if req.To != "ironic" && req.To != "rackboot" {
		writeError(w, http.StatusBadRequest, "bad_request", `to must be "ironic" or "rackboot"`)
		return
	}
	if s.Handover == nil {
		writeError(w, http.StatusConflict, "not_configured", "no Ironic API to hand nodes over through: set ironic.api_url")
		return
	}
	n, ok := s.node(w, r)
	if !ok {
		return
	}
	var res handover.Result
	var err error
	if req.To == "ironic" {
		res, err = s.Handover.ToIronic(r.Context(), n.ID, handover.Options{ConductorGroup: req.ConductorGroup})
	} else {
		res, err = s.Handover.ToRackboot(r.Context(), n.ID)
	}
	var ie *baremetal.Error
	var ae *baremetal.AuthError
	if err != nil {
		// A refused or failed handover is on record too: it may have
		// touched Ironic before it was undone.
		s.audit(r, principal(r), n.ID, "handover to "+req.To+" failed: "+err.Error())
	}
	switch {
	case err == nil:
	case errors.Is(err, handover.ErrState):
		writeError(w, http.StatusConflict, "conflict", err.Error())
		return
	case errors.As(err, &ie) && ie.Status < 500 && ie.Status != http.StatusUnauthorized && ie.Status != http.StatusForbidden:
		// Ironic refused what rackboot asked (a name taken, a driver not
		// enabled): the caller can act on its message.
		writeError(w, http.StatusConflict, "ironic_refused", err.Error())
		return
	case errors.As(err, &ie), errors.As(err, &ae), errors.Is(err, context.DeadlineExceeded):
		writeError(w, http.StatusBadGateway, "ironic", err.Error())
		return
	default:
		var netErr interface{ Timeout() bool }
		if errors.As(err, &netErr) {
			writeError(w, http.StatusBadGateway, "ironic", err.Error())
			return
		}
		s.fail(w, r, err)
		return
	}
	msg := "handed over to Ironic as " + res.IronicUUID
	if req.To == "rackboot" {
		msg = "taken back from Ironic"
		if res.IronicUUID != "" {
			msg += fmt.Sprintf(" (Ironic's node %s, %s, deleted)", res.IronicUUID, res.IronicState)
		}
	}
	s.audit(r, principal(r), res.Node.ID, msg)
	writeJSON(w, http.StatusOK, HandoverResult{Node: s.view(r, res.Node), IronicUUID: res.IronicUUID, IronicState: res.IronicState})
}
