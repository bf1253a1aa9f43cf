package api

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/hypervisor"
	"github.com/rackboot/rackboot/hypervisor/virttest"
	"github.com/rackboot/rackboot/store"
)

func TestVMRoutes(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	admin, tech, ro := f.tokens[store.RoleAdmin], f.tokens[store.RoleTech], f.tokens[store.RoleReadonly]

	if code, b := f.call(t, nil, "GET", "/api/v1/hypervisors", ro, ""); code != 501 {
		t.Fatalf("no VM service: %d %s", code, b)
	}
	d := virttest.New([]boot.Arch{boot.ArchX86_64}, nil)
	f.api.VMs = &hypervisor.Service{Store: f.st, Dial: d.Dial}

	mac, _ := net.ParseMAC("52:54:00:12:34:99")
	n, _, err := f.st.EnrollClient(ctx, boot.Client{MAC: mac, Arch: boot.ClientX64UEFI}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	inv, err := os.ReadFile(filepath.Join("..", "agent", "inventory", "testdata", "a100x4.json"))
	if err != nil {
		t.Fatal(err)
	}
	f.st.SetInventory(ctx, n.ID, inv, nil)
	f.st.UpdateNode(ctx, n.ID, store.NodePatch{Name: ptr("a100-01")})

	set := `{"uri":"qemu+tls://a100-01/system","gpu_mode":"mig","gpu_profile":"3g.20gb,3g.20gb","bridge":"br0","emulated":[]}`
	for _, tc := range []struct {
		name, method, path, token, body string
		code                            int
		want                            string
	}{
		{"tech may not add a hypervisor", "PUT", "/api/v1/hypervisors/a100-01", tech, set, 403, ""},
		{"unknown field", "PUT", "/api/v1/hypervisors/a100-01", admin, `{"uri":"u","colour":"red"}`, 400, "unknown field"},
		{"layout over the card", "PUT", "/api/v1/hypervisors/a100-01", admin, `{"uri":"u","gpu_mode":"mig","gpu_profile":"7g.40gb,1g.5gb","bridge":"br0"}`, 400, "MIG layout"},
		{"add", "PUT", "/api/v1/hypervisors/a100-01", admin, set, 200, `"gpu_profile": "3g.20gb,3g.20gb"`},
		{"list", "GET", "/api/v1/hypervisors", ro, "", 200, `"partitions_free": 8`},
		{"readonly may not add a flavor", "POST", "/api/v1/flavors", ro, `{"name":"g1"}`, 403, ""},
		{"bad flavor", "POST", "/api/v1/flavors", admin, `{"name":"g1","vcpus":0,"memory_mib":1024,"disk_gib":10,"arch":"x86_64"}`, 400, "vCPUs"},
		{"flavor", "POST", "/api/v1/flavors", admin, `{"name":"g1.mig3","vcpus":8,"memory_mib":32768,"disk_gib":20,"arch":"x86_64","gpu_mode":"mig","gpu_profile":"3g.20gb"}`, 201, `"g1.mig3"`},
		{"readonly may not create a VM", "POST", "/api/v1/vms", ro, `{"name":"vm-1","flavor":"g1.mig3"}`, 403, ""},
		{"no flavor nor shape", "POST", "/api/v1/vms", tech, `{"name":"vm-1"}`, 400, "flavor or a shape"},
		{"wrong-arch image", "POST", "/api/v1/vms", tech, `{"name":"vm-1","flavor":"g1.mig3","image":"deb-arm"}`, 400, "image deb-arm is aarch64"},
		{"dry run", "POST", "/api/v1/vms", tech, `{"name":"vm-1","flavor":"g1.mig3","image":"deb-x86","dry_run":true}`, 200, `vfio-pci`},
		{"create", "POST", "/api/v1/vms", tech, `{"name":"vm-1","flavor":"g1.mig3","image":"deb-x86"}`, 201, `"kind": "mig"`},
		{"show", "GET", "/api/v1/vms/vm-1", ro, "", 200, `"state": "running"`},
		{"a shape inline", "POST", "/api/v1/vms", tech, `{"name":"vm-2","shape":{"vcpus":2,"memory_mib":2048,"disk_gib":10,"arch":"x86_64"}}`, 201, `"vm-2"`},
		{"no aarch64 host", "POST", "/api/v1/vms", tech, `{"name":"vm-3","shape":{"vcpus":2,"memory_mib":2048,"disk_gib":10,"arch":"aarch64"}}`, 409, "no_host"},
		{"stop", "POST", "/api/v1/vms/vm-1/actions/stop", tech, "", 200, `"state": "shut off"`},
		{"bad action", "POST", "/api/v1/vms/vm-1/actions/explode", tech, "", 400, "start, stop"},
		{"vms", "GET", "/api/v1/vms?hypervisor=a100-01", ro, "", 200, `"vm-2"`},
		{"inspect the hypervisor under its VMs", "POST", "/api/v1/nodes/a100-01/actions/inspect", tech, "", 409, "hypervisor of 2 VMs"},
		{"rename a VM's node", "PATCH", "/api/v1/nodes/vm-2", tech, `{"name":"vm-22"}`, 409, "its domain's"},
		{"delete a VM's node", "DELETE", "/api/v1/nodes/vm-2", admin, "", 409, "delete the VM"},
		{"tag a VM's node", "PATCH", "/api/v1/nodes/vm-2", tech, `{"tags":["gpu"]}`, 200, `"gpu"`},
		{"remove with VMs", "DELETE", "/api/v1/hypervisors/a100-01", admin, "", 409, "VMs"},
		{"readonly may not delete", "DELETE", "/api/v1/vms/vm-1", ro, "", 403, ""},
		{"delete", "DELETE", "/api/v1/vms/vm-1", tech, "", 204, ""},
		{"deleted", "GET", "/api/v1/vms/vm-1", ro, "", 404, ""},
		{"drain", "PATCH", "/api/v1/hypervisors/a100-01", admin, `{"drained":true}`, 200, `"name": "vm-2"`},
		{"drained takes nothing", "POST", "/api/v1/vms", tech, `{"name":"vm-4","shape":{"vcpus":2,"memory_mib":2048,"disk_gib":10,"arch":"x86_64"}}`, 409, "drained"},
	} {
		code, b := f.call(t, nil, tc.method, tc.path, tc.token, tc.body)
		if code != tc.code || !strings.Contains(string(b), tc.want) {
			t.Errorf("%s: %d %s; want %d with %q", tc.name, code, b, tc.code, tc.want)
		}
	}
	// The dry run created nothing; the created VM is a node of kind vm
	// with the MAC it boots with.
	var vm VM
	_, b := f.call(t, nil, "GET", "/api/v1/vms/vm-2", ro, "")
	if err := json.Unmarshal(b, &vm); err != nil {
		t.Fatal(err)
	}
	node, err := f.st.Node(ctx, vm.MAC)
	if err != nil || node.Kind != "vm" || node.Name != "vm-2" {
		t.Errorf("vm-2's node by its MAC: %+v %v", node, err)
	}
	if _, ok := d.Domain("vm-1"); ok {
		t.Error("vm-1's domain outlived its delete")
	}
	evs, _ := f.st.Events(ctx, store.EventFilter{NodeID: vm.ID})
	if len(evs) == 0 || evs[0].Kind != "vm" || !strings.Contains(evs[0].Actor, "token:") {
		t.Errorf("vm-2's events: %+v", evs)
	}
}

// withVMs gives the fixture a VM service on a fake libvirt, a hypervisor
// (a100-01, four A100s in MIG) and a VM on it (vm-0).
func withVMs(t *testing.T, f *fixture) *virttest.Daemon {
	t.Helper()
	ctx := context.Background()
	d := virttest.New([]boot.Arch{boot.ArchX86_64}, nil)
	f.api.VMs = &hypervisor.Service{Store: f.st, Dial: d.Dial}
	mac, _ := net.ParseMAC("52:54:00:12:34:98")
	n, _, err := f.st.EnrollClient(ctx, boot.Client{MAC: mac, Arch: boot.ClientX64UEFI}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	inv, err := os.ReadFile(filepath.Join("..", "agent", "inventory", "testdata", "a100x4.json"))
	if err != nil {
		t.Fatal(err)
	}
	f.st.SetInventory(ctx, n.ID, inv, nil)
	f.st.UpdateNode(ctx, n.ID, store.NodePatch{Name: ptr("a100-00")})
	if _, err := f.api.VMs.SetHypervisor(ctx, n.ID, hypervisor.Settings{URI: "qemu+tls://a100-00/system", GPUMode: "mig", GPUProfile: "7g.40gb", Bridge: "br0"}, "user:test"); err != nil {
		t.Fatal(err)
	}
	p, err := f.api.VMs.CreateVM(ctx, hypervisor.VMRequest{Name: "vm-0", Shape: store.Flavor{VCPUs: 2, MemoryMiB: 2048, DiskGiB: 10, Arch: boot.ArchX86_64, GPUMode: "mig", GPUProfile: "7g.40gb"}}, "user:test")
	if err != nil {
		t.Fatal(err)
	}
	f.vm, f.hypervisor = p.VM.NodeID, n.ID
	return d
}

func TestPutInventory(t *testing.T) {
	f := newFixture(t)
	admin, tech := f.tokens[store.RoleAdmin], f.tokens[store.RoleTech]
	x86, err := os.ReadFile(filepath.Join("..", "agent", "inventory", "testdata", "t4.json"))
	if err != nil {
		t.Fatal(err)
	}
	arm, err := os.ReadFile(filepath.Join("..", "agent", "inventory", "testdata", "altra.json"))
	if err != nil {
		t.Fatal(err)
	}
	path := "/api/v1/nodes/gpu-01/inventory"
	for _, tc := range []struct {
		name, token, body string
		code              int
		want              string
	}{
		{"tech may not", tech, string(x86), 403, ""},
		{"not JSON", admin, "{", 400, "bad JSON"},
		{"not an inventory", admin, `{"version":"one"}`, 400, "not an inventory"},
		{"another version", admin, `{"version":99,"cpu":{"architecture":"x86_64"}}`, 400, "version 99"},
		{"no architecture", admin, `{"version":1}`, 400, "architecture"},
		{"another machine's arch", admin, string(arm), 409, "aarch64 machine"},
		{"set", admin, string(x86), 204, ""},
	} {
		code, b := f.call(t, nil, "PUT", path, tc.token, tc.body)
		if code != tc.code || !strings.Contains(string(b), tc.want) {
			t.Errorf("%s: %d %s; want %d with %q", tc.name, code, b, tc.code, tc.want)
		}
	}
	code, b := f.call(t, nil, "GET", path, admin, "")
	if code != 200 || !strings.Contains(string(b), `"Tesla T4"`) {
		t.Errorf("the inventory set: %d %s", code, b)
	}
	n, _ := f.st.Node(context.Background(), "gpu-01")
	if len(n.GPUModels) != 1 || n.GPUModels[0] != "Tesla T4" {
		t.Errorf("GPU models %v", n.GPUModels)
	}
}

func TestDeployAsHypervisor(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	tech, admin := f.tokens[store.RoleTech], f.tokens[store.RoleAdmin]
	path := "/api/v1/nodes/gpu-01/actions/deploy"
	if code, b := f.call(t, nil, "POST", path, admin, `{"image":"deb-x86","role":"hypervisor"}`); code != 400 || !strings.Contains(string(b), "issues no hypervisor certificates") {
		t.Errorf("without an issuer: %d %s", code, b)
	}
	var asked []string
	f.api.HypervisorTLS = func(hosts []string) (hypervisor.TLSFiles, error) {
		asked = append(asked, hosts...)
		return hypervisor.TLSFiles{CACert: []byte("CA PEM\n"), ServerCert: []byte("SERVER PEM\n"), ServerKey: []byte("KEY PEM\n"), ClientDN: "O=rackboot,CN=rackboot"}, nil
	}
	if code, b := f.call(t, nil, "POST", path, admin, `{"image":"deb-x86","role":"hypervisor"}`); code != 400 || !strings.Contains(string(b), "serves no hypervisor agent") {
		t.Errorf("without an agent to install: %d %s", code, b)
	}
	f.api.HypervisorAgent = testHypervisorAgent
	// A tech may deploy, not make a hypervisor: that mints a certificate
	// rackboot trusts.
	if code, b := f.call(t, nil, "POST", path, tech, `{"image":"deb-x86","role":"hypervisor"}`); code != 403 || len(asked) != 0 {
		t.Errorf("a tech deploying a hypervisor: %d %s", code, b)
	}
	mac, _ := net.ParseMAC("52:54:00:12:34:97")
	other, _, _ := f.st.EnrollClient(ctx, boot.Client{MAC: mac, Arch: boot.ClientX64UEFI}, time.Now())
	f.st.UpdateNode(ctx, other.ID, store.NodePatch{Name: ptr("gpu-02")})
	for _, tc := range []struct {
		body, want string
	}{
		{`{"image":"deb-x86","role":"router"}`, "role hypervisor"},
		{`{"image":"deb-x86","role":"hypervisor","cloud_init":{"hostname":"h","user_data":"#cloud-config\n"}}`, "user data is rackboot's"},
		{`{"image":"deb-x86","role":"hypervisor","cloud_init":{"hostname":"gpu-02"}}`, "gpu-02 is node"},
		{`{"image":"deb-x86","role":"hypervisor","cloud_init":{"hostname":"a b"}}`, "hostname"},
	} {
		if code, b := f.call(t, nil, "POST", path, admin, tc.body); code != 400 || !strings.Contains(string(b), tc.want) {
			t.Errorf("%s: %d %s", tc.body, code, b)
		}
	}
	if len(asked) != 0 {
		t.Errorf("certificates issued for refused deploys: %v", asked)
	}
	if code, b := f.call(t, nil, "POST", "/api/v1/nodes/gpu-01/actions/inspect", admin, `{"role":"hypervisor"}`); code != 400 {
		t.Errorf("a role on inspect: %d %s", code, b)
	}
	code, b := f.call(t, nil, "POST", path, admin, `{"image":"deb-x86","role":"hypervisor","cloud_init":{"ssh_keys":["ssh-ed25519 AAAA ops"]}}`)
	if code != 200 {
		t.Fatalf("deploy as a hypervisor: %d %s", code, b)
	}
	// The server certificate names the node (its name is the hostname)
	// and its last boot's address.
	if len(asked) == 0 || asked[0] != "gpu-01" || slices.Contains(asked, "gpu-02") {
		t.Errorf("certificate asked for %v", asked)
	}
	tasks, _ := f.st.Tasks(ctx, store.TaskFilter{NodeID: f.node.ID})
	var params struct {
		CloudInit struct {
			Hostname string   `json:"hostname"`
			SSHKeys  []string `json:"ssh_keys"`
			UserData string   `json:"user_data"`
		} `json:"cloud_init"`
	}
	for _, tk := range tasks {
		if tk.Kind == "deploy" {
			json.Unmarshal(tk.Params, &params)
		}
	}
	u := params.CloudInit.UserData
	if params.CloudInit.Hostname != "gpu-01" || len(params.CloudInit.SSHKeys) != 1 || !strings.Contains(u, "SERVER PEM") ||
		!strings.Contains(u, `tls_allowed_dn_list = ["O=rackboot,CN=rackboot"]`) || !strings.Contains(u, "ssh-ed25519 AAAA ops") {
		t.Errorf("the deploy's seed: %+v", params.CloudInit)
	}
	// A tech reading the task never sees the key.
	code, b = f.call(t, nil, "GET", "/api/v1/tasks?node="+f.node.ID, tech, "")
	if code != 200 || strings.Contains(string(b), "KEY PEM") {
		t.Errorf("the task as a tech sees it: %d %s", code, b)
	}
	// The seed installs the agent with a token of this node's: it opens
	// the node's hypervisor agent path (the node is no hypervisor yet)
	// and nothing else.
	var seed struct {
		WriteFiles []struct{ Path, Content string } `yaml:"write_files"`
	}
	if err := yaml.Unmarshal([]byte(u), &seed); err != nil {
		t.Fatal(err)
	}
	var token, conf string
	for _, wf := range seed.WriteFiles {
		switch wf.Path {
		case hypervisor.AgentTokenPath:
			token = strings.TrimSpace(wf.Content)
		case hypervisor.AgentConfigPath:
			conf = wf.Content
		}
	}
	if !strings.Contains(conf, "rackboot.node="+f.node.ID) || !strings.HasPrefix(token, TokenPrefix) {
		t.Fatalf("agent files: %q %q", conf, token)
	}
	f.api.VMs = &hypervisor.Service{Store: f.st, Dial: virttest.New([]boot.Arch{boot.ArchX86_64}, nil).Dial}
	report := `{"booted":"2026-12-01T08:00:00Z","applied":""}`
	if code, b := f.call(t, nil, "POST", "/api/v1/agent/hypervisors/"+f.node.ID, token, report); code != 404 || !strings.Contains(string(b), "no hypervisor") {
		t.Errorf("agent of a node that is no hypervisor yet: %d %s", code, b)
	}
	if code, b := f.call(t, nil, "GET", "/api/v1/nodes", token, ""); code != 403 {
		t.Errorf("the hypervisor token on the API: %d %s", code, b)
	}
	// A deploy that is refused (the node is deploying) leaves the
	// token working; one that goes ahead revokes it.
	if code, b := f.call(t, nil, "POST", path, admin, `{"image":"deb-x86","role":"hypervisor"}`); code != 409 {
		t.Fatalf("deploy while deploying: %d %s", code, b)
	}
	if code, b := f.call(t, nil, "POST", "/api/v1/agent/hypervisors/"+f.node.ID, token, report); code != 404 {
		t.Errorf("the token after a refused deploy: %d %s", code, b)
	}
	f.st.SetState(ctx, f.node.ID, store.StateAvailable)
	if code, b := f.call(t, nil, "POST", path, admin, `{"image":"deb-x86","role":"hypervisor"}`); code != 200 {
		t.Fatalf("deploy again: %d %s", code, b)
	}
	if code, b := f.call(t, nil, "POST", "/api/v1/agent/hypervisors/"+f.node.ID, token, report); code != 401 {
		t.Errorf("the first token after a second deploy: %d %s", code, b)
	}
	// A plain deploy revokes the hypervisor token: no agent of that
	// disk will call in.
	var second string
	tasks, _ = f.st.Tasks(ctx, store.TaskFilter{NodeID: f.node.ID})
	for _, tk := range tasks {
		if tk.Kind == "deploy" {
			var p struct {
				CloudInit struct {
					UserData string `json:"user_data"`
				} `json:"cloud_init"`
			}
			json.Unmarshal(tk.Params, &p)
			if i := strings.Index(p.CloudInit.UserData, TokenPrefix); i >= 0 {
				second = p.CloudInit.UserData[i : i+len(TokenPrefix)+64]
			}
		}
	}
	if code, b := f.call(t, nil, "POST", "/api/v1/agent/hypervisors/"+f.node.ID, second, report); code != 404 {
		t.Fatalf("the second deploy's token: %d %s", code, b)
	}
	f.st.SetState(ctx, f.node.ID, store.StateAvailable)
	if code, b := f.call(t, nil, "POST", path, admin, `{"image":"deb-x86"}`); code != 200 {
		t.Fatalf("plain deploy: %d %s", code, b)
	}
	if code, b := f.call(t, nil, "POST", "/api/v1/agent/hypervisors/"+f.node.ID, second, report); code != 401 {
		t.Errorf("the hypervisor token after a plain deploy: %d %s", code, b)
	}
}

// testHypervisorAgent serves an agent for either architecture.
func testHypervisorAgent(nodeID string, arch boot.Arch) (hypervisor.Agent, error) {
	return hypervisor.Agent{BinaryURL: "http://10.0.0.1:8080/artifacts/" + string(arch) + "/rackboot-agent", SHA256: strings.Repeat("0f", 32),
		Config: "rackboot.api=http://10.0.0.1:8080 rackboot.node=" + nodeID}, nil
}
