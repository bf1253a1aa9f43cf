package gpuconf

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// How a card's driver offers vGPU (GPUState.VGPU).
const (
	// VGPUMdev: mediated devices, made under mdev_supported_types of the
	// card or of its virtual functions.
	VGPUMdev = "mdev"
	// VGPUVFIO: NVIDIA's vendor-specific VFIO framework (vGPU 17 and
	// later on Ada, Hopper and newer cards with recent kernels): each
	// SR-IOV virtual function becomes one vGPU when its type id is
	// written to nvidia/current_vgpu_type, and the VM is given the
	// virtual function itself as a PCI device.
	VGPUVFIO = "vfio"
)

// VF is a virtual function of a card whose driver offers vGPU through
// the vendor-specific VFIO framework.
type VF struct {
	Address string `json:"pci_address"`
	// Index is the function's number on its card (virtfnN).
	Index int `json:"index"`
	// Type is the vGPU type id in current_vgpu_type; 0 when it has none.
	Type int `json:"type"`
	// TypeName is Type's name where the function's list still names it.
	TypeName string `json:"type_name,omitempty"`
	// Creatable are the types the function can take now. The driver
	// narrows the list as the card's other functions take types, and
	// empties it on a function that has one.
	Creatable []VGPUType `json:"creatable,omitempty"`
	// InUse says a process (a VM's QEMU) holds the function open through
	// VFIO: its type cannot be changed or freed meanwhile.
	InUse bool `json:"in_use"`
}

// VGPUType is a vGPU type as creatable_vgpu_types lists it.
type VGPUType struct {
	ID   int    `json:"id"`
	Name string `json:"name"` // NVIDIA L40S-4Q
}

// ParseCreatable reads a virtual function's nvidia/creatable_vgpu_types:
// a header line "ID    : vGPU Name", then one "1155  : NVIDIA L40S-4Q"
// line per type. A function that can take no type lists the header only,
// or nothing.
func ParseCreatable(b []byte) ([]VGPUType, error) {
	var ts []VGPUType
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		id, name, ok := strings.Cut(line, ":")
		id, name = strings.TrimSpace(id), strings.TrimSpace(name)
		if n == 1 && strings.EqualFold(id, "ID") {
			continue
		}
		v, err := strconv.Atoi(id)
		if !ok || err != nil || v <= 0 || name == "" {
			return nil, fmt.Errorf("creatable vGPU types, line %d %q: want \"ID : name\"", n, line)
		}
		ts = append(ts, VGPUType{ID: v, Name: name})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("creatable vGPU types: %w", err)
	}
	return ts, nil
}

// TypeID reads a vGPU type as HypervisorWork names it: the mdev type's
// directory name (nvidia-1155) or the bare id (1155). The vendor VFIO
// framework numbers types as the mdev one does, so one hypervisor setting
// serves both.
func TypeID(profile string) (int, error) {
	v, err := strconv.Atoi(strings.TrimPrefix(profile, "nvidia-"))
	if err != nil || v <= 0 {
		return 0, fmt.Errorf("vGPU type %q: want nvidia-N or N", profile)
	}
	return v, nil
}

// vfioDir is the driver's directory of a function that takes vGPU types
// through the vendor VFIO framework.
func (h *Host) vfioDir(addr string) string {
	return h.path("sys/bus/pci/devices", addr, "nvidia")
}

func (h *Host) isVFIO(addr string) bool {
	_, err := os.Stat(filepath.Join(h.vfioDir(addr), "current_vgpu_type"))
	return err == nil
}

// vgpuWay says how a card offers vGPU and, for the vendor VFIO framework,
// lists its virtual functions. A function without the driver's attribute
// (still probing, or bound to another driver) or whose attribute cannot
// be read is left out, not the card's whole report: placement uses only
// the functions listed.
func (h *Host) vgpuWay(addr string, open *openFiles) (string, []VF, error) {
	if _, err := os.Stat(h.path("sys/bus/pci/devices", addr)); errors.Is(err, fs.ErrNotExist) {
		// nvidia-smi lists a card sysfs does not show (a bus id it
		// spells another way): nothing to say of its vGPUs.
		return "", nil, nil
	}
	vfs, err := h.vfs(addr)
	if err != nil {
		return "", nil, err
	}
	if !slices.ContainsFunc(vfs, h.isVFIO) {
		for _, p := range append([]string{addr}, vfs...) {
			if _, err := os.Stat(h.path("sys/class/mdev_bus", p, "mdev_supported_types")); err == nil {
				return VGPUMdev, nil, nil
			}
		}
		return "", nil, nil
	}
	var out []VF
	for i, a := range vfs {
		if !h.isVFIO(a) {
			h.log().Debug("virtual function without vendor VFIO: left out of the report", "pci", a, "gpu", addr)
			continue
		}
		v, err := h.readVF(a, open)
		if err != nil {
			h.log().Warn("virtual function left out of the report", "pci", a, "gpu", addr, "err", err)
			continue
		}
		v.Index = i
		out = append(out, v)
	}
	// The driver may drop a function's own type from its list once it
	// carries it; a sibling's list still names it.
	names := map[int]string{}
	for _, v := range out {
		for _, t := range v.Creatable {
			names[t.ID] = t.Name
		}
	}
	for i := range out {
		if out[i].Type != 0 && out[i].TypeName == "" {
			out[i].TypeName = names[out[i].Type]
		}
	}
	return VGPUVFIO, out, nil
}

