//go:build integration

package power_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rackboot/rackboot/power"
	"github.com/rackboot/rackboot/power/powertest"
)

// waitState polls the driver until the BMC reports want.
func waitState(t *testing.T, d power.Driver, want power.State) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		s, err := d.State(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if s == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("power state still %s, want %s", s, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestIPMISim drives OpenIPMI's ipmi_sim over lanplus: state, on, off,
// cycle, and a boot device that ipmitool reads back.
func TestIPMISim(t *testing.T) {
	sim := powertest.StartSim(t, "admin", "s3cret-pw")
	ctx := context.Background()
	d, err := power.Dial(power.Config{URL: sim.URL(), User: "admin", Password: "s3cret-pw", Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	waitState(t, d, power.StateOff)
	if err := d.On(ctx); err != nil {
		t.Fatal(err)
	}
	waitState(t, d, power.StateOn)
	if out, err := sim.IPMITool("chassis", "power", "status"); err != nil || !strings.Contains(out, "is on") {
		t.Fatalf("ipmitool after On: %q, %v", out, err)
	}
	if err := d.Cycle(ctx); err != nil {
		t.Fatal(err)
	}
	waitState(t, d, power.StateOn)
	if err := d.Off(ctx); err != nil {
		t.Fatal(err)
	}
	waitState(t, d, power.StateOff)
	// Cycle of a node that is off powers it on.
	if err := d.Cycle(ctx); err != nil {
		t.Fatal(err)
	}
	waitState(t, d, power.StateOn)
	if err := power.Do(ctx, d, power.ActionOff); err != nil {
		t.Fatal(err)
	}
	waitState(t, d, power.StateOff)

	// ipmi_sim keeps only the device selector of the boot flags (its
	// chassis_control has no place for the persistent and EFI bits), so
	// ipmitool reads those back as "only next boot", "legacy": the
	// device is what can be checked.
	for _, tc := range []struct {
		boot power.Boot
		want string // in ipmitool's bootparam get 5
	}{
		{power.Boot{Device: power.DevicePXE, UEFI: true}, "Boot Device Selector : Force PXE"},
		{power.Boot{Device: power.DeviceDisk, Persistent: true, UEFI: true}, "Boot Device Selector : Force Boot from default Hard-Drive"},
		{power.Boot{Device: power.DevicePXE, Persistent: true}, "Boot Device Selector : Force PXE"},
	} {
		if err := d.SetBootDevice(ctx, tc.boot); err != nil {
			t.Fatal(err)
		}
		out, err := sim.IPMITool("chassis", "bootparam", "get", "5")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, tc.want) {
			t.Errorf("after SetBootDevice(%+v), ipmitool chassis bootparam get 5 lacks %q:\n%s", tc.boot, tc.want, out)
		}
	}
	if err := d.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	if err := d.SoftOff(ctx); err != nil {
		t.Fatal(err)
	}
	calls := sim.Calls()
	for _, want := range []string{"set power 1", "set power 0", "set boot pxe", "set boot default", "set shutdown 1"} {
		if !strings.Contains(calls, want) {
			t.Errorf("the BMC's chassis never got %q; its calls:\n%s", want, calls)
		}
	}
	// Reset of a node that is off powers it on, never a hard reset.
	if strings.Contains(calls, "set reset") {
		t.Errorf("Reset of an off node reset it rather than powering it on:\n%s", calls)
	}
	waitState(t, d, power.StateOn)
	if err := d.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	if calls := sim.Calls(); !strings.Contains(calls, "set reset 1") {
		t.Errorf("Reset of a node that is on sent no reset:\n%s", calls)
	}
}

// TestIPMISimRefusals: a wrong password is refused clearly and at once,
// even though ipmi_sim would take anyone over cipher suite 0 (which
// rackboot never offers); a BMC nobody answers for fails within a
// bounded time, naming the BMC.
func TestIPMISimRefusals(t *testing.T) {
	sim := powertest.StartSim(t, "admin", "s3cret-pw")
	ctx := context.Background()
	if out, err := sim.IPMITool("-C", "0", "-P", "wrong", "chassis", "power", "status"); err == nil {
		t.Logf("ipmi_sim lets ipmitool in over cipher suite 0 with a wrong password (%s): rackboot must never offer it", strings.TrimSpace(out))
	}
	for _, tc := range []struct {
		name, user, password string
	}{
		{"wrong password", "admin", "wrong"},
		{"unknown user", "nobody", "s3cret-pw"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := power.Dial(power.Config{URL: sim.URL(), User: tc.user, Password: tc.password, Timeout: 2 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			_, err = d.State(ctx)
			if !errors.Is(err, power.ErrAuth) {
				t.Fatalf("State with %s: %v; want ErrAuth", tc.name, err)
			}
			var be *power.BMCError
			if !errors.As(err, &be) || be.BMC != sim.URL() || !strings.Contains(err.Error(), sim.URL()) {
				t.Errorf("error does not name the BMC %s: %v", sim.URL(), err)
			}
			// Bounded, whatever the load: never a hang. (That it is not
			// retried is the driver's unit test's to show.)
			if took := time.Since(start); took > 30*time.Second {
				t.Errorf("a refused password took %s", took)
			}
			t.Logf("%s: %v", tc.name, err)
		})
	}

	for _, tc := range []struct {
		name, addr string
	}{
		{"silent port", powertest.SilentUDP(t)},
		{"closed port", "127.0.0.1:" + strconv.Itoa(powertest.FreeUDPPort(t))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url := "ipmi://" + tc.addr
			d, err := power.Dial(power.Config{URL: url, User: "admin", Password: "x", Timeout: 500 * time.Millisecond, Attempts: 3, Backoff: 100 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			err = d.On(ctx)
			took := time.Since(start)
			if !errors.Is(err, power.ErrNoAnswer) || !strings.Contains(err.Error(), url) || !strings.Contains(err.Error(), "3 tries") {
				t.Fatalf("On against a %s: %v; want ErrNoAnswer naming %s after 3 tries", tc.name, err, url)
			}
			// 3 tries of at most 0.5s and backoff 0.1s + 0.2s: bounded,
			// whatever the load, never a hang.
			if took > 30*time.Second {
				t.Fatalf("On against a %s took %s", tc.name, took)
			}
			t.Logf("%s after %s: %v", tc.name, took.Round(time.Millisecond), err)
		})
	}
}
