package deploy

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/images/diskimage"
)

func TestWriteSeed(t *testing.T) {
	disk, f := imageOnDisk(t, boot.ArchX86_64)
	seed := Seed{Hostname: "gpu-01", SSHKeys: []string{"ssh-ed25519 AAAAC3Nza ann@laptop"}, InstanceID: "deploy-7",
		Network: []byte(`{"version":2,"ethernets":{"eth0":{"dhcp4":true}}}`)}
	if err := WriteSeed(f, 512, seed, true); err != nil {
		t.Fatal(err)
	}
	f.Close()
	d, err := diskfs.Open(disk, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	tab, err := d.GetPartitionTable()
	if err != nil {
		t.Fatal(err)
	}
	parts := tab.(*gpt.Table).Partitions
	if len(parts) != 3 || parts[2].Name != "cidata" || parts[1].End+1 != parts[2].Start {
		t.Fatalf("partitions: %+v %+v %+v", parts[0], parts[1], parts[len(parts)-1])
	}
	fs, err := d.GetFilesystem(3)
	if err != nil {
		t.Fatal(err)
	}
	if fs.Label() != "CIDATA" {
		t.Errorf("label %q", fs.Label())
	}
	read := func(n string) string {
		r, err := fs.OpenFile("/"+n, os.O_RDONLY)
		if err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		b, _ := io.ReadAll(r)
		return string(b)
	}
	if m := read("meta-data"); !strings.Contains(m, `"local-hostname":"gpu-01"`) || !strings.Contains(m, `"instance-id":"deploy-7"`) {
		t.Errorf("meta-data: %s", m)
	}
	if u := read("user-data"); !strings.HasPrefix(u, "#cloud-config\n") || !strings.Contains(u, `"ssh-ed25519 AAAAC3Nza ann@laptop"`) {
		t.Errorf("user-data: %s", u)
	}
	if n := read("network-config"); !strings.Contains(n, `"dhcp4":true`) {
		t.Errorf("network-config: %s", n)
	}
}

func TestSeedRefusals(t *testing.T) {
	for _, s := range []Seed{
		{Hostname: "", InstanceID: "i"},
		{Hostname: "a b", InstanceID: "i"},
		{Hostname: "a", InstanceID: ""},
		{Hostname: "a", InstanceID: "i", SSHKeys: []string{"ssh-rsa x\nruncmd: [reboot]"}},
		{Hostname: "a", InstanceID: "i", Network: []byte("{")},
	} {
		if _, err := s.files(); err == nil {
			t.Errorf("%+v: no error", s)
		}
	}
	// An image that fills the disk leaves no room for a seed.
	dir := t.TempDir()
	img := filepath.Join(dir, "img")
	diskimage.Build(diskimage.Options{Name: "s", Arch: boot.ArchX86_64, Output: img, Loader: []byte("l"), Kernel: []byte("k"), Initrd: []byte("i")})
	f, _ := os.OpenFile(img, os.O_RDWR, 0)
	defer f.Close()
	if err := WriteSeed(f, 512, Seed{Hostname: "a", InstanceID: "i"}, false); err == nil || !strings.Contains(err.Error(), "no room") {
		t.Errorf("full disk: %v", err)
	}
}
