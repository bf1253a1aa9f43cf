package gpuconf

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/rackboot/rackboot/agent/inventory"
)

// ErrResetNeeded: MIG mode was switched on but waits for a GPU reset or
// a reboot. gpuconf never resets a GPU itself: a reset ends whatever runs
// on the card, which is the operator's call.
var ErrResetNeeded = errors.New("MIG mode is pending: a GPU reset or a reboot makes it effective")

// PendingError names the cards whose MIG mode is pending.
type PendingError struct {
	GPUs []string // "GPU 0 (0000:07:00.0)"
	// Disable is set when MIG is pending off (DisableMIG), not on.
	Disable bool
}

func (e *PendingError) Error() string {
	if e.Disable {
		return fmt.Sprintf("disable MIG: %s: %v; MIG stays on there until then", strings.Join(e.GPUs, ", "), ErrResetNeeded)
	}
	return fmt.Sprintf("apply MIG layout: %s: %v; the other cards carry the layout", strings.Join(e.GPUs, ", "), ErrResetNeeded)
}

func (e *PendingError) Unwrap() error { return ErrResetNeeded }

// ErrLayout: a card cannot carry the layout; nothing was changed.
var ErrLayout = errors.New("MIG layout does not fit")

// migCard is one card during ApplyMIG.
type migCard struct {
	card
	smiGPU
}

func (c migCard) String() string { return fmt.Sprintf("GPU %d (%s)", c.Index, c.addr) }

// ApplyMIG gives every NVIDIA GPU of the host the same MIG layout
// (profile names, one per GPU instance: ["3g.20gb", "3g.20gb"]), each
// GPU instance with one compute instance over all of it. A card that
// already carries exactly the layout is left alone; another has its
// compute and GPU instances destroyed and the layout created. MIG mode
// persists across reboots but instances do not, so after a reboot this
// creates them again. A layout some card cannot carry is refused before
// anything is run. A card whose MIG mode only becomes effective after a
// reset is skipped, and the error is a *PendingError.
func (h *Host) ApplyMIG(ctx context.Context, layout []string) error {
	cards, err := h.cards()
	if err != nil {
		return fmt.Errorf("apply MIG layout: %w", err)
	}
	if len(cards) == 0 {
		return fmt.Errorf("apply MIG layout: no NVIDIA GPU on this host")
	}
	for _, c := range cards {
		if !c.known {
			return fmt.Errorf("apply MIG layout: %s at %s is not in rackboot's GPU table: %w", c.name(), c.addr, ErrLayout)
		}
		if err := inventory.CheckMIGLayout(c.model.GPU(c.deviceID), layout); err != nil {
			return fmt.Errorf("apply MIG layout on %s: %v: %w", c.addr, err, ErrLayout)
		}
	}
	mc, err := h.migCards(ctx, cards)
	if err != nil {
		return fmt.Errorf("apply MIG layout: %w", err)
	}
	var pending, ready []migCard
	switched := false
	for _, c := range mc {
		switch {
		case c.Current == ModeEnabled && c.Pending == ModeEnabled:
			ready = append(ready, c)
		case c.Pending == ModeEnabled:
			pending = append(pending, c)
		default:
			// Switching MIG on may leave it pending (a process holds the
			// card): the query after it tells. A card whose MIG is on but
			// set to go off at the next reset is switched on again, or
			// its layout would not outlive that reset.
			if _, err := h.smi(ctx, "-i", strconv.Itoa(c.Index), "-mig", "1"); err != nil {
				return fmt.Errorf("apply MIG layout: enable MIG on %s: %w", c, err)
			}
			h.log().Info("MIG mode enabled", "gpu", c.Index, "pci", c.addr)
			switched = true
		}
	}
	if switched {
		if mc, err = h.migCards(ctx, cards); err != nil {
			return fmt.Errorf("apply MIG layout: %w", err)
		}
		pending, ready = pending[:0], ready[:0]
		for _, c := range mc {
			switch {
			case c.Current == ModeEnabled:
				ready = append(ready, c)
			case c.Pending == ModeEnabled:
				pending = append(pending, c)
			default:
				return fmt.Errorf("apply MIG layout: %s: MIG mode is still %s after nvidia-smi -mig 1", c, c.Current)
			}
		}
	}
	if len(ready) > 0 {
		if err := h.applyLayout(ctx, ready, layout); err != nil {
			return err
		}
	}
	if len(pending) > 0 {
		e := &PendingError{}
		for _, c := range pending {
			e.GPUs = append(e.GPUs, c.String())
			h.log().Warn("MIG mode pending: reset the GPU or reboot", "gpu", c.Index, "pci", c.addr)
		}
		return e
	}
	return nil
}

