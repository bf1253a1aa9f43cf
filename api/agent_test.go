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
	lookup := func(body string) (int, protocol.LookupResult, string) {
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
	// The task is handed out once: the next heartbeat has none.
	if code, b := f.call(t, nil, "POST", base+"/heartbeat", tok, ``); code != 200 || strings.Contains(string(b), `"task"`) {
		t.Fatalf("second heartbeat: %d %s", code, b)
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
	code, b := f.call(t, nil, "POST", "/api/v1/agent/lookup", "", `{"macs":["52:54:00:12:34:56"]}`)
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
	code, b := f.call(t, nil, "POST", "/api/v1/agent/lookup", "", `{"macs":["52:54:00:12:34:56"]}`)
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
