package gpuconf

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/rackboot/rackboot/agent/inventory"
)

// Card is an NVIDIA GPU's physical function.
type Card struct {
	Addr     string `json:"pci_address"` // 0000:3b:00.0
	DeviceID string `json:"device_id"`   // 1eb8
	// Model is rackboot's table entry for the card; Known is false when
	// the table has none, and Model is then empty.
	Model inventory.NVIDIAModel `json:"-"`
	Known bool                  `json:"known"`
}

// Cards lists the host's NVIDIA GPUs (physical functions only) by PCI
// address.
func (h *Host) Cards() ([]Card, error) {
	cs, err := h.cards()
	if err != nil {
		return nil, err
	}
	out := make([]Card, len(cs))
	for i, c := range cs {
		out[i] = Card{Addr: c.addr, DeviceID: c.deviceID, Model: c.model, Known: c.known}
	}
	return out, nil
}

func (h *Host) card(gpu string) (card, error) {
	if err := checkPCI(gpu); err != nil {
		return card{}, err
	}
	cs, err := h.cards()
	if err != nil {
		return card{}, err
	}
	for _, c := range cs {
		if c.addr == gpu {
			return c, nil
		}
	}
	return card{}, fmt.Errorf("%w at %s (a physical function)", ErrNoCard, gpu)
}

// ErrNoCard: an address that names no NVIDIA card's physical function
// on this host, although the host's cards could be listed.
var ErrNoCard = errors.New("no NVIDIA GPU")

// Parents lists the PCI functions the vGPUs of card gpu live on: the
// card itself, or on an SR-IOV card its virtual functions, which it
// enables with sriov-manage when none are.
func (h *Host) Parents(ctx context.Context, gpu string) ([]string, error) {
	c, err := h.card(gpu)
	if err != nil {
		return nil, fmt.Errorf("vGPU parents: %w", err)
	}
	return h.parents(ctx, c)
}

var migProfileRE = regexp.MustCompile(`^([1-9][0-9]?)g\.([1-9][0-9]{0,3})gb$`)

// migTypeSuffix is how NVIDIA's MIG-backed vGPU types end for a MIG
// profile: 3g.40gb is "-3-40C" (NVIDIA A100-3-20C, GRID A100D-3-40C).
// Only the C (compute) series is MIG-backed; "-3-40CME" and the like are
// other profiles and must not match.
func migTypeSuffix(profile string) (string, error) {
	m := migProfileRE.FindStringSubmatch(profile)
	if m == nil {
		return "", fmt.Errorf("MIG profile %q: want one like 3g.40gb", profile)
	}
	slices, _ := strconv.Atoi(m[1])
	gb, _ := strconv.Atoi(m[2])
	return fmt.Sprintf("-%d-%dC", slices, gb), nil
}

// EnsureMdev makes sure the mediated device uuid exists on card gpu (a
// physical function): an mdev of that UUID already on the card is
// returned as it is. kind is "vgpu", where profile is the sysfs type id
// (nvidia-1030), or "mig", where profile is a MIG profile (3g.40gb) and
// the type is the MIG-backed vGPU type for it that the card's parents
// offer. It is made on the first parent (the card, or one of its
// virtual functions, enabled first when none are) with room for one
// more of the type.
func (h *Host) EnsureMdev(ctx context.Context, gpu, kind, profile, id string) (Mdev, error) {
	id, err := canonicalUUID(id)
	if err != nil {
		return Mdev{}, fmt.Errorf("ensure mdev: %w", err)
	}
	fail := func(err error) (Mdev, error) {
		return Mdev{}, fmt.Errorf("ensure mdev %s (%s %s on %s): %w", id, kind, profile, gpu, err)
	}
	if kind != "vgpu" && kind != "mig" {
		return fail(fmt.Errorf("device kind %q: want vgpu or mig", kind))
	}
	c, err := h.card(gpu)
	if err != nil {
		return fail(err)
	}
	have, err := h.Mdevs(ctx)
	if err != nil {
		return fail(err)
	}
	for _, m := range have {
		if m.UUID != id {
			continue
		}
		if m.GPU != gpu {
			return fail(fmt.Errorf("the mdev exists on another card, %s (parent %s)", m.GPU, m.Parent))
		}
		return m, nil
	}
	ps, err := h.parents(ctx, c)
	if err != nil {
		return fail(err)
	}
	match := func(t inventory.MdevType) bool { return t.ID == profile }
	want := fmt.Sprintf("vGPU type %q", profile)
	if kind == "mig" {
		suffix, err := migTypeSuffix(profile)
		if err != nil {
			return fail(err)
		}
		match = func(t inventory.MdevType) bool { return strings.HasSuffix(t.Name, suffix) }
		want = fmt.Sprintf("MIG-backed vGPU type named *%s", suffix)
	}
	var offered []inventory.MdevType
	found := false
	for _, p := range ps {
		ts, err := h.MdevTypes(p)
		if err != nil {
			return fail(err)
		}
		if offered == nil {
			offered = ts
		}
		for _, t := range ts {
			if !match(t) {
				continue
			}
			found = true
			if t.AvailableInstances < 1 {
				continue
			}
			if err := h.CreateMdev(ctx, p, t.ID, id); err != nil {
				return fail(err)
			}
			return Mdev{UUID: id, Type: t.ID, TypeName: t.Name, Parent: p, GPU: gpu}, nil
		}
	}
	if !found {
		return fail(fmt.Errorf("%s offers no %s; it offers %s", ps[0], want, offeredList(offered)))
	}
	return fail(fmt.Errorf("no room for another %s on %s", want, strings.Join(ps, ", ")))
}
