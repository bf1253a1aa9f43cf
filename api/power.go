package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/internal/sealbox"
	"github.com/rackboot/rackboot/nodepower"
	"github.com/rackboot/rackboot/power"
	"github.com/rackboot/rackboot/store"
)

// powerCallTimeout bounds one power call of the API, its retries included.
const powerCallTimeout = 45 * time.Second

// BMC is a node's BMC as the API shows it: never its password.
type BMC struct {
	URL         string    `json:"url"`
	User        string    `json:"user"`
	PasswordSet bool      `json:"password_set"`
	Fingerprint string    `json:"fingerprint,omitempty"`
	Updated     time.Time `json:"updated"`
}

// BMCSet is the body of PUT /api/v1/nodes/{id}/bmc. Password, when
// absent, keeps the password already set (to change the URL or user
// alone); an empty string clears it. Fingerprint pins a redfish://
// BMC's certificate (its SHA-256, hex; colons allowed).
type BMCSet struct {
	URL         string  `json:"url"`
	User        string  `json:"user"`
	Password    *string `json:"password,omitempty"`
	Fingerprint string  `json:"fingerprint,omitempty"`
}

// PowerRequest is the body of POST /api/v1/nodes/{id}/power.
type PowerRequest struct {
	// Action is on, off, soft-off, cycle or reset.
	Action string `json:"action"`
}

// PowerStatus is a node's power state as its BMC reports it.
type PowerStatus struct {
	Node  string `json:"node"`
	BMC   string `json:"bmc"`
	State string `json:"state"`
}

// PowerResult is the answer to a power action or a boot device change.
type PowerResult struct {
	Node  string `json:"node"`
	BMC   string `json:"bmc"`
	Event Event  `json:"event"`
}

// BootDeviceRequest is the body of PUT /api/v1/nodes/{id}/boot-device.
type BootDeviceRequest struct {
	// Device is pxe or disk.
	Device     string `json:"device"`
	Persistent bool   `json:"persistent"`
	// UEFI picks the UEFI boot path; absent, it follows the node's
	// firmware as seen at its last network boot (UEFI unless BIOS).
	UEFI *bool `json:"uefi,omitempty"`
}

func bmcFrom(b store.BMC) BMC {
	return BMC{URL: b.URL, User: b.User, PasswordSet: b.Password != nil, Fingerprint: b.Fingerprint, Updated: b.Updated}
}

// BMCPasswordAD is the additional data a node's BMC password is sealed
// with (nodepower.PasswordAD): the sealed bytes open only for that node.
func BMCPasswordAD(nodeID string) []byte { return nodepower.PasswordAD(nodeID) }

func (s *Server) getBMC(w http.ResponseWriter, r *http.Request) {
	n, ok := s.node(w, r)
	if !ok {
		return
	}
	b, err := s.Store.BMC(r.Context(), n.ID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, bmcFrom(b))
}

func (s *Server) putBMC(w http.ResponseWriter, r *http.Request) {
	var in BMCSet
	if !decode(w, r, &in) {
		return
	}
	n, ok := s.node(w, r)
	if !ok {
		return
	}
	e, err := power.ParseURL(in.URL)
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	if e.Kind == "ipmi" && len(in.User) > 16 {
		writeError(w, http.StatusBadRequest, "bad_request", "an IPMI user name has at most 16 characters")
		return
	}
	if in.Fingerprint != "" {
		if e.Kind != "redfish" || !e.HTTPS {
			writeError(w, http.StatusBadRequest, "bad_request", "a certificate fingerprint goes with a redfish:// (https) BMC")
			return
		}
		fp, err := power.ParseFingerprint(in.Fingerprint)
		if err != nil {
			writeError(w, http.StatusBadRequest, "bad_request", err.Error())
			return
		}
		in.Fingerprint = fp
	}
	b := store.BMC{NodeID: n.ID, URL: in.URL, User: in.User, Fingerprint: in.Fingerprint}
	switch {
	case in.Password == nil:
		old, err := s.Store.BMC(r.Context(), n.ID)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			s.fail(w, r, err)
			return
		}
		b.Password = old.Password
	case *in.Password != "":
		if s.Secrets == nil {
			writeError(w, http.StatusServiceUnavailable, "no_secret_key", "this server has no secret key to encrypt BMC passwords with (--secret-key-file)")
			return
		}
		if e.Kind == "ipmi" && len(*in.Password) > 20 {
			writeError(w, http.StatusBadRequest, "bad_request", "an IPMI v2.0 password has at most 20 bytes")
			return
		}
		b.Password = s.Secrets.Seal([]byte(*in.Password), BMCPasswordAD(n.ID))
	}
	if err := s.Store.SetBMC(r.Context(), b); err != nil {
		s.fail(w, r, err)
		return
	}
	got, err := s.Store.BMC(r.Context(), n.ID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, bmcFrom(got))
}

func (s *Server) deleteBMC(w http.ResponseWriter, r *http.Request) {
	n, ok := s.node(w, r)
	if !ok {
		return
	}
	if err := s.Store.DeleteBMC(r.Context(), n.ID); err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

const ironicPowerMsg = "owned by Ironic, which drives its power and boot device: ask Ironic (baremetal node power), or take it back (rackboot node handover NODE --to rackboot)"

// notIronics refuses to change the power or boot device of a node Ironic
// owns: two systems driving one BMC fight, and Ironic's state would no
// longer say what the machine does. Reading its power state is allowed.
func (s *Server) notIronics(w http.ResponseWriter, n store.Node) bool {
	if n.Owner == store.OwnerIronic {
		writeError(w, http.StatusConflict, "conflict", fmt.Sprintf("node %s is %s", n.ID, ironicPowerMsg))
		return false
	}
	return true
}

// driver opens the power driver of a node's BMC, or answers why not.
func (s *Server) driver(w http.ResponseWriter, r *http.Request, n store.Node) (power.Driver, store.BMC, bool) {
	d, b, err := s.opener().Open(r.Context(), n)
	var se *nodepower.SecretError
	switch {
	case err == nil:
		return d, b, true
	case errors.Is(err, nodepower.ErrNoBMC):
		writeError(w, http.StatusConflict, "no_bmc", fmt.Sprintf("node %s has no BMC: set one with rackboot node set %s --bmc URL", n.ID, n.ID))
	case errors.Is(err, nodepower.ErrNoSecretKey):
		writeError(w, http.StatusServiceUnavailable, "no_secret_key", "this server has no secret key to decrypt BMC passwords with (--secret-key-file)")
	case errors.As(err, &se):
		msg := se.Error()
		if errors.Is(err, sealbox.ErrUnknownKey) {
			msg += "; give this server the key file the others use (--secret-key-file)"
		}
		writeError(w, http.StatusServiceUnavailable, "secret_key", msg)
	case errors.As(err, new(*nodepower.DialError)):
		s.powerFail(w, err)
	default:
		s.fail(w, r, err)
	}
	return nil, b, false
}

// opener opens drivers as the server's fields say.
func (s *Server) opener() *nodepower.Opener {
	return &nodepower.Opener{Store: s.Store, Secrets: s.Secrets, CAFile: s.BMCCAFile, Dial: s.PowerDial, Logger: s.log()}
}

// DialBMC opens the driver of a stored BMC, its password opened with
// Secrets; c's timeouts and attempts apply (the poller asks for one
// attempt). It is the poller's way to a BMC.
func (s *Server) DialBMC(b store.BMC, c power.Config) (power.Driver, error) {
	return s.opener().OpenBMC(b, c)
}

// recordPower records what a BMC said of its node's power.
func (s *Server) recordPower(ctx context.Context, nodeID string, st power.State, err error) {
	p := store.PowerState{NodeID: nodeID, State: string(st), Checked: time.Now().UTC()}
	if err != nil {
		if ctx.Err() != nil {
			return // the caller went away: that says nothing of the BMC
		}
		p.State, p.Error = store.PowerUnknown, err.Error()
	}
	ctx = context.WithoutCancel(ctx)
	var rerr error
	if s.Power != nil {
		rerr = s.Power.Record(ctx, p)
	} else {
		_, rerr = s.Store.RecordPower(ctx, p, store.Event{Actor: "system", Kind: "power", Reason: "power state", Message: powerMessage(p)})
	}
	if rerr != nil {
		s.log().Error("record power state", "node", nodeID, "err", rerr)
	}
	s.Broker.Publish()
}

// powerMessage is the message of a power state's event.
func powerMessage(p store.PowerState) string {
	if p.Error != "" {
		return p.State + ": " + p.Error
	}
	return p.State
}

// powerFail answers a BMC's failure: 502 when the BMC did not answer,
// refused the credentials or showed a certificate not trusted, 501 for a
// kind of BMC not driven.
func (s *Server) powerFail(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, power.ErrNoAnswer):
		writeError(w, http.StatusBadGateway, "bmc_no_answer", err.Error())
	case errors.Is(err, power.ErrAuth):
		writeError(w, http.StatusBadGateway, "bmc_auth", err.Error())
	case errors.Is(err, power.ErrCertificate):
		writeError(w, http.StatusBadGateway, "bmc_certificate", err.Error())
	case errors.Is(err, power.ErrUnsupported):
		writeError(w, http.StatusNotImplemented, "not_implemented", err.Error())
	default:
		writeError(w, http.StatusBadGateway, "bmc_error", err.Error())
	}
}

func (s *Server) getPower(w http.ResponseWriter, r *http.Request) {
	n, ok := s.node(w, r)
	if !ok {
		return
	}
	d, b, ok := s.driver(w, r, n)
	if !ok {
		return
	}
	defer d.Close()
	ctx, cancel := context.WithTimeout(r.Context(), powerCallTimeout)
	defer cancel()
	st, err := d.State(ctx)
	s.recordPower(r.Context(), n.ID, st, err)
	if err != nil {
		s.powerFail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, PowerStatus{Node: n.ID, BMC: b.URL, State: string(st)})
}

// powerEvent records a power call, done or failed, with its actor.
func (s *Server) powerEvent(r *http.Request, n store.Node, reason string, err error) Event {
	msg := "done"
	if err != nil {
		msg = "failed: " + err.Error()
	}
	e, aerr := s.Store.AddEvent(context.WithoutCancel(r.Context()), store.Event{NodeID: n.ID, Actor: principal(r).Actor, Kind: "power", Reason: reason, Message: msg})
	if aerr != nil {
		s.log().Error("power event", "node", n.ID, "reason", reason, "err", aerr)
	}
	s.Broker.Publish()
	return EventFrom(e)
}

func (s *Server) postPower(w http.ResponseWriter, r *http.Request) {
	var in PowerRequest
	if !decode(w, r, &in) {
		return
	}
	a, err := power.ParseAction(in.Action)
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	n, ok := s.node(w, r)
	if !ok || !s.notIronics(w, n) {
		return
	}
	d, b, ok := s.driver(w, r, n)
	if !ok {
		return
	}
	defer d.Close()
	err = s.runPower(r.Context(), d, a)
	ev := s.powerEvent(r, n, "power "+string(a), err)
	if err != nil {
		s.powerFail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, PowerResult{Node: n.ID, BMC: b.URL, Event: ev})
}

func (s *Server) putBootDevice(w http.ResponseWriter, r *http.Request) {
	var in BootDeviceRequest
	if !decode(w, r, &in) {
		return
	}
	dev, err := power.ParseDevice(in.Device)
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	n, ok := s.node(w, r)
	if !ok || !s.notIronics(w, n) {
		return
	}
	bt := power.Boot{Device: dev, Persistent: in.Persistent, UEFI: n.Firmware != boot.FirmwareBIOS}
	if in.UEFI != nil {
		bt.UEFI = *in.UEFI
	}
	d, b, ok := s.driver(w, r, n)
	if !ok {
		return
	}
	defer d.Close()
	ctx, cancel := context.WithTimeout(r.Context(), powerCallTimeout)
	defer cancel()
	err = d.SetBootDevice(ctx, bt)
	ev := s.powerEvent(r, n, bt.String(), err)
	if err != nil {
		s.powerFail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, PowerResult{Node: n.ID, BMC: b.URL, Event: ev})
}

