package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rackboot/rackboot/internal/sealbox"
	"github.com/rackboot/rackboot/power"
	"github.com/rackboot/rackboot/store"
)

// fakeBMC is a BMC for the API's tests: it records what it was asked and
// fails as told.
type fakeBMC struct {
	mu     sync.Mutex
	cfg    power.Config // as the last Dial got it
	calls  []string
	state  power.State
	fail   error
	closed int
}

func (b *fakeBMC) dial(c power.Config) (power.Driver, error) {
	if _, err := power.ParseURL(c.URL); err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.cfg = c
	return b, nil
}

func (b *fakeBMC) do(call string, then power.State) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls = append(b.calls, call)
	if b.fail != nil {
		return b.fail
	}
	if then != "" {
		b.state = then
	}
	return nil
}

func (b *fakeBMC) State(context.Context) (power.State, error) {
	err := b.do("state", "")
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.state, err
}
func (b *fakeBMC) On(context.Context) error      { return b.do("on", power.StateOn) }
func (b *fakeBMC) Off(context.Context) error     { return b.do("off", power.StateOff) }
func (b *fakeBMC) SoftOff(context.Context) error { return b.do("soft-off", power.StateOff) }
func (b *fakeBMC) Cycle(context.Context) error   { return b.do("cycle", power.StateOn) }
func (b *fakeBMC) Reset(context.Context) error   { return b.do("reset", power.StateOn) }
func (b *fakeBMC) SetBootDevice(_ context.Context, bt power.Boot) error {
	return b.do(fmt.Sprintf("boot %s persistent=%v uefi=%v", bt.Device, bt.Persistent, bt.UEFI), "")
}
func (b *fakeBMC) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed++
	return nil
}

func (b *fakeBMC) Calls() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.calls...)
}

