package deploy

import (
	"strings"
	"testing"
)

func TestChoose(t *testing.T) {
	ssd, hdd := false, true
	disks := []Disk{
		{Name: "/dev/sda", Size: 4000 * gib, Model: "ST4000NM000A", Serial: "ZC1", WWN: "0x5000c500a1", Rotational: true, ByPath: "pci-0000:00:17.0-ata-1"},
		{Name: "/dev/nvme0n1", Size: 960 * gib, Model: "SAMSUNG MZ1L2960HCJR", Serial: "S1", WWN: "eui.0025", ByPath: "pci-0000:c1:00.0-nvme-1"},
		{Name: "/dev/nvme1n1", Size: 480 * gib, Model: "SAMSUNG MZ1L2480", Serial: "S2", ByPath: "pci-0000:c2:00.0-nvme-1"},
		{Name: "/dev/sdb", Size: 2 * gib, Model: "USB DISK", Serial: "U1", Rotational: false},
	}
	for _, tc := range []struct {
		name string
		h    Hints
		want string // disk name, or "!" + part of the error
	}{
		{"no hints: smallest of at least 4 GiB", Hints{}, "/dev/nvme1n1"},
		{"serial", Hints{Serial: "s1"}, "/dev/nvme0n1"},
		{"name without /dev", Hints{Name: "sda"}, "/dev/sda"},
		{"wwn", Hints{WWN: "0X5000C500A1"}, "/dev/sda"},
		{"by-path", Hints{ByPath: "pci-0000:c2:00.0-nvme-1"}, "/dev/nvme1n1"},
		{"exact size", Hints{Size: 960}, "/dev/nvme0n1"},
		{"smallest of at least 500 GiB", Hints{MinSizeGiB: 500}, "/dev/nvme0n1"},
		{"smallest of at least 1 GiB", Hints{MinSizeGiB: 1}, "/dev/sdb"},
		{"rotational", Hints{Rotational: &hdd}, "/dev/sda"},
		{"solid state, at least 100 GiB", Hints{Rotational: &ssd, MinSizeGiB: 100}, "/dev/nvme1n1"},
		{"model and serial disagree", Hints{Model: "ST4000NM000A", Serial: "S1"}, `!no disk matches model="ST4000NM000A" serial="S1";`},
		{"too big", Hints{MinSizeGiB: 5000}, "!no disk matches min_size=5000 GiB;"},
	} {
		d, err := Choose(disks, tc.h)
		if strings.HasPrefix(tc.want, "!") {
			if err == nil || !strings.Contains(err.Error(), tc.want[1:]) || !strings.Contains(err.Error(), "/dev/nvme0n1 (960 GiB") {
				t.Errorf("%s: %v, %v", tc.name, d.Name, err)
			}
			continue
		}
		if err != nil || d.Name != tc.want {
			t.Errorf("%s: got %s (%v), want %s", tc.name, d.Name, err, tc.want)
		}
	}
	if _, err := Choose(nil, Hints{}); err == nil {
		t.Error("no disks: no error")
	}
	_, err := Choose(disks[3:], Hints{})
	if err == nil || !strings.Contains(err.Error(), "no disk matches no hints: the smallest disk of at least 4 GiB; the node has /dev/sdb (2 GiB, USB DISK, serial U1)") {
		t.Errorf("only a small disk: %v", err)
	}
}
