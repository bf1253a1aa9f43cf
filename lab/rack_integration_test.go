//go:build integration

package lab

import (
	"context"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRackServes builds a rack with no nodes: rackboot must come up in
// the namespace, answer the host over the host link, and everything must
// be gone after Close.
func TestRackServes(t *testing.T) {
	RequireRoot(t)
	Require(t, "ip")
	dir := t.TempDir()
	bin := filepath.Join(dir, "rackboot")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/rackboot").CombinedOutput(); err != nil {
		t.Fatalf("build rackboot: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	name := nsName(t, "rack")
	r, err := StartRack(ctx, RackOptions{Name: name, Binary: bin, DataDir: filepath.Join(dir, "data"), Dir: filepath.Join(dir, "lab"),
		HostLink: mustPrefix("10.98.255.0/30"), Prefix: mustPrefix("10.98.0.0/24"),
		Nodes: []NodeSpec{{Name: "n0", Arch: "x86_64", Firmware: FirmwareUEFI, DiskGiB: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			r.Close()
		}
	}()
	resp, err := http.Get(r.URL + "/api/v1/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"openapi"`) {
		t.Fatalf("openapi over the host link: %d", resp.StatusCode)
	}
	if len(r.VMs) != 1 || r.VMs[0].MAC.String() != "52:54:00:1a:00:00" || len(r.VMs[0].ExtraNICs) != 1 {
		t.Fatalf("VMs: %+v", r.VMs)
	}
	if st, err := os.Stat(r.VMs[0].Disk); err != nil || st.Size() != 1<<30 {
		t.Fatalf("disk: %v %v", st, err)
	}
	r.Close()
	closed = true
	if _, err := os.Stat("/run/netns/" + name); err == nil {
		t.Error("namespace still there after Close")
	}
	if err := exec.Command("ip", "link", "show", hostIfName(name)).Run(); err == nil {
		t.Error("host link still there after Close")
	}
}

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }
