package netup

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestPhysical(t *testing.T) {
	root := t.TempDir()
	mk := func(name, mac string, device bool) {
		dir := filepath.Join(root, "sys", "class", "net", name)
		os.MkdirAll(dir, 0o755)
		os.WriteFile(filepath.Join(dir, "address"), []byte(mac+"\n"), 0o644)
		if device {
			os.Symlink("../../../devices/pci0000:00/0000:00:03.0", filepath.Join(dir, "device"))
			os.MkdirAll(filepath.Join(root, "sys", "devices", "pci0000:00", "0000:00:03.0"), 0o755)
		}
	}
	mk("lo", "00:00:00:00:00:00", false)
	mk("br0", "02:00:00:00:00:01", false)
	mk("enp0s4", "52:54:00:AA:00:02", true)
	mk("enp0s3", "52:54:00:aa:00:01", true)
	got, err := Physical(root)
	if err != nil {
		t.Fatal(err)
	}
	want := []NIC{{Name: "enp0s3", MAC: "52:54:00:aa:00:01"}, {Name: "enp0s4", MAC: "52:54:00:aa:00:02"}}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
	if _, err := Physical(filepath.Join(root, "nothing")); err == nil {
		t.Error("a root without /sys/class/net: no error")
	}
}
