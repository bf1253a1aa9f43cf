// Package gpufake is a GPU hypervisor for tests of package gpuconf and
// of what drives it: a scripted nvidia-smi (and sriov-manage) answering
// from recorded outputs, and a fake sysfs tree laid out as the kernel
// lays it out. It is imported by tests only.
package gpufake

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// Reply is a recorded answer to one command line.
type Reply struct {
	File string // under the script's Dir; "" prints nothing
	Fail bool   // exits non-zero, as nvidia-smi does when it finds nothing
	Next string // the state after the command; "" keeps it
	Do   func() // what the command does to the fake sysfs tree
}

// Script is a scripted nvidia-smi (and sriov-manage): each state of the
// host answers exact command lines from recorded outputs, and every call
// is kept. An unscripted command fails the test.
type Script struct {
	T     testing.TB
	State string
	Table map[string]map[string]Reply
	// Dir holds the recorded outputs; "" means testdata/smi.
	Dir   string
	Calls []string
}

// ErrExit is what a Reply with Fail returns.
var ErrExit = errors.New("exit status 6")

// Run answers argv from the table; it implements gpuconf.Runner.
func (s *Script) Run(_ context.Context, argv []string) ([]byte, error) {
	s.T.Helper()
	line := strings.Join(argv, " ")
	s.Calls = append(s.Calls, line)
	r, ok := s.Table[s.State][line]
	if !ok {
		s.T.Errorf("state %s: unscripted command %q", s.State, line)
		return []byte("unscripted"), errors.New("exit status 2")
	}
	var out []byte
	if r.File != "" {
		dir := s.Dir
		if dir == "" {
			dir = "testdata/smi"
		}
		b, err := os.ReadFile(filepath.Join(dir, r.File))
		if err != nil {
			s.T.Fatal(err)
		}
		out = b
	}
	if r.Do != nil {
		r.Do()
	}
	if r.Next != "" {
		s.State = r.Next
	}
	if r.Fail {
		return out, ErrExit
	}
	return out, nil
}

// Tree is a fake sysfs under a temporary root: functions under
// sys/devices, links to them from sys/bus/pci/devices and
// sys/class/mdev_bus, mdevs on sys/bus/mdev/devices.
type Tree struct {
	T    testing.TB
	Root string
}

// NewTree makes an empty tree in a temporary directory.
func NewTree(t testing.TB) *Tree {
	tr := &Tree{T: t, Root: t.TempDir()}
	tr.Mkdir("sys/bus/pci/devices")
	tr.Mkdir("sys/class/mdev_bus")
	tr.Mkdir("sys/bus/mdev/devices")
	return tr
}

// Mkdir makes a directory and its parents under the root.
func (tr *Tree) Mkdir(p string) {
	if err := os.MkdirAll(filepath.Join(tr.Root, p), 0o755); err != nil {
		tr.T.Fatal(err)
	}
}

// Write writes a file under the root, making its directory.
func (tr *Tree) Write(p, s string) {
	tr.Mkdir(filepath.Dir(p))
	if err := os.WriteFile(filepath.Join(tr.Root, p), []byte(s), 0o644); err != nil {
		tr.T.Fatal(err)
	}
}

// Read reads a file under the root.
func (tr *Tree) Read(p string) string {
	b, err := os.ReadFile(filepath.Join(tr.Root, p))
	if err != nil {
		tr.T.Fatal(err)
	}
	return string(b)
}

// Link makes p a relative link to target, both under the root.
func (tr *Tree) Link(target, p string) {
	tr.Mkdir(filepath.Dir(p))
	rel, err := filepath.Rel(filepath.Dir(filepath.Join(tr.Root, p)), filepath.Join(tr.Root, target))
	if err != nil {
		tr.T.Fatal(err)
	}
	if err := os.Symlink(rel, filepath.Join(tr.Root, p)); err != nil {
		tr.T.Fatal(err)
	}
}

// DevDir is where a PCI function lives in the tree.
func DevDir(addr string) string { return "sys/devices/pci0000:00/" + addr }

// TypeDir is a vGPU type's directory under its parent.
func TypeDir(parent, typ string) string {
	return DevDir(parent) + "/mdev_supported_types/" + typ
}

// PCI adds a PCI function.
func (tr *Tree) PCI(addr, vendor, device, class string) {
	d := DevDir(addr)
	tr.Write(d+"/vendor", "0x"+vendor+"\n")
	tr.Write(d+"/device", "0x"+device+"\n")
	tr.Write(d+"/class", "0x"+class+"\n")
	tr.Link(d, "sys/bus/pci/devices/"+addr)
}

// VF makes vf the n-th virtual function of pf, both already added.
func (tr *Tree) VF(pf, vf string, n int) {
	tr.Link(DevDir(pf), DevDir(vf)+"/physfn")
	tr.Link(DevDir(vf), DevDir(pf)+"/virtfn"+strconv.Itoa(n))
}

// MdevType gives a function a vGPU type, as NVIDIA's vGPU manager does.
func (tr *Tree) MdevType(addr, id, name string, avail int) {
	d := TypeDir(addr, id)
	tr.Write(d+"/name", name+"\n")
	tr.Write(d+"/available_instances", strconv.Itoa(avail)+"\n")
	tr.Write(d+"/device_api", "vfio-pci\n")
	tr.Write(d+"/create", "")
	if _, err := os.Lstat(filepath.Join(tr.Root, "sys/class/mdev_bus", addr)); err != nil {
		tr.Link(DevDir(addr), "sys/class/mdev_bus/"+addr)
	}
}