// DisableMIG undoes ApplyMIG on every NVIDIA GPU of the host: destroys
// its compute and GPU instances and switches MIG mode off. A card whose
// mode only goes off at its next reset (a process holds it) makes the
// error a *PendingError with Disable set; gpuconf does not reset it.
func (h *Host) DisableMIG(ctx context.Context) error {
	cards, err := h.cards()
	if err != nil {
		return fmt.Errorf("disable MIG: %w", err)
	}
	if len(cards) == 0 {
		return nil
	}
	mc, err := h.migCards(ctx, cards)
	if err != nil {
		return fmt.Errorf("disable MIG: %w", err)
	}
	var on []migCard
	for _, c := range mc {
		if c.Current == ModeEnabled || c.Pending == ModeEnabled {
			on = append(on, c)
		}
	}
	if len(on) == 0 {
		return nil
	}
	have, err := h.readLayout(ctx)
	if err != nil {
		return fmt.Errorf("disable MIG: %w", err)
	}
	for _, c := range on {
		i := strconv.Itoa(c.Index)
		// Compute instances first: the driver refuses to destroy a GPU
		// instance that still has some.
		if len(have.cis[c.Index]) > 0 {
			if _, err := h.smi(ctx, "mig", "-i", i, "-dci"); err != nil {
				return fmt.Errorf("disable MIG: destroy compute instances on %s: %w", c, err)
			}
		}
		if len(have.gis[c.Index]) > 0 {
			if _, err := h.smi(ctx, "mig", "-i", i, "-dgi"); err != nil {
				return fmt.Errorf("disable MIG: destroy GPU instances on %s: %w", c, err)
			}
		}
		if c.Pending == ModeEnabled {
			if _, err := h.smi(ctx, "-i", i, "-mig", "0"); err != nil {
				return fmt.Errorf("disable MIG on %s: %w", c, err)
			}
			h.log().Info("MIG mode disabled", "gpu", c.Index, "pci", c.addr)
		}
	}
	if mc, err = h.migCards(ctx, cards); err != nil {
		return fmt.Errorf("disable MIG: %w", err)
	}
	e := &PendingError{Disable: true}
	for _, c := range mc {
		switch {
		case c.Pending == ModeEnabled:
			return fmt.Errorf("disable MIG: %s: MIG mode is still set to %s after nvidia-smi -mig 0", c, c.Pending)
		case c.Current == ModeEnabled:
			e.GPUs = append(e.GPUs, c.String())
			h.log().Warn("MIG mode pending off: reset the GPU or reboot", "gpu", c.Index, "pci", c.addr)
		}
	}
	if len(e.GPUs) > 0 {
		return e
	}
	return nil
}

// migCards pairs nvidia-smi's cards with sysfs's: every card must be
// both, or the check of the layout did not cover it.
func (h *Host) migCards(ctx context.Context, cards []card) ([]migCard, error) {
	out, err := h.smi(ctx, queryArgs...)
	if err != nil {
		return nil, err
	}
	gpus, err := parseQuery(out)
	if err != nil {
		return nil, err
	}
	byAddr := map[string]card{}
	for _, c := range cards {
		byAddr[c.addr] = c
	}
	var mc []migCard
	for _, g := range gpus {
		c, ok := byAddr[pciAddr(g.BusID)]
		if !ok {
			return nil, fmt.Errorf("nvidia-smi lists GPU %d at %s, which sysfs does not show as an NVIDIA GPU", g.Index, g.BusID)
		}
		delete(byAddr, c.addr)
		mc = append(mc, migCard{card: c, smiGPU: g})
	}
	if len(byAddr) > 0 {
		var left []string
		for a := range byAddr {
			left = append(left, a)
		}
		sort.Strings(left)
		return nil, fmt.Errorf("nvidia-smi does not list the NVIDIA GPUs at %s (is the driver bound to them?)", strings.Join(left, ", "))
	}
	return mc, nil
}

// migLayout is what the cards carry: GPU instances and their compute
// instances, by card index.
type migLayout struct {
	gis map[int][]instance
	cis map[int][]compute
}

func (h *Host) readLayout(ctx context.Context) (migLayout, error) {
	l := migLayout{gis: map[int][]instance{}, cis: map[int][]compute{}}
	out, err := h.smi(ctx, "mig", "-lgi")
	if err != nil && !bytes.Contains(out, []byte("No GPU instances found")) {
		return l, err
	}
	gis, err := parseInstances(out)
	if err != nil {
		return l, err
	}
	out, err = h.smi(ctx, "mig", "-lci")
	if err != nil && !bytes.Contains(out, []byte("No compute instances found")) {
		return l, err
	}
	cis, err := parseComputes(out)
	if err != nil {
		return l, err
	}
	for _, g := range gis {
		l.gis[g.GPU] = append(l.gis[g.GPU], g)
	}
	for _, c := range cis {
		l.cis[c.GPU] = append(l.cis[c.GPU], c)
	}
	return l, nil
}

