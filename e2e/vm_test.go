//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rackboot/rackboot/agent/inventory"
	"github.com/rackboot/rackboot/api"
	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/hypervisor/libvirt"
	"github.com/rackboot/rackboot/images/diskimage"
	"github.com/rackboot/rackboot/internal/syncbuf"
	"github.com/rackboot/rackboot/lab"
)

// TestVMs makes this machine a hypervisor of a rack: a real libvirtd in
// the rack's namespace (its VMs' taps join the rack's bridge), registered
// with the inventory rackboot-agent's reader takes of this machine. Then
// through the CLI: an x86-64 VM is created, PXE-boots through rackboot, is
// inspected, reaches available, is deployed with the built image, boots it
// from its disk, and is deleted with its volume and allocation; an AArch64
// VM (TCG on this x86-64 host) is created, PXE-boots, is inspected and is
// deleted (make soak also deploys it).
func TestVMs(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	r, c, dir := agentRack(ctx, t, "rbvm", "10.77.50.0/24", "10.77.51.0/30", nil)
	lv, err := lab.StartLibvirtd(ctx, r.Net, lab.LibvirtdOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer lv.Close()
	defer func() {
		if t.Failed() {
			t.Logf("libvirtd:\n%s", lv.Log())
			logLines(t, "rackboot log:\n%s", lab.Tail(r.ServerLog(), 8000))
		}
	}()
	conn, err := libvirt.Dial(ctx, lv.URI(), libvirt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.EnsurePool(ctx, "rackboot", lv.Pool); err != nil {
		t.Fatal(err)
	}

	// The hypervisor is this machine: its node has the inventory the
	// agent's reader takes here, set by hand as for any hypervisor that
	// rackboot did not inspect.
	inv, err := inventory.Reader{Root: "/"}.Read()
	if err != nil {
		t.Fatal(err)
	}
	invFile := filepath.Join(dir, "hv-inventory.json")
	b, _ := json.Marshal(inv)
	if err := os.WriteFile(invFile, b, 0o644); err != nil {
		t.Fatal(err)
	}
	cliAt(t, c, "node", "add", "52:54:00:1b:00:01", "--name", "hv-01", "--arch", inv.CPU.Architecture)
	cliAt(t, c, "node", "inventory", "hv-01", "--set", invFile)
	// KVM faults on this machine although /dev/kvm opens: every VM runs
	// under TCG.
	out := cliAt(t, c, "hypervisor", "add", "hv-01", "--uri", lv.URI(), "--bridge", r.Net.Bridge(), "--pool", "rackboot",
		"--no-kvm", "--emulated", "x86_64,aarch64", "--output", "json")
	var hv api.Hypervisor
	if err := json.Unmarshal([]byte(out), &hv); err != nil {
		t.Fatalf("hypervisor add: %v\n%s", err, out)
	}
	if len(hv.Settings.Emulated) != 2 || hv.Usage == nil || hv.Usage.VCPUsFree < 2 {
		t.Fatalf("hypervisor add: %s", out)
	}

	specs := []struct {
		arch   boot.Arch
		memory string
		deploy bool
	}{
		{boot.ArchX86_64, "1536", true},
		// The AArch64 deploy under TCG is long: make soak runs it.
		{boot.ArchAArch64, "1024", os.Getenv("RACKBOOT_SOAK") != ""},
	}
	for _, s := range specs {
		addImage(t, c, s.arch)
		cliAt(t, c, "flavor", "create", "e2e."+string(s.arch), "--vcpus", "1", "--memory", s.memory, "--disk", "4", "--arch", string(s.arch))
	}
	// A dry run writes the domain rackboot would define, and defines nothing.
	dry := cliAt(t, c, "vm", "create", "vm-x86", "--flavor", "e2e.x86_64", "--image", "e2e-x86_64", "--dry-run")
	if !strings.Contains(dry, `<domain type="qemu">`) || !strings.Contains(dry, `machine="q35"`) || !strings.Contains(dry, "Westmere") {
		t.Fatalf("dry run:\n%s", dry)
	}
	if ds, err := conn.Domains(ctx); err != nil || len(ds) != 0 {
		t.Fatalf("after a dry run the daemon has %v, %v", ds, err)
	}

	var wg sync.WaitGroup
	for _, s := range specs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := "vm-" + map[boot.Arch]string{boot.ArchX86_64: "x86", boot.ArchAArch64: "arm"}[s.arch]
			if err := vmLife(ctx, t, c, conn, name, s.arch, s.deploy); err != nil {
				failLines(t, "%s: %v", name, err)
			}
		}()
	}
	wg.Wait()

	// Both deleted: the hypervisor holds nothing, and libvirt has no domain
	// and no volume left.
	var after api.Hypervisor
	if err := c.get("/api/v1/hypervisors/hv-01", &after); err != nil {
		t.Fatal(err)
	}
	if len(after.VMs) != 0 || after.Usage.VMs != 0 || after.Usage.VCPUs != 0 {
		t.Errorf("after the deletes the hypervisor holds %+v, %+v", after.VMs, after.Usage)
	}
	if ds, err := conn.Domains(ctx); err != nil || len(ds) != 0 {
		t.Errorf("after the deletes the daemon has domains %v, %v", ds, err)
	}
	if vols, _ := filepath.Glob(filepath.Join(lv.Pool, "*")); len(vols) != 0 {
		t.Errorf("after the deletes the pool holds %v", vols)
	}
}

