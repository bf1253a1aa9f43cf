package gpuconf

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/rackboot/rackboot/agent/inventory"
)

// Mdev is a mediated device: one vGPU.
type Mdev struct {
	UUID     string `json:"uuid"`
	Type     string `json:"type"`                // nvidia-222
	TypeName string `json:"type_name,omitempty"` // GRID T4-1B
	// Parent is the PCI function the mdev lives on: the card, or one of
	// its virtual functions on an SR-IOV card.
	Parent string `json:"parent"`
	// GPU is the card's physical function.
	GPU string `json:"gpu"`
}

// ErrNoMdev: no mediated device has the UUID.
var ErrNoMdev = errors.New("no such mediated device")

// defaultSRIOVManage is where NVIDIA's vGPU manager installs its script.
const defaultSRIOVManage = "/usr/lib/nvidia/sriov-manage"

// mdevSpace makes the UUIDs ApplyVGPU gives its mdevs the same on every
// boot: VMs' domains name their vGPU by UUID, and must find it again
// after the hypervisor rebooted.
var mdevSpace = uuid.NewSHA1(uuid.NameSpaceURL, []byte("https://github.com/rackboot/rackboot/agent/gpuconf#mdev"))

// StableUUID is the UUID ApplyVGPU gives the n-th mdev of a type on a
// parent (counting from 0).
func StableUUID(parent, typ string, n int) string {
	return uuid.NewSHA1(mdevSpace, []byte(parent+"/"+typ+"/"+strconv.Itoa(n))).String()
}

// canonicalUUID refuses anything but a UUID, which also keeps a
// caller's string from naming a path, and spells it as sysfs names the
// device: lower case.
func canonicalUUID(s string) (string, error) {
	u, err := uuid.Parse(s)
	if err != nil || u.String() != strings.ToLower(s) {
		return "", fmt.Errorf("mdev uuid %q: want the canonical 8-4-4-4-12 form", s)
	}
	return u.String(), nil
}

func checkPCI(addr string) error {
	if !pciAddrRE.MatchString(addr) {
		return fmt.Errorf("pci address %q: want 0000:3b:00.0", addr)
	}
	return nil
}

// writeSysfs writes an attribute that must already exist: sysfs never
// creates one, and a missing attribute is a missing feature.
func writeSysfs(p, s string) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(s); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// ErrKernelSilent: a sysfs write did not return in time. The kernel
// waits on the device's user before it removes or resets it (vfio waits
// for a VM to let go), and a write left waiting must not hold up the
// caller's loop.
var ErrKernelSilent = errors.New("the kernel has not answered (a VM may still hold the device)")

// writeSysfsBounded writes an attribute as writeSysfs does, but gives up
// waiting after h.SysfsTimeout or when ctx ends. The write itself cannot
// be taken back: its goroutine stays blocked until the kernel answers,
// and until then a new write to the same attribute is refused at once
// rather than stacked behind it.
func (h *Host) writeSysfsBounded(ctx context.Context, p, s string) error {
	timeout := h.SysfsTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	h.mu.Lock()
	if h.inflight[p] {
		h.mu.Unlock()
		return fmt.Errorf("write %s: an earlier write is still waiting: %w", p, ErrKernelSilent)
	}
	if h.inflight == nil {
		h.inflight = map[string]bool{}
	}
	h.inflight[p] = true
	h.mu.Unlock()
	done := make(chan error, 1)
	go func() {
		err := writeSysfs(p, s)
		h.mu.Lock()
		delete(h.inflight, p)
		h.mu.Unlock()
		done <- err
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
		return fmt.Errorf("write %s: no answer in %v: %w", p, timeout, ErrKernelSilent)
	case <-ctx.Done():
		return fmt.Errorf("write %s: %w: %w", p, ErrKernelSilent, ctx.Err())
	}
}

