//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rackboot/rackboot/api"
	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/images/diskimage"
	"github.com/rackboot/rackboot/lab"
)

// TestPowerBMC: nodes whose only power button is their BMC, OpenIPMI's
// ipmi_sim on a host of its own on the segment, spoken to over IPMI
// lanplus. Nobody starts a QEMU here but the BMC. rackboot powers each
// node on to inspect it; the x86-64 node's agent reads its BMC's address
// through the in-band KCS interface and, with --bmc-enroll, creates a
// rackboot user on it that rackboot then uses over the network. Then, from
// power off: deploy (rackboot powers it on, and after the deploy sets the
// next boots to the disk, read back from the BMC with ipmitool), the image
// boots, and release powers it on into the agent, which wipes it. The
// AArch64 node has no in-band interface: it keeps the operator's user.
func TestPowerBMC(t *testing.T) {
	specs := []lab.NodeSpec{
		{Name: "bx86", Arch: boot.ArchX86_64, Firmware: lab.FirmwareUEFI, CPUs: 2, MemoryMB: 1536, DiskGiB: 4, NICs: 1, Reboot: true},
		{Name: "barm", Arch: boot.ArchAArch64, Firmware: lab.FirmwareUEFI, CPUs: 2, MemoryMB: 1024, DiskGiB: 4, NICs: 1, Reboot: true},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 35*time.Minute)
	defer cancel()
	r, c, dir := agentRack(ctx, t, "rbbmc", "10.77.46.0/24", "10.77.47.0/30", specs, "--bmc-enroll")
	var wg sync.WaitGroup
	for i, spec := range specs {
		addImage(t, c, spec.Arch)
		wg.Add(1)
		go func(i int, spec lab.NodeSpec) {
			defer wg.Done()
			if err := bmcLife(ctx, t, r, c, dir, i, spec); err != nil {
				failLines(t, "%s: %v", spec.Name, err)
			}
		}(i, spec)
	}
	wg.Wait()
	if t.Failed() {
		logLines(t, "rackboot log:\n%s", lab.Tail(r.ServerLog(), 8000))
	}
}

var bootDeviceRE = regexp.MustCompile(`Boot Device Selector\s*:\s*(.+)`)

