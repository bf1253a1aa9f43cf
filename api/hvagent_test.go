package api

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rackboot/rackboot/agent/gpuconf"
	"github.com/rackboot/rackboot/agent/gpuconf/gpufake"
	"github.com/rackboot/rackboot/agent/gpuconf/gpufake/fakehost"
	hvagent "github.com/rackboot/rackboot/agent/hypervisor"
	"github.com/rackboot/rackboot/agent/protocol"
	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/hypervisor"
	"github.com/rackboot/rackboot/hypervisor/virttest"
	"github.com/rackboot/rackboot/store"
)

// TestHypervisorAgent: a hypervisor's agent, with the token an admin
// issued, is told the devices the VMs hold; a VM with a vGPU starts once
// the agent reports its mediated device, and is not kept when the agent
// says it could not make it.
func TestHypervisorAgent(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	admin, tech, ro := f.tokens[store.RoleAdmin], f.tokens[store.RoleTech], f.tokens[store.RoleReadonly]
	d := virttest.New([]boot.Arch{boot.ArchX86_64}, nil)
	// Long enough that the three error reports below arrive within it
	// on a loaded machine under the race detector; the silent agent's
	// case shortens it.
	vms := &hypervisor.Service{Store: f.st, Dial: d.Dial, DeviceWait: 20 * time.Second}
	f.api.VMs = vms
	f.api.HypervisorAgent = testHypervisorAgent

	n := t4Node(t, f, "52:54:00:12:34:96", "t4-01")
	tokenPath := "/api/v1/hypervisors/t4-01/agent-token"
	if code, b := f.call(t, nil, "POST", tokenPath, admin, ""); code != 404 || !strings.Contains(string(b), "no hypervisor") {
		t.Errorf("a token for a node that is no hypervisor: %d %s", code, b)
	}
	if _, err := f.api.VMs.SetHypervisor(ctx, n.ID, hypervisor.Settings{URI: "qemu+tls://t4-01/system", GPUMode: "vgpu", GPUProfile: "nvidia-230", VGPUMax: 4, Bridge: "br0"}, "user:test"); err != nil {
		t.Fatal(err)
	}
	if code, b := f.call(t, nil, "POST", tokenPath, tech, ""); code != 403 {
		t.Errorf("a tech issuing an agent token: %d %s", code, b)
	}
	code, b := f.call(t, nil, "POST", tokenPath, admin, "")
	var issued HypervisorAgentToken
	if code != 200 || json.Unmarshal(b, &issued) != nil || !strings.HasPrefix(issued.Token, TokenPrefix) || !strings.Contains(issued.Config, "rackboot.node="+n.ID) {
		t.Fatalf("agent token: %d %s", code, b)
	}
	token := issued.Token
	agentPath := "/api/v1/agent/hypervisors/" + n.ID
	if code, b := f.call(t, nil, "POST", "/api/v1/agent/hypervisors/"+f.node.ID, token, `{}`); code != 403 {
		t.Errorf("the token on another node's path: %d %s", code, b)
	}
	if code, b := f.call(t, nil, "POST", agentPath, token, `{"gpus":"not a state"}`); code != 400 {
		t.Errorf("a report with a broken GPU state: %d %s", code, b)
	}

	booted := time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)
	// round is one call of the agent, with the mdevs the cards carry
	// and its errors.
	round := func(mdevs []string, errs ...string) protocol.HypervisorWork {
		t.Helper()
		st := gpuconf.State{GPUs: []gpuconf.GPUState{{Index: 0, PCIAddress: "0000:3b:00.0", MIGMode: "[N/A]", MIGPending: "[N/A]", VGPU: gpuconf.VGPUMdev}}}
		for _, m := range mdevs {
			st.GPUs[0].Mdevs = append(st.GPUs[0].Mdevs, gpuconf.Mdev{UUID: m, Type: "nvidia-230", Parent: "0000:3b:00.0", GPU: "0000:3b:00.0"})
		}
		gpus, _ := json.Marshal(st)
		body, _ := json.Marshal(protocol.HypervisorReport{Booted: booted, Applied: "vgpu nvidia-230", GPUs: gpus, Errors: errs, Version: "test"})
		code, b := f.call(t, nil, "POST", agentPath, token, string(body))
		var w protocol.HypervisorWork
		if code != 200 || json.Unmarshal(b, &w) != nil {
			t.Fatalf("agent round: %d %s", code, b)
		}
		return w
	}
	if w := round(nil); w.GPUMode != "vgpu" || w.GPUProfile != "nvidia-230" || len(w.Devices) != 0 || time.Duration(w.Interval) != hypervisor.AgentInterval {
		t.Errorf("work with no VMs: %+v", w)
	}

	// create runs a VM's create as the API does, and waits for its
	// answer in the background.
	create := func(name string) chan [2]any {
		done := make(chan [2]any, 1)
		go func() {
			code, b := f.call(t, nil, "POST", "/api/v1/vms", tech, `{"name":"`+name+`","shape":{"vcpus":2,"memory_mib":2048,"disk_gib":10,"arch":"x86_64","gpu_mode":"vgpu","gpu_profile":"nvidia-230","gpu_count":1}}`)
			done <- [2]any{code, string(b)}
		}()
		return done
	}
	// pending waits for the work to name a device of a VM not yet
	// reported.
	pending := func(have []string) protocol.HypervisorWork {
		t.Helper()
		for i := 0; i < 200; i++ {
			if w := round(have); len(w.Devices) > len(have) {
				if time.Duration(w.Interval) != hypervisor.AgentIntervalPending {
					t.Errorf("interval while a device waits: %v", w.Interval)
				}
				return w
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Fatal("the VM's device never reached the agent's work")
		return protocol.HypervisorWork{}
	}
	done := create("vm-a")
	select {
	case r := <-done:
		t.Fatalf("create: %v", r)
	case <-time.After(200 * time.Millisecond):
	}
	w := pending(nil)
	dev := w.Devices[0]
	if dev.Kind != protocol.DeviceVGPU || dev.GPU != "0000:3b:00.0" || dev.Profile != "nvidia-230" || dev.Mdev == "" {
		t.Errorf("the VM's device: %+v", dev)
	}
	select {
	case r := <-done:
		t.Fatalf("the VM was created before its mdev was reported: %v", r)
	case <-time.After(300 * time.Millisecond):
	}
	round([]string{dev.Mdev})
	if r := <-done; r[0] != 201 {
		t.Fatalf("create with its mdev reported: %v", r)
	}
	if dom, ok := d.Domain("vm-a"); !ok || !strings.Contains(dom.XML, dev.Mdev) {
		t.Errorf("vm-a's domain: %v %+v", ok, dom)
	}

	// The agent says it could not make the second VM's device: the
	// create fails with its words and keeps nothing.
	done = create("vm-b")
	w = pending([]string{dev.Mdev})
	var second string
	for _, x := range w.Devices {
		if x.Mdev != dev.Mdev {
			second = x.Mdev
		}
	}
	// Once is a hiccup the agent may get over on its next round; three
	// times is its answer, also when the create saw only some of the
	// reports (the first two come faster than it looks).
	round([]string{dev.Mdev}, "create mdev "+second+": 0000:3b:00.0 has no room for another nvidia-230")
	round([]string{dev.Mdev}, "create mdev "+second+": 0000:3b:00.0 has no room for another nvidia-230")
	time.Sleep(600 * time.Millisecond)
	select {
	case r := <-done:
		t.Fatalf("create failed on 2 error reports: %v", r)
	default:
	}
	round([]string{dev.Mdev}, "create mdev "+second+": 0000:3b:00.0 has no room for another nvidia-230")
	if r := <-done; r[0] != 502 || !strings.Contains(r[1].(string), "could not make mediated device") || !strings.Contains(r[1].(string), "no room") {
		t.Errorf("create whose mdev the agent could not make: %v", r)
	}
	if _, err := f.st.Node(ctx, "vm-b"); err == nil {
		t.Error("vm-b was kept")
	}
	// An agent that stays silent: the create gives up after DeviceWait.
	vms.DeviceWait = 3 * time.Second
	done = create("vm-c")
	if r := <-done; r[0] != 502 || !strings.Contains(r[1].(string), "has not reported mediated devices") {
		t.Errorf("create with a silent agent: %v", r)
	}

	// What the agent said is on the hypervisor's page.
	code, b = f.call(t, nil, "GET", "/api/v1/hypervisors/t4-01", ro, "")
	var hv Hypervisor
	if code != 200 || json.Unmarshal(b, &hv) != nil || hv.Agent == nil || hv.Agent.Applied != "vgpu nvidia-230" || hv.Agent.GPUs == nil || len(hv.Agent.Errors) != 1 {
		t.Errorf("the hypervisor with its agent: %d %s", code, b)
	}
	// A report from before the agent went silent proves nothing: a
	// start waits for a fresh one.
	a, _ := f.st.HypervisorAgent(ctx, n.ID)
	a.Seen = time.Now().Add(-time.Hour)
	f.st.PutHypervisorAgent(ctx, a)
	if code, b := f.call(t, nil, "POST", "/api/v1/vms/vm-a/actions/start", tech, ""); code != 502 || !strings.Contains(string(b), "silent since") {
		t.Errorf("start with a stale report: %d %s", code, b)
	}
	// A new boot is an event.
	booted = booted.Add(time.Hour)
	round([]string{dev.Mdev})
	evs, _ := f.st.Events(ctx, store.EventFilter{NodeID: n.ID})
	found := false
	for _, e := range evs {
		found = found || e.Reason == "rebooted"
	}
	if !found {
		t.Errorf("no reboot event: %+v", evs)
	}
}

// TestHypervisorAgentWithAPI runs rackboot-agent hypervisor's loop
// against this API, on a T4 host made of a fake sysfs tree and a scripted
// nvidia-smi: a VM created with a vGPU gets its mediated device, with the
// UUID its domain names, before it starts, and the device goes with the
// VM.
func TestHypervisorAgentWithAPI(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tech := f.tokens[store.RoleTech]
	d := virttest.New([]boot.Arch{boot.ArchX86_64}, nil)
	f.api.VMs = &hypervisor.Service{Store: f.st, Dial: d.Dial, DeviceWait: 20 * time.Second, AgentInterval: 100 * time.Millisecond}
	f.api.HypervisorAgent = testHypervisorAgent
	n := t4Node(t, f, "52:54:00:12:34:95", "t4-02")
	if _, err := f.api.VMs.SetHypervisor(ctx, n.ID, hypervisor.Settings{URI: "qemu+tls://t4-02/system", GPUMode: "vgpu", GPUProfile: "nvidia-222", VGPUMax: 16, Bridge: "br0"}, "user:test"); err != nil {
		t.Fatal(err)
	}
	code, b := f.call(t, nil, "POST", "/api/v1/hypervisors/t4-02/agent-token", f.tokens[store.RoleAdmin], "")
	var issued HypervisorAgentToken
	if code != 200 || json.Unmarshal(b, &issued) != nil {
		t.Fatalf("agent token: %d %s", code, b)
	}

	const t4 = "0000:3b:00.0"
	tr := gpufake.NewTree(t)
	tr.PCI(t4, "10de", "1eb8", "030200")
	tr.MdevType(t4, "nvidia-222", "GRID T4-1B", 16)
	script := &gpufake.Script{T: t, State: "host", Dir: "../agent/gpuconf/testdata/smi", Table: map[string]map[string]gpufake.Reply{"host": {
		"nvidia-smi --query-gpu=index,pci.bus_id,mig.mode.current,mig.mode.pending --format=csv,noheader": {File: "a100-t4/query.txt"},
		"nvidia-smi -L": {File: "a100-t4/list.txt"},
	}}}
	// The script and the tree are the agent's while it runs: the test
	// only looks at the files.
	k := fakehost.NewKernel(&gpuconf.Host{Root: tr.Root, Runner: script}, tr, script)
	a := &hvagent.Agent{API: f.srv.URL + "/api/v1", NodeID: n.ID, Token: issued.Token, GPUs: k,
		StateFile: filepath.Join(t.TempDir(), "state.json"), Booted: func() time.Time { return time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC) }}
	stopped := make(chan error, 1)
	go func() { stopped <- a.Run(ctx) }()
	// Until its agent calls in, the hypervisor is one managed by hand.
	for i := 0; ; i++ {
		if _, err := f.st.HypervisorAgent(ctx, n.ID); err == nil {
			break
		}
		if i == 400 {
			t.Fatal("the agent never called in")
		}
		time.Sleep(25 * time.Millisecond)
	}

	code, b = f.call(t, nil, "POST", "/api/v1/vms", tech, `{"name":"vm-t4","shape":{"vcpus":2,"memory_mib":2048,"disk_gib":10,"arch":"x86_64","gpu_mode":"vgpu","gpu_profile":"nvidia-222","gpu_count":1}}`)
	var vm VM
	if code != 201 || json.Unmarshal(b, &vm) != nil || len(vm.Devices) != 1 || vm.Devices[0].Mdev == "" {
		t.Fatalf("create: %d %s", code, b)
	}
	id := vm.Devices[0].Mdev
	mdev := func() bool {
		_, err := os.Lstat(filepath.Join(tr.Root, "sys/bus/mdev/devices", id))
		return err == nil
	}
	if !mdev() {
		t.Fatalf("vm-t4 started without its mdev %s", id)
	}
	if dom, ok := d.Domain("vm-t4"); !ok || !strings.Contains(dom.XML, id) {
		t.Errorf("vm-t4's domain names another mdev: %+v", dom)
	}
	if code, b := f.call(t, nil, "DELETE", "/api/v1/vms/vm-t4", tech, ""); code != 204 {
		t.Fatalf("delete: %d %s", code, b)
	}
	for i := 0; mdev(); i++ {
		if i == 200 {
			t.Fatalf("mdev %s outlived its VM", id)
		}
		time.Sleep(25 * time.Millisecond)
	}
	cancel()
	if err := <-stopped; err != nil {
		t.Errorf("agent: %v", err)
	}
}

// t4Node enrolls a node named name with one Tesla T4 in its inventory.
func t4Node(t *testing.T, f *fixture, macText, name string) store.Node {
	t.Helper()
	inv, err := os.ReadFile(filepath.Join("..", "agent", "inventory", "testdata", "t4.json"))
	if err != nil {
		t.Fatal(err)
	}
	return inventoryNode(t, f, macText, name, inv)
}

// inventoryNode enrolls a node named name with the inventory inv.
func inventoryNode(t *testing.T, f *fixture, macText, name string, inv []byte) store.Node {
	t.Helper()
	ctx := context.Background()
	mac, _ := net.ParseMAC(macText)
	n, _, err := f.st.EnrollClient(ctx, boot.Client{MAC: mac, Arch: boot.ClientX64UEFI}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := f.st.SetInventory(ctx, n.ID, inv, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := f.st.UpdateNode(ctx, n.ID, store.NodePatch{Name: ptr(name)}); err != nil {
		t.Fatal(err)
	}
	return n
}