// MdevTypes lists the vGPU types a parent offers, with how many more of
// each it can take.
func (h *Host) MdevTypes(parent string) ([]inventory.MdevType, error) {
	if err := checkPCI(parent); err != nil {
		return nil, err
	}
	dir := h.path("sys/class/mdev_bus", parent, "mdev_supported_types")
	ents, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%s offers no vGPU types (no NVIDIA vGPU manager on it; an SR-IOV card offers them on its virtual functions)", parent)
		}
		return nil, fmt.Errorf("vGPU types of %s: %w", parent, err)
	}
	var ts []inventory.MdevType
	for _, e := range ents {
		td := filepath.Join(dir, e.Name())
		name, _ := os.ReadFile(filepath.Join(td, "name"))
		avail, _ := os.ReadFile(filepath.Join(td, "available_instances"))
		n, err := strconv.Atoi(strings.TrimSpace(string(avail)))
		if err != nil {
			n = 0
		}
		ts = append(ts, inventory.MdevType{ID: e.Name(), Name: strings.TrimSpace(string(name)), AvailableInstances: n})
	}
	return ts, nil
}

func offeredList(ts []inventory.MdevType) string {
	var s []string
	for _, t := range ts {
		if t.Name != "" {
			s = append(s, fmt.Sprintf("%s (%s)", t.ID, t.Name))
		} else {
			s = append(s, t.ID)
		}
	}
	return strings.Join(s, ", ")
}

// offers finds typ among a parent's types, or says what the parent
// offers instead.
func (h *Host) offers(parent, typ string) (inventory.MdevType, error) {
	ts, err := h.MdevTypes(parent)
	if err != nil {
		return inventory.MdevType{}, err
	}
	for _, t := range ts {
		if t.ID == typ {
			return t, nil
		}
	}
	return inventory.MdevType{}, fmt.Errorf("%s does not offer vGPU type %q; it offers %s", parent, typ, offeredList(ts))
}

// CreateMdev creates a vGPU of type typ on parent (the card, or a virtual
// function of an SR-IOV card) with the given UUID.
func (h *Host) CreateMdev(ctx context.Context, parent, typ, id string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	id, err := canonicalUUID(id)
	if err != nil {
		return fmt.Errorf("create mdev: %w", err)
	}
	t, err := h.offers(parent, typ)
	if err != nil {
		return fmt.Errorf("create mdev %s: %w", id, err)
	}
	if t.AvailableInstances < 1 {
		return fmt.Errorf("create mdev %s: %s has no room for another %s", id, parent, typ)
	}
	if err := writeSysfs(h.path("sys/class/mdev_bus", parent, "mdev_supported_types", typ, "create"), id); err != nil {
		return fmt.Errorf("create mdev %s (%s on %s): %w", id, typ, parent, err)
	}
	h.log().Info("mdev created", "mdev", id, "type", typ, "pci", parent)
	return nil
}

// RemoveMdev removes a vGPU. The kernel refuses while a VM holds it, or
// waits for the VM to let go: past h.SysfsTimeout that is an
// ErrKernelSilent.
func (h *Host) RemoveMdev(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	id, err := canonicalUUID(id)
	if err != nil {
		return fmt.Errorf("remove mdev: %w", err)
	}
	p := h.path("sys/bus/mdev/devices", id, "remove")
	if _, err := os.Stat(p); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove mdev %s: %w", id, ErrNoMdev)
	}
	if err := h.writeSysfsBounded(ctx, p, "1"); err != nil {
		return fmt.Errorf("remove mdev %s: %w", id, err)
	}
	h.log().Info("mdev removed", "mdev", id)
	return nil
}

// Mdevs lists the host's mediated devices.
func (h *Host) Mdevs(ctx context.Context) ([]Mdev, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	base := h.path("sys/bus/mdev/devices")
	ents, err := os.ReadDir(base)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil // no mdev bus: the module is not loaded, so no mdevs
	}
	if err != nil {
		return nil, fmt.Errorf("list mdevs: %w", err)
	}
	var ms []Mdev
	for _, e := range ents {
		id, err := canonicalUUID(e.Name())
		if err != nil {
			continue
		}
		dir, err := filepath.EvalSymlinks(filepath.Join(base, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("list mdevs: %w", err)
		}
		m := Mdev{UUID: id, Parent: filepath.Base(filepath.Dir(dir))}
		if td, err := filepath.EvalSymlinks(filepath.Join(dir, "mdev_type")); err == nil {
			m.Type = filepath.Base(td)
			name, _ := os.ReadFile(filepath.Join(td, "name"))
			m.TypeName = strings.TrimSpace(string(name))
		}
		m.GPU = h.physfn(m.Parent)
		ms = append(ms, m)
	}
	sort.Slice(ms, func(i, j int) bool {
		if ms[i].Parent != ms[j].Parent {
			return ms[i].Parent < ms[j].Parent
		}
		return ms[i].UUID < ms[j].UUID
	})
	return ms, nil
}

