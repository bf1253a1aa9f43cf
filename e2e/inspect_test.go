//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rackboot/rackboot/api"
	"github.com/rackboot/rackboot/appliance"
	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/lab"
)

var (
	ramdiskOnce sync.Once
	ramdiskErr  error
)

// agentArtifacts builds the agent ramdisks once per run (the builder
// itself skips a build whose inputs did not change) and copies them into
// dataDir's artifacts, where the boot scripts point.
func agentArtifacts(t *testing.T, dataDir string) {
	t.Helper()
	shared := filepath.Join(cacheDir, "agent")
	ramdiskOnce.Do(func() {
		// bin/rackboot carries the programs: this needs neither the
		// source tree nor a go command.
		cmd := exec.Command(binary, "ramdisk", "build", "--arch", "all", "--data-dir", shared)
		out, err := cmd.CombinedOutput()
		if err != nil {
			ramdiskErr = fmt.Errorf("ramdisk build: %v\n%s", err, out)
			return
		}
		t.Logf("ramdisk build:\n%s", strings.TrimSpace(string(out)))
	})
	if ramdiskErr != nil {
		t.Fatal(ramdiskErr)
	}
	if err := copyDir(filepath.Join(shared, "artifacts"), filepath.Join(dataDir, "artifacts")); err != nil {
		t.Fatal(err)
	}
	if err := copyDir(filepath.Join(cacheDir, "firmware"), filepath.Join(dataDir, "firmware")); err != nil {
		t.Fatal(err)
	}
}

