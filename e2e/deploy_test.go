//go:build e2e && agent_e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/images/diskimage"
	"github.com/rackboot/rackboot/lab"
)

// cliAt runs the rackboot CLI against a rack's server.
func cliAt(t *testing.T, c client, args ...string) string {
	t.Helper()
	args = append(args, "--server", c.url, "--token", c.token)
	out, err := exec.Command(binary, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("rackboot %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestDeploy takes an x86-64 and an AArch64 node through their life:
// inspect, deploy a built image, reboot into it from the disk (rackboot
// answers "boot local"), release, wipe, available again with a disk that
// holds no partition table.
func TestDeploy(t *testing.T) {
	setup(t)
	dir := t.TempDir()
	dataDir := filepath.Join(dir, "data")
	agentArtifacts(t, dataDir)
	specs := []lab.NodeSpec{
		{Name: "x86", Arch: boot.ArchX86_64, Firmware: lab.FirmwareUEFI, CPUs: 2, MemoryMB: 1536, DiskGiB: 2, NICs: 2, Reboot: true},
		{Name: "arm", Arch: boot.ArchAArch64, Firmware: lab.FirmwareUEFI, CPUs: 2, MemoryMB: 1024, DiskGiB: 2, NICs: 2, Reboot: true},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 35*time.Minute)
	defer cancel()
	r, err := lab.StartRack(ctx, lab.RackOptions{Name: fmt.Sprintf("rbdepl%d", os.Getpid()), Binary: binary, DataDir: dataDir, Dir: filepath.Join(dir, "lab"),
		Prefix: mustPrefix("10.77.42.0/24"), HostLink: mustPrefix("10.77.43.0/30"), Nodes: specs, ServeArgs: []string{"--log-level", "debug"}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	token, _ := os.ReadFile(filepath.Join(dataDir, "admin.token"))
	c := client{url: r.URL, token: strings.TrimSpace(string(token))}
	for _, spec := range specs {
		img := filepath.Join(dir, "img-"+string(spec.Arch)+".raw")
		out, err := exec.Command(binary, "image", "build", "--arch", string(spec.Arch), "--output", img, "--name", "e2e-"+string(spec.Arch),
			"--data-dir", cacheDir).CombinedOutput()
		if err != nil {
			t.Fatalf("image build: %v\n%s", err, out)
		}
		cliAt(t, c, "image", "add", "e2e-"+string(spec.Arch), "--arch", string(spec.Arch), "--file", img)
	}
	var wg sync.WaitGroup
	for i, spec := range specs {
		wg.Add(1)
		go func(i int, spec lab.NodeSpec) {
			defer wg.Done()
			if err := lifeOf(ctx, t, r, c, i, spec); err != nil {
				t.Errorf("%s: %v\nconsole:\n%s", spec.Name, err, lab.Tail(r.VMs[i].Console(), 5000))
			}
		}(i, spec)
	}
	wg.Wait()
	if t.Failed() {
		t.Logf("rackboot log:\n%s", lab.Tail(r.ServerLog(), 8000))
	}
}

func lifeOf(ctx context.Context, t *testing.T, r *lab.Rack, c client, i int, spec lab.NodeSpec) error {
	mac := lab.MAC(i, 0).String()
	vm := r.VMs[i]
	start := time.Now()
	if err := r.PowerOn(ctx, i); err != nil {
		return err
	}
	if _, err := c.waitState(ctx, mac, "available"); err != nil {
		return err
	}
	t.Logf("%s: available after %.0f s", spec.Name, time.Since(start).Seconds())
	step := time.Now()
	cliAt(t, c, "node", "deploy", mac, "--image", "e2e-"+string(spec.Arch))
	if _, err := c.waitState(ctx, mac, "active"); err != nil {
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
	if err := restart(ctx, r, i); err != nil {
		return err
	}
	if _, err := c.waitState(ctx, mac, "available"); err != nil {
		return err
	}
	t.Logf("%s: released and wiped in %.0f s", spec.Name, time.Since(step).Seconds())
	r.VMs[i].Stop()
	disk, err := os.ReadFile(r.VMs[i].Disk)
	if err != nil {
		return err
	}
	if strings.Contains(string(disk[512:520]), "EFI PART") || strings.Contains(string(disk[len(disk)-512:]), "EFI PART") {
		return fmt.Errorf("the disk still has a partition table after the wipe")
	}
	return nil
}

// restart powers node i on again with a fresh QEMU process.
func restart(ctx context.Context, r *lab.Rack, i int) error {
	old := r.VMs[i]
	old.Stop()
	vm := &lab.VM{Name: old.Name + "-again", Arch: old.Arch, Firmware: old.Firmware, MAC: old.MAC, Tap: old.Tap, ExtraNICs: old.ExtraNICs,
		MemoryMB: old.MemoryMB, CPUs: old.CPUs, Disk: old.Disk, Reboot: old.Reboot}
	r.VMs[i] = vm
	return r.PowerOn(ctx, i)
}
