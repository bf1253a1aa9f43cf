package gpuconf

import (
	"context"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata")

// reply is a recorded answer to one command line.
type reply struct {
	file string // under testdata/smi; "" prints nothing
	fail bool   // exits non-zero, as nvidia-smi does when it finds nothing
	next string // the state after the command; "" keeps it
	do   func() // what the command does to the fake sysfs tree
}

// script is a scripted nvidia-smi (and sriov-manage): each state of the
// host answers exact command lines from recorded outputs, and every call
// is kept.
type script struct {
	t     *testing.T
	state string
	table map[string]map[string]reply
	calls []string
}

var errExit = errors.New("exit status 6")

func (s *script) Run(_ context.Context, argv []string) ([]byte, error) {
	line := strings.Join(argv, " ")
	s.calls = append(s.calls, line)
	r, ok := s.table[s.state][line]
	if !ok {
		s.t.Errorf("state %s: unscripted command %q", s.state, line)
		return []byte("unscripted"), errors.New("exit status 2")
	}
	var out []byte
	if r.file != "" {
		b, err := os.ReadFile(filepath.Join("testdata/smi", r.file))
		if err != nil {
			s.t.Fatal(err)
		}
		out = b
	}
	if r.do != nil {
		r.do()
	}
	if r.next != "" {
		s.state = r.next
	}
	if r.fail {
		return out, errExit
	}
	return out, nil
}

// golden compares got with testdata/name, or rewrites it under -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	p := filepath.Join("testdata", name)
	if *update {
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

// tree builds a fake sysfs under a temporary root, laid out as the
// kernel lays it out: functions under sys/devices, links to them from
// sys/bus/pci/devices and sys/class/mdev_bus.
type tree struct {
	t    *testing.T
	root string
}

func newTree(t *testing.T) *tree {
	tr := &tree{t: t, root: t.TempDir()}
	tr.mkdir("sys/bus/pci/devices")
	tr.mkdir("sys/class/mdev_bus")
	tr.mkdir("sys/bus/mdev/devices")
	return tr
}

func (tr *tree) mkdir(p string) {
	if err := os.MkdirAll(filepath.Join(tr.root, p), 0o755); err != nil {
		tr.t.Fatal(err)
	}
}

func (tr *tree) write(p, s string) {
	tr.mkdir(filepath.Dir(p))
	if err := os.WriteFile(filepath.Join(tr.root, p), []byte(s), 0o644); err != nil {
		tr.t.Fatal(err)
	}
}

func (tr *tree) read(p string) string {
	b, err := os.ReadFile(filepath.Join(tr.root, p))
	if err != nil {
		tr.t.Fatal(err)
	}
	return string(b)
}

// link makes p a relative link to target, both under the root.
func (tr *tree) link(target, p string) {
	tr.mkdir(filepath.Dir(p))
	rel, err := filepath.Rel(filepath.Dir(filepath.Join(tr.root, p)), filepath.Join(tr.root, target))
	if err != nil {
		tr.t.Fatal(err)
	}
	if err := os.Symlink(rel, filepath.Join(tr.root, p)); err != nil {
		tr.t.Fatal(err)
	}
}

func devDir(addr string) string { return "sys/devices/pci0000:00/" + addr }

// pci adds a PCI function.
func (tr *tree) pci(addr, vendor, device, class string) {
	d := devDir(addr)
	tr.write(d+"/vendor", "0x"+vendor+"\n")
	tr.write(d+"/device", "0x"+device+"\n")
	tr.write(d+"/class", "0x"+class+"\n")
	tr.link(d, "sys/bus/pci/devices/"+addr)
}

// mdevType gives a function a vGPU type, as NVIDIA's vGPU manager does.
func (tr *tree) mdevType(addr, id, name string, avail int) {
	d := devDir(addr) + "/mdev_supported_types/" + id
	tr.write(d+"/name", name+"\n")
	tr.write(d+"/available_instances", strconv.Itoa(avail)+"\n")
	tr.write(d+"/device_api", "vfio-pci\n")
	tr.write(d+"/create", "")
	if _, err := os.Lstat(filepath.Join(tr.root, "sys/class/mdev_bus", addr)); err != nil {
		tr.link(devDir(addr), "sys/class/mdev_bus/"+addr)
	}
}

// kernelCreate does what the kernel does on a write to a type's create:
// the mdev appears under its parent and on the mdev bus, and the type
// has one instance less.
func (tr *tree) kernelCreate(parent, typ string) string {
	td := devDir(parent) + "/mdev_supported_types/" + typ
	id := strings.TrimSpace(tr.read(td + "/create"))
	d := devDir(parent) + "/" + id
	tr.write(d+"/remove", "")
	tr.link(td, d+"/mdev_type")
	tr.link(d, "sys/bus/mdev/devices/"+id)
	n := atoi(strings.TrimSpace(tr.read(td + "/available_instances")))
	tr.write(td+"/available_instances", strconv.Itoa(n-1)+"\n")
	return id
}
