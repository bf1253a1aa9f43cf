package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rackboot/rackboot/api"
	"github.com/rackboot/rackboot/appliance"
	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/images/catalog"
	"github.com/rackboot/rackboot/store"
	"github.com/rackboot/rackboot/store/sqlite"
)

// TestCLIAgainstServer runs the client commands against a running API
// server on a real store, the way an operator's shell would.
func TestCLIAgainstServer(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := sqlite.Open(ctx, filepath.Join(dir, "db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	mac, _ := net.ParseMAC("52:54:00:aa:bb:01")
	n, _, _ := st.EnrollClient(ctx, boot.Client{MAC: mac, Arch: boot.ClientARM64UEFI}, time.Now())
	st.SetState(ctx, n.ID, store.StateAvailable)
	st.SetInventory(ctx, n.ID, json.RawMessage(`{}`), []string{"NVIDIA T4"})
	st.CreateImage(ctx, store.Image{Name: "x86img", Arch: boot.ArchX86_64, Format: "raw"})
	as := api.New(st)
	as.Catalog = &catalog.Catalog{Dir: filepath.Join(dir, "images")}
	if err := appliance.SetBootstrapToken(ctx, st, dir, "boot-tok"); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(as.Handler())
	defer srv.Close()
	t.Setenv("HOME", dir)
	t.Setenv("RACKBOOT_CONFIG", "")
	t.Setenv("RACKBOOT_SERVER", srv.URL)
	t.Setenv("RACKBOOT_TOKEN", "boot-tok")

	cli := func(stdin string, args ...string) (string, string, error) {
		var out, errb bytes.Buffer
		var err error
		if args[0] == "user" {
			err = userCmd(ctx, args[1:], strings.NewReader(stdin), &out, &errb)
		} else {
			err = run(ctx, args, &out, &errb)
		}
		return out.String(), errb.String(), err
	}
	must := func(args ...string) string {
		t.Helper()
		out, errOut, err := cli("", args...)
		if err != nil {
			t.Fatalf("rackboot %s: %v\n%s", strings.Join(args, " "), err, errOut)
		}
		return out
	}

	if out := must("node", "list", "--gpu", "t4"); !strings.Contains(out, n.ID) || !strings.Contains(out, "NVIDIA T4") {
		t.Errorf("node list --gpu t4:\n%s", out)
	}
	if out := must("node", "list", "--gpu", "a100"); strings.Contains(out, n.ID) {
		t.Errorf("node list --gpu a100 lists the T4 node:\n%s", out)
	}
	must("node", "set", n.ID, "--name", "arm-07", "--rack", "B2", "--position", "12", "--tags", "gpu, edge")
	out := must("node", "show", "arm-07")
	for _, want := range []string{"B2, unit 12", "gpu, edge", "available", "inspect, deploy"} {
		if !strings.Contains(out, want) {
			t.Errorf("node show lacks %q:\n%s", want, out)
		}
	}
	if _, _, err := cli("", "node", "deploy", "arm-07", "--image", "x86img"); err == nil || !strings.Contains(err.Error(), "409") || !strings.Contains(err.Error(), "x86_64") {
		t.Errorf("wrong-arch deploy: %v", err)
	}
	if out := must("node", "burnin", "arm-07", "--duration", "1m", "--reason", "new"); !strings.Contains(out, "available → burnin") {
		t.Errorf("burnin: %s", out)
	}
	if _, _, err := cli("", "node", "inspect", "arm-07"); err == nil || !strings.Contains(err.Error(), "node is burnin") {
		t.Errorf("inspect during burn-in: %v", err)
	}
	if out := must("node", "add", "52:54:00:aa:bb:09", "--arch", "x86_64", "--name", "x86-09"); !strings.Contains(out, "x86-09") || !strings.Contains(out, "discovered") {
		t.Errorf("node add: %s", out)
	}
	if _, _, err := cli("", "node", "add", "52:54:00:aa:bb:09"); err == nil || !strings.Contains(err.Error(), "already has MAC") {
		t.Errorf("node add of a known MAC: %v", err)
	}
	must("node", "delete", "x86-09")
	must("node", "maintenance", "arm-07", "on", "--reason", "PSU")
	if out := must("node", "events", "arm-07"); !strings.Contains(out, "maintenance on PSU") || !strings.Contains(out, "bootstrap") {
		t.Errorf("node events:\n%s", out)
	}
	var nodes []api.Node
	if err := json.Unmarshal([]byte(must("node", "list", "--output", "json")), &nodes); err != nil || len(nodes) != 1 || nodes[0].State != "maintenance" {
		t.Errorf("node list --output json: %+v %v", nodes, err)
	}

	secret := strings.TrimSpace(must("token", "create", "--name", "dashboards", "--role", "readonly"))
	if !strings.HasPrefix(secret, api.TokenPrefix) {
		t.Fatalf("token create printed %q", secret)
	}
	if out := must("token", "list"); !strings.Contains(out, "dashboards") || strings.Contains(out, secret) {
		t.Errorf("token list:\n%s", out)
	}
	// The new token, through the config file, may read and not act.
	os.MkdirAll(filepath.Join(dir, ".config", "rackboot"), 0o755)
	os.WriteFile(filepath.Join(dir, ".config", "rackboot", "client.yaml"), []byte("server: "+srv.URL+"\ntoken: "+secret+"\n"), 0o600)
	t.Setenv("RACKBOOT_TOKEN", "")
	t.Setenv("RACKBOOT_SERVER", "")
	if out := must("node", "list"); !strings.Contains(out, "arm-07") {
		t.Errorf("readonly list:\n%s", out)
	}
	if _, _, err := cli("", "node", "maintenance", "arm-07", "off"); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("readonly action: %v", err)
	}
	t.Setenv("RACKBOOT_TOKEN", "boot-tok")

	if _, errOut, err := cli("long enough password\n", "user", "add", "tess", "--role", "tech"); err != nil {
		t.Fatalf("user add: %v %s", err, errOut)
	}
	if _, _, err := cli("short\n", "user", "add", "tom", "--role", "tech"); err == nil || !strings.Contains(err.Error(), "12 characters") {
		t.Errorf("short password: %v", err)
	}
	if out := must("user", "list"); !strings.Contains(out, "tess") || !strings.Contains(out, "tech") {
		t.Errorf("user list:\n%s", out)
	}
	must("user", "delete", "tess")
	imgFile := filepath.Join(dir, "tiny.raw")
	os.WriteFile(imgFile, bytes.Repeat([]byte("disk"), 1<<16), 0o644)
	if out := must("image", "add", "tiny", "--arch", "aarch64", "--file", imgFile); !strings.Contains(out, "image tiny: aarch64, raw, 262144 bytes") {
		t.Errorf("image add:\n%s", out)
	}
	if _, _, err := cli("", "image", "add", "tiny2", "--arch", "aarch64", "--url", "file:///etc/passwd.raw"); err == nil || !strings.Contains(err.Error(), "only http") {
		t.Errorf("image add file://: %v", err)
	}
	if out := must("image", "list"); !strings.Contains(out, "x86img") || !strings.Contains(out, "tiny") {
		t.Errorf("image list:\n%s", out)
	}
	must("node", "delete", "arm-07")
	if _, _, err := cli("", "node", "show", "arm-07"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("show deleted node: %v", err)
	}
}