// agentRack starts a virtual rack of specs on the segment prefix, joined
// to the host by hostLink, with the agent ramdisks in place and agents
// calling in every 2 s; serve gets extra too. It returns the rack (closed
// when the test ends), an admin client of its API, and the test's scratch
// dir.
func agentRack(ctx context.Context, t *testing.T, name, prefix, hostLink string, specs []lab.NodeSpec, extra ...string) (*lab.Rack, client, string) {
	t.Helper()
	setup(t)
	dir := t.TempDir()
	dataDir := filepath.Join(dir, "data")
	agentArtifacts(t, dataDir)
	r, err := lab.StartRack(ctx, lab.RackOptions{Name: fmt.Sprintf("%s%d", name, os.Getpid()), Binary: binary, DataDir: dataDir, Dir: filepath.Join(dir, "lab"),
		Prefix: mustPrefix(prefix), HostLink: mustPrefix(hostLink), Nodes: specs,
		// The API over TLS, as make run serves it: the agents pin its
		// certificate from their kernel command line.
		ServeArgs: append([]string{"--log-level", "debug", "--agent-heartbeat", "2s", "--api-addr", ":8443"}, extra...)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	token, err := os.ReadFile(filepath.Join(dataDir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dataDir, appliance.APICAFile)
	ca, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		t.Fatalf("%s holds no certificate", caFile)
	}
	host, _, _ := net.SplitHostPort(strings.TrimPrefix(r.URL, "http://"))
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	return r, client{url: "https://" + net.JoinHostPort(host, "8443"), token: strings.TrimSpace(string(token)), caFile: caFile, http: hc}, dir
}

// client is the API as a program sees it.
type client struct {
	url, token string
	// caFile is the API's CA, which http trusts.
	caFile string
	http   *http.Client
}

func (c client) get(path string, out any) error {
	req, _ := http.NewRequest("GET", c.url+path, nil)
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// waitState polls the node owning mac until it reaches want, failing
// early when it lands in failed.
func (c client) waitState(ctx context.Context, mac, want string) (api.Node, error) {
	return c.waitStateOf(ctx, nil, mac, want)
}

// waitStateOf is waitState for the node vm, which must keep running:
// a node that powered off (its firmware found nothing to boot but a
// disk, say) fails the wait at once, not at its timeout.
func (c client) waitStateOf(ctx context.Context, vm *lab.VM, mac, want string) (api.Node, error) {
	var n api.Node
	var off <-chan struct{}
	if vm != nil {
		off = vm.Done()
	}
	for {
		err := c.get("/api/v1/nodes/"+mac, &n)
		if err == nil && n.State == want {
			return n, nil
		}
		if err == nil && n.State == "failed" && want != "failed" {
			return n, fmt.Errorf("node %s failed: %s", mac, n.LastError)
		}
		select {
		case <-ctx.Done():
			return n, fmt.Errorf("node %s: still %q, want %q: %w", mac, n.State, want, ctx.Err())
		case <-off:
			if err := c.get("/api/v1/nodes/"+mac, &n); err == nil && n.State == want {
				return n, nil
			}
			return n, fmt.Errorf("node %s: powered off while %q, want %q", mac, n.State, want)
		case <-time.After(2 * time.Second):
		}
	}
}

// waitTask polls the node's tasks until one of kind reaches state.
func (c client) waitTask(ctx context.Context, node, kind, state string) (api.Task, error) {
	for {
		var list api.TaskList
		if err := c.get("/api/v1/tasks?node="+node, &list); err != nil {
			return api.Task{}, err
		}
		for _, k := range list.Items {
			if k.Kind == kind && k.State == state {
				return k, nil
			}
		}
		select {
		case <-ctx.Done():
			return api.Task{}, fmt.Errorf("no %s task %s on node %s: %w", kind, state, node, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// path walks a decoded JSON document.
func path(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

// TestInspect powers on an x86-64 UEFI and an AArch64 UEFI node, each
// with an empty disk and two NICs, which PXE-boot, and one of each
// architecture that UEFI-HTTP-boots; all boot through rackboot into the
// agent, which inventories them, and they must reach available with an
// inventory that matches the VM.
func TestInspect(t *testing.T) {
	specs := []lab.NodeSpec{
		{Name: "x86", Arch: boot.ArchX86_64, Firmware: lab.FirmwareUEFI, CPUs: 2, MemoryMB: 1536, DiskGiB: 3, NICs: 2, NVMeMiB: 512},
		{Name: "arm", Arch: boot.ArchAArch64, Firmware: lab.FirmwareUEFI, CPUs: 2, MemoryMB: 1024, DiskGiB: 2, NICs: 2},
		// UEFI HTTP boot, their PXE clients off: no TFTP on their way
		// (iPXE on x86-64, the GRUB with http on AArch64).
		{Name: "x86http", Arch: boot.ArchX86_64, Firmware: lab.FirmwareUEFI, CPUs: 1, MemoryMB: 1536, DiskGiB: 1, NICs: 1, HTTPBoot: true},
		{Name: "armhttp", Arch: boot.ArchAArch64, Firmware: lab.FirmwareUEFI, CPUs: 1, MemoryMB: 1024, DiskGiB: 1, NICs: 1, HTTPBoot: true},
		// No hardware RNG: booted after the others (noRNG).
		{Name: "x86norng", Arch: boot.ArchX86_64, Firmware: lab.FirmwareUEFI, CPUs: 1, MemoryMB: 1024, DiskGiB: 1, NICs: 1, NoRNG: true},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	r, c, _ := agentRack(ctx, t, "rbinsp", "10.77.40.0/24", "10.77.41.0/30", specs)
	var wg sync.WaitGroup
	for i, spec := range specs {
		if spec.NoRNG {
			continue
		}
		wg.Add(1)
		go func(i int, spec lab.NodeSpec) {
			defer wg.Done()
			if spec.NVMeMiB > 0 {
				if err := scribble(r.VMs[i].NVMe, true); err != nil {
					t.Error(err)
					return
				}
			}
			start := time.Now()
			if err := r.PowerOn(ctx, i); err != nil {
				t.Error(err)
				return
			}
			mac := lab.MAC(i, 0).String()
			n, err := c.waitState(ctx, mac, "available")
			if err != nil {
				failLines(t, "%s: %v\nconsole:\n%s", spec.Name, err, lab.Tail(r.VMs[i].Console(), 4000))
				return
			}
			t.Logf("%s (%s): power-on to available in %.0f s", spec.Name, spec.Arch, time.Since(start).Seconds())
			checkInventory(t, c, n.ID, i, spec)
			if spec.HTTPBoot {
				if err := httpBooted(c, mac, spec.Arch); err != nil {
					failLines(t, "%s: %v", spec.Name, err)
				}
			}
			if spec.NVMeMiB > 0 {
				err := fullWipe(ctx, t, c, n.ID, spec)
				if err == nil {
					err = scribble(r.VMs[i].NVMe, false)
				}
				if err != nil {
					failLines(t, "%s: %v\nconsole:\n%s", spec.Name, err, lab.Tail(r.VMs[i].Console(), 4000))
				}
			}
		}(i, spec)
	}
	wg.Wait()
	for i, spec := range specs {
		if spec.NoRNG {
			if err := noRNG(ctx, t, r, c, i); err != nil {
				failLines(t, "%s: %v\nconsole:\n%s", spec.Name, err, lab.Tail(r.VMs[i].Console(), 4000))
			}
		}
	}
	if t.Failed() {
		logLines(t, "rackboot log:\n%s", lab.Tail(r.ServerLog(), 6000))
	}
}

// noRNG boots node i, which has no hardware RNG, into the agent: the
// agent gets its DHCP lease without the kernel's random pool, then says on
// the console that it waits for the pool before it speaks TLS. Under TCG
// the pool takes minutes to seed; the node is powered off once it said so.
func noRNG(ctx context.Context, t *testing.T, r *lab.Rack, c client, i int) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	vm := r.VMs[i]
	if err := r.PowerOn(ctx, i); err != nil {
		return err
	}
	defer vm.Stop()
	if _, err := vm.WaitFor(ctx, regexp.MustCompile(`msg="network up"`)); err != nil {
		return fmt.Errorf("the agent got no DHCP lease: %w", err)
	}
	if _, err := vm.WaitFor(ctx, regexp.MustCompile(`waiting for the kernel's random pool: this machine has no hardware RNG`)); err != nil {
		return err
	}
	// rackboot leased the agent its address: a DHCP ack after the
	// initrd was served.
	var tr api.Trace
	if err := c.get("/api/v1/nodes/"+lab.MAC(i, 0).String()+"/trace", &tr); err != nil {
		return err
	}
	initrd, acked := false, false
	for _, e := range tr.Events {
		if e.Kind == "file" && strings.Contains(e.File, "initrd") && e.Complete {
			initrd = true
		}
		if initrd && e.Proto == "dhcp" && e.Kind == "ack" {
			acked = true
		}
	}
	if !acked {
		return fmt.Errorf("no DHCP ack for the agent after its initrd in the trace: %+v", tr.Events)
	}
	// The trace says it too, with no heartbeat ever sent.
	if len(tr.Boots) == 0 || !strings.Contains(tr.Boots[len(tr.Boots)-1].Verdict, "waiting for the kernel's random pool") {
		return fmt.Errorf("the boot trace does not say the agent waits for entropy: %+v", tr.Boots)
	}
	t.Logf("%s: without a hardware RNG the agent got its lease and said it waits for the random pool", vm.Name)
	return nil
}

// httpBooted checks from a node's trace that it came up by UEFI HTTP
// boot: its firmware asked as an HTTP client (option 93 is 16 or 19),
// every file came over HTTP in full, and not one request was TFTP.
func httpBooted(c client, mac string, arch boot.Arch) error {
	var tr api.Trace
	if err := c.get("/api/v1/nodes/"+mac+"/trace", &tr); err != nil {
		return err
	}
	want := "16"
	if arch == boot.ArchAArch64 {
		want = "19"
	}
	asked, files := false, 0
	for _, e := range tr.Events {
		switch {
		case e.Proto == "dhcp" && e.Options["93"] == want:
			asked = true
		case e.Proto == "tftp":
			return fmt.Errorf("a TFTP request (%s %s) from a node that HTTP-boots", e.Kind, e.File)
		case e.Proto == "http" && e.Kind == "file":
			if !e.Complete || e.Bytes != e.Size {
				return fmt.Errorf("HTTP transfer of %s incomplete: %d of %d bytes", e.File, e.Bytes, e.Size)
			}
			files++
		}
	}
	if !asked || files < 3 {
		return fmt.Errorf("trace: HTTP client type %s asked: %v, %d files over HTTP (want the loader, kernel and initrd): %+v", want, asked, files, tr.Events)
	}
	return nil
}

// scribble writes a pattern at the start, middle and end of a drive
// image, or with write false checks that none of it is left.
func scribble(img string, write bool) error {
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	pattern := bytes.Repeat([]byte{0xa5}, 1<<20)
	for _, off := range []int64{0, st.Size() / 2, st.Size() - 1<<20} {
		if write {
			if _, err := f.WriteAt(pattern, off); err != nil {
				return err
			}
			continue
		}
		got := make([]byte, len(pattern))
		if _, err := f.ReadAt(got, off); err != nil {
			return err
		}
		if !bytes.Equal(got, make([]byte, len(got))) {
			return fmt.Errorf("%s: data left at %d after the full wipe", img, off)
		}
	}
	return nil
}

// fullWipe erases every disk of an available node: the NVMe drive by
// its controller's Format NVM, the virtio disk by discard or zeroes, each
// verified by the agent, and the node is available again.
func fullWipe(ctx context.Context, t *testing.T, c client, id string, spec lab.NodeSpec) error {
	start := time.Now()
	cliAt(t, c, "node", "wipe", id, "--method", "full")
	if _, err := c.waitState(ctx, id, "available"); err != nil {
		return err
	}
	var list struct {
		Items []struct {
			Kind, State string
			Result      struct {
				Disks []struct {
					Disk, Serial, Method string
					Bytes                int64
					Samples              int `json:"samples_verified"`
				} `json:"disks"`
			} `json:"result"`
		} `json:"items"`
	}
	if err := c.get("/api/v1/tasks?node="+id, &list); err != nil {
		return err
	}
	var methods []string
	nvme := 0
	for _, k := range list.Items {
		if k.Kind != "wipe" || k.State != "done" {
			continue
		}
		for _, d := range k.Result.Disks {
			methods = append(methods, d.Disk+"="+d.Method)
			if d.Serial == "rackboot-nvme" {
				nvme++
			}
			switch {
			case d.Samples == 0:
				return fmt.Errorf("%s: wipe verified no samples", d.Disk)
			case d.Serial == "rackboot-nvme" && !strings.HasPrefix(d.Method, "nvme-format"):
				return fmt.Errorf("the NVMe drive was wiped by %s, not by Format NVM", d.Method)
			case d.Serial == "rackboot-nvme" && d.Bytes != int64(spec.NVMeMiB)<<20:
				return fmt.Errorf("the NVMe wipe covered %d bytes, want %d", d.Bytes, int64(spec.NVMeMiB)<<20)
			}
		}
	}
	if len(methods) != 2 || nvme != 1 {
		return fmt.Errorf("full wipe records %v, want the NVMe drive and the virtio disk", methods)
	}
	t.Logf("%s: full wipe (%s) in %.0f s", spec.Name, strings.Join(methods, ", "), time.Since(start).Seconds())
	return nil
}

func checkInventory(t *testing.T, c client, id string, i int, spec lab.NodeSpec) {
	var n api.Node
	if err := c.get("/api/v1/nodes/"+id, &n); err != nil {
		t.Error(err)
		return
	}
	var inv map[string]any
	if err := json.Unmarshal(n.Inventory, &inv); err != nil {
		t.Errorf("%s: inventory: %v", spec.Name, err)
		return
	}
	if got := path(inv, "cpu", "count"); got != float64(spec.CPUs) {
		t.Errorf("%s: cpu.count = %v, want %d", spec.Name, got, spec.CPUs)
	}
	if got := path(inv, "cpu", "architecture"); got != string(spec.Arch) {
		t.Errorf("%s: cpu.architecture = %v, want %s", spec.Name, got, spec.Arch)
	}
	// The guest sees a little less than it was given (firmware, kernel).
	if mb, _ := path(inv, "memory", "physical_mb").(float64); mb < float64(spec.MemoryMB)*0.85 || mb > float64(spec.MemoryMB) {
		t.Errorf("%s: memory.physical_mb = %v, want about %d", spec.Name, mb, spec.MemoryMB)
	}
	disks, _ := inv["disks"].([]any)
	found := false
	for _, d := range disks {
		if path(d, "size") == float64(int64(spec.DiskGiB)<<30) {
			found = true
		}
	}
	if !found {
		t.Errorf("%s: no disk of %d GiB in %v", spec.Name, spec.DiskGiB, disks)
	}
	macs := map[string]bool{}
	for _, nic := range inv["interfaces"].([]any) {
		if m, ok := path(nic, "mac_address").(string); ok {
			macs[strings.ToLower(m)] = true
		}
	}
	for nic := 0; nic < spec.NICs; nic++ {
		if !macs[lab.MAC(i, nic).String()] {
			t.Errorf("%s: NIC %s missing from the inventory (%v)", spec.Name, lab.MAC(i, nic), macs)
		}
	}
	// QEMU's virtio devices: the NICs and the disk, vendor 1af4.
	virtio := 0
	pci, _ := inv["pci_devices"].([]any)
	for _, d := range pci {
		if b, _ := json.Marshal(d); strings.Contains(strings.ToLower(string(b)), "1af4") {
			virtio++
		}
	}
	if virtio < spec.NICs+1 {
		t.Errorf("%s: %d virtio PCI devices in the inventory, want at least %d", spec.Name, virtio, spec.NICs+1)
	}
	if got := path(inv, "boot", "current_boot_mode"); got != "uefi" {
		t.Errorf("%s: boot.current_boot_mode = %v", spec.Name, got)
	}
}

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }
