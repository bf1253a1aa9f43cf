//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/rackboot/rackboot/api"
	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/images/diskimage"
	"github.com/rackboot/rackboot/lab"
)

// cliAt runs the rackboot CLI against a rack's server.
func cliAt(t *testing.T, c client, args ...string) string {
	t.Helper()
	args = append(args, "--server", c.url, "--token", c.token, "--ca-file", c.caFile)
	out, err := exec.Command(binary, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("rackboot %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

var (
	imageMu    sync.Mutex
	imageBuilt = map[boot.Arch]string{}
)

// addImage adds the image "e2e-ARCH" to a rack's catalog, built once per
// run and architecture: a small GPT disk whose init prints
// diskimage.Marker and powers off.
func addImage(t *testing.T, c client, arch boot.Arch) {
	t.Helper()
	imageMu.Lock()
	img, ok := imageBuilt[arch]
	if !ok {
		img = filepath.Join(cacheDir, "images", "e2e-"+string(arch)+".raw")
		os.MkdirAll(filepath.Dir(img), 0o755)
		out, err := exec.Command(binary, "image", "build", "--arch", string(arch), "--output", img, "--name", "e2e-"+string(arch),
			"--data-dir", cacheDir).CombinedOutput()
		if err != nil {
			imageMu.Unlock()
			t.Fatalf("image build: %v\n%s", err, out)
		}
		imageBuilt[arch] = img
	}
	imageMu.Unlock()
	cliAt(t, c, "image", "add", "e2e-"+string(arch), "--arch", string(arch), "--file", img)
}

// TestDeploy takes an x86-64 and an AArch64 node through their life:
// inspect, deploy a built image, reboot into it from the disk (rackboot
// answers "boot local"), release, wipe, available again with a disk that
// holds no partition table. The x86-64 node is first killed in the middle
// of a deploy, and deployed again after.
func TestDeploy(t *testing.T) {
	specs := []lab.NodeSpec{
		{Name: "x86", Arch: boot.ArchX86_64, Firmware: lab.FirmwareUEFI, CPUs: 2, MemoryMB: 1536, DiskGiB: 4, NICs: 2, Reboot: true, Monitor: true},
		{Name: "arm", Arch: boot.ArchAArch64, Firmware: lab.FirmwareUEFI, CPUs: 2, MemoryMB: 1024, DiskGiB: 4, NICs: 2, Reboot: true},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 35*time.Minute)
	defer cancel()
	// SysRq may signal processes: the x86 node's agent is killed by it.
	// A node stuck on its way to the agent fails in minutes, not the
	// default half hour, which is the whole suite's budget.
	cfg := filepath.Join(t.TempDir(), "rackboot.yaml")
	if err := os.WriteFile(cfg, []byte("kernel_cmdline: sysrq_always_enabled\nagent_timeout: 5m\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r, c, _ := agentRack(ctx, t, "rbdepl", "10.77.42.0/24", "10.77.43.0/30", specs, "--config", cfg)
	for _, spec := range specs {
		addImage(t, c, spec.Arch)
	}
	var wg sync.WaitGroup
	for i, spec := range specs {
		wg.Add(1)
		go func(i int, spec lab.NodeSpec) {
			defer wg.Done()
			// The x86 node also lives through a deploy cut short.
			if err := lifeOf(ctx, t, r, c, i, spec, spec.Arch == boot.ArchX86_64); err != nil {
				failLines(t, "%s: %v\nconsole:\n%s", spec.Name, err, lab.Tail(r.VMs[i].Console(), 5000))
				nodeReport(t, r, c, lab.MAC(i, 0).String())
			}
		}(i, spec)
	}
	wg.Wait()
	if t.Failed() {
		logLines(t, "rackboot log:\n%s", lab.Tail(r.ServerLog(), 8000))
	}
}

// nodeReport shows, beside a failure, what the server saw of one node:
// its record, its boots, and its lines in the server's log.
func nodeReport(t *testing.T, r *lab.Rack, c client, mac string) {
	t.Helper()
	var n api.Node
	var tr api.Trace
	if err := c.get("/api/v1/nodes/"+mac, &n); err != nil {
		t.Logf("node %s: %v", mac, err)
		return
	}
	c.get("/api/v1/nodes/"+mac+"/trace", &tr)
	b, _ := json.MarshalIndent(struct {
		Node  api.Node
		Trace api.Trace
	}{n, tr}, "", " ")
	logLines(t, "node %s as the server has it:\n%s", mac, lab.Tail(string(b), 6000))
	logLines(t, "server log lines of node %s:\n%s", mac, mentioning(r.ServerLog(), 120, mac, n.ID))
}

// waitWritten polls a running deploy task until its agent reports bytes
// on the disk, and returns how many. A task that ends first is an error:
// a fault injected after it would prove nothing.
func (c client) waitWritten(ctx context.Context, task *api.Task) (float64, error) {
	for {
		if err := c.get("/api/v1/tasks/"+task.ID, task); err != nil {
			return 0, err
		}
		if task.State != "running" {
			return 0, fmt.Errorf("the deploy ended (%s) before it reported progress: the test proves nothing", task.State)
		}
		if p, ok := task.Result.(map[string]any); ok {
			if done, _ := p["done"].(float64); done > 0 {
				return done, nil
			}
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("wait for the deploy's progress: %w", ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// killedAgent has the kernel's OOM killer end the node's agent while it
// writes the image (SysRq f, as a node short of memory would): the
// agent's supervisor starts it again, the new agent carries on with the
// token the old one kept, the server hands it the deploy that was
// running, and it writes the image again from the start.
func killedAgent(ctx context.Context, t *testing.T, c client, vm *lab.VM, node string, spec lab.NodeSpec) error {
	task, err := c.waitTask(ctx, node, "deploy", "running")
	if err != nil {
		return err
	}
	if _, err := c.waitWritten(ctx, &task); err != nil {
		return err
	}
	if err := vm.SysRq("f"); err != nil {
		return err
	}
	ended, err := vm.WaitFor(ctx, regexp.MustCompile(`rackboot-agent: the agent ended \(signal: killed\)[^\r\n]*`))
	if err != nil {
		return fmt.Errorf("the OOM killer did not end the agent: %w", err)
	}
	if _, err := vm.WaitFor(ctx, regexp.MustCompile(`agent token kept by an earlier agent of this boot`)); err != nil {
		return fmt.Errorf("the agent started again did not carry on with the kept token: %w", err)
	}
	if err := c.get("/api/v1/tasks/"+task.ID, &task); err != nil {
		return err
	}
	if task.State == "failed" {
		return fmt.Errorf("the deploy failed with its agent: %s", task.Error)
	}
	t.Logf("%s: the OOM killer ended the agent mid-deploy; its supervisor said %q, and the new agent carries the deploy on", spec.Name, ended)
	return nil
}

// interruptedDeploy kills the node while its agent writes the image: the
// node must never show active. Powered on again it network-boots, which
// fails the unfinished deploy, and its agent serves the failed node.
func interruptedDeploy(ctx context.Context, t *testing.T, r *lab.Rack, c client, i int, spec lab.NodeSpec) error {
	mac := lab.MAC(i, 0).String()
	cliAt(t, c, "node", "deploy", mac, "--image", "e2e-"+string(spec.Arch))
	var n api.Node
	if err := c.get("/api/v1/nodes/"+mac, &n); err != nil {
		return err
	}
	task, err := c.waitTask(ctx, n.ID, "deploy", "running")
	if err != nil {
		return err
	}
	// Kill it once the agent has reported bytes on the disk.
	written, err := c.waitWritten(ctx, &task)
	if err != nil {
		return err
	}
	r.VMs[i].Stop()
	t.Logf("%s: killed the node with %.0f MiB of the image on its disk", spec.Name, written/(1<<20))
	if err := c.get("/api/v1/tasks/"+task.ID, &task); err != nil {
		return err
	}
	if task.State != "running" {
		return fmt.Errorf("the deploy ended (%s) before the node was killed: the test proves nothing", task.State)
	}
	// A dead agent changes nothing until the node boots again (or the
	// agent timeout passes): never active.
	for range 5 {
		if err := c.get("/api/v1/nodes/"+mac, &n); err != nil {
			return err
		}
		if n.State != "deploying" {
			return fmt.Errorf("node killed mid-deploy is %s, want deploying", n.State)
		}
		time.Sleep(time.Second)
	}
	if err := r.PowerCycle(ctx, i); err != nil {
		return err
	}
	n, err = c.waitStateOf(ctx, r.VMs[i], mac, "failed")
	if err != nil {
		return err
	}
	if !strings.Contains(n.LastError, "interrupted") {
		return fmt.Errorf("failed node's reason %q does not say the deploy was interrupted", n.LastError)
	}
	t.Logf("%s: after the kill the node is failed: %s", spec.Name, n.LastError)
	return nil
}

func lifeOf(ctx context.Context, t *testing.T, r *lab.Rack, c client, i int, spec lab.NodeSpec, interrupt bool) error {
	mac := lab.MAC(i, 0).String()
	vm := r.VMs[i]
	start := time.Now()
	if err := r.PowerOn(ctx, i); err != nil {
		return err
	}
	if _, err := c.waitStateOf(ctx, vm, mac, "available"); err != nil {
		return err
	}
	t.Logf("%s: available after %.0f s", spec.Name, time.Since(start).Seconds())
	// Its agent reached the API over TLS, trusting the pinned certificate.
	if via := regexp.MustCompile(`serving node \S+ via (\S+)`).FindStringSubmatch(vm.Console()); via == nil || !strings.HasPrefix(via[1], "https://") {
		return fmt.Errorf("the agent did not talk to the API over https: %v", via)
	}
	if interrupt {
		if err := interruptedDeploy(ctx, t, r, c, i, spec); err != nil {
			return err
		}
		vm = r.VMs[i]
	}
	step := time.Now()
	cliAt(t, c, "node", "deploy", mac, "--image", "e2e-"+string(spec.Arch))
	if interrupt {
		// While it deploys, another machine on the bridge forges the
		// node's boot requests and its agent's lookup.
		var n api.Node
		if err := c.get("/api/v1/nodes/"+mac, &n); err != nil {
			return err
		}
		if _, err := c.waitTask(ctx, n.ID, "deploy", "running"); err != nil {
			return err
		}
		if err := forgeBootRequests(ctx, r, mac); err != nil {
			return err
		}
		if err := c.get("/api/v1/nodes/"+mac, &n); err != nil || (n.State != "deploying" && n.State != "active") {
			return fmt.Errorf("after forged boot requests the node is %s (%s), %v", n.State, n.LastError, err)
		}
		t.Logf("%s: forged boot requests and lookups from another machine on the bridge changed nothing", spec.Name)
		if err := killedAgent(ctx, t, c, vm, n.ID, spec); err != nil {
			return err
		}
	}
	if _, err := c.waitStateOf(ctx, vm, mac, "active"); err != nil {
		return err
	}
	t.Logf("%s: deployed in %.0f s", spec.Name, time.Since(step).Seconds())
	// The agent reboots the node; the firmware network-boots first,
	// rackboot tells it to boot locally, and the disk's GRUB starts the
	// image.
	marker := regexp.MustCompile(diskimage.Marker + ` name=e2e-` + string(spec.Arch) + ` arch=` + string(spec.Arch))
	if _, err := vm.WaitFor(ctx, marker); err != nil {
		return fmt.Errorf("the deployed image never booted: %w", err)
	}
	t.Logf("%s: booted the image from its disk %.0f s after the deploy began", spec.Name, time.Since(step).Seconds())
	var tr struct {
		Boots []struct {
			Stage string `json:"stage"`
		} `json:"boots"`
	}
	if err := c.get("/api/v1/nodes/"+mac+"/trace", &tr); err != nil || len(tr.Boots) == 0 || tr.Boots[len(tr.Boots)-1].Stage != "local" {
		return fmt.Errorf("last boot's stage: %+v %v, want local", tr.Boots, err)
	}
	// The image's init powered the machine off. Release it, and power it
	// on: it network-boots into the agent, which wipes the disk.
	vm.Wait(ctx)
	cliAt(t, c, "node", "release", mac)
	step = time.Now()
	if err := r.PowerCycle(ctx, i); err != nil {
		return err
	}
	if _, err := c.waitStateOf(ctx, r.VMs[i], mac, "available"); err != nil {
		return err
	}
	t.Logf("%s: released and wiped in %.0f s", spec.Name, time.Since(step).Seconds())
	r.VMs[i].Stop()
	return wiped(r.VMs[i].Disk)
}

// wiped says whether a disk image has no GPT left: its headers sit in
// LBA 1 and in the last LBA.
func wiped(disk string) error {
	f, err := os.Open(disk)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	head, tail := make([]byte, 512), make([]byte, 512)
	f.ReadAt(head, 512)
	f.ReadAt(tail, st.Size()-512)
	if strings.HasPrefix(string(head), "EFI PART") || strings.HasPrefix(string(tail), "EFI PART") {
		return fmt.Errorf("the disk still has a partition table after the wipe")
	}
	return nil
}

// forgeBootRequests plays an attacker on the rack's bridge while a node
// deploys: it asks for the node's boot script and GRUB config over HTTP
// and TFTP, sends a DHCP DISCOVER in the node's name, and tries the
// agent lookup with the node's MAC. None of it may give it the node's
// boot secret or token, or disturb the deploy.
func forgeBootRequests(ctx context.Context, r *lab.Rack, mac string) error {
	run := func(args ...string) (string, error) {
		out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput()
		if err != nil {
			return string(out), fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, out)
		}
		return string(out), nil
	}
	addr := r.Net.Prefix().Masked().Addr()
	for range 250 {
		addr = addr.Next()
	}
	ns, err := r.Net.AddHost("x", fmt.Sprintf("%s/%d", addr, r.Net.Prefix().Bits()))
	if err != nil {
		return err
	}
	defer exec.Command("ip", "netns", "del", ns).Run()
	server := r.Net.ServerIP().String()
	base := "http://" + server + ":8080"
	in := func(args ...string) (string, error) {
		return run(append([]string{"ip", "netns", "exec", ns}, args...)...)
	}
	for _, path := range []string{"/ipxe/" + mac + "?arch=x86_64", "/grub/" + mac + ".cfg?arch=x86_64"} {
		out, err := in("curl", "-sf", base+path)
		if err != nil {
			return fmt.Errorf("forged GET %s: %w", path, err)
		}
		if !strings.Contains(out, "rackboot.node=") || strings.Contains(out, "rackboot.boot=") {
			return fmt.Errorf("forged GET %s from %s: got %q, want the node's script without its boot secret", path, addr, out)
		}
	}
	cfg := filepath.Join(os.TempDir(), fmt.Sprintf("forged-%d.cfg", os.Getpid()))
	defer os.Remove(cfg)
	// tftp-hpa reads host:file in a name, so the MAC goes with dashes.
	dashed := strings.ReplaceAll(mac, ":", "-")
	if _, err := in("tftp", server, "-c", "get", "grub/"+dashed+".cfg", cfg); err != nil {
		return fmt.Errorf("forged TFTP read: %w", err)
	}
	if b, _ := os.ReadFile(cfg); !strings.Contains(string(b), "rackboot.node=") || strings.Contains(string(b), "rackboot.boot=") {
		return fmt.Errorf("forged TFTP read of grub/%s.cfg: %q, want the config without the boot secret", dashed, b)
	}
	hw, _ := net.ParseMAC(mac)
	err = lab.InNamespace(ns, func() error {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(addr.String())})
		if err != nil {
			return err
		}
		defer c.Close()
		d, err := dhcpv4.NewDiscovery(hw, dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00007:UNDI:003000")),
			dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.OptionClientSystemArchitectureType, []byte{0, 7})))
		if err != nil {
			return err
		}
		_, err = c.WriteTo(d.ToBytes(), &net.UDPAddr{IP: net.ParseIP(server), Port: 67})
		return err
	})
	if err != nil {
		return fmt.Errorf("forged DISCOVER: %w", err)
	}
	// The lookup: on the boot port there is no API (421, pointing at the
	// TLS port); there, an attacker who does not care whom it talks to
	// (-k) gets nothing without the boot secret.
	for _, body := range []string{fmt.Sprintf(`{"macs":[%q]}`, mac), fmt.Sprintf(`{"macs":[%q],"boot_secret":"00000000000000000000000000000000"}`, mac)} {
		for url, want := range map[string]string{base + "/api/v1/agent/lookup": "421", "https://" + server + ":8443/api/v1/agent/lookup": "403"} {
			out, _ := in("curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", "-H", "Content-Type: application/json", "-d", body, url)
			if out != want {
				return fmt.Errorf("forged lookup %s at %s: HTTP %s, want %s", body, url, out, want)
			}
		}
	}
	return nil
}