// VendorVF gives virtual function vf the vendor VFIO framework's files,
// as NVIDIA's vGPU manager does on cards that offer vGPU that way: no
// type yet, and creatable, the types it lists as "ID : name" pairs.
func (tr *Tree) VendorVF(vf string, creatable ...string) {
	d := DevDir(vf) + "/nvidia"
	tr.Write(d+"/current_vgpu_type", "0\n")
	var b strings.Builder
	b.WriteString("ID    : vGPU Name\n")
	for i := 0; i+1 < len(creatable); i += 2 {
		b.WriteString(creatable[i] + "  : " + creatable[i+1] + "\n")
	}
	tr.Write(d+"/creatable_vgpu_types", b.String())
}

// KernelCreate does what the kernel does on a write to a type's create:
// the mdev appears under its parent and on the mdev bus, and the type
// has one instance less. It returns the UUID written.
func (tr *Tree) KernelCreate(parent, typ string) string {
	td := TypeDir(parent, typ)
	id := strings.TrimSpace(tr.Read(td + "/create"))
	d := DevDir(parent) + "/" + id
	tr.Write(d+"/remove", "")
	tr.Link(td, d+"/mdev_type")
	tr.Link(d, "sys/bus/mdev/devices/"+id)
	n, err := strconv.Atoi(strings.TrimSpace(tr.Read(td + "/available_instances")))
	if err != nil {
		tr.T.Fatal(err)
	}
	tr.Write(td+"/available_instances", strconv.Itoa(n-1)+"\n")
	return id
}

// KernelRemove does what the kernel does on a write to an mdev's
// remove: the mdev goes, and its type has one instance more.
func (tr *Tree) KernelRemove(parent, typ, id string) {
	td := TypeDir(parent, typ)
	if err := os.RemoveAll(filepath.Join(tr.Root, DevDir(parent), id)); err != nil {
		tr.T.Fatal(err)
	}
	if err := os.Remove(filepath.Join(tr.Root, "sys/bus/mdev/devices", id)); err != nil {
		tr.T.Fatal(err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(tr.Read(td + "/available_instances")))
	if err != nil {
		tr.T.Fatal(err)
	}
	tr.Write(td+"/available_instances", strconv.Itoa(n+1)+"\n")
}

// Bind binds a function to a driver: its driver link, as the kernel
// makes it.
func (tr *Tree) Bind(addr, driver string) {
	tr.Mkdir("sys/bus/pci/drivers/" + driver)
	tr.Link("sys/bus/pci/drivers/"+driver, DevDir(addr)+"/driver")
}

// IOMMUGroup puts a function in an IOMMU group.
func (tr *Tree) IOMMUGroup(addr string, group int) {
	g := "sys/kernel/iommu_groups/" + strconv.Itoa(group)
	tr.Mkdir(g)
	tr.Link(g, DevDir(addr)+"/iommu_group")
}

// OpenFD makes process pid (named comm) hold target (an absolute path on
// the host, /dev/vfio/42) open as its descriptor fd: the link /proc
// shows.
func (tr *Tree) OpenFD(pid int, comm string, fd int, target string) {
	dir := filepath.Join("proc", strconv.Itoa(pid))
	tr.Write(filepath.Join(dir, "comm"), comm+"\n")
	tr.Mkdir(filepath.Join(dir, "fd"))
	if err := os.Symlink(target, filepath.Join(tr.Root, dir, "fd", strconv.Itoa(fd))); err != nil {
		tr.T.Fatal(err)
	}
}

// Exit ends process pid: its /proc directory goes.
func (tr *Tree) Exit(pid int) {
	if err := os.RemoveAll(filepath.Join(tr.Root, "proc", strconv.Itoa(pid))); err != nil {
		tr.T.Fatal(err)
	}
}

// RemoveVFs does what sriov-manage -d does to the tree: pf's virtual
// functions go, with their vGPU types.
func (tr *Tree) RemoveVFs(pf string) {
	dir := filepath.Join(tr.Root, DevDir(pf))
	ents, err := os.ReadDir(dir)
	if err != nil {
		tr.T.Fatal(err)
	}
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), "virtfn") {
			continue
		}
		t, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			tr.T.Fatal(err)
		}
		vf := filepath.Base(t)
		for _, p := range []string{DevDir(vf), "sys/bus/pci/devices/" + vf, "sys/class/mdev_bus/" + vf, DevDir(pf) + "/" + e.Name()} {
			if err := os.RemoveAll(filepath.Join(tr.Root, p)); err != nil {
				tr.T.Fatal(err)
			}
		}
	}
}

// Golden compares got with testdata/name, or rewrites it when update is
// set (the tests' -update flag).
func Golden(t testing.TB, update bool, name, got string) {
	t.Helper()
	p := filepath.Join("testdata", name)
	if update {
		if err := os.WriteFile(p, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%v (run go test -update)", err)
	}
	if d := cmp.Diff(string(want), got); d != "" {
		t.Errorf("%s (-want +got):\n%s", name, d)
	}
}
