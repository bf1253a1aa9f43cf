//go:build integration

package main

import (
	"bytes"
	"context"
	"database/sql"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"github.com/rackboot/rackboot/api"
	"github.com/rackboot/rackboot/appliance"
	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/power/powertest"
	"github.com/rackboot/rackboot/store"
	"github.com/rackboot/rackboot/store/sqlite"
)

// TestPowerThroughIPMISim drives the whole path with a real BMC: the
// CLI sets a node's BMC and powers it through the API, which keeps the
// password sealed in the store and reaches OpenIPMI's ipmi_sim with the
// IPMI driver; ipmitool reads the result back on its own.
func TestPowerThroughIPMISim(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	db := filepath.Join(dir, "db")
	st, err := sqlite.Open(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	mac, _ := net.ParseMAC("52:54:00:aa:bb:02")
	n, _, _ := st.EnrollClient(ctx, boot.Client{MAC: mac, Arch: boot.ClientX64UEFI}, time.Now())
	as := api.New(st)
	secrets, err := appliance.LoadSecrets(dir, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	as.Secrets = secrets
	if err := appliance.SetBootstrapToken(ctx, st, dir, "boot-tok"); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(as.Handler())
	defer srv.Close()
	t.Setenv("HOME", dir)
	t.Setenv("RACKBOOT_CONFIG", "")
	t.Setenv("RACKBOOT_SERVER", srv.URL)
	t.Setenv("RACKBOOT_TOKEN", "boot-tok")
	cli := func(stdin string, args ...string) (string, error) {
		var out, errb bytes.Buffer
		err := nodeCmd(ctx, args[1:], strings.NewReader(stdin), &out, &errb)
		return out.String() + errb.String(), err
	}
	must := func(stdin string, args ...string) string {
		t.Helper()
		out, err := cli(stdin, args...)
		if err != nil {
			t.Fatalf("rackboot %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}

	sim := powertest.StartSim(t, "rackboot", "bmc-s3cret")
	pwFile := filepath.Join(dir, "bmc.pw")
	os.WriteFile(pwFile, []byte("bmc-s3cret\n"), 0o600)
	out := must("", "node", "set", n.ID, "--name", "gpu-07", "--bmc", sim.URL(), "--bmc-user", "rackboot", "--bmc-password-file", pwFile)
	if !strings.Contains(out, sim.URL()) || !strings.Contains(out, "set (never shown)") || strings.Contains(out, "bmc-s3cret") {
		t.Fatalf("node set --bmc:\n%s", out)
	}
	// The database holds no clear password.
	raw, err := sql.Open("sqlite", "file:"+db)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	var sealed []byte
	if err := raw.QueryRow(`SELECT password FROM bmcs WHERE node_id = ?`, n.ID).Scan(&sealed); err != nil || len(sealed) == 0 || bytes.Contains(sealed, []byte("bmc-s3cret")) {
		t.Fatalf("stored password %q, %v", sealed, err)
	}

	if out := must("", "node", "power", "gpu-07", "status"); !strings.Contains(out, "power off") {
		t.Fatalf("power status:\n%s", out)
	}
	must("", "node", "power", "gpu-07", "on")
	if out := must("", "node", "power", "gpu-07", "status"); !strings.Contains(out, "power on") {
		t.Fatalf("power status after on:\n%s", out)
	}
	if out, err := sim.IPMITool("chassis", "power", "status"); err != nil || !strings.Contains(out, "is on") {
		t.Fatalf("ipmitool after power on: %s %v", out, err)
	}
	must("", "node", "boot-device", "gpu-07", "pxe")
	if out, err := sim.IPMITool("chassis", "bootparam", "get", "5"); err != nil || !strings.Contains(out, "Force PXE") {
		t.Fatalf("ipmitool bootparam get 5 after boot-device pxe: %s %v", out, err)
	}
	must("", "node", "boot-device", "gpu-07", "disk", "--persistent")
	if out, err := sim.IPMITool("chassis", "bootparam", "get", "5"); err != nil || !strings.Contains(out, "Force Boot from default Hard-Drive") {
		t.Fatalf("ipmitool bootparam get 5 after boot-device disk: %s %v", out, err)
	}
	must("", "node", "power", "gpu-07", "cycle")
	must("", "node", "power", "gpu-07", "off")
	if out := must("", "node", "power", "gpu-07", "status"); !strings.Contains(out, "power off") {
		t.Fatalf("power status after off:\n%s", out)
	}
	events := must("", "node", "events", "gpu-07")
	for _, want := range []string{"power on", "power cycle", "power off", "boot device pxe, next boot, UEFI", "boot device disk, persistent, UEFI"} {
		if !strings.Contains(events, want) {
			t.Errorf("node events lack %q:\n%s", want, events)
		}
	}
	evs, _ := st.Events(ctx, store.EventFilter{NodeID: n.ID})
	for _, e := range evs {
		if e.Kind == "power" && e.Actor == "" {
			t.Errorf("power event without an actor: %+v", e)
		}
	}

	// A wrong password, given on stdin: a clear refusal, nothing hangs.
	must("wrong-password\n", "node", "set", "gpu-07", "--bmc", sim.URL(), "--bmc-user", "rackboot", "--bmc-password-file", "-")
	out, err = cli("", "node", "power", "gpu-07", "status")
	if err == nil || !strings.Contains(out+err.Error(), "refused the user name or password") || !strings.Contains(out+err.Error(), sim.URL()) {
		t.Fatalf("power status with a wrong password: %v\n%s", err, out)
	}
	// A BMC port nothing answers on: a clear error in bounded time.
	closed := "ipmi://127.0.0.1:" + strconv.Itoa(powertest.FreeUDPPort(t))
	must("", "node", "set", "gpu-07", "--bmc", closed, "--bmc-user", "rackboot")
	start := time.Now()
	out, err = cli("", "node", "power", "gpu-07", "on")
	if err == nil || !strings.Contains(out+err.Error(), "does not answer") || !strings.Contains(out+err.Error(), strings.TrimPrefix(closed, "ipmi://")) {
		t.Fatalf("power on, nothing at the BMC's port: %v\n%s", err, out)
	}
	if took := time.Since(start); took > 60*time.Second {
		t.Errorf("power on against a closed port took %s", took)
	}
	t.Logf("closed port: %v", err)
	if events := must("", "node", "events", "gpu-07"); !strings.Contains(events, "failed: ") {
		t.Errorf("the failed power on is not in the audit log:\n%s", events)
	}
}
