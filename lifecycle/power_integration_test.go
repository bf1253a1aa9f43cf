//go:build integration

package lifecycle

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/internal/sealbox"
	"github.com/rackboot/rackboot/nodepower"
	"github.com/rackboot/rackboot/power"
	"github.com/rackboot/rackboot/power/powertest"
	"github.com/rackboot/rackboot/store"
)

// TestPowerThroughIPMISim drives OpenIPMI's ipmi_sim through the
// lifecycle, the BMC opened as the appliance opens it (nodepower, a
// sealed password): inspect of a node that is off sets PXE and powers it
// on; a deploy reported done sets the disk; release of the active node
// asks a soft-off, forces it off when the node stays on, then PXE and on.
func TestPowerThroughIPMISim(t *testing.T) {
	sim := powertest.StartSim(t, "admin", "s3cret-pw")
	m, st, _ := powerMachine(t)
	box, err := sealbox.New(sealbox.NewKey())
	if err != nil {
		t.Fatal(err)
	}
	m.Power = &nodepower.Opener{Store: st, Secrets: box, Dial: func(c power.Config) (power.Driver, error) {
		c.Timeout = 2 * time.Second
		return power.Dial(c)
	}}
	m.SoftOffTimeout, m.SoftOffPoll = time.Second, 100*time.Millisecond
	ctx := context.Background()
	n := node(t, st, 600, boot.ClientX64UEFI, store.StateDiscovered)
	if err := st.SetBMC(ctx, store.BMC{NodeID: n.ID, URL: sim.URL(), User: "admin",
		Password: box.Seal([]byte("s3cret-pw"), nodepower.PasswordAD(n.ID))}); err != nil {
		t.Fatal(err)
	}
	bootDevice := func() string {
		t.Helper()
		out, err := sim.IPMITool("chassis", "bootparam", "get", "5")
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	checkEvents := func(step string) {
		t.Helper()
		for _, e := range powerEvents(t, st, n.ID) {
			if e.Message != "done" {
				t.Fatalf("%s: power event %+v", step, e)
			}
		}
	}

	if _, _, err := m.Do(ctx, n.ID, Inspect, Params{}, "user:t"); err != nil {
		t.Fatal(err)
	}
	m.WaitPower()
	checkEvents("inspect")
	if calls := sim.Calls(); !strings.Contains(calls, "set boot pxe") || !strings.Contains(calls, "set power 1") {
		t.Fatalf("inspect: the BMC's calls:\n%s", calls)
	}
	if out := bootDevice(); !strings.Contains(out, "Force PXE") {
		t.Errorf("inspect: boot device:\n%s", out)
	}

	// The agent inspects, then deploys.
	if err := st.SetState(ctx, n.ID, store.StateAvailable); err != nil {
		t.Fatal(err)
	}
	if _, _, err := m.Do(ctx, n.ID, Deploy, Params{Image: "img"}, "user:t"); err != nil {
		t.Fatal(err)
	}
	m.WaitPower()
	tasks, _ := st.Tasks(ctx, store.TaskFilter{NodeID: n.ID, State: store.TaskPending})
	var task store.Task
	for _, k := range tasks {
		if k.Kind == "deploy" {
			task = k
		}
	}
	task.State = store.TaskDone
	if _, err := m.TaskEnded(ctx, task, "agent:"+n.ID, nil); err != nil {
		t.Fatal(err)
	}
	m.WaitPower()
	checkEvents("deploy")
	if out := bootDevice(); !strings.Contains(out, "Force Boot from default Hard-Drive") {
		t.Errorf("deploy done: boot device:\n%s", out)
	}

	before := len(sim.Calls())
	if _, _, err := m.Do(ctx, n.ID, Release, Params{}, "user:t"); err != nil {
		t.Fatal(err)
	}
	m.WaitPower()
	checkEvents("release")
	calls := sim.Calls()[before:]
	// ipmi_sim's program logs the shutdown but keeps the node on: the
	// release forces it off.
	for _, want := range []string{"set shutdown 1", "set power 0", "set boot pxe", "set power 1"} {
		i := strings.Index(calls, want)
		if i < 0 {
			t.Fatalf("release: the BMC never got %q; its calls:\n%s", want, calls)
		}
		calls = calls[i:]
	}
	if out := bootDevice(); !strings.Contains(out, "Force PXE") {
		t.Errorf("release: boot device:\n%s", out)
	}
}
