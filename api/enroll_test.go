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
	"github.com/rackboot/rackboot/lifecycle"
	"github.com/rackboot/rackboot/store"
)

// inspecting enrolls a new node and looks its agent up: the node is
// inspecting, and the agent holds its token and the inspect task.
func (f *fixture) inspecting(t *testing.T, mac string) (store.Node, string, protocol.Task) {
	t.Helper()
	ctx := context.Background()
	hw, _ := net.ParseMAC(mac)
	n, _, err := f.st.EnrollClient(ctx, boot.Client{MAC: hw, Arch: boot.ClientX64UEFI}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	code, b := f.call(t, nil, "POST", "/api/v1/agent/lookup", "", fmt.Sprintf(`{"macs":[%q],"boot_secret":%q}`, mac, f.bootSecret(t, n.ID)))
	var res protocol.LookupResult
	if json.Unmarshal(b, &res); code != 200 {
		t.Fatalf("lookup: %d %s", code, b)
	}
	code, b = f.call(t, nil, "POST", "/api/v1/agent/nodes/"+n.ID+"/heartbeat", res.Token, `{}`)
	var hb protocol.HeartbeatResult
	if json.Unmarshal(b, &hb); code != 200 || hb.Task == nil || hb.Task.Kind != protocol.TaskInspect {
		t.Fatalf("heartbeat: %d %s", code, b)
	}
	return n, res.Token, *hb.Task
}

// TestAgentBMCEnrollment: with bmc.enroll the inspect task asks for a
// BMC user, and the agent's report of it becomes the node's sealed BMC
// credential; every report that does not come from the node's running
// inspect task, or names no usable BMC, is refused and changes nothing.
func TestAgentBMCEnrollment(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.api.Lifecycle.(*lifecycle.Machine).BMCEnroll = true
	n, tok, task := f.inspecting(t, "52:54:00:99:00:21")
	var p protocol.InspectParams
	if json.Unmarshal(task.Params, &p); !p.BMCEnroll {
		t.Fatalf("inspect task params %s: want bmc_enroll", task.Params)
	}
	path := "/api/v1/agent/nodes/" + n.ID + "/bmc"
	body := func(task, addr, user, pw string) string {
		b, _ := json.Marshal(protocol.BMCEnrollment{TaskID: task, Address: addr, Channel: 1, User: user, UserID: 3, Password: pw})
		return string(b)
	}
	for _, c := range []struct {
		name, token, body string
		want              int
	}{
		{"no token", "", body(task.ID, "10.1.2.3", "rackboot", "pw"), 401},
		{"a person's token", f.tokens[store.RoleAdmin], body(task.ID, "10.1.2.3", "rackboot", "pw"), 403},
		{"another node's task", tok, body("nope", "10.1.2.3", "rackboot", "pw"), 404},
		{"loopback", tok, body(task.ID, "127.0.0.1", "rackboot", "pw"), 400},
		{"unspecified", tok, body(task.ID, "0.0.0.0", "rackboot", "pw"), 400},
		{"link-local v6", tok, body(task.ID, "fe80::1", "rackboot", "pw"), 400},
		{"not an address", tok, body(task.ID, "bmc.example", "rackboot", "pw"), 400},
		{"long user", tok, body(task.ID, "10.1.2.3", strings.Repeat("u", 17), "pw"), 400},
		{"long password", tok, body(task.ID, "10.1.2.3", "rackboot", strings.Repeat("p", 21)), 400},
		{"no password", tok, body(task.ID, "10.1.2.3", "rackboot", ""), 400},
	} {
		if code, b := f.call(t, nil, "POST", path, c.token, c.body); code != c.want {
			t.Errorf("%s: %d %s, want %d", c.name, code, b, c.want)
		}
	}
	if _, err := f.st.BMC(ctx, n.ID); err == nil {
		t.Fatal("a refused enrollment set a BMC")
	}
	if code, b := f.call(t, nil, "POST", path, tok, body(task.ID, "10.1.2.3", "rackboot", "Zq8mW2kLp0aXc7Vt")); code != 204 {
		t.Fatalf("enrollment: %d %s", code, b)
	}
	got, err := f.st.BMC(ctx, n.ID)
	if err != nil || got.URL != "ipmi://10.1.2.3" || got.User != "rackboot" {
		t.Fatalf("BMC after enrollment: %+v %v", got, err)
	}
	if pw, err := f.api.Secrets.Open(got.Password, BMCPasswordAD(n.ID)); err != nil || string(pw) != "Zq8mW2kLp0aXc7Vt" {
		t.Fatalf("sealed password opens to %q, %v", pw, err)
	}
	code, b := f.call(t, nil, "GET", "/api/v1/nodes/"+n.ID+"/bmc", f.tokens[store.RoleAdmin], "")
	if code != 200 || strings.Contains(string(b), "Zq8mW2kLp0aXc7Vt") || !strings.Contains(string(b), `"password_set": true`) {
		t.Fatalf("GET bmc: %d %s", code, b)
	}
	evs, _ := f.st.Events(ctx, store.EventFilter{NodeID: n.ID})
	found := false
	for _, e := range evs {
		if strings.Contains(e.Message, "BMC user rackboot (id 3, channel 1) enrolled by the agent at 10.1.2.3") {
			found = e.Actor == "agent:"+n.ID
		}
		if strings.Contains(e.Message, "Zq8mW2kLp0aXc7Vt") {
			t.Errorf("event %q shows the password", e.Message)
		}
	}
	if !found {
		t.Errorf("no enrollment event by the agent in %+v", evs)
	}
	// The task ends: no more enrollments from it.
	if code, b := f.call(t, nil, "POST", "/api/v1/agent/nodes/"+n.ID+"/inventory", tok, `{"version":1}`); code != 204 {
		t.Fatalf("inventory: %d %s", code, b)
	}
	if code, b := f.call(t, nil, "POST", "/api/v1/agent/nodes/"+n.ID+"/tasks/"+task.ID, tok, `{"state":"done"}`); code != 200 {
		t.Fatalf("inspect done: %d %s", code, b)
	}
	if code, _ := f.call(t, nil, "POST", path, tok, body(task.ID, "10.1.2.4", "rackboot", "other")); code != 401 && code != 409 {
		t.Errorf("enrollment after the task ended: %d, want 401 or 409", code)
	}

	// An operator's ipmi:// host is kept, its user replaced; a Redfish
	// BMC is left alone.
	for _, c := range []struct{ mac, url, wantURL string }{
		{"52:54:00:99:00:22", "ipmi://bmc-r1-07.example:6230", "ipmi://bmc-r1-07.example:6230"},
		{"52:54:00:99:00:23", "redfish://10.5.5.5", "redfish://10.5.5.5"},
	} {
		n, tok, task := f.inspecting(t, c.mac)
		f.st.SetBMC(ctx, store.BMC{NodeID: n.ID, URL: c.url, User: "admin", Password: f.api.Secrets.Seal([]byte("site"), BMCPasswordAD(n.ID))})
		code, b := f.call(t, nil, "POST", "/api/v1/agent/nodes/"+n.ID+"/bmc", tok, body(task.ID, "10.1.2.5", "rackboot", "pw2"))
		got, _ := f.st.BMC(ctx, n.ID)
		if got.URL != c.wantURL {
			t.Errorf("%s: BMC after enrollment %s, want %s (%d %s)", c.url, got.URL, c.wantURL, code, b)
		}
		if strings.HasPrefix(c.url, "redfish") != (code == 409) || strings.HasPrefix(c.url, "redfish") != (got.User == "admin") {
			t.Errorf("%s: %d %s, user %s", c.url, code, b, got.User)
		}
	}

	// A BMC with IPMI over LAN off: enrolled, and the event says what
	// the site must do.
	n2, tok2, task2 := f.inspecting(t, "52:54:00:99:00:25")
	off, _ := json.Marshal(protocol.BMCEnrollment{TaskID: task2.ID, Address: "10.1.2.9", Channel: 1, User: "rackboot", UserID: 3, Password: "pw", LANAccess: "disabled"})
	if code, body := f.call(t, nil, "POST", "/api/v1/agent/nodes/"+n2.ID+"/bmc", tok2, string(off)); code != 204 {
		t.Fatalf("enrollment: %d %s", code, body)
	}
	evs2, _ := f.st.Events(ctx, store.EventFilter{NodeID: n2.ID})
	warned := false
	for _, e := range evs2 {
		warned = warned || strings.Contains(e.Message, "IPMI over LAN is disabled on channel 1")
	}
	if !warned {
		t.Errorf("no event says IPMI over LAN is off: %+v", evs2)
	}

	// Without bmc.enroll, an inspection asks for nothing and takes nothing.
	f.api.Lifecycle.(*lifecycle.Machine).BMCEnroll = false
	n, tok, task = f.inspecting(t, "52:54:00:99:00:24")
	if strings.Contains(string(task.Params), "bmc_enroll") {
		t.Errorf("inspect params without bmc.enroll: %s", task.Params)
	}
	if code, _ := f.call(t, nil, "POST", "/api/v1/agent/nodes/"+n.ID+"/bmc", tok, body(task.ID, "10.1.2.6", "rackboot", "pw")); code != 409 {
		t.Errorf("enrollment nobody asked for: %d, want 409", code)
	}
}

// TestInventoryFormats: a node's inventory as rackboot keeps it and as
// Ironic's inspection reads it; an unknown format and an uninspected node
// are refused with the reason.
func TestInventoryFormats(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	inv := `{"version":1,"cpu":{"count":8,"architecture":"x86_64","sockets":1},"memory":{"total":17179869184,"physical_mb":16384},
		"interfaces":[{"name":"eno1","mac_address":"52:54:00:12:34:56","has_carrier":true,"driver":"ice"}],
		"disks":[{"name":"/dev/sda","size":500107862016},{"name":"/dev/nvme0n1","size":1000204886016}],
		"boot":{"current_boot_mode":"uefi","pxe_interface":"52:54:00:12:34:56"},"bmc_address":"10.9.9.9",
		"pci_devices":[{"pci_address":"0000:3b:00.0","vendor_id":"10de","device_id":"2330","class":"030200","revision":"a1"}]}`
	if err := f.st.SetInventory(ctx, f.node.ID, json.RawMessage(inv), nil); err != nil {
		t.Fatal(err)
	}
	ro := f.tokens[store.RoleReadonly]
	code, b := f.call(t, nil, "GET", "/api/v1/nodes/gpu-01/inventory?format=ironic", ro, "")
	var d struct {
		Inventory struct {
			CPU        struct{ Count, SocketCount int } `json:"cpu"`
			BMCAddress string                           `json:"bmc_address"`
		} `json:"inventory"`
		RootDisk      struct{ Name string } `json:"root_disk"`
		BootInterface string                `json:"boot_interface"`
		PCIDevices    []map[string]string   `json:"pci_devices"`
	}
	if json.Unmarshal(b, &d); code != 200 || d.Inventory.CPU.Count != 8 || d.Inventory.BMCAddress != "10.9.9.9" || d.RootDisk.Name != "/dev/sda" ||
		d.BootInterface != "01-52-54-00-12-34-56" || len(d.PCIDevices) != 1 || d.PCIDevices[0]["product_id"] != "2330" || d.PCIDevices[0]["bus"] != "0000:3b:00.0" {
		t.Errorf("format=ironic: %d %s", code, b)
	}
	if code, b := f.call(t, nil, "GET", "/api/v1/nodes/gpu-01/inventory", ro, ""); code != 200 || !strings.Contains(string(b), `"physical_mb": 16384`) {
		t.Errorf("format=rackboot: %d %s", code, b)
	}
	if code, _ := f.call(t, nil, "GET", "/api/v1/nodes/gpu-01/inventory?format=xml", ro, ""); code != 400 {
		t.Errorf("format=xml: %d, want 400", code)
	}
	n, _, _ := f.inspecting(t, "52:54:00:99:00:31")
	if code, _ := f.call(t, nil, "GET", "/api/v1/nodes/"+n.ID+"/inventory", ro, ""); code != 404 {
		t.Errorf("uninspected node: %d, want 404", code)
	}
}
