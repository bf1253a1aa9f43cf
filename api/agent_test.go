package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/rackboot/rackboot/agent/protocol"
	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/store"
)

// bootSecret gives a node a secret for its next boot, as the core does
// when it serves the node its boot script.
func (f *fixture) bootSecret(t *testing.T, node string) string {
	t.Helper()
	ctx := context.Background()
	secret, hash := NewSecret()
	f.st.DeleteToken(ctx, store.BootTokenID(node))
	if _, err := f.st.CreateToken(ctx, store.Token{ID: store.BootTokenID(node), Hash: hash, Kind: store.TokenBoot, NodeID: node,
		Expires: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	return secret
}

// TestAgentProtocol walks a new node's agent through lookup, its
// inspection and a second life, with every refusal on the way.
func TestAgentProtocol(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	mac, _ := net.ParseMAC("52:54:00:99:00:01")
	mac2, _ := net.ParseMAC("52:54:00:99:00:02")
	n, _, err := f.st.EnrollClient(ctx, boot.Client{MAC: mac, Arch: boot.ClientARM64UEFI}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	secret := f.bootSecret(t, n.ID)
	lookup := func(body string) (int, protocol.LookupResult, string) {
		if strings.HasSuffix(body, "}") && !strings.Contains(body, "boot_secret") {
			body = strings.TrimSuffix(body, "}") + fmt.Sprintf(`,"boot_secret":%q}`, secret)
		}
		code, b := f.call(t, nil, "POST", "/api/v1/agent/lookup", "", body)
		var res protocol.LookupResult
		json.Unmarshal(b, &res)
		return code, res, string(b)
	}
	if code, _, b := lookup(`{"macs":["52:54:00:99:99:99"]}`); code != 404 {
		t.Fatalf("unknown MAC: %d %s", code, b)
	}
	if code, _, b := lookup(`{"macs":[]}`); code != 400 {
		t.Fatalf("no MACs: %d %s", code, b)
	}
	if code, _, b := lookup(fmt.Sprintf(`{"macs":[%q],"node_id":%q}`, mac, f.node.ID)); code != 409 {
		t.Fatalf("MACs of another node: %d %s", code, b)
	}
	// The second MAC is unknown, the first is the node's: the node is found.
	code, res, b := lookup(fmt.Sprintf(`{"macs":[%q,%q],"node_id":%q}`, mac2, mac, n.ID))
	if code != 200 || res.NodeID != n.ID || res.State != "inspecting" || !strings.HasPrefix(res.Token, TokenPrefix) || time.Duration(res.Heartbeat) != DefaultAgentHeartbeat {
		t.Fatalf("lookup: %d %s", code, b)
	}
	tok := res.Token
	if code, _, b := lookup(fmt.Sprintf(`{"macs":[%q]}`, mac)); code != 409 || !strings.Contains(b, "already issued") {
		t.Fatalf("second lookup: %d %s", code, b)
	}
	base := "/api/v1/agent/nodes/" + n.ID
	other := "/api/v1/agent/nodes/" + f.node.ID
	if code, _ := f.call(t, nil, "POST", other+"/heartbeat", tok, `{}`); code != 403 {
		t.Fatalf("token of node A on node B: %d", code)
	}
	if code, _ := f.call(t, nil, "GET", "/api/v1/nodes", tok, ""); code != 403 {
		t.Fatalf("agent token on a people's route: %d", code)
	}
	code, b2 := f.call(t, nil, "POST", base+"/heartbeat", tok, `{}`)
	var hb protocol.HeartbeatResult
	if json.Unmarshal(b2, &hb); code != 200 || hb.Task == nil || hb.Task.Kind != protocol.TaskInspect || hb.State != "inspecting" {
		t.Fatalf("heartbeat: %d %s", code, b2)
	}
	task := hb.Task.ID
	// A heartbeat that names it running gets no task; one that says the
	// agent runs nothing gets the same task again (the answer that
	// handed it out was lost), never a second.
	if code, b := f.call(t, nil, "POST", base+"/heartbeat", tok, fmt.Sprintf(`{"running":%q}`, task)); code != 200 || strings.Contains(string(b), `"task"`) {
		t.Fatalf("heartbeat while it runs: %d %s", code, b)
	}
	// Before any task queued meanwhile: one task of a node runs at a time.
	queued, err := f.st.CreateTask(ctx, store.Task{NodeID: n.ID, Kind: protocol.TaskWipe})
	if err != nil {
		t.Fatal(err)
	}
	if code, b := f.call(t, nil, "POST", base+"/heartbeat", tok, ``); code != 200 || !strings.Contains(string(b), task) {
		t.Fatalf("heartbeat of an agent that lost the task: %d %s", code, b)
	}
	if pending, _ := f.st.Tasks(ctx, store.TaskFilter{NodeID: n.ID, State: store.TaskPending}); len(pending) != 1 {
		t.Fatalf("the queued task was claimed beside the running one: %d pending", len(pending))
	}
	queued.State, queued.Error = store.TaskFailed, "not wanted by the test"
	if err := f.st.UpdateTask(ctx, queued); err != nil {
		t.Fatal(err)
	}
	if code, _ := f.call(t, nil, "POST", base+"/inventory", tok, `[1,2]`); code != 400 {
		t.Fatalf("inventory that is not an object: %d", code)
	}
	if code, _ := f.call(t, nil, "POST", base+"/inventory", tok, `{"cpu":{}}`); code != 400 {
		t.Fatalf("inventory without a version: %d", code)
	}
	if code, _ := f.call(t, nil, "POST", base+"/tasks/"+task, tok, `{"state":"maybe"}`); code != 400 {
		t.Fatalf("bad task state: %d", code)
	}
	if code, _ := f.call(t, nil, "POST", base+"/tasks/nope", tok, `{"state":"done"}`); code != 404 {
		t.Fatalf("unknown task: %d", code)
	}
	inv := `{"version":1,"cpu":{"count":80,"architecture":"aarch64"},"gpus":[{"model":"NVIDIA A100-SXM4-80GB"},{"model_name":"NVIDIA A100-SXM4-80GB"}]}`
	if code, b := f.call(t, nil, "POST", base+"/inventory", tok, inv); code != 204 {
		t.Fatalf("inventory: %d %s", code, b)
	}
	code, b2 = f.call(t, nil, "POST", base+"/tasks/"+task, tok, `{"state":"done","result":{"seconds":3}}`)
	if code != 200 || !strings.Contains(string(b2), `"available"`) {
		t.Fatalf("inspect done: %d %s", code, b2)
	}
	got, _ := f.st.Node(ctx, n.ID)
	if got.State != store.StateAvailable || len(got.GPUModels) != 2 || got.GPUModels[0] != "NVIDIA A100-SXM4-80GB" {
		t.Fatalf("node after inspection: %s %v", got.State, got.GPUModels)
	}
	// The token died with the state change; a new lookup is allowed now.
	if code, _ := f.call(t, nil, "POST", base+"/heartbeat", tok, `{}`); code != 401 {
		t.Fatalf("token after its node moved on: %d, want 401", code)
	}
	code, res, b = lookup(fmt.Sprintf(`{"macs":[%q]}`, mac))
	if code != 200 || res.State != "available" {
		t.Fatalf("lookup in available: %d %s", code, b)
	}
	if code, _ := f.call(t, nil, "POST", base+"/tasks/"+task, res.Token, `{"state":"done"}`); code != 409 {
		t.Fatalf("reporting a finished task again: %d", code)
	}
	// Work that fails leaves the node failed with the reason.
	if code, b := f.call(t, nil, "POST", "/api/v1/nodes/"+n.ID+"/actions/burnin", f.tokens[store.RoleTech], `{"duration":"1m"}`); code != 200 {
		t.Fatalf("burnin: %d %s", code, b)
	}
	code, res, _ = lookup(fmt.Sprintf(`{"macs":[%q]}`, mac))
	if code != 200 {
		t.Fatalf("lookup in burnin: %d", code)
	}
	_, b2 = f.call(t, nil, "POST", base+"/heartbeat", res.Token, `{}`)
	json.Unmarshal(b2, &hb)
	if hb.Task == nil || hb.Task.Kind != protocol.TaskBurnin || !strings.Contains(string(hb.Task.Params), `"1m0s"`) {
		t.Fatalf("burnin task: %s", b2)
	}
	// A running task's progress is its result until it ends, for the
	// UI; progress for a task of another node is refused.
	prog := fmt.Sprintf(`{"running":%q,"progress":{"phase":"memory","done":512,"total":1024,"rate":64}}`, hb.Task.ID)
	if code, b := f.call(t, nil, "POST", base+"/heartbeat", res.Token, prog); code != 200 || strings.Contains(string(b), `"task"`) {
		t.Fatalf("heartbeat with progress: %d %s", code, b)
	}
	code, b2 = f.call(t, nil, "GET", "/api/v1/tasks/"+hb.Task.ID, f.tokens[store.RoleReadonly], "")
	var running struct {
		State  string            `json:"state"`
		Result protocol.Progress `json:"result"`
	}
	json.Unmarshal(b2, &running)
	p := running.Result
	if code != 200 || running.State != "running" || p.Phase != "memory" || p.Done != 512 {
		t.Fatalf("task with progress: %d %s", code, b2)
	}
	if code, _ := f.call(t, nil, "POST", base+"/heartbeat", res.Token, `{"running":"nope","progress":{"done":1}}`); code != 404 {
		t.Fatalf("progress of an unknown task: %d", code)
	}
	f.call(t, nil, "POST", base+"/tasks/"+hb.Task.ID, res.Token, `{"state":"failed","error":"memory pattern mismatch at 0x3f000000"}`)
	if task, _ := f.st.Task(ctx, hb.Task.ID); task.State != store.TaskFailed || strings.Contains(string(task.Result), "memory") {
		t.Fatalf("the task's end kept its progress: %+v", task)
	}
	got, _ = f.st.Node(ctx, n.ID)
	if got.State != store.StateFailed || !strings.Contains(got.LastError, "memory pattern mismatch") {
		t.Fatalf("after failed burn-in: %s %q", got.State, got.LastError)
	}
	evs, _ := f.st.Events(ctx, store.EventFilter{NodeID: n.ID})
	var log []string
	for _, e := range evs {
		log = append(log, e.Actor+": "+string(e.From)+"→"+string(e.To)+" "+e.Message+" "+e.Reason)
	}
	all := strings.Join(log, "\n")
	for _, want := range []string{"system: discovered→inspecting", "agent token issued", "inspect started", "agent:" + n.ID + ": inspecting→available", "burnin failed"} {
		if !strings.Contains(all, want) {
			t.Errorf("events lack %q:\n%s", want, all)
		}
	}
}

func TestAgentLookupRefusedForActiveNode(t *testing.T) {
	f := newFixture(t)
	f.st.SetState(context.Background(), f.node.ID, store.StateActive)
	code, b := f.call(t, nil, "POST", "/api/v1/agent/lookup", "", fmt.Sprintf(`{"macs":["52:54:00:12:34:56"],"boot_secret":%q}`, f.bootSecret(t, f.node.ID)))
	if code != 409 || !strings.Contains(string(b), "active") {
		t.Fatalf("lookup of an active node: %d %s", code, b)
	}
}

// A wipe leaves one audit event per disk: serial, method, bytes and the
// verification, and the erase methods that were tried and not used.
func TestWipeAuditRecords(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.st.SetState(ctx, f.node.ID, store.StateAvailable)
	if code, b := f.call(t, nil, "POST", "/api/v1/nodes/"+f.node.ID+"/actions/wipe", f.tokens[store.RoleTech], `{"method":"full"}`); code != 200 {
		t.Fatalf("wipe: %d %s", code, b)
	}
	f.api.AgentHeartbeat = 3 * time.Second
	code, b := f.call(t, nil, "POST", "/api/v1/agent/lookup", "", fmt.Sprintf(`{"macs":["52:54:00:12:34:56"],"boot_secret":%q}`, f.bootSecret(t, f.node.ID)))
	var res protocol.LookupResult
	if json.Unmarshal(b, &res); code != 200 || time.Duration(res.Heartbeat) != 3*time.Second {
		t.Fatalf("lookup: %d %s, want a 3s heartbeat", code, b)
	}
	base := "/api/v1/agent/nodes/" + f.node.ID
	_, b = f.call(t, nil, "POST", base+"/heartbeat", res.Token, `{}`)
	var hb protocol.HeartbeatResult
	if json.Unmarshal(b, &hb); hb.Task == nil || hb.Task.Kind != protocol.TaskWipe {
		t.Fatalf("wipe task: %s", b)
	}
	report := `{"state":"done","result":{"disks":[
		{"disk":"/dev/nvme0n1","serial":"S5GXNF0R","method":"nvme-format-crypto","bytes":960197124096,"samples_verified":256},
		{"disk":"/dev/sda","serial":"","method":"zeroout","bytes":4000787030016,"samples_verified":258,"tried":["nvme-format: not an NVMe namespace: inappropriate ioctl for device"]}]}}`
	if code, b := f.call(t, nil, "POST", base+"/tasks/"+hb.Task.ID, res.Token, report); code != 200 {
		t.Fatalf("report: %d %s", code, b)
	}
	evs, _ := f.st.Events(ctx, store.EventFilter{NodeID: f.node.ID})
	var wipes []string
	for _, e := range evs {
		if e.Kind == "wipe" {
			wipes = append(wipes, e.Message)
		}
	}
	want := []string{
		"wipe of /dev/nvme0n1 (serial S5GXNF0R): nvme-format-crypto, 960197124096 bytes, 256 sampled blocks read back zero",
		"wipe of /dev/sda (serial none): zeroout, 4000787030016 bytes, 258 sampled blocks read back zero; not used: nvme-format: not an NVMe namespace: inappropriate ioctl for device",
	}
	if strings.Join(wipes, "\n") != strings.Join(want, "\n") {
		t.Errorf("wipe events:\n%s\nwant:\n%s", strings.Join(wipes, "\n"), strings.Join(want, "\n"))
	}
}

// An attacker on the provisioning network who can name a node, or ask
// for its boot script from another address, gets no agent token: the
// lookup takes MACs only and needs this boot's secret.
func TestAgentImpersonation(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.st.SetState(ctx, f.node.ID, store.StateAvailable)
	lookup := func(body string) (int, string) {
		code, b := f.call(t, nil, "POST", "/api/v1/agent/lookup", "", body)
		return code, string(b)
	}
	secret := f.bootSecret(t, f.node.ID)
	other, _, _ := f.st.EnrollClient(ctx, boot.Client{MAC: net.HardwareAddr{0x52, 0x54, 0, 0, 0x77, 1}, Arch: boot.ClientX64UEFI}, time.Now())
	otherSecret := f.bootSecret(t, other.ID)
	for _, tc := range []struct {
		name, body string
		code       int
		want       string
	}{
		{"by name", fmt.Sprintf(`{"macs":["gpu-01"],"boot_secret":%q}`, secret), 400, "not an Ethernet MAC"},
		{"by id", fmt.Sprintf(`{"macs":[%q],"boot_secret":%q}`, f.node.ID, secret), 400, "not an Ethernet MAC"},
		{"no secret", `{"macs":["52:54:00:12:34:56"]}`, 403, "no boot secret"},
		{"a made-up secret", `{"macs":["52:54:00:12:34:56"],"boot_secret":"0123456789abcdef0123456789abcdef"}`, 403, "not node"},
		{"another node's secret", fmt.Sprintf(`{"macs":["52:54:00:12:34:56"],"boot_secret":%q}`, otherSecret), 403, "not node"},
		{"an API token as the secret", fmt.Sprintf(`{"macs":["52:54:00:12:34:56"],"boot_secret":%q}`, f.tokens[store.RoleAdmin]), 403, "not node"},
	} {
		if code, b := lookup(tc.body); code != tc.code || !strings.Contains(b, tc.want) {
			t.Errorf("%s: %d %s, want %d %q", tc.name, code, b, tc.code, tc.want)
		}
	}
	// Upper-case and dashed MACs are the same MAC.
	if code, b := lookup(fmt.Sprintf(`{"macs":["52-54-00-12-34-56"],"boot_secret":%q}`, secret)); code != 200 {
		t.Fatalf("the node's own agent: %d %s", code, b)
	}
	// A boot that is over: the node booted again, and the secret of the
	// boot before is refused.
	f.bootSecret(t, f.node.ID)
	if code, b := lookup(fmt.Sprintf(`{"macs":["52:54:00:12:34:56"],"boot_secret":%q}`, secret)); code != 403 {
		t.Errorf("the previous boot's secret: %d %s", code, b)
	}
	// Expired.
	f.st.DeleteToken(ctx, store.BootTokenID(f.node.ID))
	old, hash := NewSecret()
	f.st.CreateToken(ctx, store.Token{ID: store.BootTokenID(f.node.ID), Hash: hash, Kind: store.TokenBoot, NodeID: f.node.ID, Expires: time.Now().Add(-time.Minute)})
	if code, b := lookup(fmt.Sprintf(`{"macs":["52:54:00:12:34:56"],"boot_secret":%q}`, old)); code != 403 || !strings.Contains(b, "expired") {
		t.Errorf("an expired secret: %d %s", code, b)
	}
	// Boot secrets are no API credential and are not listed as tokens.
	if code, _ := f.call(t, nil, "GET", "/api/v1/nodes", old, ""); code != 401 {
		t.Errorf("a boot secret as a bearer token: %d", code)
	}
	_, b := f.call(t, nil, "GET", "/api/v1/tokens", f.tokens[store.RoleAdmin], "")
	if strings.Contains(string(b), `"boot-`) {
		t.Errorf("token list shows boot secrets: %s", b)
	}
}

// The first lookup of a new boot ends the agent of the boot before: its
// token dies, a reboot it was asked for is done, the work it had not
// reported fails. A later lookup of the same boot (after a state change
// killed its token) changes nothing of that.
func TestNewBootEndsTheOldAgent(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.st.SetState(ctx, f.node.ID, store.StateAvailable)
	if code, b := f.call(t, nil, "POST", "/api/v1/nodes/"+f.node.ID+"/actions/burnin", f.tokens[store.RoleTech], `{"duration":"1m"}`); code != 200 {
		t.Fatalf("burnin: %d %s", code, b)
	}
	lookup := func(secret string) (int, protocol.LookupResult) {
		code, b := f.call(t, nil, "POST", "/api/v1/agent/lookup", "", fmt.Sprintf(`{"macs":["52:54:00:12:34:56"],"boot_secret":%q}`, secret))
		var res protocol.LookupResult
		json.Unmarshal(b, &res)
		return code, res
	}
	code, first := lookup(f.bootSecret(t, f.node.ID))
	if code != 200 {
		t.Fatalf("first boot's lookup: %d", code)
	}
	base := "/api/v1/agent/nodes/" + f.node.ID
	if _, b := f.call(t, nil, "POST", base+"/heartbeat", first.Token, `{}`); !strings.Contains(string(b), "burnin") {
		t.Fatalf("burn-in not handed out: %s", b)
	}
	if _, err := f.st.CreateTask(ctx, store.Task{NodeID: f.node.ID, Kind: "reboot"}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.st.ClaimTask(ctx, f.node.ID, time.Now()); err != nil {
		t.Fatal(err)
	}
	// The node boots again: a new secret, a new agent.
	secret := f.bootSecret(t, f.node.ID)
	if code, _ := lookup(secret); code != 200 {
		t.Fatalf("new boot's lookup: %d", code)
	}
	if code, _ := f.call(t, nil, "POST", base+"/heartbeat", first.Token, `{}`); code != 401 {
		t.Errorf("the old agent's token after a new boot: %d, want 401", code)
	}
	tasks, _ := f.st.Tasks(ctx, store.TaskFilter{NodeID: f.node.ID})
	states := map[string]store.TaskState{}
	for _, tk := range tasks {
		states[tk.Kind] = tk.State
	}
	if states["burnin"] != store.TaskFailed || states["reboot"] != store.TaskDone {
		t.Errorf("tasks after the new boot: %v", states)
	}
	n, _ := f.st.Node(ctx, f.node.ID)
	if n.State != store.StateFailed || !strings.Contains(n.LastError, "burnin interrupted") {
		t.Errorf("node after its agent vanished: %s %q", n.State, n.LastError)
	}
	// The same boot's agent asking again while its token lives: refused,
	// and nothing else changes.
	if code, _ := lookup(secret); code != 409 {
		t.Errorf("second lookup of one boot: %d, want 409", code)
	}
	if n2, _ := f.st.Node(ctx, f.node.ID); n2.State != n.State {
		t.Errorf("a second lookup moved the node to %s", n2.State)
	}
}

// A NIC or disk controller no driver took is an event on its node, once
// per inventory that first names it.
func TestUnclaimedDevicesAreEvents(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	mac, _ := net.ParseMAC("52:54:00:99:00:07")
	n, _, err := f.st.EnrollClient(ctx, boot.Client{MAC: mac, Arch: boot.ClientX64UEFI}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	code, b := f.call(t, nil, "POST", "/api/v1/agent/lookup", "", fmt.Sprintf(`{"macs":[%q],"boot_secret":%q}`, mac, f.bootSecret(t, n.ID)))
	var res protocol.LookupResult
	if json.Unmarshal(b, &res); code != 200 {
		t.Fatalf("lookup: %d %s", code, b)
	}
	inv := `{"version":1,"unclaimed_devices":[{"pci_address":"0000:01:00.0","id":"14e4:165f","kind":"network","name":"Broadcom NetXtreme BCM5720"}]}`
	driverEvents := func() []string {
		evs, err := f.st.Events(ctx, store.EventFilter{NodeID: n.ID})
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range evs {
			if e.Kind == "driver" {
				out = append(out, e.Message)
			}
		}
		return out
	}
	for range 2 {
		if code, b := f.call(t, nil, "POST", "/api/v1/agent/nodes/"+n.ID+"/inventory", res.Token, inv); code != 204 {
			t.Fatalf("inventory: %d %s", code, b)
		}
	}
	got := driverEvents()
	if len(got) != 1 || !strings.Contains(got[0], "no driver for network 14e4:165f at 0000:01:00.0 (Broadcom NetXtreme BCM5720)") {
		t.Errorf("driver events: %q, want one naming the NIC", got)
	}
}

// TestLookupAnsweredAgain: an agent whose lookup's answer was lost asks
// again with the token it chose, and gets it, alive; anyone else with the
// same boot secret, choosing another token or none, is refused while it
// lives; a token not made as rackboot's are is refused.
func TestLookupAnsweredAgain(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	mac, _ := net.ParseMAC("52:54:00:99:00:11")
	n, _, err := f.st.EnrollClient(ctx, boot.Client{MAC: mac, Arch: boot.ClientX64UEFI}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	secret := f.bootSecret(t, n.ID)
	lookup := func(token string) (int, protocol.LookupResult, string) {
		body, _ := json.Marshal(protocol.Lookup{MACs: []string{mac.String()}, BootSecret: secret, Token: token})
		code, b := f.call(t, nil, "POST", "/api/v1/agent/lookup", "", string(body))
		var res protocol.LookupResult
		json.Unmarshal(b, &res)
		return code, res, string(b)
	}
	for _, bad := range []string{"rbt_short", "xyz_" + strings.Repeat("a", 64), TokenPrefix + strings.Repeat("A", 64), TokenPrefix + strings.Repeat("a", 65)} {
		if code, _, b := lookup(bad); code != 400 {
			t.Errorf("lookup asking for token %q: %d %s, want 400", bad, code, b)
		}
	}
	mine, _ := NewSecret()
	code, res, b := lookup(mine)
	if code != 200 || res.Token != mine {
		t.Fatalf("first lookup: %d %s, want the token asked for", code, b)
	}
	// Its answer lost: the same agent asks again.
	if code, res, b = lookup(mine); code != 200 || res.Token != mine {
		t.Fatalf("the lookup asked again by its agent: %d %s, want its token again", code, b)
	}
	if code, _ := f.call(t, nil, "POST", "/api/v1/agent/nodes/"+n.ID+"/heartbeat", mine, `{}`); code != 200 {
		t.Fatalf("heartbeat with the token issued again: %d", code)
	}
	theirs, _ := NewSecret()
	for _, other := range []string{theirs, ""} {
		if code, _, b := lookup(other); code != 409 {
			t.Fatalf("a lookup with the boot secret asking for %q while the agent's token lives: %d %s, want 409", other, code, b)
		}
	}
	if code, _ := f.call(t, nil, "POST", "/api/v1/agent/nodes/"+n.ID+"/heartbeat", mine, `{}`); code != 200 {
		t.Fatalf("the agent's token after refused lookups: %d", code)
	}
}