// withFakeBMC gives the server a secret key and a fake BMC behind every
// dial, and sets node's BMC through the store as the API seals it.
func withFakeBMC(t *testing.T, s *Server, st store.Store, node string) *fakeBMC {
	t.Helper()
	box, err := sealbox.New(sealbox.NewKey())
	if err != nil {
		t.Fatal(err)
	}
	s.Secrets = box
	b := &fakeBMC{state: power.StateOff}
	s.PowerDial = b.dial
	if err := st.SetBMC(context.Background(), store.BMC{NodeID: node, URL: "ipmi://10.9.9.9", User: "admin",
		Password: box.Seal([]byte("pw-of-gpu-01"), BMCPasswordAD(node))}); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestBMCSetAndNeverShown(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	id := f.node.ID
	tech, ro := f.tokens[store.RoleTech], f.tokens[store.RoleReadonly]
	code, body := f.call(t, nil, "PUT", "/api/v1/nodes/gpu-01/bmc", tech, `{"url":"ipmi://10.0.0.7:6230","user":"root","password":"hunter2"}`)
	if code != 200 {
		t.Fatalf("PUT bmc: %d %s", code, body)
	}
	var got BMC
	json.Unmarshal(body, &got)
	if got.URL != "ipmi://10.0.0.7:6230" || got.User != "root" || !got.PasswordSet {
		t.Fatalf("PUT bmc answered %s", body)
	}
	for _, path := range []string{"/api/v1/nodes/gpu-01/bmc", "/api/v1/nodes/gpu-01", "/api/v1/events?node=" + id} {
		_, body := f.call(t, nil, "GET", path, ro, "")
		if strings.Contains(string(body), "hunter2") {
			t.Errorf("GET %s shows the password: %s", path, body)
		}
	}
	stored, err := f.st.BMC(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(stored.Password), "hunter2") {
		t.Fatal("the password is stored in clear")
	}
	if pw, err := f.api.Secrets.Open(stored.Password, BMCPasswordAD(id)); err != nil || string(pw) != "hunter2" {
		t.Fatalf("stored password opens to %q, %v", pw, err)
	}
	if _, err := f.api.Secrets.Open(stored.Password, BMCPasswordAD("another-node")); !errors.Is(err, sealbox.ErrOpen) {
		t.Fatalf("the sealed password opens for another node: %v", err)
	}
	// No password in the body keeps the one set.
	if code, body := f.call(t, nil, "PUT", "/api/v1/nodes/gpu-01/bmc", tech, `{"url":"ipmi://10.0.0.8","user":"root"}`); code != 200 || !strings.Contains(string(body), `"password_set": true`) {
		t.Fatalf("PUT bmc without a password: %d %s", code, body)
	}
	// The password the driver gets is the one set.
	if code, body := f.call(t, nil, "GET", "/api/v1/nodes/gpu-01/power", ro, ""); code != 200 {
		t.Fatalf("GET power: %d %s", code, body)
	}
	if f.bmc.cfg.Password != "hunter2" || f.bmc.cfg.URL != "ipmi://10.0.0.8" || f.bmc.cfg.User != "root" {
		t.Fatalf("driver dialled with %+v", f.bmc.cfg)
	}
	for _, tc := range []struct{ body, want string }{
		{`{"url":"ipmi://admin:pw@10.0.0.7"}`, "credentials do not go in the URL"},
		{`{"url":"http://10.0.0.7"}`, "want ipmi://"},
		{`{"url":"ipmi://10.0.0.7","user":"a-very-long-user-name"}`, "at most 16"},
		{`{"url":"ipmi://10.0.0.7","password":"123456789012345678901"}`, "at most 20"},
		{`{"url":"ipmi://10.0.0.7","pasword":"typo"}`, "unknown field"},
		{`{"url":"ipmi://10.0.0.7","fingerprint":"` + strings.Repeat("ab", 32) + `"}`, "goes with a redfish://"},
		{`{"url":"redfish://10.0.0.7","fingerprint":"abcd"}`, "64 hex digits"},
	} {
		if code, body := f.call(t, nil, "PUT", "/api/v1/nodes/gpu-01/bmc", tech, tc.body); code != 400 || !strings.Contains(string(body), tc.want) {
			t.Errorf("PUT bmc %s: %d %s; want 400 with %q", tc.body, code, body, tc.want)
		}
	}
	fp := strings.ToUpper(strings.Repeat("ab:", 31)) + "AB"
	if code, body := f.call(t, nil, "PUT", "/api/v1/nodes/gpu-01/bmc", tech, `{"url":"redfish://10.0.0.7/redfish/v1/Systems/1","user":"root","fingerprint":"`+fp+`"}`); code != 200 ||
		!strings.Contains(string(body), `"fingerprint": "`+strings.Repeat("ab", 32)+`"`) {
		t.Errorf("PUT a redfish bmc with a pin: %d %s", code, body)
	}
	if code, _ := f.call(t, nil, "PUT", "/api/v1/nodes/gpu-01/bmc", ro, `{"url":"ipmi://10.0.0.7"}`); code != 403 {
		t.Errorf("readonly PUT bmc: %d", code)
	}
	if code, _ := f.call(t, nil, "DELETE", "/api/v1/nodes/gpu-01/bmc", tech, ""); code != 204 {
		t.Fatalf("DELETE bmc: %d", code)
	}
	if code, _ := f.call(t, nil, "GET", "/api/v1/nodes/gpu-01/bmc", ro, ""); code != 404 {
		t.Errorf("GET bmc after DELETE: %d", code)
	}
	if code, body := f.call(t, nil, "POST", "/api/v1/nodes/gpu-01/power", tech, `{"action":"on"}`); code != 409 || !strings.Contains(string(body), "no_bmc") {
		t.Errorf("power on without a BMC: %d %s", code, body)
	}
	// Without a key, no password is taken.
	f.api.Secrets = nil
	if code, body := f.call(t, nil, "PUT", "/api/v1/nodes/gpu-01/bmc", tech, `{"url":"ipmi://10.0.0.7","password":"x"}`); code != 503 {
		t.Errorf("PUT bmc with no secret key: %d %s", code, body)
	}
}

func TestPowerActions(t *testing.T) {
	f := newFixture(t)
	tech, ro := f.tokens[store.RoleTech], f.tokens[store.RoleReadonly]
	for _, a := range []string{"on", "off", "soft-off", "cycle", "reset"} {
		code, body := f.call(t, nil, "POST", "/api/v1/nodes/gpu-01/power", tech, `{"action":"`+a+`"}`)
		if code != 200 {
			t.Fatalf("power %s: %d %s", a, code, body)
		}
		var res PowerResult
		json.Unmarshal(body, &res)
		if res.Event.Kind != "power" || res.Event.Reason != "power "+a || res.Event.Actor == "" || res.Event.Message != "done" {
			t.Errorf("power %s event: %+v", a, res.Event)
		}
	}
	code, body := f.call(t, nil, "GET", "/api/v1/nodes/gpu-01/power", ro, "")
	if code != 200 || !strings.Contains(string(body), `"state": "on"`) {
		t.Fatalf("GET power: %d %s", code, body)
	}
	if code, _ := f.call(t, nil, "POST", "/api/v1/nodes/gpu-01/power", ro, `{"action":"off"}`); code != 403 {
		t.Errorf("readonly power off: %d", code)
	}
	if code, body := f.call(t, nil, "POST", "/api/v1/nodes/gpu-01/power", tech, `{"action":"status"}`); code != 400 {
		t.Errorf("power status as an action: %d %s", code, body)
	}
	// The node is x86-64 UEFI: UEFI unless told otherwise.
	for _, tc := range []struct{ body, want string }{
		{`{"device":"pxe"}`, "boot pxe persistent=false uefi=true"},
		{`{"device":"disk","persistent":true}`, "boot disk persistent=true uefi=true"},
		{`{"device":"pxe","uefi":false}`, "boot pxe persistent=false uefi=false"},
	} {
		if code, body := f.call(t, nil, "PUT", "/api/v1/nodes/gpu-01/boot-device", tech, tc.body); code != 200 {
			t.Fatalf("boot-device %s: %d %s", tc.body, code, body)
		}
		if calls := f.bmc.Calls(); calls[len(calls)-1] != tc.want {
			t.Errorf("boot-device %s: the BMC got %q, want %q", tc.body, calls[len(calls)-1], tc.want)
		}
	}
	if code, _ := f.call(t, nil, "PUT", "/api/v1/nodes/gpu-01/boot-device", tech, `{"device":"cdrom"}`); code != 400 {
		t.Errorf("boot-device cdrom: %d", code)
	}
	want := []string{"on", "off", "soft-off", "cycle", "reset", "state",
		"boot pxe persistent=false uefi=true", "boot disk persistent=true uefi=true", "boot pxe persistent=false uefi=false"}
	if got := f.bmc.Calls(); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("the BMC got %q, want %q", got, want)
	}
	if f.bmc.closed != len(want) {
		t.Errorf("%d drivers closed after %d calls", f.bmc.closed, len(want))
	}

	// A BMC that fails: 502 with its error, and the attempt in the log.
	f.bmc.fail = &power.BMCError{BMC: "ipmi://10.9.9.9:623", Op: "power on", Err: fmt.Errorf("%w (3 tries in 15s)", power.ErrNoAnswer)}
	code, body = f.call(t, nil, "POST", "/api/v1/nodes/gpu-01/power", tech, `{"action":"on"}`)
	if code != 502 || !strings.Contains(string(body), "bmc_no_answer") || !strings.Contains(string(body), "ipmi://10.9.9.9:623") {
		t.Fatalf("power on, BMC silent: %d %s", code, body)
	}
	f.bmc.fail = &power.BMCError{BMC: "ipmi://10.9.9.9:623", Op: "power state", Err: power.ErrAuth}
	if code, body := f.call(t, nil, "GET", "/api/v1/nodes/gpu-01/power", ro, ""); code != 502 || !strings.Contains(string(body), "bmc_auth") {
		t.Fatalf("GET power, password refused: %d %s", code, body)
	}
	evs, err := f.st.Events(context.Background(), store.EventFilter{NodeID: f.node.ID})
	if err != nil {
		t.Fatal(err)
	}
	var powerEvents, stateEvents []store.Event
	for _, e := range evs {
		switch {
		case e.Kind == "power" && e.Reason == "power state":
			stateEvents = append(stateEvents, e)
		case e.Kind == "power":
			powerEvents = append(powerEvents, e)
		}
	}
	// Each GET power recorded the state; each change is an event of the
	// system's.
	if len(stateEvents) != 2 || stateEvents[0].Message != "on" || !strings.HasPrefix(stateEvents[1].Message, "unknown: ") || stateEvents[1].Actor != "system" {
		t.Errorf("power state events: %+v", stateEvents)
	}
	code, body = f.call(t, nil, "GET", "/api/v1/nodes/gpu-01", ro, "")
	var nd Node
	json.Unmarshal(body, &nd)
	if code != 200 || nd.Power == nil || nd.Power.State != "unknown" || !strings.Contains(nd.Power.Error, "refused") {
		t.Errorf("node view's power: %d %s", code, body)
	}
	code, body = f.call(t, nil, "GET", "/api/v1/nodes", ro, "")
	var list NodeList
	json.Unmarshal(body, &list)
	if code != 200 || len(list.Items) == 0 || list.Items[0].Power == nil || list.Items[0].Power.State != "unknown" {
		t.Errorf("node list's power: %d %s", code, body)
	}
	if len(powerEvents) != 9 {
		t.Fatalf("%d power events, want 9 (5 actions, 3 boot devices, 1 failure): %+v", len(powerEvents), powerEvents)
	}
	last := powerEvents[len(powerEvents)-1]
	if last.Reason != "power on" || !strings.HasPrefix(last.Message, "failed: ") || !strings.Contains(last.Message, "does not answer") || last.Actor == "" {
		t.Errorf("failed power on event: %+v", last)
	}
	if e := powerEvents[5]; e.Reason != "boot device pxe, next boot, UEFI" {
		t.Errorf("boot device event: %+v", e)
	}
}

