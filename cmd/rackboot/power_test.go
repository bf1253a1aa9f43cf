package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rackboot/rackboot/api"
	"github.com/rackboot/rackboot/appliance"
	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/internal/sealbox"
	"github.com/rackboot/rackboot/power"
	"github.com/rackboot/rackboot/store"
	"github.com/rackboot/rackboot/store/sqlite"
)

// onBMCs are in-process BMCs that remember who was powered on.
type onBMCs struct {
	mu sync.Mutex
	on map[string]int
}

type onDriver struct {
	b   *onBMCs
	url string
}

func (b *onBMCs) dial(c power.Config) (power.Driver, error) { return &onDriver{b, c.URL}, nil }
func (d *onDriver) State(context.Context) (power.State, error) {
	d.b.mu.Lock()
	defer d.b.mu.Unlock()
	if d.b.on[d.url] > 0 {
		return power.StateOn, nil
	}
	return power.StateOff, nil
}
func (d *onDriver) On(context.Context) error {
	d.b.mu.Lock()
	defer d.b.mu.Unlock()
	d.b.on[d.url]++
	return nil
}
func (d *onDriver) Off(context.Context) error                       { return nil }
func (d *onDriver) SoftOff(context.Context) error                   { return nil }
func (d *onDriver) Cycle(context.Context) error                     { return nil }
func (d *onDriver) Reset(context.Context) error                     { return nil }
func (d *onDriver) SetBootDevice(context.Context, power.Boot) error { return nil }
func (d *onDriver) Close() error                                    { return nil }

func TestCLIBulkPower(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := sqlite.Open(ctx, filepath.Join(dir, "db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	box, err := sealbox.New(sealbox.NewKey())
	if err != nil {
		t.Fatal(err)
	}
	as := api.New(st)
	as.Secrets = box
	bmcs := &onBMCs{on: map[string]int{}}
	as.PowerDial = bmcs.dial
	as.PowerOn = &power.Limiter{MaxConcurrent: 2, Rate: 1000}
	var ids []string
	for i := range 5 {
		mac, _ := net.ParseMAC(fmt.Sprintf("52:54:00:aa:cc:%02x", i))
		n, _, err := st.EnrollClient(ctx, boot.Client{MAC: mac, Arch: boot.ClientX64UEFI}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		rack := "C3"
		if i == 4 {
			rack = "C4"
		}
		if _, err := st.UpdateNode(ctx, n.ID, store.NodePatch{Rack: &rack}); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, n.ID)
		if i == 3 {
			continue // no BMC
		}
		if err := st.SetBMC(ctx, store.BMC{NodeID: n.ID, URL: fmt.Sprintf("ipmi://10.3.0.%d", i+1), User: "admin",
			Password: box.Seal([]byte("pw"), api.BMCPasswordAD(n.ID))}); err != nil {
			t.Fatal(err)
		}
	}
	if err := appliance.SetBootstrapToken(ctx, st, dir, "boot-tok"); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(as.Handler())
	defer srv.Close()
	t.Setenv("HOME", dir)
	t.Setenv("RACKBOOT_CONFIG", "")
	t.Setenv("RACKBOOT_SERVER", srv.URL)
	t.Setenv("RACKBOOT_TOKEN", "boot-tok")
	cli := func(args ...string) (string, error) {
		var out, errb bytes.Buffer
		err := run(ctx, args, &out, &errb)
		return out.String() + errb.String(), err
	}

	out, err := cli("node", "power", "--rack", "C3", "on")
	if err == nil || !strings.Contains(err.Error(), "1 of 4 nodes failed") {
		t.Errorf("node power --rack C3 on: %v\n%s", err, out)
	}
	for i, id := range ids[:4] {
		want := id + "  done"
		if i == 3 {
			want = id + "  failed: no BMC"
		}
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, ids[4]) || bmcs.on["ipmi://10.3.0.5"] != 0 {
		t.Errorf("a node of another rack was powered on:\n%s", out)
	}
	for i := range 3 {
		if c := bmcs.on[fmt.Sprintf("ipmi://10.3.0.%d", i+1)]; c != 1 {
			t.Errorf("BMC %d powered on %d times", i+1, c)
		}
	}
	if out, err := cli("node", "power", ids[0], ids[4], "on"); err != nil || !strings.Contains(out, ids[4]+"  done") {
		t.Errorf("node power N1 N2 on: %v\n%s", err, out)
	}
	if _, err := cli("node", "power", "--rack", "C3", ids[0], "on"); err == nil {
		t.Error("--rack with nodes: no error")
	}
	// A status asked through the API is stored, and shown.
	if out, err := cli("node", "power", ids[0], "status"); err != nil || !strings.Contains(out, "power on") {
		t.Fatalf("node power status: %v\n%s", err, out)
	}
	if out, err := cli("node", "show", ids[0]); err != nil || !strings.Contains(out, "Power:") || !strings.Contains(out, "on, asked") {
		t.Errorf("node show lacks the power state: %v\n%s", err, out)
	}
}