func bmcLife(ctx context.Context, t *testing.T, r *lab.Rack, c client, dir string, i int, spec lab.NodeSpec) (err error) {
	addr := r.Net.Prefix().Masked().Addr()
	for range 240 + i {
		addr = addr.Next()
	}
	bmc, err := r.AddBMC(ctx, i, addr, "admin", "site-pw-"+spec.Name)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			err = fmt.Errorf("%w\nBMC calls: %q\nipmi_sim: %s\nconsole:\n%s", err, bmc.Calls(), lab.Tail(bmc.Log(), 2000), lab.Tail(bmc.Console(), 5000))
		}
	}()
	mac := lab.MAC(i, 0).String()
	cliAt(t, c, "node", "add", mac, "--arch", string(spec.Arch), "--name", spec.Name)
	pw := filepath.Join(dir, spec.Name+".bmc-password")
	if err := os.WriteFile(pw, []byte(bmc.Password+"\n"), 0o600); err != nil {
		return err
	}
	cliAt(t, c, "node", "set", spec.Name, "--bmc", bmc.URL(), "--bmc-user", bmc.User, "--bmc-password-file", pw)

	// Inspect: the node is off; rackboot sets a network boot and powers
	// it on.
	start := time.Now()
	cliAt(t, c, "node", "inspect", spec.Name)
	n, err := c.waitState(ctx, mac, "available")
	if err != nil {
		return err
	}
	if bmc.Boots() != 1 {
		return fmt.Errorf("inspected after %d power-ons by the BMC, want 1", bmc.Boots())
	}
	if calls := bmc.Calls(); !slices.Contains(calls, "set boot pxe") || !slices.Contains(calls, "set power 1") ||
		slices.Index(calls, "set boot pxe") > slices.Index(calls, "set power 1") {
		return fmt.Errorf("BMC calls %q: want a PXE boot set, then power on", calls)
	}
	t.Logf("%s: powered on by rackboot over IPMI and inspected in %.0f s", spec.Name, time.Since(start).Seconds())
	var inv struct {
		BMCAddress string `json:"bmc_address"`
		BMCMAC     string `json:"bmc_mac"`
	}
	json.Unmarshal(n.Inventory, &inv)
	var b api.BMC
	if err := c.get("/api/v1/nodes/"+mac+"/bmc", &b); err != nil {
		return err
	}
	if spec.Arch == boot.ArchX86_64 {
		if inv.BMCAddress != addr.String() || inv.BMCMAC != bmc.MAC.String() {
			return fmt.Errorf("inventory's BMC %q %q, want %s %s (read in-band)", inv.BMCAddress, inv.BMCMAC, addr, bmc.MAC)
		}
		if b.User != "rackboot" || b.URL != bmc.URL() || !b.PasswordSet {
			return fmt.Errorf("BMC after an enrolling inspection: %+v, want user rackboot at %s", b, bmc.URL())
		}
		users, err := bmc.IPMITool("user", "list", "1")
		if err != nil || !regexp.MustCompile(`(?m)^\d+\s+rackboot\s+.*ADMINISTRATOR`).MatchString(users) {
			return fmt.Errorf("the BMC's users after enrollment: %v\n%s", err, users)
		}
		t.Logf("%s: inventory has the BMC at %s (%s); the agent enrolled user rackboot", spec.Name, inv.BMCAddress, inv.BMCMAC)
	} else {
		if inv.BMCAddress != "" {
			return fmt.Errorf("inventory of a node without an in-band interface has BMC address %q", inv.BMCAddress)
		}
		if b.User != bmc.User {
			return fmt.Errorf("BMC of a node that could not enroll: %+v, want the operator's user kept", b)
		}
	}
	// The power state through the stored credential (the enrolled one on
	// x86-64), over the network.
	var ps api.PowerStatus
	if err := c.get("/api/v1/nodes/"+mac+"/power", &ps); err != nil || ps.State != "on" {
		return fmt.Errorf("power status: %+v %v, want on", ps, err)
	}
	cliAt(t, c, "node", "power", spec.Name, "off")
	if err := bmc.WaitPower(ctx, false); err != nil {
		return err
	}

	// Deploy from off.
	step, from := time.Now(), len(bmc.Console())
	cliAt(t, c, "node", "deploy", spec.Name, "--image", "e2e-"+string(spec.Arch))
	if _, err := c.waitState(ctx, mac, "active"); err != nil {
		return err
	}
	if bmc.Boots() != 2 {
		return fmt.Errorf("deployed after %d power-ons, want 2", bmc.Boots())
	}
	marker := regexp.MustCompile(diskimage.Marker + ` name=e2e-` + string(spec.Arch) + ` arch=` + string(spec.Arch))
	if _, err := bmc.WaitFor(ctx, marker, from); err != nil {
		return fmt.Errorf("the deployed image never booted: %w", err)
	}
	// The deploy's end set the next boots to the disk.
	if err := waitBootDevice(ctx, bmc, "Force Boot from default Hard-Drive"); err != nil {
		return err
	}
	t.Logf("%s: deployed from power off and booted its image in %.0f s; the BMC boots it from disk next", spec.Name, time.Since(step).Seconds())

	// The image powers itself off; release powers it on into the agent.
	if err := bmc.WaitPower(ctx, false); err != nil {
		return err
	}
	step = time.Now()
	cliAt(t, c, "node", "release", spec.Name)
	if _, err := c.waitState(ctx, mac, "available"); err != nil {
		return err
	}
	if bmc.Boots() != 3 {
		return fmt.Errorf("released after %d power-ons, want 3", bmc.Boots())
	}
	if err := waitBootDevice(ctx, bmc, "Force PXE"); err != nil {
		return err
	}
	t.Logf("%s: released: powered on into the agent and wiped in %.0f s", spec.Name, time.Since(step).Seconds())
	cliAt(t, c, "node", "power", spec.Name, "off")
	if err := bmc.WaitPower(ctx, false); err != nil {
		return err
	}
	return wiped(r.VMs[i].Disk)
}

// waitBootDevice waits until ipmitool reads want back as the BMC's boot
// device (chassis bootparam get 5): the lifecycle sets it after the
// state change, in the background.
func waitBootDevice(ctx context.Context, bmc *lab.BMC, want string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var last string
	for {
		out, err := bmc.IPMITool("chassis", "bootparam", "get", "5")
		if m := bootDeviceRE.FindStringSubmatch(out); err == nil && m != nil {
			if last = strings.TrimSpace(m[1]); strings.HasPrefix(last, want) {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("boot device read back from the BMC: %q (%v), want %q", last, err, want)
		case <-time.After(time.Second):
		}
	}
}