func TestPowerUnknownKey(t *testing.T) {
	f := newFixture(t)
	// Another server's key: the sealed password names a key this one lacks.
	other, _ := sealbox.New(sealbox.NewKey())
	f.api.Secrets = other
	code, body := f.call(t, nil, "GET", "/api/v1/nodes/gpu-01/power", f.tokens[store.RoleReadonly], "")
	if code != 503 || !strings.Contains(string(body), "--secret-key-file") {
		t.Fatalf("GET power with another key: %d %s", code, body)
	}
}

// slowBMCs count the power calls in flight across all their drivers.
type slowBMCs struct {
	inFlight, most atomic.Int64
	mu             sync.Mutex
	calls          map[string][]string // URL → calls
}

func (b *slowBMCs) dial(c power.Config) (power.Driver, error) {
	return &slowDriver{b: b, url: c.URL}, nil
}

type slowDriver struct {
	b   *slowBMCs
	url string
}

func (d *slowDriver) do(call string) error {
	v := d.b.inFlight.Add(1)
	defer d.b.inFlight.Add(-1)
	for m := d.b.most.Load(); v > m && !d.b.most.CompareAndSwap(m, v); m = d.b.most.Load() {
	}
	time.Sleep(2 * time.Millisecond)
	d.b.mu.Lock()
	d.b.calls[d.url] = append(d.b.calls[d.url], call)
	d.b.mu.Unlock()
	return nil
}
func (d *slowDriver) State(context.Context) (power.State, error)      { return power.StateOn, d.do("state") }
func (d *slowDriver) On(context.Context) error                        { return d.do("on") }
func (d *slowDriver) Off(context.Context) error                       { return d.do("off") }
func (d *slowDriver) SoftOff(context.Context) error                   { return d.do("soft-off") }
func (d *slowDriver) Cycle(context.Context) error                     { return d.do("cycle") }
func (d *slowDriver) Reset(context.Context) error                     { return d.do("reset") }
func (d *slowDriver) SetBootDevice(context.Context, power.Boot) error { return d.do("boot") }
func (d *slowDriver) Close() error                                    { return nil }