func (h *Host) readVF(addr string, open *openFiles) (VF, error) {
	v := VF{Address: addr}
	dir := h.vfioDir(addr)
	b, err := os.ReadFile(filepath.Join(dir, "current_vgpu_type"))
	if err != nil {
		return v, fmt.Errorf("vGPU type of %s: %w", addr, err)
	}
	if v.Type, err = strconv.Atoi(strings.TrimSpace(string(b))); err != nil {
		return v, fmt.Errorf("vGPU type of %s: %q is no type id", addr, strings.TrimSpace(string(b)))
	}
	b, err = os.ReadFile(filepath.Join(dir, "creatable_vgpu_types"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return v, fmt.Errorf("creatable vGPU types of %s: %w", addr, err)
	}
	if v.Creatable, err = ParseCreatable(b); err != nil {
		return v, fmt.Errorf("%s: %w", addr, err)
	}
	for _, t := range v.Creatable {
		if t.ID == v.Type {
			v.TypeName = t.Name
		}
	}
	if err := h.unheldIn("vGPU of", addr, h.path("sys/bus/pci/devices", addr), open); errors.Is(err, ErrInUse) {
		v.InUse = true
	} else if err != nil {
		return v, err
	}
	return v, nil
}

// typeFor finds the type a device of kind and profile takes among ts:
// for "vgpu" the type id, for "mig" the MIG-backed type of the profile.
func typeFor(kind, profile string, ts []VGPUType) (VGPUType, bool, error) {
	match := func(VGPUType) bool { return false }
	switch kind {
	case "vgpu":
		id, err := TypeID(profile)
		if err != nil {
			return VGPUType{}, false, err
		}
		match = func(t VGPUType) bool { return t.ID == id }
	case "mig":
		suffix, err := migTypeSuffix(profile)
		if err != nil {
			return VGPUType{}, false, err
		}
		match = func(t VGPUType) bool { return strings.HasSuffix(t.Name, suffix) }
	default:
		return VGPUType{}, false, fmt.Errorf("device kind %q: want vgpu or mig", kind)
	}
	for _, t := range ts {
		if match(t) {
			return t, true, nil
		}
	}
	return VGPUType{}, false, nil
}

func typeList(ts []VGPUType) string {
	if len(ts) == 0 {
		return "none"
	}
	s := make([]string, len(ts))
	for i, t := range ts {
		s[i] = fmt.Sprintf("%d (%s)", t.ID, t.Name)
	}
	return strings.Join(s, ", ")
}

// Carries says whether virtual function v carries the vGPU type of kind
// and profile, as EnsureVF sets it: for a MIG profile, a type whose name
// is known and names the profile.
func Carries(v VF, kind, profile string) bool {
	if v.Type == 0 {
		return false
	}
	switch kind {
	case "vgpu":
		id, err := TypeID(profile)
		return err == nil && id == v.Type
	case "mig":
		suffix, err := migTypeSuffix(profile)
		return err == nil && strings.HasSuffix(v.TypeName, suffix)
	}
	return false
}

// VFRequest asks EnsureVF for a vGPU on a virtual function.
type VFRequest struct {
	// GPU is the card, VF its virtual function.
	GPU, VF string
	// Kind and Profile: "vgpu" and a type (nvidia-1155), or "mig" and a
	// MIG profile, whose MIG-backed type is found by name.
	Kind, Profile string
	// Names are type names by id that the caller saw when it set them. A
	// MIG-backed type leaves every function's list once its profile's
	// last instance is taken, and then only these still name it.
	Names map[int]string
	// Before, when set, is called with the type just before it is
	// written, and an error from it stops the write. The caller records
	// there what it is about to own, so that a crash, or a write the
	// kernel leaves waiting, still leaves the function freed later,
	// while a function refused before any write is never counted as
	// its own.
	Before func(VGPUType) error
}

// ErrNotVF: the address is not a virtual function of any NVIDIA card on
// this host (not a virtual function at all, or one of another vendor's
// card). Nothing can ever be freed there.
var ErrNotVF = errors.New("not a virtual function of an NVIDIA card")

// EnsureVF makes virtual function r.VF of card r.GPU carry the vGPU type
// r asks for, writing the type id to its current_vgpu_type. A function
// that carries the type already is left as it is (changed is false); one
// carrying another type is refused: freeing it is FreeVF's, once no VM
// holds it.
func (h *Host) EnsureVF(ctx context.Context, r VFRequest) (v VF, changed bool, err error) {
	gpu, vf, kind, profile := r.GPU, r.VF, r.Kind, r.Profile
	fail := func(err error) (VF, bool, error) {
		return VF{}, false, fmt.Errorf("ensure vGPU on %s (%s %s on %s): %w", vf, kind, profile, gpu, err)
	}
	if err := checkPCI(vf); err != nil {
		return fail(err)
	}
	c, err := h.card(gpu)
	if err != nil {
		return fail(err)
	}
	// A card the catalog does not mark SR-IOV may still have its
	// functions enabled and offering vendor VFIO: those are its vGPUs.
	vfs, err := h.vfs(c.addr)
	if err == nil && len(vfs) == 0 {
		vfs, err = h.parents(ctx, c)
	}
	if err != nil {
		return fail(err)
	}
	at := -1
	for i, a := range vfs {
		if a == vf && a != gpu {
			at = i
		}
	}
	if at < 0 {
		return fail(fmt.Errorf("not a virtual function of the card"))
	}
	if !h.isVFIO(vf) {
		return fail(fmt.Errorf("its driver offers no vGPU types through vendor VFIO (no nvidia/current_vgpu_type)"))
	}
	v, err = h.readVF(vf, nil)
	if err != nil {
		return fail(err)
	}
	v.Index = at
	if v.Type != 0 && v.TypeName == "" {
		if _, all, err := h.vgpuWay(gpu, &openFiles{}); err == nil {
			for _, o := range all {
				if o.Address == vf {
					v.TypeName = o.TypeName
				}
			}
		}
	}
	if v.Type != 0 && v.TypeName == "" {
		v.TypeName = r.Names[v.Type]
	}
	if v.Type != 0 {
		if Carries(v, kind, profile) {
			return v, false, nil
		}
		return fail(fmt.Errorf("it carries vGPU type %d %s", v.Type, v.TypeName))
	}
	t, ok, err := typeFor(kind, profile, v.Creatable)
	if err != nil {
		return fail(err)
	}
	if !ok {
		return fail(fmt.Errorf("the function cannot take that type now; it offers %s", typeList(v.Creatable)))
	}
	if r.Before != nil {
		if err := r.Before(t); err != nil {
			return fail(err)
		}
	}
	if err := h.writeSysfsBounded(ctx, filepath.Join(h.vfioDir(vf), "current_vgpu_type"), strconv.Itoa(t.ID)); err != nil {
		return fail(err)
	}
	h.log().Info("vGPU type set", "pci", vf, "gpu", gpu, "type", t.ID, "type_name", t.Name)
	v.Type, v.TypeName = t.ID, t.Name
	return v, true, nil
}

// FreeVF gives a virtual function's vGPU back, writing 0 to its
// current_vgpu_type. One without a type is left alone; one a process
// holds through VFIO is refused with ErrInUse, as the driver refuses
// while a VM runs on it.
func (h *Host) FreeVF(ctx context.Context, vf string) error {
	if err := checkPCI(vf); err != nil {
		return fmt.Errorf("free vGPU: %w", err)
	}
	if _, err := os.Lstat(h.path("sys/bus/pci/devices", vf)); errors.Is(err, fs.ErrNotExist) {
		return nil // gone with its type: a reboot, or sriov-manage -d
	}
	if pf := h.physfn(vf); pf == vf {
		return fmt.Errorf("free vGPU on %s: %w: it has no physical function", vf, ErrNotVF)
	} else if _, err := h.card(pf); errors.Is(err, ErrNoCard) {
		return fmt.Errorf("free vGPU on %s: %w: its card %s: %w", vf, ErrNotVF, pf, err)
	} else if err != nil {
		return fmt.Errorf("free vGPU on %s: %w", vf, err)
	}
	if !h.isVFIO(vf) {
		return nil // no vendor VFIO on it: nothing to free (sriov-manage -d took it, or a reboot)
	}
	v, err := h.readVF(vf, nil)
	if err != nil {
		return fmt.Errorf("free vGPU: %w", err)
	}
	if v.Type == 0 {
		return nil
	}
	if v.InUse {
		return fmt.Errorf("free vGPU on %s: it is %w by a VM", vf, ErrInUse)
	}
	if err := h.writeSysfsBounded(ctx, filepath.Join(h.vfioDir(vf), "current_vgpu_type"), "0"); err != nil {
		return fmt.Errorf("free vGPU on %s: %w", vf, err)
	}
	h.log().Info("vGPU type freed", "pci", vf, "type", v.Type)
	return nil
}