// physfn is a virtual function's card, or addr itself.
func (h *Host) physfn(addr string) string {
	if t, err := os.Readlink(h.path("sys/bus/pci/devices", addr, "physfn")); err == nil {
		return filepath.Base(t)
	}
	return addr
}

// vfs lists a card's enabled virtual functions in their order.
func (h *Host) vfs(addr string) ([]string, error) {
	dir := h.path("sys/bus/pci/devices", addr)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("virtual functions of %s: %w", addr, err)
	}
	type vf struct {
		n    int
		addr string
	}
	var vs []vf
	for _, e := range ents {
		rest, ok := strings.CutPrefix(e.Name(), "virtfn")
		n, err := strconv.Atoi(rest)
		if !ok || err != nil {
			continue
		}
		t, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("virtual functions of %s: %w", addr, err)
		}
		vs = append(vs, vf{n, filepath.Base(t)})
	}
	sort.Slice(vs, func(i, j int) bool { return vs[i].n < vs[j].n })
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = v.addr
	}
	return out, nil
}

// parents are the PCI functions a card's vGPUs live on: the card itself,
// or, on a card whose vGPUs are SR-IOV virtual functions, those
// functions, enabled with sriov-manage first when they are not yet.
func (h *Host) parents(ctx context.Context, c card) ([]string, error) {
	if !c.model.SRIOV {
		return []string{c.addr}, nil
	}
	vfs, err := h.vfs(c.addr)
	if err != nil || len(vfs) > 0 {
		return vfs, err
	}
	tool := h.SRIOVManage
	if tool == "" {
		tool = defaultSRIOVManage
	}
	if _, err := h.run(ctx, tool, "-e", c.addr); err != nil {
		return nil, fmt.Errorf("enable virtual functions of %s: %w", c.addr, err)
	}
	h.log().Info("virtual functions enabled", "pci", c.addr)
	if vfs, err = h.vfs(c.addr); err != nil {
		return nil, err
	}
	if len(vfs) == 0 {
		return nil, fmt.Errorf("enable virtual functions of %s: sriov-manage -e left the card with none", c.addr)
	}
	return vfs, nil
}

// DisableVFs undoes what parents did: on every SR-IOV card with virtual
// functions enabled it runs sriov-manage -d. A card still carrying an
// mdev is refused: its virtual functions cannot go while the mdev
// lives, and removing it is the caller's decision.
func (h *Host) DisableVFs(ctx context.Context) error {
	cards, err := h.cards()
	if err != nil {
		return fmt.Errorf("disable virtual functions: %w", err)
	}
	ms, err := h.Mdevs(ctx)
	if err != nil {
		return fmt.Errorf("disable virtual functions: %w", err)
	}
	tool := h.SRIOVManage
	if tool == "" {
		tool = defaultSRIOVManage
	}
	var errs []error
	for _, c := range cards {
		if !c.model.SRIOV {
			continue
		}
		vfs, err := h.vfs(c.addr)
		if err != nil {
			errs = append(errs, fmt.Errorf("disable virtual functions: %w", err))
			continue
		}
		if len(vfs) == 0 {
			continue
		}
		var held []string
		for _, m := range ms {
			if m.GPU == c.addr {
				held = append(held, "mdev "+m.UUID)
			}
		}
		var unread []error
		open := &openFiles{}
		for _, vf := range vfs {
			if !h.isVFIO(vf) {
				continue
			}
			// A type that cannot be read still stops the disabling,
			// but is not reported as one the function carries.
			if v, err := h.readVF(vf, open); err != nil {
				unread = append(unread, err)
			} else if v.Type != 0 {
				held = append(held, "vGPU type on "+vf)
			}
		}
		if len(unread) > 0 {
			errs = append(errs, fmt.Errorf("disable virtual functions of %s: cannot tell what its functions carry: %w", c.addr, errors.Join(unread...)))
			continue
		}
		if len(held) > 0 {
			errs = append(errs, fmt.Errorf("disable virtual functions of %s: it carries %s", c.addr, strings.Join(held, ", ")))
			continue
		}
		if _, err := h.run(ctx, tool, "-d", c.addr); err != nil {
			errs = append(errs, fmt.Errorf("disable virtual functions of %s: %w", c.addr, err))
			continue
		}
		h.log().Info("virtual functions disabled", "pci", c.addr)
	}
	return errors.Join(errs...)
}