func TestBulkPower(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	tech, ro := f.tokens[store.RoleTech], f.tokens[store.RoleReadonly]
	bmcs := &slowBMCs{calls: map[string][]string{}}
	f.api.PowerDial = bmcs.dial
	f.api.PowerOn = &power.Limiter{MaxConcurrent: 3, Rate: 1000}
	const n = 24
	var ids []string
	for i := range n {
		code, body := f.call(t, nil, "POST", "/api/v1/nodes", tech, fmt.Sprintf(`{"mac":"02:00:00:00:10:%02x","name":"r7-%02d"}`, i, i))
		if code != 201 {
			t.Fatalf("add node: %d %s", code, body)
		}
		var nd Node
		json.Unmarshal(body, &nd)
		ids = append(ids, nd.ID)
		if code, body := f.call(t, nil, "PATCH", "/api/v1/nodes/"+nd.ID, tech, `{"rack":"R7"}`); code != 200 {
			t.Fatalf("set rack: %d %s", code, body)
		}
		if i == n-1 {
			continue // the last has no BMC
		}
		if err := f.st.SetBMC(ctx, store.BMC{NodeID: nd.ID, URL: fmt.Sprintf("ipmi://10.7.0.%d", i+1), User: "admin",
			Password: f.api.Secrets.Seal([]byte("pw"), BMCPasswordAD(nd.ID))}); err != nil {
			t.Fatal(err)
		}
	}
	code, body := f.call(t, nil, "POST", "/api/v1/power", tech, `{"action":"on","rack":"R7"}`)
	if code != 200 {
		t.Fatalf("bulk power on: %d %s", code, body)
	}
	var res BulkPowerResults
	if err := json.Unmarshal(body, &res); err != nil {
		t.Fatal(err)
	}
	if len(res.Items) != n {
		t.Fatalf("%d results, want %d", len(res.Items), n)
	}
	ok := 0
	for _, r := range res.Items {
		switch {
		case r.OK && r.Event != nil && r.Event.Reason == "power on" && r.Event.Actor != "":
			ok++
		case !r.OK && r.Node == ids[n-1] && strings.Contains(r.Error, "no BMC"):
		default:
			t.Errorf("result %+v", r)
		}
	}
	if ok != n-1 {
		t.Errorf("%d nodes powered on, want %d", ok, n-1)
	}
	if m := bmcs.most.Load(); m > 3 || m < 1 {
		t.Errorf("%d power-ons at once, want at most 3", m)
	}
	for i := range n - 1 {
		if c := bmcs.calls[fmt.Sprintf("ipmi://10.7.0.%d", i+1)]; len(c) != 1 || c[0] != "on" {
			t.Errorf("BMC %d got %v", i+1, c)
		}
	}
	// Listed nodes, by name; an unknown one refuses the whole request.
	if code, body := f.call(t, nil, "POST", "/api/v1/power", tech, `{"action":"off","nodes":["r7-00","r7-01"]}`); code != 200 || strings.Count(string(body), `"ok": true`) != 2 {
		t.Errorf("bulk off of two: %d %s", code, body)
	}
	if code, body := f.call(t, nil, "POST", "/api/v1/power", tech, `{"action":"off","nodes":["r7-00","nope"]}`); code != 404 {
		t.Errorf("bulk off with an unknown node: %d %s", code, body)
	}
	if c := bmcs.calls["ipmi://10.7.0.1"]; len(c) != 2 {
		t.Errorf("BMC 1 got %v after a refused request", c)
	}
	for _, tc := range []struct{ body string }{{`{"action":"on"}`}, {`{"action":"on","rack":"R7","nodes":["r7-00"]}`}, {`{"action":"up","rack":"R7"}`}} {
		if code, _ := f.call(t, nil, "POST", "/api/v1/power", tech, tc.body); code != 400 {
			t.Errorf("bulk %s: %d, want 400", tc.body, code)
		}
	}
	if code, _ := f.call(t, nil, "POST", "/api/v1/power", tech, `{"action":"on","rack":"R0"}`); code != 404 {
		t.Errorf("bulk of an empty rack: %d", code)
	}
	if code, _ := f.call(t, nil, "POST", "/api/v1/power", ro, `{"action":"on","rack":"R7"}`); code != 403 {
		t.Errorf("readonly bulk power: %d", code)
	}
	evs, err := f.st.Events(ctx, store.EventFilter{NodeID: ids[0]})
	if err != nil {
		t.Fatal(err)
	}
	var reasons []string
	for _, e := range evs {
		if e.Kind == "power" {
			reasons = append(reasons, e.Reason)
		}
	}
	if strings.Join(reasons, ",") != "power on,power off" {
		t.Errorf("node 0's power events: %v", reasons)
	}
}

// TestNodePowerManaged: the node view says whether the node has a BMC
// (its actions power it) or waits for a reboot, in lists too.
func TestNodePowerManaged(t *testing.T) {
	f := newFixture(t)
	tech, ro := f.tokens[store.RoleTech], f.tokens[store.RoleReadonly]
	check := func(want bool) {
		t.Helper()
		code, body := f.call(t, nil, "GET", "/api/v1/nodes/gpu-01", ro, "")
		var n Node
		if code != 200 || json.Unmarshal(body, &n) != nil || n.PowerManaged != want {
			t.Errorf("GET node: %d, power_managed %v, want %v", code, n.PowerManaged, want)
		}
		code, body = f.call(t, nil, "GET", "/api/v1/nodes", ro, "")
		var l NodeList
		if code != 200 || json.Unmarshal(body, &l) != nil || len(l.Items) == 0 {
			t.Fatalf("GET nodes: %d %s", code, body)
		}
		for _, it := range l.Items {
			if it.ID == f.node.ID && it.PowerManaged != want {
				t.Errorf("node list: power_managed %v, want %v", it.PowerManaged, want)
			}
		}
	}
	check(true)
	if code, _ := f.call(t, nil, "DELETE", "/api/v1/nodes/gpu-01/bmc", tech, ""); code != 204 {
		t.Fatalf("DELETE bmc: %d", code)
	}
	check(false)
}
