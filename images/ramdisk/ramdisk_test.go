package ramdisk

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/rackboot/rackboot/agent/kmod"
	"github.com/rackboot/rackboot/firmware"
)

// elfModule returns a minimal ELF relocatable object whose .modinfo holds
// the given key=value strings, as a kernel module's does.
func elfModule(modinfo ...string) []byte {
	info := []byte(strings.Join(modinfo, "\x00") + "\x00")
	shstr := []byte("\x00.modinfo\x00.shstrtab\x00")
	var b bytes.Buffer
	le := binary.LittleEndian
	shoff := uint64(64 + len(info) + len(shstr))
	b.Write([]byte{0x7f, 'E', 'L', 'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	binary.Write(&b, le, struct {
		Type, Machine                                        uint16
		Version                                              uint32
		Entry, Phoff, Shoff                                  uint64
		Flags                                                uint32
		Ehsize, Phentsize, Phnum, Shentsize, Shnum, Shstrndx uint16
	}{1, 62, 1, 0, 0, shoff, 0, 64, 0, 0, 64, 3, 2})
	b.Write(info)
	b.Write(shstr)
	type sh struct {
		Name, Type             uint32
		Flags, Addr, Off, Size uint64
		Link, Info             uint32
		Addralign, Entsize     uint64
	}
	binary.Write(&b, le, sh{})
	binary.Write(&b, le, sh{Name: 1, Type: 1, Off: 64, Size: uint64(len(info)), Addralign: 1})
	binary.Write(&b, le, sh{Name: 10, Type: 3, Off: uint64(64 + len(info)), Size: uint64(len(shstr)), Addralign: 1})
	return b.Bytes()
}

// fakeDeb returns a kernel package: a vmlinuz, modules.builtin and the
// modules given by path, in tar order.
func fakeDeb(t *testing.T, release string, modules [][2]string, builtin string) []byte {
	t.Helper()
	return packDeb(t, func(add func(name string, b []byte)) {
		add("boot/vmlinuz-"+release, []byte("KERNEL "+release))
		add("lib/modules/"+release+"/modules.builtin", []byte(builtin))
		for _, m := range modules {
			add("lib/modules/"+release+"/"+m[0], elfModule(strings.Split(m[1], "|")...))
		}
		add("usr/share/doc/x/changelog.gz", []byte("x"))
	})
}

// packDeb builds a .deb whose data.tar.gz holds the files fill adds.
func packDeb(t *testing.T, fill func(add func(name string, b []byte))) []byte {
	t.Helper()
	var data bytes.Buffer
	gz := gzip.NewWriter(&data)
	tw := tar.NewWriter(gz)
	tw.WriteHeader(&tar.Header{Name: "./boot/", Mode: 0o755, Typeflag: tar.TypeDir})
	fill(func(name string, b []byte) {
		tw.WriteHeader(&tar.Header{Name: "./" + name, Mode: 0o644, Size: int64(len(b)), Typeflag: tar.TypeReg})
		tw.Write(b)
	})
	tw.Close()
	gz.Close()
	var deb bytes.Buffer
	deb.WriteString("!<arch>\n")
	member := func(name string, b []byte) {
		fmt.Fprintf(&deb, "%-16s%-12d%-6d%-6d%-8s%-10d`\n", name, 0, 0, 0, "100644", len(b))
		deb.Write(b)
		if len(b)%2 == 1 {
			deb.WriteByte('\n')
		}
	}
	member("debian-binary", []byte("2.0\n"))
	member("control.tar.gz", []byte("x"))
	member("data.tar.gz", data.Bytes())
	return deb.Bytes()
}

// testModules: virtio_net needs net_failover needs failover (which comes
// first in the package, so it takes a second pass); nvme needs nvme_core
// and the built-in crc_t10dif; unused is left out.
var testModules = [][2]string{
	{"kernel/net/core/failover.ko", "name=failover|depends="},
	{"kernel/drivers/net/virtio_net.ko", "name=virtio_net|depends=net_failover|alias=virtio:d00000001v*"},
	{"kernel/drivers/net/net_failover.ko", "name=net_failover|depends=failover"},
	{"kernel/drivers/nvme/host/nvme-core.ko", "name=nvme_core|depends=crc-t10dif"},
	{"kernel/drivers/nvme/host/nvme.ko", "name=nvme|depends=nvme-core|alias=pci:v*d*sv*sd*bc01sc08i02*|softdep=pre: crc32c"},
	{"kernel/drivers/unused.ko", "name=unused|depends=|alias=pci:v0000FFFFd*"},
}

func TestModulesArchive(t *testing.T) {
	deb := fakeDeb(t, "6.1.0-9-amd64", testModules, "kernel/lib/crc-t10dif.ko\n")
	kf, missing, err := readKernel(deb, selection{Named: []string{"virtio_net", "nvme", "crc_t10dif", "ice"}})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"ice"}, missing); diff != "" {
		t.Errorf("missing (-want +got):\n%s", diff)
	}
	if kf.Release != "6.1.0-9-amd64" || string(kf.Vmlinuz) != "KERNEL 6.1.0-9-amd64" {
		t.Errorf("release %q, vmlinuz %q", kf.Release, kf.Vmlinuz)
	}
	var buf bytes.Buffer
	names, err := modulesArchive(&buf, kf)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"failover", "net_failover", "nvme", "nvme_core", "virtio_net"}, names); diff != "" {
		t.Errorf("modules (-want +got):\n%s", diff)
	}
	// The archive, concatenated after another and compressed as Build
	// writes it, lists parents before children.
	other := &bytes.Buffer{}
	writeTree(other, []file{{"init", []byte("x")}})
	initrd, err := compress(other.Bytes(), buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	ents, err := List(bytes.NewReader(initrd))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		n := e.Name
		if e.IsDir() {
			n += "/"
		}
		got = append(got, n)
	}
	m := "lib/modules/6.1.0-9-amd64/"
	want := []string{"init", "lib/", "lib/modules/", m, m + "modules.dep", m + "modules.alias", m + "modules.builtin",
		m + "kernel/", m + "kernel/drivers/", m + "kernel/drivers/net/", m + "kernel/drivers/net/net_failover.ko",
		m + "kernel/drivers/net/virtio_net.ko", m + "kernel/drivers/nvme/", m + "kernel/drivers/nvme/host/",
		m + "kernel/drivers/nvme/host/nvme-core.ko", m + "kernel/drivers/nvme/host/nvme.ko",
		m + "kernel/net/", m + "kernel/net/core/", m + "kernel/net/core/failover.ko"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("initrd layout (-want +got):\n%s", diff)
	}

	// What agent/kmod reads back from the archive loads every module
	// after what it needs and finds the drivers by alias.
	dir := t.TempDir()
	files := map[string][]byte{}
	{
		// Unpack the modules archive's index files.
		raw := buf.Bytes()
		for _, name := range []string{"modules.dep", "modules.alias", "modules.builtin"} {
			i := bytes.Index(raw, []byte(m+name+"\x00"))
			if i < 0 {
				t.Fatalf("no %s in the archive", name)
			}
			size, _ := parseHex(raw[i-110+54 : i-110+62])
			start := (i + len(m+name) + 1 + 3) &^ 3
			files[name] = raw[start : start+size]
			os.WriteFile(filepath.Join(dir, name), files[name], 0o644)
		}
	}
	wantDep := "kernel/net/core/failover.ko:\n" +
		"kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko\n" +
		"kernel/drivers/nvme/host/nvme.ko: kernel/drivers/nvme/host/nvme-core.ko\n" +
		"kernel/drivers/nvme/host/nvme-core.ko:\n" +
		"kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko\n"
	if diff := cmp.Diff(wantDep, string(files["modules.dep"])); diff != "" {
		t.Errorf("modules.dep (-want +got):\n%s", diff)
	}
	ix, err := kmod.ReadIndex(dir)
	if err != nil {
		t.Fatal(err)
	}
	closure, err := ix.Closure("virtio_net", "nvme")
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	for _, d := range closure {
		order = append(order, kmod.ModuleName(d.Path))
	}
	if diff := cmp.Diff([]string{"failover", "net_failover", "virtio_net", "nvme_core", "nvme"}, order); diff != "" {
		t.Errorf("load order (-want +got):\n%s", diff)
	}
	if got := ix.Match("pci:v0000144Dd0000A808sv0000144Dsd0000A801bc01sc08i02"); !cmp.Equal(got, []string{"nvme"}) {
		t.Errorf("NVMe controller matches %v", got)
	}
	if !ix.Builtin("crc_t10dif") {
		t.Error("modules.builtin lost")
	}
}

func parseHex(b []byte) (int, error) {
	var n int
	_, err := fmt.Sscanf(string(b), "%x", &n)
	return n, err
}

func TestReadKernelMissingDependency(t *testing.T) {
	deb := fakeDeb(t, "6.1.0-9-amd64", [][2]string{{"kernel/a.ko", "name=a|depends=b"}}, "")
	if _, _, err := readKernel(deb, selection{Named: []string{"a"}}); err == nil || !strings.Contains(err.Error(), "lacks") {
		t.Errorf("a module whose dependency is missing: %v", err)
	}
	if _, _, err := readKernel([]byte("not a deb"), selection{}); err == nil {
		t.Error("not a deb: no error")
	}
}

func TestUpToDate(t *testing.T) {
	dir := t.TempDir()
	in := Inputs{Format: format, Arch: "x86_64", Kernel: Kernel{Package: "linux-image-6.1.0-9-amd64", Version: "6.1.1-1", DebSHA256: "aa"},
		Programs: map[string]string{"agent": "s1", "init": "s3"}, URoot: "v0.16.0", UInit: "agent", Modules: []string{"nvme"}}
	if why := upToDate(dir, in); why != "no earlier build" {
		t.Errorf("empty dir: %q", why)
	}
	vm, rd := []byte("kernel"), []byte("initrd")
	os.WriteFile(filepath.Join(dir, "vmlinuz"), vm, 0o644)
	os.WriteFile(filepath.Join(dir, "initrd"), rd, 0o644)
	m := Manifest{Inputs: in, Vmlinuz: Output{sha(vm), int64(len(vm))}, Initrd: Output{sha(rd), int64(len(rd))}}
	b, _ := json.Marshal(m)
	os.WriteFile(filepath.Join(dir, ManifestFile), b, 0o644)
	if why := upToDate(dir, in); why != "" {
		t.Errorf("same inputs: rebuild because %q", why)
	}
	for _, c := range []struct {
		change func(*Inputs)
		want   string
	}{
		{func(i *Inputs) { i.Kernel.Version = "6.1.2-1" }, "kernel changed"},
		{func(i *Inputs) { i.Programs["agent"] = "s2" }, "program agent changed"},
		{func(i *Inputs) { i.URoot = "v0.17.0" }, "u-root changed"},
		{func(i *Inputs) { i.Modules = []string{"nvme", "ice"} }, "module list changed"},
		{func(i *Inputs) { delete(i.Programs, "init") }, "commands changed"},
		{func(i *Inputs) { i.Programs["ls"] = "s4" }, "commands changed"},
		{func(i *Inputs) { i.UInit = "agent -v" }, "uinit changed"},
		{func(i *Inputs) { i.Format++ }, "new build format"},
		{func(i *Inputs) { i.PCIIDs.Version = "0.0~2026.11.01-1" }, "pci.ids changed"},
		{func(i *Inputs) { i.Dirs = []string{"kernel/drivers/ata/"} }, "module list changed"},
		{func(i *Inputs) { i.Nonfree = true }, "non-free firmware switched"},
		{func(i *Inputs) { i.Firmware = []FirmwarePackage{{Name: "firmware-bnx2x", Version: "1"}} }, "firmware packages changed"},
	} {
		in2 := in
		in2.Programs = maps.Clone(in.Programs)
		c.change(&in2)
		if why := upToDate(dir, in2); !strings.HasPrefix(why, c.want) {
			t.Errorf("changed input: %q, want %q", why, c.want)
		}
	}
	// A damaged or replaced output is rebuilt.
	os.WriteFile(filepath.Join(dir, "initrd"), []byte("initrX"), 0o644)
	if why := upToDate(dir, in); !strings.HasPrefix(why, "initrd changed") {
		t.Errorf("damaged initrd: %q", why)
	}
	os.Remove(filepath.Join(dir, "vmlinuz"))
	if why := upToDate(dir, in); !strings.HasPrefix(why, "kernel changed") {
		t.Errorf("missing kernel: %q", why)
	}
}

// TestFetchKernelCached: a verified cached package is used without
// asking the archive (the mirror here does not exist); a damaged one is
// not.
func TestFetchKernelCached(t *testing.T) {
	dir := t.TempDir()
	deb := fakeDeb(t, "6.1.0-9-amd64", testModules, "")
	k := Kernel{Meta: "linux-image-amd64", Package: "linux-image-6.1.0-9-amd64", Version: "6.1.1-1", DebSHA256: sha(deb)}
	os.WriteFile(filepath.Join(dir, debName(k)), deb, 0o644)
	b, _ := json.Marshal(k)
	os.WriteFile(filepath.Join(dir, "kernel.json"), b, 0o644)
	o := firmware.Options{Mirror: "http://127.0.0.1:1/debian", Suite: "bookworm"}
	got, gotDeb, err := fetchKernel(context.Background(), o, "linux-image-amd64", "amd64", dir, false)
	if err != nil {
		t.Fatal(err)
	}
	if got != k || !bytes.Equal(gotDeb, deb) {
		t.Errorf("cached kernel: %+v", got)
	}
	if _, _, err := fetchKernel(context.Background(), o, "linux-image-cloud-amd64", "amd64", dir, false); err == nil {
		t.Error("another flavour came from the cache")
	}
	os.WriteFile(filepath.Join(dir, debName(k)), append(deb, 'x'), 0o644)
	if _, _, err := fetchKernel(context.Background(), o, "linux-image-amd64", "amd64", dir, false); err == nil {
		t.Error("a damaged cached package was used")
	}
}

func TestParseArch(t *testing.T) {
	for in, want := range map[string]string{"amd64": "x86_64", "x86_64": "x86_64", "arm64": "aarch64", "aarch64": "aarch64"} {
		if a, err := ParseArch(in); err != nil || string(a) != want {
			t.Errorf("ParseArch(%q) = %q, %v", in, a, err)
		}
	}
	if _, err := ParseArch("riscv64"); err == nil {
		t.Error("riscv64 accepted")
	}
}

// TestPCIIDs: the database comes out of the package, plain or gzipped,
// and lands where the inventory looks; a package without it is an error.
func TestPCIIDs(t *testing.T) {
	ids := []byte("10de  NVIDIA Corporation\n\t2330  GH100 [H100 SXM5 80GB]\n")
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(ids)
	zw.Close()
	for name, deb := range map[string][]byte{
		"plain":   packDeb(t, func(add func(string, []byte)) { add("usr/share/misc/pci.ids", ids) }),
		"gzipped": packDeb(t, func(add func(string, []byte)) { add("usr/share/misc/pci.ids.gz", gz.Bytes()) }),
	} {
		got, err := pciIDsFromDeb(deb)
		if err != nil || !bytes.Equal(got, ids) {
			t.Errorf("%s: %q, %v", name, got, err)
		}
	}
	if _, err := pciIDsFromDeb(packDeb(t, func(add func(string, []byte)) { add("usr/share/doc/pci.ids/README", ids) })); err == nil {
		t.Error("a package without the database was accepted")
	}
	a, err := pciIDsArchive(ids)
	if err != nil {
		t.Fatal(err)
	}
	ents, err := List(bytes.NewReader(a))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name)
	}
	if want := []string{"usr", "usr/share", "usr/share/misc", "usr/share/misc/pci.ids"}; !slices.Equal(names, want) {
		t.Errorf("archive holds %v, want %v", names, want)
	}
}

// TestFetchPCIIDsCached: an intact cached package needs no archive; a
// damaged one is fetched again (here: fails, the mirror does not exist).
func TestFetchPCIIDsCached(t *testing.T) {
	dir := t.TempDir()
	ids := []byte("8086  Intel Corporation\n")
	deb := packDeb(t, func(add func(string, []byte)) { add("usr/share/misc/pci.ids", ids) })
	p := PCIIDs{Version: "0.0~2025.06.01-1", DebSHA256: sha(deb)}
	os.WriteFile(filepath.Join(dir, pciIDsDeb(p)), deb, 0o644)
	b, _ := json.Marshal(p)
	os.WriteFile(filepath.Join(dir, "pci.ids.json"), b, 0o644)
	o := firmware.Options{Mirror: "http://127.0.0.1:1/debian", Suite: "bookworm"}
	got, gotIDs, err := fetchPCIIDs(context.Background(), o, dir, false)
	if err != nil || got != p || !bytes.Equal(gotIDs, ids) {
		t.Fatalf("cached: %+v %q %v", got, gotIDs, err)
	}
	os.WriteFile(filepath.Join(dir, pciIDsDeb(p)), append(deb, 'x'), 0o644)
	if _, _, err := fetchPCIIDs(context.Background(), o, dir, false); err == nil {
		t.Error("a damaged cached package was used")
	}
}
