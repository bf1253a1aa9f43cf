package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/rackboot/rackboot/ironic/baremetal"
	"github.com/rackboot/rackboot/ironic/handover"
	"github.com/rackboot/rackboot/store"
)

// fakeHandover hands nodes over by changing their owner, or fails as told.
type fakeHandover struct {
	st  store.Store
	err error
}

func (h *fakeHandover) move(ctx context.Context, ref, owner string) (handover.Result, error) {
	if h.err != nil {
		return handover.Result{}, h.err
	}
	n, err := h.st.Node(ctx, ref)
	if err != nil {
		return handover.Result{}, err
	}
	n, err = h.st.UpdateNode(ctx, n.ID, store.NodePatch{Owner: &owner})
	return handover.Result{Node: n, IronicUUID: "u-1", IronicState: "enroll"}, err
}

func (h *fakeHandover) ToIronic(ctx context.Context, ref string, _ handover.Options) (handover.Result, error) {
	return h.move(ctx, ref, store.OwnerIronic)
}

func (h *fakeHandover) ToRackboot(ctx context.Context, ref string) (handover.Result, error) {
	return h.move(ctx, ref, store.OwnerRackboot)
}

func TestHandover(t *testing.T) {
	f := newFixture(t)
	path := "/api/v1/nodes/gpu-01/handover"
	admin := f.tokens[store.RoleAdmin]
	if code, b := f.call(t, nil, "POST", path, admin, `{"to":"ironic"}`); code != http.StatusConflict || !strings.Contains(string(b), "ironic.api_url") {
		t.Errorf("without an Ironic API: %d %s", code, b)
	}
	// A plain owner change: admins only, and not of a busy node.
	if code, b := f.call(t, nil, "PATCH", "/api/v1/nodes/gpu-01", f.tokens[store.RoleTech], `{"owner":"ironic"}`); code != http.StatusForbidden {
		t.Errorf("a tech changed the owner: %d %s", code, b)
	}
	if code, b := f.call(t, nil, "PATCH", "/api/v1/nodes/gpu-01", f.tokens[store.RoleTech], `{"owner":"rackboot","name":"gpu-01"}`); code != http.StatusOK {
		t.Errorf("a tech's edit that leaves the owner: %d %s", code, b)
	}
	f.st.SetState(context.Background(), f.node.ID, store.StateDeploying)
	if code, b := f.call(t, nil, "PATCH", "/api/v1/nodes/gpu-01", admin, `{"owner":"ironic"}`); code != http.StatusConflict || !strings.Contains(string(b), "deploying") {
		t.Errorf("a deploying node given to Ironic: %d %s", code, b)
	}
	f.st.SetState(context.Background(), f.node.ID, store.StateAvailable)
	h := &fakeHandover{st: f.st}
	f.api.Handover = h
	if code, b := f.call(t, nil, "PATCH", "/api/v1/nodes/gpu-01", admin, `{"owner":"ironic"}`); code != http.StatusConflict || !strings.Contains(string(b), "handover") {
		t.Errorf("a plain owner change with an Ironic API: %d %s", code, b)
	}
	if code, b := f.call(t, nil, "POST", path, f.tokens[store.RoleTech], `{"to":"ironic"}`); code != http.StatusForbidden {
		t.Errorf("a tech handed a node over: %d %s", code, b)
	}
	if code, b := f.call(t, nil, "POST", path, admin, `{"to":"maas"}`); code != http.StatusBadRequest {
		t.Errorf("to maas: %d %s", code, b)
	}
	code, b := f.call(t, nil, "POST", path, admin, `{"to":"ironic"}`)
	var res HandoverResult
	json.Unmarshal(b, &res)
	if code != http.StatusOK || res.Node.Owner != "ironic" || res.IronicUUID != "u-1" {
		t.Fatalf("handover: %d %s", code, b)
	}
	evs, _ := f.st.Events(context.Background(), store.EventFilter{NodeID: f.node.ID})
	found := false
	for _, e := range evs {
		found = found || e.Kind == "audit" && strings.Contains(e.Message, "handed over to Ironic as u-1")
	}
	if !found {
		t.Errorf("no audit event of the handover in %+v", evs)
	}
	// Ironic drives its power now: rackboot refuses to, but reads it.
	tech := f.tokens[store.RoleTech]
	for _, c := range []struct{ method, path, body string }{
		{"POST", "/api/v1/nodes/gpu-01/power", `{"action":"off"}`},
		{"PUT", "/api/v1/nodes/gpu-01/boot-device", `{"device":"pxe"}`},
	} {
		if code, b := f.call(t, nil, c.method, c.path, tech, c.body); code != http.StatusConflict || !strings.Contains(string(b), "Ironic") {
			t.Errorf("%s %s of Ironic's node: %d %s", c.method, c.path, code, b)
		}
	}
	if code, b := f.call(t, nil, "POST", "/api/v1/power", tech, `{"nodes":["gpu-01"],"action":"on"}`); code != http.StatusOK || !strings.Contains(string(b), "owned by Ironic") {
		t.Errorf("bulk power of Ironic's node: %d %s", code, b)
	}
	if code, b := f.call(t, nil, "GET", "/api/v1/nodes/gpu-01/power", tech, ""); code != http.StatusOK {
		t.Errorf("reading the power of Ironic's node: %d %s", code, b)
	}
	for _, tc := range []struct {
		err  error
		code int
	}{
		{fmt.Errorf("hand over: busy: %w", handover.ErrState), http.StatusConflict},
		{&baremetal.Error{Op: "create node", Status: 409, Message: "A node with name gpu-01 already exists."}, http.StatusConflict},
		{&baremetal.Error{Op: "create node", Status: 503, Message: "down"}, http.StatusBadGateway},
		{&baremetal.Error{Op: "create node", Status: 401, Message: "token"}, http.StatusBadGateway},
		{fmt.Errorf("hand over: ironic create node: %w", &baremetal.AuthError{Status: 401, Message: "The request you have made requires authentication."}), http.StatusBadGateway},
	} {
		h.err = tc.err
		if code, b := f.call(t, nil, "POST", path, admin, `{"to":"rackboot"}`); code != tc.code || !strings.Contains(string(b), tc.err.Error()[:10]) {
			t.Errorf("%v: %d %s, want %d", tc.err, code, b, tc.code)
		}
	}
}
