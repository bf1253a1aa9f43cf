package ramdisk

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/rackboot/rackboot/agent/kmod"
)

// TestOverlay: an operator's driver tree joins the initrd after
// rackboot's archives; its modules join the module indexes, so the
// agent loads the driver by its devices' aliases as it loads the
// kernel's own, and one of a kernel module's name replaces it.
func TestOverlay(t *testing.T) {
	const release = "6.1.0-9-amd64"
	deb := fakeDeb(t, release, testModules, "kernel/lib/crc-t10dif.ko\n")
	kf, _, err := readKernel(deb, selection{Named: []string{"virtio_net", "nvme"}})
	if err != nil {
		t.Fatal(err)
	}
	var mods bytes.Buffer
	if _, err := modulesArchive(&mods, kf); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name string, mode os.FileMode, b []byte) {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, mode); err != nil {
			t.Fatal(err)
		}
	}
	m := "lib/modules/" + release + "/"
	write("usr/bin/nvidia-smi", 0o755, []byte("#!/bin/true\n"))
	write("usr/lib/x86_64-linux-gnu/libnvidia-ml.so.550.54", 0o644, []byte("ELF"))
	os.Symlink("libnvidia-ml.so.550.54", filepath.Join(dir, "usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1"))
	write(m+"updates/dkms/nvidia.ko", 0o644, elfModule("name=nvidia", "depends=nvme_core", "alias=pci:v000010DEd*sv*sd*bc03sc*i*"))
	write(m+"updates/virtio_net.ko", 0o644, elfModule("name=virtio_net", "depends=", "alias=virtio:d00000001v00001AF4"))
	reserved := reservedPaths([]string{"rackboot-agent", "init"}, release)
	ov, err := readOverlay(dir, release, mods.Bytes(), reserved)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]string{"nvidia", "virtio_net"}, ov.modules); d != "" || ov.files != 4 || len(ov.key) != 64 {
		t.Errorf("overlay: modules (-want +got) %s, %d files, key %q", d, ov.files, ov.key)
	}
	// As the kernel unpacks it: the overlay comes last, so its indexes
	// are the ones left.
	initrd, err := compress(mods.Bytes(), ov.archive)
	if err != nil {
		t.Fatal(err)
	}
	ents, err := List(bytes.NewReader(initrd))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]Entry{}
	for _, e := range ents {
		got[e.Name] = e
	}
	// rackboot's own directories keep their modes: the tree's are not
	// packed for them.
	walkNewc(ov.archive, func(e Entry, _ []byte) {
		if baseDirs[e.Name] {
			t.Errorf("the overlay packs rackboot's directory %s: %+v", e.Name, e)
		}
	})
	if e := got["usr/bin/nvidia-smi"]; e.Mode&0o777 != 0o755 {
		t.Errorf("nvidia-smi: %+v", e)
	}
	if e := got["usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1"]; e.Link != "libnvidia-ml.so.550.54" {
		t.Errorf("library link: %+v", e)
	}
	idx := t.TempDir()
	var last map[string][]byte = map[string][]byte{}
	walkNewc(append(append([]byte{}, mods.Bytes()...), ov.archive...), func(e Entry, data []byte) {
		if strings.HasPrefix(e.Name, m+"modules.") {
			last[strings.TrimPrefix(e.Name, m)] = data
		}
	})
	for name, b := range last {
		os.WriteFile(filepath.Join(idx, name), b, 0o644)
	}
	ix, err := kmod.ReadIndex(idx)
	if err != nil {
		t.Fatal(err)
	}
	if got := ix.Match("pci:v000010DEd00002335sv000010DEsd000018BEbc03sc02i00"); !cmp.Equal(got, []string{"nvidia"}) {
		t.Errorf("an H200 matches %v", got)
	}
	closure, err := ix.Closure("nvidia")
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	for _, d := range closure {
		order = append(order, d.Path)
	}
	if d := cmp.Diff([]string{"kernel/drivers/nvme/host/nvme-core.ko", "updates/dkms/nvidia.ko"}, order); d != "" {
		t.Errorf("nvidia's load order (-want +got):\n%s", d)
	}
	// The overlay's virtio_net replaced the kernel's: its path, its
	// (no) dependencies, its alias only.
	if dep, _ := ix.Lookup("virtio_net"); dep.Path != "updates/virtio_net.ko" || len(dep.Deps) != 0 {
		t.Errorf("virtio_net: %+v", dep)
	}
	if got := ix.Match("virtio:d00000001v00001AF4"); !cmp.Equal(got, []string{"virtio_net"}) {
		t.Errorf("virtio net matches %v", got)
	}
	if dep, ok := ix.Lookup("nvme"); !ok || len(dep.Deps) != 1 || !ix.Builtin("crc_t10dif") {
		t.Errorf("the kernel's nvme and builtins: %+v %v", dep, ok)
	}
	// The same tree packs to the same key; a changed file to another.
	again, _ := readOverlay(dir, release, mods.Bytes(), reserved)
	write("usr/bin/nvidia-smi", 0o755, []byte("#!/bin/false\n"))
	changed, _ := readOverlay(dir, release, mods.Bytes(), reserved)
	if again.key != ov.key || changed.key == ov.key {
		t.Errorf("keys: %s, again %s, changed %s", ov.key, again.key, changed.key)
	}

	for _, tc := range []struct {
		name string
		make func(dir string)
		want string
	}{
		{"a module for another kernel", func(d string) {
			os.MkdirAll(filepath.Join(d, "lib/modules/6.1.0-8-amd64"), 0o755)
			os.WriteFile(filepath.Join(d, "lib/modules/6.1.0-8-amd64/nvidia.ko"), elfModule("name=nvidia"), 0o644)
		}, "module for kernel 6.1.0-8-amd64"},
		{"a module that needs one nobody has", func(d string) {
			os.MkdirAll(filepath.Join(d, m), 0o755)
			os.WriteFile(filepath.Join(d, m+"nvidia.ko"), elfModule("name=nvidia", "depends=drm"), 0o644)
		}, "needs drm"},
		{"the agent replaced", func(d string) {
			os.MkdirAll(filepath.Join(d, "bin"), 0o755)
			os.WriteFile(filepath.Join(d, "bin/rackboot-agent"), []byte("x"), 0o755)
		}, "rackboot's own"},
		{"the module index replaced", func(d string) {
			os.MkdirAll(filepath.Join(d, m), 0o755)
			os.WriteFile(filepath.Join(d, m+"modules.alias"), []byte("alias x y\n"), 0o644)
		}, "rackboot's own"},
		{"a directory of the ramdisk replaced", func(d string) { os.Symlink("/tmp", filepath.Join(d, "usr")) }, "a directory of the ramdisk"},
		{"a FIFO", func(d string) { syscall.Mkfifo(filepath.Join(d, "pipe"), 0o644) }, "carries files, directories and symlinks"},
		{"a device node replaced", func(d string) {
			os.MkdirAll(filepath.Join(d, "dev"), 0o755)
			os.Symlink("/tmp/x", filepath.Join(d, "dev/null"))
		}, "rackboot's own"},
		{"a module as a link", func(d string) {
			os.MkdirAll(filepath.Join(d, m), 0o755)
			os.Symlink("/lib/modules/6.1.0-8-amd64/nvidia.ko", filepath.Join(d, m+"nvidia.ko"))
		}, "is a symlink"},
		{"a module that is no ELF", func(d string) {
			os.MkdirAll(filepath.Join(d, m), 0o755)
			os.WriteFile(filepath.Join(d, m+"nvidia.ko"), []byte("not elf"), 0o644)
		}, "nvidia.ko"},
	} {
		d := t.TempDir()
		tc.make(d)
		if _, err := readOverlay(d, release, mods.Bytes(), reserved); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
	f := filepath.Join(t.TempDir(), "file")
	os.WriteFile(f, nil, 0o644)
	if _, err := readOverlay(f, release, mods.Bytes(), reserved); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("a file as the overlay: %v", err)
	}
}