// carries says how a card differs from the layout; "" when it carries it
// exactly: the layout's GPU instances, each with one compute instance of
// the same profile (the whole instance, as -C creates it).
func (l migLayout) carries(gpu int, layout []string) string {
	var have []string
	for _, g := range l.gis[gpu] {
		have = append(have, g.Profile)
	}
	want := slices.Clone(layout)
	sort.Strings(have)
	sort.Strings(want)
	if !slices.Equal(have, want) {
		return fmt.Sprintf("carries GPU instances [%s], not [%s]", strings.Join(have, " "), strings.Join(want, " "))
	}
	for _, g := range l.gis[gpu] {
		var cs []string
		for _, c := range l.cis[gpu] {
			if c.GI == g.ID {
				cs = append(cs, c.Profile)
			}
		}
		if len(cs) != 1 || cs[0] != g.Profile {
			return fmt.Sprintf("GPU instance %d (%s) has compute instances [%s], not one over all of it", g.ID, g.Profile, strings.Join(cs, " "))
		}
	}
	return ""
}

func (h *Host) applyLayout(ctx context.Context, cards []migCard, layout []string) error {
	have, err := h.readLayout(ctx)
	if err != nil {
		return fmt.Errorf("apply MIG layout: %w", err)
	}
	var redo []migCard
	for _, c := range cards {
		if why := have.carries(c.Index, layout); why != "" {
			h.log().Info("MIG layout differs: recreating it", "gpu", c.Index, "pci", c.addr, "reason", why)
			redo = append(redo, c)
		}
	}
	if len(redo) == 0 {
		return nil
	}
	// Profile ids differ between cards and drivers; only their names are
	// stable, so the ids come from the driver every time.
	out, err := h.smi(ctx, "mig", "-lgip")
	if err != nil {
		return fmt.Errorf("apply MIG layout: %w", err)
	}
	profiles, err := parseProfiles(out)
	if err != nil {
		return fmt.Errorf("apply MIG layout: %w", err)
	}
	ids := map[int]map[string]int{}
	for _, p := range profiles {
		if ids[p.GPU] == nil {
			ids[p.GPU] = map[string]int{}
		}
		ids[p.GPU][p.Name] = p.ID
	}
	// Largest first: the driver places each instance where it fits, and
	// small ones created first can take the only places a large one has.
	order := slices.Clone(layout)
	sort.SliceStable(order, func(i, j int) bool { return computeSlices(order[i]) > computeSlices(order[j]) })
	cgi := map[int]string{}
	for _, c := range redo {
		var ps []string
		for _, name := range order {
			id, ok := ids[c.Index][name]
			if !ok {
				return fmt.Errorf("apply MIG layout on %s: nvidia-smi mig -lgip offers no profile %s: %w", c, name, ErrLayout)
			}
			ps = append(ps, strconv.Itoa(id))
		}
		cgi[c.Index] = strings.Join(ps, ",")
	}
	for _, c := range redo {
		i := strconv.Itoa(c.Index)
		if len(have.cis[c.Index]) > 0 {
			if _, err := h.smi(ctx, "mig", "-i", i, "-dci"); err != nil {
				return fmt.Errorf("apply MIG layout: destroy compute instances on %s: %w", c, err)
			}
		}
		if len(have.gis[c.Index]) > 0 {
			if _, err := h.smi(ctx, "mig", "-i", i, "-dgi"); err != nil {
				return fmt.Errorf("apply MIG layout: destroy GPU instances on %s: %w", c, err)
			}
		}
		if _, err := h.smi(ctx, "mig", "-i", i, "-cgi", cgi[c.Index], "-C"); err != nil {
			return fmt.Errorf("apply MIG layout: create %s on %s: %w", strings.Join(order, ","), c, err)
		}
		h.log().Info("MIG layout created", "gpu", c.Index, "pci", c.addr, "layout", strings.Join(order, ","))
	}
	got, err := h.readLayout(ctx)
	if err != nil {
		return fmt.Errorf("apply MIG layout: read back: %w", err)
	}
	for _, c := range cards {
		if why := got.carries(c.Index, layout); why != "" {
			return fmt.Errorf("apply MIG layout: read back %s: it %s", c, why)
		}
	}
	return nil
}

// computeSlices is a profile's compute slices, 3 for 3g.20gb; the
// layout was checked, so every name parses.
func computeSlices(profile string) int {
	n, _ := strconv.Atoi(strings.SplitN(profile, "g.", 2)[0])
	return n
}
