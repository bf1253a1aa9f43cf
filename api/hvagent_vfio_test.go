package api

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rackboot/rackboot/agent/gpuconf"
	"github.com/rackboot/rackboot/agent/gpuconf/gpufake"
	"github.com/rackboot/rackboot/agent/gpuconf/gpufake/fakehost"
	hvagent "github.com/rackboot/rackboot/agent/hypervisor"
	"github.com/rackboot/rackboot/agent/inventory"
	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/hypervisor"
	"github.com/rackboot/rackboot/hypervisor/virttest"
	"github.com/rackboot/rackboot/store"
)

// TestHypervisorAgentWithAPIVendorVFIO runs rackboot-agent hypervisor's
// loop against this API on an L40S host whose vGPU manager uses the
// vendor-specific VFIO framework (a fake sysfs tree and a scripted
// nvidia-smi): the VM is placed on a virtual function the agent
// reported, its domain passes that function through unmanaged, the
// function carries the VM's vGPU type before the VM starts, and it is
// freed when the VM is deleted.
func TestHypervisorAgentWithAPIVendorVFIO(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tech := f.tokens[store.RoleTech]
	d := virttest.New([]boot.Arch{boot.ArchX86_64}, nil)
	f.api.VMs = &hypervisor.Service{Store: f.st, Dial: d.Dial, DeviceWait: 20 * time.Second, AgentInterval: 100 * time.Millisecond}
	f.api.HypervisorAgent = testHypervisorAgent
	const (
		l40s = "0000:65:00.0"
		vf0  = "0000:65:00.4"
		vf1  = "0000:65:00.5"
	)
	n := l40sNode(t, f, "52:54:00:12:34:97", "l40s-01", l40s)
	if _, err := f.api.VMs.SetHypervisor(ctx, n.ID, hypervisor.Settings{URI: "qemu+tls://l40s-01/system", GPUMode: "vgpu", GPUProfile: "nvidia-1155", VGPUMax: 4, Bridge: "br0"}, "user:test"); err != nil {
		t.Fatal(err)
	}
	code, b := f.call(t, nil, "POST", "/api/v1/hypervisors/l40s-01/agent-token", f.tokens[store.RoleAdmin], "")
	var issued HypervisorAgentToken
	if code != 200 || json.Unmarshal(b, &issued) != nil {
		t.Fatalf("agent token: %d %s", code, b)
	}

	tr := gpufake.NewTree(t)
	tr.Mkdir("proc")
	tr.PCI(l40s, "10de", "26b9", "030200")
	script := &gpufake.Script{T: t, State: "host", Dir: "../agent/gpuconf/testdata/smi", Table: map[string]map[string]gpufake.Reply{"host": {
		"nvidia-smi --query-gpu=index,pci.bus_id,mig.mode.current,mig.mode.pending --format=csv,noheader": {File: "l40/query.txt"},
		"nvidia-smi -L": {File: "l40/list.txt"},
		"/usr/lib/nvidia/sriov-manage -e " + l40s: {Do: func() {
			for i, vf := range []string{vf0, vf1} {
				tr.PCI(vf, "10de", "26b9", "030200")
				tr.VF(l40s, vf, i)
				tr.IOMMUGroup(vf, 90+i)
				tr.VendorVF(vf, "1153", "NVIDIA L40S-4Q", "1155", "NVIDIA L40S-12Q")
			}
		}},
	}}}
	vgpuType := func(vf string) string {
		b, _ := os.ReadFile(filepath.Join(tr.Root, gpufake.DevDir(vf), "nvidia/current_vgpu_type"))
		return strings.TrimSpace(string(b))
	}
	k := fakehost.NewKernel(&gpuconf.Host{Root: tr.Root, Runner: script}, tr, script)
	a := &hvagent.Agent{API: f.srv.URL + "/api/v1", NodeID: n.ID, Token: issued.Token, GPUs: k,
		StateFile: filepath.Join(t.TempDir(), "state.json"), Booted: func() time.Time { return time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC) }}
	stopped := make(chan error, 1)
	go func() { stopped <- a.Run(ctx) }()
	// The agent enables the virtual functions and reports them.
	for i := 0; ; i++ {
		if ag, err := f.st.HypervisorAgent(ctx, n.ID); err == nil && len(hypervisor.VFs(ag.GPUs)[l40s]) == 2 {
			break
		}
		if i == 400 {
			t.Fatal("the agent never reported the card's virtual functions")
		}
		time.Sleep(25 * time.Millisecond)
	}

	body := `{"name":"vm-l40s","shape":{"vcpus":2,"memory_mib":2048,"disk_gib":10,"arch":"x86_64","gpu_mode":"vgpu","gpu_profile":"nvidia-1155","gpu_count":1}`
	code, b = f.call(t, nil, "POST", "/api/v1/vms", tech, body+`,"dry_run":true}`)
	var dry VM
	if code != 200 || json.Unmarshal(b, &dry) != nil || !dry.DryRun {
		t.Fatalf("dry run: %d %s", code, b)
	}
	hostdev := `<hostdev mode="subsystem" type="pci" managed="no"><source><address domain="0x0000" bus="0x65" slot="0x00" function="0x4"></address></source></hostdev>`
	if got := squeeze(dry.XML); !strings.Contains(got, hostdev) || strings.Contains(got, "mdev") {
		t.Errorf("dry run's domain does not pass %s through unmanaged:\n%s", vf0, dry.XML)
	}

	var typeAtStart atomic.Value
	d.Before("start", func() { typeAtStart.Store(vgpuType(vf0)) })
	code, b = f.call(t, nil, "POST", "/api/v1/vms", tech, body+`}`)
	var vm VM
	if code != 201 || json.Unmarshal(b, &vm) != nil || len(vm.Devices) != 1 {
		t.Fatalf("create: %d %s", code, b)
	}
	if dev := vm.Devices[0]; dev.VF != vf0 || dev.Device != vf0 || dev.GPU != l40s || dev.Mdev != "" {
		t.Errorf("vm-l40s holds %+v, want virtual function %s of %s and no mdev", dev, vf0, l40s)
	}
	if got, _ := typeAtStart.Load().(string); got != "1155" {
		t.Errorf("%s's current_vgpu_type was %q when the VM started, want 1155", vf0, got)
	}
	if dom, ok := d.Domain("vm-l40s"); !ok || !strings.Contains(squeeze(dom.XML), hostdev) {
		t.Errorf("vm-l40s's domain: %+v", dom)
	}
	if vgpuType(vf1) != "0" {
		t.Errorf("%s took type %q", vf1, vgpuType(vf1))
	}

	if code, b := f.call(t, nil, "DELETE", "/api/v1/vms/vm-l40s", tech, ""); code != 204 {
		t.Fatalf("delete: %d %s", code, b)
	}
	for i := 0; vgpuType(vf0) != "0"; i++ {
		if i == 200 {
			t.Fatalf("%s kept type %s after its VM went", vf0, vgpuType(vf0))
		}
		time.Sleep(25 * time.Millisecond)
	}
	cancel()
	if err := <-stopped; err != nil {
		t.Errorf("agent: %v", err)
	}
}

// squeeze drops the layout between XML elements.
func squeeze(doc string) string {
	var b strings.Builder
	for _, l := range strings.Split(doc, "\n") {
		b.WriteString(strings.TrimSpace(l))
	}
	return b.String()
}

// l40sNode enrolls a node named name with one NVIDIA L40S at gpu in its
// inventory: the T4 machine's, with its card swapped.
func l40sNode(t *testing.T, f *fixture, macText, name, gpu string) store.Node {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "agent", "inventory", "testdata", "t4.json"))
	if err != nil {
		t.Fatal(err)
	}
	var inv inventory.Inventory
	if err := json.Unmarshal(b, &inv); err != nil {
		t.Fatal(err)
	}
	g := &inv.GPUs[0]
	g.PCIAddress, g.DeviceID, g.Model, g.DeviceName, g.IOMMUMembers = gpu, "26b9", "NVIDIA L40S", "AD102GL [L40S]", []string{gpu}
	if b, err = json.Marshal(inv); err != nil {
		t.Fatal(err)
	}
	return inventoryNode(t, f, macText, name, b)
}