// ApplyVGPU fills every NVIDIA GPU of the host with vGPUs of type typ:
// one type per card, as many as the card takes. The mdevs get stable
// UUIDs (StableUUID), so applying again after a reboot brings back the
// ones VMs name, and applying on a host that carries them creates
// nothing. An SR-IOV card has its virtual functions enabled first and
// its vGPUs made on them. A card that is not vGPU-capable, a parent that
// does not offer typ, or a card that carries vGPUs of another type is
// refused before any mdev is made. It returns the host's mdevs of typ.
func (h *Host) ApplyVGPU(ctx context.Context, typ string) ([]Mdev, error) {
	cards, err := h.cards()
	if err != nil {
		return nil, fmt.Errorf("apply vGPU %s: %w", typ, err)
	}
	if len(cards) == 0 {
		return nil, fmt.Errorf("apply vGPU %s: no NVIDIA GPU on this host", typ)
	}
	for _, c := range cards {
		if !c.known || !c.model.VGPU {
			return nil, fmt.Errorf("apply vGPU %s: %s at %s is not in rackboot's table of vGPU-capable GPUs", typ, c.name(), c.addr)
		}
	}
	have, err := h.Mdevs(ctx)
	if err != nil {
		return nil, fmt.Errorf("apply vGPU %s: %w", typ, err)
	}
	exists := map[string]bool{}
	var kept []Mdev
	for _, m := range have {
		exists[m.UUID] = true
		if m.Type == typ {
			kept = append(kept, m)
		}
	}
	type plan struct {
		c       card
		parents []string
	}
	var plans []plan
	for _, c := range cards {
		ps, err := h.parents(ctx, c)
		if err != nil {
			return nil, fmt.Errorf("apply vGPU %s: %w", typ, err)
		}
		for _, p := range ps {
			if _, err := h.offers(p, typ); err != nil {
				return nil, fmt.Errorf("apply vGPU: %w", err)
			}
		}
		for _, m := range have {
			if m.GPU == c.addr && m.Type != typ {
				return nil, fmt.Errorf("apply vGPU %s: %s carries vGPU %s of type %s; a card carries one type: remove its vGPUs first", typ, c.addr, m.UUID, m.Type)
			}
		}
		plans = append(plans, plan{c, ps})
	}
	made := kept
	for _, pl := range plans {
		for _, p := range pl.parents {
			// Read the room parent by parent: the virtual functions of
			// one card share it, and each mdev made takes from all.
			t, err := h.offers(p, typ)
			if err != nil {
				return made, fmt.Errorf("apply vGPU: %w", err)
			}
			for n, left := 0, t.AvailableInstances; left > 0; n++ {
				id := StableUUID(p, typ, n)
				if exists[id] {
					continue
				}
				if err := h.CreateMdev(ctx, p, typ, id); err != nil {
					return made, fmt.Errorf("apply vGPU: %w", err)
				}
				exists[id] = true
				made = append(made, Mdev{UUID: id, Type: typ, TypeName: t.Name, Parent: p, GPU: pl.c.addr})
				left--
			}
		}
	}
	sort.Slice(made, func(i, j int) bool {
		if made[i].Parent != made[j].Parent {
			return made[i].Parent < made[j].Parent
		}
		return made[i].UUID < made[j].UUID
	})
	return made, nil
}