// runPower runs a power action, a power-on after its turn at the
// limiter; powerCallTimeout bounds the call, not the wait.
func (s *Server) runPower(ctx context.Context, d power.Driver, a power.Action) error {
	call := func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, powerCallTimeout)
		defer cancel()
		return power.Do(ctx, d, a)
	}
	if power.Limited(a) {
		return s.PowerOn.Do(ctx, call)
	}
	return call(ctx)
}

// BulkPowerRequest is the body of POST /api/v1/power: an action on the
// nodes listed (ids, names or MACs), or on every node of a rack.
type BulkPowerRequest struct {
	// Action is on, off, soft-off, cycle or reset.
	Action string   `json:"action"`
	Nodes  []string `json:"nodes,omitempty"`
	Rack   string   `json:"rack,omitempty"`
}

// BulkPowerResult is one node's outcome of a bulk power action.
type BulkPowerResult struct {
	Node string `json:"node"`
	// OK says the BMC did it; Error says why not (no BMC, the BMC failed).
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
	Event *Event `json:"event,omitempty"`
}

// BulkPowerResults answers POST /api/v1/power, a result per node, in the
// order asked (a rack's by node id).
type BulkPowerResults struct {
	Items []BulkPowerResult `json:"items"`
}

// maxBulkPower bounds the nodes of one bulk power action.
const maxBulkPower = 10000

func (s *Server) bulkPower(w http.ResponseWriter, r *http.Request) {
	var in BulkPowerRequest
	if !decode(w, r, &in) {
		return
	}
	a, err := power.ParseAction(in.Action)
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	if (len(in.Nodes) == 0) == (in.Rack == "") {
		writeError(w, http.StatusBadRequest, "bad_request", "give nodes or a rack, not both")
		return
	}
	if len(in.Nodes) > maxBulkPower {
		writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("at most %d nodes at once", maxBulkPower))
		return
	}
	var nodes []store.Node
	if in.Rack != "" {
		after := ""
		for {
			page, err := s.Store.ListNodes(r.Context(), store.NodeFilter{Rack: in.Rack, After: after, Limit: 1000})
			if err != nil {
				s.fail(w, r, err)
				return
			}
			nodes = append(nodes, page...)
			if len(page) < 1000 {
				break
			}
			after = page[len(page)-1].ID
		}
		if len(nodes) == 0 {
			writeError(w, http.StatusNotFound, "not_found", "no nodes in rack "+in.Rack)
			return
		}
	} else {
		// Every name is checked before any node is acted on.
		for _, ref := range in.Nodes {
			n, err := s.Store.Node(r.Context(), ref)
			if errors.Is(err, store.ErrNotFound) {
				writeError(w, http.StatusNotFound, "not_found", "no node "+ref)
				return
			}
			if err != nil {
				s.fail(w, r, err)
				return
			}
			nodes = append(nodes, n)
		}
	}
	// The answer waits for the queue: no write deadline for this one.
	_ = http.NewResponseController(w).SetWriteDeadline(time.Time{})
	results := make([]BulkPowerResult, len(nodes))
	// Each node waits its turn at the power-on limiter; the request lasts
	// as long as the queue, and a caller that goes away stops the nodes
	// not yet started.
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = s.powerOne(r, n, a)
		}()
	}
	wg.Wait()
	writeJSON(w, http.StatusOK, BulkPowerResults{Items: results})
}

// powerOne runs a bulk action on one node, with its audit event.
func (s *Server) powerOne(r *http.Request, n store.Node, a power.Action) BulkPowerResult {
	res := BulkPowerResult{Node: n.ID}
	if n.Owner == store.OwnerIronic {
		res.Error = ironicPowerMsg
		return res
	}
	b, err := s.Store.BMC(r.Context(), n.ID)
	if errors.Is(err, store.ErrNotFound) {
		res.Error = "no BMC: it waits for a reboot"
		return res
	}
	if err == nil {
		var d power.Driver
		if d, err = s.DialBMC(b, power.Config{}); err == nil {
			err = s.runPower(r.Context(), d, a)
			d.Close()
		}
	}
	ev := s.powerEvent(r, n, "power "+string(a), err)
	res.Event = &ev
	if err != nil {
		res.Error = err.Error()
		return res
	}
	res.OK = true
	return res
}
