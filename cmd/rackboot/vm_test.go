package main

import (
	"bytes"
	"context"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rackboot/rackboot/api"
	"github.com/rackboot/rackboot/appliance"
	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/hypervisor"
	"github.com/rackboot/rackboot/hypervisor/virttest"
	"github.com/rackboot/rackboot/store"
	"github.com/rackboot/rackboot/store/sqlite"
)

// TestVMCommands drives hypervisor, flavor and vm through the API to a
// fake libvirt: what each prints, and what the daemon was asked.
func TestVMCommands(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := sqlite.Open(ctx, filepath.Join(dir, "db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	mac, _ := net.ParseMAC("52:54:00:aa:bb:02")
	n, _, _ := st.EnrollClient(ctx, boot.Client{MAC: mac, Arch: boot.ClientX64UEFI}, time.Now())
	inv, err := os.ReadFile(filepath.Join("..", "..", "agent", "inventory", "testdata", "a100x4.json"))
	if err != nil {
		t.Fatal(err)
	}
	st.SetInventory(ctx, n.ID, inv, nil)
	st.UpdateNode(ctx, n.ID, store.NodePatch{Name: ptrTo("a100-01")})
	st.CreateImage(ctx, store.Image{Name: "deb", Arch: boot.ArchX86_64, Format: "raw"})
	d := virttest.New([]boot.Arch{boot.ArchX86_64}, nil)
	as := api.New(st)
	as.VMs = &hypervisor.Service{Store: st, Dial: d.Dial}
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
		// Columns collapse to one space, so wants read as the lines do.
		return wide.ReplaceAllString(out.String()+errb.String(), " "), err
	}
	must := func(args ...string) string {
		t.Helper()
		out, err := cli(args...)
		if err != nil {
			t.Fatalf("rackboot %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	if out, err := cli("hypervisor", "add", "a100-01", "--uri", "qemu+tls://a100-01/system"); err == nil {
		t.Errorf("add without a bridge: %s", out)
	}
	out := must("hypervisor", "add", "a100-01", "--uri", "qemu+tls://a100-01/system", "--bridge", "br0", "--gpu", "mig:3g.20gb,3g.20gb")
	for _, want := range []string{"mig 3g.20gb,3g.20gb", "native (kvm) [x86_64]", "mig partitions used/free 0/8"} {
		if !strings.Contains(out, want) {
			t.Errorf("hypervisor add lacks %q:\n%s", want, out)
		}
	}
	if !strings.Contains(out, "agent never called in") {
		t.Errorf("hypervisor add with no agent yet:\n%s", out)
	}
	as.HypervisorAgent = func(node string, arch boot.Arch) (hypervisor.Agent, error) {
		return hypervisor.Agent{BinaryURL: "http://h/artifacts/" + string(arch) + "/rackboot-agent", SHA256: strings.Repeat("0f", 32), Config: "rackboot.api=http://h rackboot.node=" + node}, nil
	}
	out = must("hypervisor", "agent-token", "a100-01")
	for _, want := range []string{"token rbt_", "config rackboot.api=http://h rackboot.node=" + n.ID, "/artifacts/x86_64/rackboot-agent"} {
		if !strings.Contains(out, want) {
			t.Errorf("hypervisor agent-token lacks %q:\n%s", want, out)
		}
	}
	must("flavor", "create", "g1.mig3", "--vcpus", "8", "--memory", "32GiB", "--disk", "20", "--gpu", "mig:3g.20gb", "--gpu-model", "A100")
	if out := must("flavor", "list"); !strings.Contains(out, "32768") || !strings.Contains(out, "mig 3g.20gb A100") {
		t.Errorf("flavor list:\n%s", out)
	}
	out = must("vm", "create", "vm-1", "--flavor", "g1.mig3", "--image", "deb", "--dry-run")
	if !strings.HasPrefix(out, "# dry run: on hypervisor a100-01") || !strings.Contains(out, `type="mdev"`) || len(d.Calls()) != 1 {
		t.Errorf("dry run printed:\n%s\ncalls %v", out, d.Calls())
	}
	out = must("vm", "create", "vm-1", "--flavor", "g1.mig3", "--image", "deb")
	if !strings.Contains(out, "mig 3g.20gb 0000:") || !strings.Contains(out, "node state discovered") {
		t.Errorf("vm create:\n%s", out)
	}
	if out := must("vm", "show", "vm-1"); !strings.Contains(out, "state running") {
		t.Errorf("vm show:\n%s", out)
	}
	if out := must("vm", "stop", "vm-1"); !strings.Contains(out, "state shut off") {
		t.Errorf("vm stop:\n%s", out)
	}
	if out := must("hypervisor", "list"); !strings.Contains(out, "a100-01") || !strings.Contains(out, "1/7") {
		t.Errorf("hypervisor list:\n%s", out)
	}
	if out := must("vm", "list"); !strings.Contains(out, "vm-1") || !strings.Contains(out, "a100-01") {
		t.Errorf("vm list:\n%s", out)
	}
	if out := must("hypervisor", "drain", "a100-01"); !strings.Contains(out, "drained true") || !strings.Contains(out, "vms vm-1") {
		t.Errorf("hypervisor drain:\n%s", out)
	}
	if out, err := cli("vm", "create", "vm-2", "--flavor", "g1.mig3"); err == nil || !strings.Contains(err.Error(), "drained") {
		t.Errorf("create on a drained fleet: %v %s", err, out)
	}
	must("vm", "delete", "vm-1")
	if _, ok := d.Domain("vm-1"); ok {
		t.Error("vm-1's domain outlived vm delete")
	}
	must("hypervisor", "remove", "a100-01")
}

func ptrTo[T any](v T) *T { return &v }

var wide = regexp.MustCompile(`[ \t]{2,}`)