// vmLife creates a VM, watches it network-boot into the agent and reach
// available, deploys and boots the image when asked, and deletes it.
func vmLife(ctx context.Context, t *testing.T, c client, conn *libvirt.Conn, name string, arch boot.Arch, deploy bool) error {
	start := time.Now()
	out := cliAt(t, c, "vm", "create", name, "--flavor", "e2e."+string(arch), "--image", "e2e-"+string(arch), "--output", "json")
	var vm api.VM
	if err := json.Unmarshal([]byte(out), &vm); err != nil {
		return fmt.Errorf("vm create: %v\n%s", err, out)
	}
	if st, err := conn.State(ctx, name); err != nil || st != libvirt.StateRunning {
		return fmt.Errorf("after vm create libvirt says %q, %v", st, err)
	}
	// The VM was a node, of kind vm, before it first booted.
	var n api.Node
	if err := c.get("/api/v1/nodes/"+vm.MAC, &n); err != nil || n.Kind != "vm" || n.Name != name {
		return fmt.Errorf("the VM's node: %+v %v", n, err)
	}
	console := &syncbuf.Buffer{}
	cctx, stop := context.WithCancel(ctx)
	defer stop()
	go streamConsole(cctx, c, vm.ID, console)

	if _, err := c.waitState(ctx, vm.MAC, "available"); err != nil {
		return fmt.Errorf("%w\nconsole:\n%s", err, lab.Tail(console.String(), 4000))
	}
	t.Logf("%s: PXE-booted through rackboot and inspected: available after %.0f s", name, time.Since(start).Seconds())
	var inv inventory.Inventory
	if err := c.get("/api/v1/nodes/"+vm.MAC+"/inventory", &inv); err != nil {
		return err
	}
	if inv.CPU.Architecture != string(arch) || len(inv.Interfaces) == 0 || !strings.EqualFold(inv.Interfaces[0].MACAddress, vm.MAC) {
		return fmt.Errorf("the VM's inventory: arch %s, interfaces %+v", inv.CPU.Architecture, inv.Interfaces)
	}
	if deploy {
		step := time.Now()
		cliAt(t, c, "node", "deploy", vm.MAC, "--image", "e2e-"+string(arch))
		if _, err := c.waitState(ctx, vm.MAC, "active"); err != nil {
			return fmt.Errorf("%w\nconsole:\n%s", err, lab.Tail(console.String(), 4000))
		}
		// The agent reboots the VM; it network-boots first, rackboot
		// tells it to boot locally, and its disk starts the image.
		marker := regexp.MustCompile(diskimage.Marker + ` name=e2e-` + string(arch) + ` arch=` + string(arch))
		for !marker.MatchString(console.String()) {
			select {
			case <-ctx.Done():
				return fmt.Errorf("the deployed image never booted:\n%s", lab.Tail(console.String(), 4000))
			case <-time.After(time.Second):
			}
		}
		t.Logf("%s: deployed and booted the image from its disk %.0f s after the deploy began", name, time.Since(step).Seconds())
	}
	stop()
	cliAt(t, c, "vm", "delete", name)
	if _, err := conn.State(ctx, name); !errors.Is(err, libvirt.ErrNotFound) {
		return fmt.Errorf("after vm delete libvirt still has %s: %v", name, err)
	}
	if err := c.get("/api/v1/nodes/"+vm.MAC, &n); err == nil {
		return fmt.Errorf("after vm delete its node is still there: %+v", n)
	}
	t.Logf("%s: deleted", name)
	return nil
}

// streamConsole copies a VM's serial console, through rackboot's API, to
// w until ctx ends; a stream cut by a reboot is opened again.
func streamConsole(ctx context.Context, c client, id string, w *syncbuf.Buffer) {
	for ctx.Err() == nil {
		req, _ := http.NewRequestWithContext(ctx, "GET", c.url+"/api/v1/vms/"+id+"/console", nil)
		req.Header.Set("Authorization", "Bearer "+c.token)
		hc := *c.http
		hc.Timeout = 0
		if resp, err := hc.Do(req); err == nil {
			buf := make([]byte, 4096)
			for {
				n, err := resp.Body.Read(buf)
				w.Write(buf[:n])
				if err != nil {
					break
				}
			}
			resp.Body.Close()
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}
