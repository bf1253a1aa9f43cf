package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"

	"github.com/rackboot/rackboot/agent/protocol"
	"github.com/rackboot/rackboot/power"
	"github.com/rackboot/rackboot/store"
)

// agentBMC takes the BMC user an inspecting agent enrolled (bmc.enroll)
// and makes it the node's BMC credential, sealed like one an admin set.
//
// Only the node's own agent may say it, only while the inspect task that
// asked for it runs, and only about an IPMI BMC: an operator's Redfish
// BMC is kept. The host of an ipmi:// URL already set is kept too (an
// operator's name for the BMC outlives its address); the agent's address
// names the BMC only of a node that had none. The agent proved its boot
// to get its token, but what it says of the BMC is still the node's word:
// the address must be a unicast one, and the change is an event.
func (s *Server) agentBMC(w http.ResponseWriter, r *http.Request) {
	var in protocol.BMCEnrollment
	if !decode(w, r, &in) {
		return
	}
	ctx := r.Context()
	id := principal(r).NodeID
	t, err := s.Store.Task(ctx, in.TaskID)
	if err != nil || t.NodeID != id || t.Kind != protocol.TaskInspect {
		writeError(w, http.StatusNotFound, "not_found", "no such inspect task for this node")
		return
	}
	var p protocol.InspectParams
	json.Unmarshal(t.Params, &p)
	if t.State != store.TaskRunning || !p.BMCEnroll {
		writeError(w, http.StatusConflict, "conflict", fmt.Sprintf("task %s is %s and asked for no BMC enrollment", t.ID, t.State))
		return
	}
	addr, err := netip.ParseAddr(in.Address)
	if err != nil || addr.Zone() != "" || !addr.IsGlobalUnicast() {
		writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("BMC address %q: want a unicast IPv4 or IPv6 address", in.Address))
		return
	}
	if len(in.User) == 0 || len(in.User) > 16 || len(in.Password) == 0 || len(in.Password) > 20 {
		writeError(w, http.StatusBadRequest, "bad_request", "an IPMI user has 1 to 16 characters and a password 1 to 20 bytes")
		return
	}
	if s.Secrets == nil {
		writeError(w, http.StatusServiceUnavailable, "no_secret_key", "this server has no secret key to encrypt BMC passwords with (--secret-key-file)")
		return
	}
	url := "ipmi://" + net.JoinHostPort(addr.Unmap().String(), "623")
	if addr.Is4() || addr.Is4In6() {
		url = "ipmi://" + addr.Unmap().String()
	}
	old, err := s.Store.BMC(ctx, id)
	switch {
	case err == nil:
		e, perr := power.ParseURL(old.URL)
		if perr == nil && e.Kind != "ipmi" {
			writeError(w, http.StatusConflict, "conflict", fmt.Sprintf("the node's BMC is %s: kept, the enrolled IPMI user is not used", old.URL))
			return
		}
		if perr == nil {
			url = old.URL
		}
	case !errors.Is(err, store.ErrNotFound):
		s.fail(w, r, err)
		return
	}
	b := store.BMC{NodeID: id, URL: url, User: in.User, Password: s.Secrets.Seal([]byte(in.Password), BMCPasswordAD(id))}
	if err := s.Store.SetBMC(ctx, b); err != nil {
		s.fail(w, r, err)
		return
	}
	msg := fmt.Sprintf("BMC user %s (id %d, channel %d) enrolled by the agent at %s: the node's BMC is now %s as %s", in.User, in.UserID, in.Channel, addr, url, in.User)
	if old.User != "" {
		msg += " (was " + old.User + ")"
	}
	if in.LANAccess == "disabled" || in.LANAccess == "pre-boot only" {
		// Some BMCs ship so; enabling it is the site's call, not the
		// agent's.
		msg += fmt.Sprintf("; IPMI over LAN is %s on channel %d: rackboot cannot reach this BMC until it is enabled (the BMC's setup, or ipmitool lan set %d access on)", in.LANAccess, in.Channel, in.Channel)
	}
	s.audit(r, principal(r), id, msg)
	w.WriteHeader(http.StatusNoContent)
}
