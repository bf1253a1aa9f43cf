// Package hypervisor is rackboot-agent hypervisor: the service that runs
// on a deployed GPU hypervisor and keeps its GPUs as rackboot wants them.
// MIG instances, vGPU mediated devices and SR-IOV virtual functions do
// not survive a reboot, and the VMs placed on the host come and go, so
// the agent calls the rackboot API in at an interval with what the cards
// carry (package gpuconf's State) and is answered with the layout they
// must carry and the devices the host's VMs hold. It applies the layout
// once per boot or when it changes (undoing the old mode's first), makes
// each VM's mediated device with the UUID its domain names (or, on cards
// whose driver offers vGPU as vendor VFIO virtual functions, gives the
// VM's function its vGPU type), removes or frees those it made that no VM
// holds, and resets a passthrough GPU a VM gave back
// before its next tenant gets it.
package hypervisor

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/rackboot/rackboot/agent"
	"github.com/rackboot/rackboot/agent/gpuconf"
	"github.com/rackboot/rackboot/agent/protocol"
)

// GPUs is what the agent does to the host's cards; *gpuconf.Host is the
// real one.
type GPUs interface {
	State(ctx context.Context) (gpuconf.State, error)
	Cards() ([]gpuconf.Card, error)
	Parents(ctx context.Context, gpu string) ([]string, error)
	ApplyMIG(ctx context.Context, layout []string) error
	EnsureMdev(ctx context.Context, gpu, kind, profile, uuid string) (gpuconf.Mdev, error)
	Mdevs(ctx context.Context) ([]gpuconf.Mdev, error)
	RemoveMdev(ctx context.Context, uuid string) error
	EnsureVF(ctx context.Context, r gpuconf.VFRequest) (gpuconf.VF, bool, error)
	FreeVF(ctx context.Context, vf string) error
	ResetGPU(ctx context.Context, addr string) error
	DisableMIG(ctx context.Context) error
	DisableVFs(ctx context.Context) error
}

// Agent is one hypervisor's agent. Its methods are not safe for
// concurrent use: one loop drives it.
type Agent struct {
	// API is the base URL, ending in /api/v1; NodeID the host's node.
	API, NodeID string
	// Token is the hypervisor token. TokenFile, when set, is read again
	// after the server refused the token: an operator re-issues it by
	// writing the file, without restarting the service.
	Token     string
	TokenFile string
	// HTTP nil means a client with a 30 s timeout and no TLS pinning.
	HTTP *http.Client
	GPUs GPUs
	// StateFile keeps what an agent restarted meanwhile must still know:
	// the passthrough GPUs the last answer held and the resets owed, the
	// mdevs this agent made, the GPU mode it applied. "" keeps them in
	// memory only.
	StateFile string
	// Root is where the host's /proc is; "" means "/".
	Root string
	// Booted says when the host booted, for people to read in the
	// report; nil reads /proc/stat. A new boot is told by the kernel's
	// boot_id, not by this: btime moves when NTP steps the clock.
	Booted  func() time.Time
	Logger  *slog.Logger
	Version string

	bootID  string // the boot the layout was applied on
	mode    string // the GPUMode the last answer gave
	applied string // the layout applied on this boot, as reported
	layout  bool   // whether a layout was applied on this boot
	errs    []string
	st      state
	loaded  bool // st was read from StateFile
	dirty   bool // st differs from StateFile
}

// state is what StateFile keeps.
type state struct {
	// passthrough are the passthrough GPUs of the last answer and the VM
	// holding each ("" when read from a file that did not say).
	passthrough map[string]string
	// owed are GPUs given back whose reset has not been done yet.
	owed []string
	// mdevs are the mdevs this agent made or an answer listed: the only
	// ones it removes. Others on the cards are an operator's or belong
	// to VMs rackboot does not manage.
	mdevs []string
	// vfs are the virtual functions this agent gave a vGPU type (vendor
	// VFIO), with the type it wrote: the only ones it frees. The type's
	// name is kept because the driver's lists stop naming a MIG-backed
	// type once its profile's last instance is taken.
	vfs map[string]gpuconf.VGPUType
	// mode is the GPU mode last applied, so a change of mode undoes it.
	mode string
}

// Intervals and backoff.
const (
	DefaultInterval = 10 * time.Second
	MinInterval     = time.Second
	MaxInterval     = 5 * time.Minute
	minBackoff      = time.Second
	maxBackoff      = 30 * time.Second
	// maxExchanges bounds the calls of one Round: each one after the
	// first follows an apply that changed the host, and a server that
	// keeps handing out new devices must not keep the loop from sleeping.
	maxExchanges = 4
)

// ErrTokenRefused: the server answered 401 or 403 to the hypervisor
// token.
var ErrTokenRefused = errors.New("the server refused the hypervisor token")

// StatusError is an answer other than 200.
type StatusError struct {
	Status  int
	Code    string
	Message string
}

func (e *StatusError) Error() string {
	s := fmt.Sprintf("%d %s", e.Status, http.StatusText(e.Status))
	if e.Code != "" {
		s += " " + e.Code
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	if e.refused() {
		s = ErrTokenRefused.Error() + " (" + s + "): issue a new one and write it to the token file"
	}
	return s
}

func (e *StatusError) refused() bool {
	return e.Status == http.StatusUnauthorized || e.Status == http.StatusForbidden
}

// Is makes a 401 or 403 ErrTokenRefused.
func (e *StatusError) Is(target error) bool { return target == ErrTokenRefused && e.refused() }

func (a *Agent) log() *slog.Logger {
	if a.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return a.Logger
}

// LastErrors are what the last apply could not do; the next report
// carries them.
func (a *Agent) LastErrors() []string { return slices.Clone(a.errs) }

// Round is one exchange with the server: report, take the work, apply
// it. When applying changed the host it calls in again at once, so that
// the server, which waits for a new VM's mdev to appear in a report
// before it starts the VM, sees it within one round-trip. It returns the
// last work; an error is an exchange that failed, while what the host
// could not do is logged and reported on the next call (LastErrors).
func (a *Agent) Round(ctx context.Context) (protocol.HypervisorWork, error) {
	var work protocol.HypervisorWork
	for i := 0; i < maxExchanges; i++ {
		var err error
		if work, err = a.exchange(ctx); err != nil {
			return work, err
		}
		if !a.apply(ctx, work) {
			break
		}
	}
	return work, nil
}

func (a *Agent) exchange(ctx context.Context) (protocol.HypervisorWork, error) {
	booted := a.bootTime()
	id := a.readBootID(booted)
	if id != a.bootID {
		if a.bootID != "" {
			a.log().Info("host booted again: applying the layout again", "booted", booted, "boot_id", id)
		}
		a.bootID, a.layout, a.applied = id, false, ""
	}
	a.loadState(func(err error) { a.errs = append(a.errs, err.Error()) })
	if !a.layout && a.st.mode == protocol.DeviceVGPU {
		// A reboot took the virtual functions: a report without them
		// would show the cards as having no vendor VFIO vGPU at all.
		if err := a.enableVFs(ctx); err != nil {
			a.errs = append(a.errs, err.Error())
		}
	}
	rep := protocol.HypervisorReport{Booted: booted, Applied: a.applied, Errors: slices.Clone(a.errs), Version: a.Version}
	if !strings.HasPrefix(id, btimeID) {
		rep.BootID = id
	}
	st, err := a.GPUs.State(ctx)
	switch {
	case err == nil:
		a.nameVFTypes(&st)
		if rep.GPUs, err = json.Marshal(st); err != nil {
			return protocol.HypervisorWork{}, fmt.Errorf("hypervisor report: %w", err)
		}
	case noDriver(err):
		if needsGPUs(a.mode) {
			rep.Errors = append(rep.Errors, fmt.Sprintf("GPU mode %s, but this host has no NVIDIA driver (nvidia-smi not found)", a.mode))
		}
	default:
		rep.Errors = append(rep.Errors, err.Error())
	}
	work, err := a.post(ctx, rep)
	if err != nil {
		return work, fmt.Errorf("hypervisor call: %w", err)
	}
	return work, nil
}

func noDriver(err error) bool {
	return errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist)
}

func needsGPUs(mode string) bool { return mode == protocol.DeviceVGPU || mode == protocol.DeviceMIG }

func (a *Agent) post(ctx context.Context, rep protocol.HypervisorReport) (protocol.HypervisorWork, error) {
	var work protocol.HypervisorWork
	b, err := json.Marshal(rep)
	if err != nil {
		return work, err
	}
	u := strings.TrimRight(a.API, "/") + fmt.Sprintf(protocol.HypervisorPath, a.NodeID)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(b))
	if err != nil {
		return work, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+a.Token)
	c := a.HTTP
	if c == nil {
		c = &http.Client{Timeout: 30 * time.Second}
	}
	resp, err := c.Do(req)
	if err != nil {
		return work, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return work, fmt.Errorf("read the answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		_ = json.Unmarshal(data, &e) // a proxy's page has no JSON: the status says enough
		return work, &StatusError{Status: resp.StatusCode, Code: e.Error.Code, Message: e.Error.Message}
	}
	if err := json.Unmarshal(data, &work); err != nil {
		return work, fmt.Errorf("read the answer: %w", err)
	}
	return work, nil
}

// apply makes the host carry work and says whether anything changed.
// Each step goes on when another failed; the failures become the next
// report's errors.
func (a *Agent) apply(ctx context.Context, work protocol.HypervisorWork) (changed bool) {
	var errs []string
	fail := func(err error) {
		a.log().Warn("hypervisor apply", "err", err)
		errs = append(errs, err.Error())
	}
	defer func() { a.errs = errs }()
	a.mode = work.GPUMode
	if !a.loadState(fail) {
		return false // a later round reads it again rather than forget a GPU owed a reset
	}
	before := a.st.clone()
	wanted := wantedMdevs(work.Devices, fail)
	if a.freeVFs(ctx, work.Devices, fail) {
		changed = true
	}
	// Removing first gives a card's room back to the VM that replaces
	// another, and takes an old mode's mdevs off before it is undone.
	existing, err := a.removeMdevs(ctx, wanted, fail)
	if err != nil {
		fail(err)
	} else if existing.changed {
		changed = true
	}
	want := strings.TrimSpace(work.GPUMode + " " + work.GPUProfile)
	if !a.layout || want != a.applied {
		ok, err := a.applyLayout(ctx, work, wanted)
		if err != nil {
			fail(err)
		}
		if ok {
			a.layout, a.applied, changed = true, want, true
		}
	}
	if err == nil && a.ensureMdevs(ctx, work.Devices, wanted, existing.uuids, fail) {
		changed = true
	}
	if err == nil && a.ensureVFs(ctx, work.Devices, fail) {
		changed = true
	}
	for id := range wanted {
		a.st.addMdev(id)
	}
	if a.applyPassthrough(ctx, work.Devices, fail) {
		changed = true
	}
	if a.dirty || !a.st.equal(before) {
		a.dirty = true
		if err := a.saveState(); err != nil {
			// Kept in memory meanwhile: only a restart before the next
			// save forgets it.
			fail(err)
		} else {
			a.dirty = false
		}
	}
	return changed
}

// applyLayout applies the mode's layout; ok when it did. Passthrough and
// no mode have none, and are applied by doing nothing. A mode other than
// the one applied before is undone first.
func (a *Agent) applyLayout(ctx context.Context, work protocol.HypervisorWork, wanted map[string]protocol.HypervisorDevice) (ok bool, err error) {
	switch work.GPUMode {
	case "", protocol.DevicePassthrough, protocol.DeviceMIG, protocol.DeviceVGPU:
	default:
		return false, fmt.Errorf("GPU mode %q: want passthrough, vgpu or mig", work.GPUMode)
	}
	if old := a.st.mode; old != "" && old != work.GPUMode {
		if err := a.undoMode(ctx, old, work, wanted); err != nil {
			return false, err
		}
	}
	// Whatever the new layout leaves, even half applied, is the new
	// mode's to undo.
	a.st.mode = work.GPUMode
	switch work.GPUMode {
	case protocol.DeviceMIG:
		if err := a.GPUs.ApplyMIG(ctx, strings.Split(work.GPUProfile, ",")); err != nil {
			return false, err
		}
		a.log().Info("MIG layout applied", "layout", work.GPUProfile)
		// MIG-backed vGPUs live on the virtual functions: enabled now,
		// they are in the reports before a VM asks for one. The layout
		// stands without them; the error is reported.
		if err := a.enableVFs(ctx); err != nil {
			return true, err
		}
	case protocol.DeviceVGPU:
		// The devices themselves come with the VMs; the layout is the
		// virtual functions they are made on.
		if err := a.enableVFs(ctx); err != nil {
			return false, err
		}
	}
	return true, nil
}

// enableVFs enables the virtual functions of every SR-IOV card, on which
// vGPUs live.
func (a *Agent) enableVFs(ctx context.Context) error {
	cards, err := a.GPUs.Cards()
	if err != nil {
		return fmt.Errorf("enable virtual functions: %w", err)
	}
	var errs []error
	for _, c := range cards {
		if !c.Known || !c.Model.SRIOV {
			continue
		}
		if _, err := a.GPUs.Parents(ctx, c.Addr); err != nil {
			errs = append(errs, fmt.Errorf("enable virtual functions: %w", err))
		}
	}
	return errors.Join(errs...)
}

// nameVFTypes names, in a report, the types this agent wrote whose name
// no list of the driver gives any more (a MIG-backed type whose
// profile's last instance is taken): the server knows a MIG VM's
// function carries its type by that name.
func (a *Agent) nameVFTypes(st *gpuconf.State) {
	for i := range st.GPUs {
		for j := range st.GPUs[i].VFs {
			v := &st.GPUs[i].VFs[j]
			if t, ok := a.st.vfs[v.Address]; ok && v.Type != 0 && v.TypeName == "" && t.ID == v.Type {
				v.TypeName = t.Name
			}
		}
	}
}

// undoMode takes off what mode old left on the cards: MIG instances and
// MIG mode, the virtual functions sriov-manage enabled. The server
// refuses a change of mode while VMs hold devices, but the host may not
// have caught up: while any device of the old kind is still asked for,
// or an mdev the agent made is still there, nothing is undone.
func (a *Agent) undoMode(ctx context.Context, old string, work protocol.HypervisorWork, wanted map[string]protocol.HypervisorDevice) error {
	if old != protocol.DeviceMIG && old != protocol.DeviceVGPU {
		return nil // passthrough leaves nothing on the cards
	}
	fail := func(err error) error {
		return fmt.Errorf("GPU mode %s to %q: %w; the cards stay as %s left them", old, work.GPUMode, err, old)
	}
	for _, d := range work.Devices {
		if d.Kind == old {
			return fail(fmt.Errorf("VM %s still holds a %s device on %s", d.VM, d.Kind, d.GPU))
		}
	}
	have, err := a.GPUs.Mdevs(ctx)
	if err != nil {
		return fail(err)
	}
	for _, m := range have {
		if _, ok := wanted[m.UUID]; !ok && slices.Contains(a.st.mdevs, m.UUID) {
			return fail(fmt.Errorf("mdev %s on %s is not removed yet", m.UUID, m.GPU))
		}
	}
	if len(a.st.vfs) > 0 {
		return fail(fmt.Errorf("the vGPU types of virtual functions %s are not freed yet", strings.Join(slices.Sorted(maps.Keys(a.st.vfs)), ", ")))
	}
	// The new mode's mdevs need the virtual functions as much as the
	// old one's did.
	if !needsGPUs(work.GPUMode) {
		if err := a.GPUs.DisableVFs(ctx); err != nil {
			return fail(err)
		}
	}
	if old == protocol.DeviceMIG {
		if err := a.GPUs.DisableMIG(ctx); err != nil {
			return fail(err)
		}
	}
	a.log().Info("GPU mode undone", "from", old, "to", work.GPUMode)
	return nil
}

// wantedMdevs are the mediated devices the answer's VMs hold, by UUID.
func wantedMdevs(devs []protocol.HypervisorDevice, fail func(error)) map[string]protocol.HypervisorDevice {
	wanted := map[string]protocol.HypervisorDevice{}
	for _, d := range devs {
		if d.Kind != protocol.DeviceVGPU && d.Kind != protocol.DeviceMIG || d.VF != "" {
			continue
		}
		if d.Mdev == "" {
			fail(fmt.Errorf("device of VM %s (%s on %s) has no mdev UUID", d.VM, d.Kind, d.GPU))
			continue
		}
		wanted[strings.ToLower(d.Mdev)] = d
	}
	return wanted
}

type mdevsLeft struct {
	uuids   map[string]bool // the host's mdevs after the removals
	changed bool
}

// removeMdevs removes the mdevs on NVIDIA cards that this agent made and
// no device names. It forgets those of its own that are gone (a reboot
// took them) and not asked for.
// The error is one listing them, after which nothing else about mdevs is
// done this round.
func (a *Agent) removeMdevs(ctx context.Context, wanted map[string]protocol.HypervisorDevice, fail func(error)) (mdevsLeft, error) {
	left := mdevsLeft{uuids: map[string]bool{}}
	have, err := a.GPUs.Mdevs(ctx)
	if err != nil {
		return left, err
	}
	for _, m := range have {
		left.uuids[m.UUID] = true
	}
	if len(have) > 0 {
		cards, err := a.GPUs.Cards()
		if err != nil {
			return left, err
		}
		nvidia := map[string]bool{}
		for _, c := range cards {
			nvidia[c.Addr] = true
		}
		for _, m := range have {
			if _, ok := wanted[m.UUID]; ok || !nvidia[m.GPU] {
				continue
			}
			if !slices.Contains(a.st.mdevs, m.UUID) {
				a.log().Debug("mdev not made by this agent: left alone", "mdev", m.UUID, "gpu", m.GPU)
				continue
			}
			// The kernel refuses, or sits on the write, while a VM still
			// holds it: the next round tries again.
			if err := a.GPUs.RemoveMdev(ctx, m.UUID); err != nil {
				fail(fmt.Errorf("mdev %s on %s is in no VM's devices, but: %w", m.UUID, m.GPU, err))
				continue
			}
			a.log().Info("mdev removed: no VM holds it", "mdev", m.UUID, "gpu", m.GPU)
			delete(left.uuids, m.UUID)
			left.changed = true
		}
	}
	a.st.mdevs = slices.DeleteFunc(a.st.mdevs, func(id string) bool {
		_, w := wanted[id]
		return !w && !left.uuids[id]
	})
	return left, nil
}

// ensureMdevs makes the devices' mdevs that are missing.
func (a *Agent) ensureMdevs(ctx context.Context, devs []protocol.HypervisorDevice, wanted map[string]protocol.HypervisorDevice, existed map[string]bool, fail func(error)) (changed bool) {
	for _, d := range devs {
		if w, ok := wanted[strings.ToLower(d.Mdev)]; !ok || w != d {
			continue
		}
		m, err := a.GPUs.EnsureMdev(ctx, d.GPU, d.Kind, d.Profile, d.Mdev)
		if err != nil {
			fail(fmt.Errorf("VM %s: %w", d.VM, err))
			continue
		}
		if !existed[m.UUID] {
			a.log().Info("mdev made", "vm", d.VM, "mdev", m.UUID, "type", m.Type, "type_name", m.TypeName, "parent", m.Parent)
			changed = true
		}
	}
	return changed
}

// wantedVFs are the virtual functions the answer's VMs hold as vendor
// VFIO vGPUs.
func wantedVFs(devs []protocol.HypervisorDevice) map[string]bool {
	w := map[string]bool{}
	for _, d := range devs {
		if d.VF != "" && (d.Kind == protocol.DeviceVGPU || d.Kind == protocol.DeviceMIG) {
			w[strings.ToLower(d.VF)] = true
		}
	}
	return w
}

// freeVFs frees the vGPU types this agent set on virtual functions that
// no device names any more. The driver refuses while a VM still holds
// one, and the next round tries again. Freeing first gives the card's
// room back to the VM that replaces another.
func (a *Agent) freeVFs(ctx context.Context, devs []protocol.HypervisorDevice, fail func(error)) (changed bool) {
	wanted := wantedVFs(devs)
	for _, vf := range slices.Sorted(maps.Keys(a.st.vfs)) {
		if wanted[vf] {
			continue
		}
		err := a.GPUs.FreeVF(ctx, vf)
		switch {
		case errors.Is(err, gpuconf.ErrNotVF):
			// Nothing there can ever be freed: kept, it would stop
			// every later change of GPU mode.
			a.log().Warn("forgot a virtual function that is none", "pci", vf, "err", err)
			delete(a.st.vfs, vf)
			continue
		case err != nil:
			fail(fmt.Errorf("virtual function %s is in no VM's devices, but: %w", vf, err))
			continue
		}
		a.log().Info("vGPU freed: no VM holds it", "pci", vf)
		delete(a.st.vfs, vf)
		changed = true
	}
	return changed
}

// ensureVFs gives each device's virtual function its vGPU type. A
// function becomes this agent's only when EnsureVF is about to write its
// type, and is saved to the state file before the write: one whose write
// was left waiting, or an agent that crashed meanwhile, still frees it
// later, while one EnsureVF refused (an operator's, or an address that
// is no virtual function) is never touched.
func (a *Agent) ensureVFs(ctx context.Context, devs []protocol.HypervisorDevice, fail func(error)) (changed bool) {
	for _, d := range devs {
		if d.VF == "" || d.Kind != protocol.DeviceVGPU && d.Kind != protocol.DeviceMIG {
			continue
		}
		vf := strings.ToLower(d.VF)
		names := map[int]string{}
		for _, t := range a.st.vfs {
			if t.Name != "" {
				names[t.ID] = t.Name
			}
		}
		v, set, err := a.GPUs.EnsureVF(ctx, gpuconf.VFRequest{
			GPU: d.GPU, VF: vf, Kind: d.Kind, Profile: d.Profile, Names: names,
			Before: func(t gpuconf.VGPUType) error {
				a.st.addVF(vf, t)
				if err := a.saveState(); err != nil {
					// Written unrecorded, a crash would leave a type no
					// one frees.
					a.dirty = true
					return fmt.Errorf("record it before the write: %w", err)
				}
				return nil
			},
		})
		if err != nil {
			fail(fmt.Errorf("VM %s: %w", d.VM, err))
			continue
		}
		if set {
			a.log().Info("vGPU type set", "vm", d.VM, "pci", vf, "type", v.Type, "type_name", v.TypeName)
			changed = true
		}
	}
	return changed
}

// applyPassthrough resets the passthrough GPUs whose VM gave them back.
// A GPU handed from one VM to another between two answers is not reset
// here: libvirt's managed attach reset it for the new VM, and a reset
// now would hit a running guest. A reset that fails (the device is still
// open, nvidia-smi refuses) stays owed and is tried each round.
func (a *Agent) applyPassthrough(ctx context.Context, devs []protocol.HypervisorDevice, fail func(error)) (changed bool) {
	now := map[string]string{}
	for _, d := range devs {
		if _, ok := now[d.GPU]; d.Kind == protocol.DevicePassthrough && !ok {
			now[d.GPU] = d.VM
		}
	}
	owed := slices.Clone(a.st.owed)
	for g, vm := range a.st.passthrough {
		nvm, held := now[g]
		switch {
		case !held:
			a.log().Info("passthrough GPU given back: reset owed", "gpu", g, "vm", vm)
			if !slices.Contains(owed, g) {
				owed = append(owed, g)
			}
		case vm != "" && nvm != vm:
			a.log().Info("passthrough GPU handed to another VM in one interval: libvirt's managed attach reset it, no reset here", "gpu", g, "from", vm, "to", nvm)
		}
	}
	slices.Sort(owed)
	var next []string
	for _, g := range owed {
		if vm, held := now[g]; held {
			a.log().Info("passthrough GPU owed a reset is held again: libvirt's managed attach reset it, the reset is dropped", "gpu", g, "vm", vm)
			continue
		}
		if err := a.GPUs.ResetGPU(ctx, g); err != nil {
			fail(fmt.Errorf("GPU %s was given back, but (retried next round): %w", g, err))
			next = append(next, g)
			continue
		}
		a.log().Info("passthrough GPU given back: reset", "gpu", g)
		changed = true
	}
	a.st.owed, a.st.passthrough = next, now
	return changed
}

func (s state) clone() state {
	return state{passthrough: maps.Clone(s.passthrough), owed: slices.Clone(s.owed), mdevs: slices.Clone(s.mdevs), vfs: maps.Clone(s.vfs), mode: s.mode}
}

func (s state) equal(o state) bool {
	return maps.Equal(s.passthrough, o.passthrough) && slices.Equal(s.owed, o.owed) && slices.Equal(s.mdevs, o.mdevs) && maps.Equal(s.vfs, o.vfs) && s.mode == o.mode
}

func (s *state) addMdev(id string) {
	if i, found := slices.BinarySearch(s.mdevs, id); !found {
		s.mdevs = slices.Insert(s.mdevs, i, id)
	}
}

func (s *state) addVF(vf string, t gpuconf.VGPUType) {
	if s.vfs == nil {
		s.vfs = map[string]gpuconf.VGPUType{}
	}
	s.vfs[vf] = t
}

// stateFile is what StateFile holds.
type stateFile struct {
	// Held is what agents before this format kept: the passthrough GPUs
	// of the last answer and those owed a reset, without their VMs. It
	// is read, never written: each becomes a GPU held by an unknown VM,
	// reset once no answer holds it.
	Held []string `json:"held,omitempty"`
	// Passthrough maps each passthrough GPU of the last answer to its
	// VM.
	Passthrough map[string]string `json:"passthrough"`
	// Owed are GPUs given back whose reset is still to do.
	Owed []string `json:"owed_resets"`
	// Mdevs are the mdevs the agent made or an answer listed.
	Mdevs []string `json:"mdevs"`
	// VFs are the virtual functions the agent gave a vGPU type.
	VFs []string `json:"vfs,omitempty"`
	// VFTypes are the types it wrote to them, by function. A file
	// without it (an older agent's) gives each function of VFs a type
	// of unknown id and name.
	VFTypes map[string]gpuconf.VGPUType `json:"vf_types,omitempty"`
	// GPUMode is the mode last applied.
	GPUMode string `json:"gpu_mode"`
}

// loadState reads StateFile once; false when it could not be read and a
// later round must try again. A file that does not parse would stop the
// agent for good, so it is moved aside and the agent starts afresh.
func (a *Agent) loadState(fail func(error)) bool {
	if a.loaded || a.StateFile == "" {
		a.loaded = true
		return true
	}
	b, err := os.ReadFile(a.StateFile)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		fail(fmt.Errorf("read state file: %w", err))
		return false
	default:
		var f stateFile
		if err := json.Unmarshal(b, &f); err != nil {
			aside := a.StateFile + ".corrupt"
			if rerr := os.Rename(a.StateFile, aside); rerr != nil {
				fail(fmt.Errorf("state file %s is corrupt (%v), and moving it aside failed (%v): started afresh, forgetting the resets owed and the mdevs made", a.StateFile, err, rerr))
			} else {
				fail(fmt.Errorf("state file %s is corrupt (%v): moved to %s, started afresh, forgetting the resets owed and the mdevs made", a.StateFile, err, aside))
			}
			a.dirty = true
			break
		}
		a.st = state{passthrough: f.Passthrough, mode: f.GPUMode}
		if a.st.passthrough == nil {
			a.st.passthrough = map[string]string{}
		}
		for _, g := range f.Held {
			if _, ok := a.st.passthrough[g]; !ok {
				a.st.passthrough[g] = ""
			}
		}
		a.st.owed = slices.Sorted(slices.Values(f.Owed))
		a.st.owed = slices.Compact(a.st.owed)
		for _, id := range f.Mdevs {
			a.st.addMdev(strings.ToLower(id))
		}
		for _, vf := range f.VFs {
			a.st.addVF(strings.ToLower(vf), f.VFTypes[vf])
		}
	}
	a.loaded = true
	return true
}

func (a *Agent) saveState() error {
	if a.StateFile == "" {
		return nil
	}
	st := stateFile{Passthrough: a.st.passthrough, Owed: a.st.owed, Mdevs: a.st.mdevs, VFs: slices.Sorted(maps.Keys(a.st.vfs)), GPUMode: a.st.mode}
	if len(a.st.vfs) > 0 {
		st.VFTypes = a.st.vfs
	}
	if st.Passthrough == nil {
		st.Passthrough = map[string]string{}
	}
	if st.Owed == nil {
		st.Owed = []string{}
	}
	if st.Mdevs == nil {
		st.Mdevs = []string{}
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	dir := filepath.Dir(a.StateFile)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("write state file: %w", err)
	}
	f, err := os.CreateTemp(dir, filepath.Base(a.StateFile)+".*")
	if err != nil {
		return fmt.Errorf("write state file: %w", err)
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return fmt.Errorf("write state file: %w", err)
	}
	// Renamed only once on disk, so a crash leaves the old state or the
	// new one, never none: a lost state is a GPU never reset.
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("write state file: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write state file: %w", err)
	}
	if err := os.Rename(f.Name(), a.StateFile); err != nil {
		return fmt.Errorf("write state file: %w", err)
	}
	return nil
}

// Run calls in until ctx ends, at the interval the server asks for, and
// backs off while calls fail. A refused token is retried too, slowly: an
// operator may issue a new one.
func (a *Agent) Run(ctx context.Context) error {
	backoff := minBackoff
	for {
		work, err := a.Round(ctx)
		wait := interval(work.Interval)
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, ErrTokenRefused):
			a.log().Error("the server refuses this host's hypervisor token: issue a new one and write it to the token file", "err", err, "retry_in", maxBackoff)
			wait, backoff = maxBackoff, maxBackoff
			if a.TokenFile != "" {
				if tok, err := ReadToken(a.TokenFile); err != nil {
					a.log().Error("read the token again", "err", err)
				} else {
					a.Token = tok
				}
			}
		case err != nil:
			a.log().Warn("hypervisor call failed", "err", err, "retry_in", backoff)
			wait, backoff = backoff, min(backoff*2, maxBackoff)
		default:
			backoff = minBackoff
		}
		if agent.Sleep(ctx, wait) != nil {
			return nil
		}
	}
}

func interval(d protocol.Duration) time.Duration {
	if d == 0 {
		return DefaultInterval
	}
	return min(max(time.Duration(d), MinInterval), MaxInterval)
}

func (a *Agent) procPath(p string) string {
	root := a.Root
	if root == "" {
		root = "/"
	}
	return filepath.Join(root, "proc", p)
}

func (a *Agent) bootTime() time.Time {
	if a.Booted != nil {
		return a.Booted()
	}
	t, err := BootTime(a.procPath("stat"))
	if err != nil {
		a.log().Warn("boot time", "err", err)
	}
	return t
}

// btimeID starts what stands for the boot id where the kernel's cannot
// be read: the boot time, which tells boots apart less well.
const btimeID = "btime:"

// readBootID is the kernel's id of this boot, which changes on every
// boot and only then.
func (a *Agent) readBootID(booted time.Time) string {
	b, err := os.ReadFile(a.procPath("sys/kernel/random/boot_id"))
	if id := strings.TrimSpace(string(b)); err == nil && id != "" {
		return id
	}
	a.log().Warn("no boot id: telling boots apart by the boot time", "err", err)
	return btimeID + strconv.FormatInt(booted.Unix(), 10)
}

// BootTime reads the boot time (btime) from a /proc/stat.
func BootTime(procStat string) (time.Time, error) {
	f, err := os.Open(procStat)
	if err != nil {
		return time.Time{}, fmt.Errorf("boot time: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "btime "); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return time.Time{}, fmt.Errorf("boot time: %s: btime %q", procStat, v)
			}
			return time.Unix(n, 0).UTC(), nil
		}
	}
	if err := sc.Err(); err != nil {
		return time.Time{}, fmt.Errorf("boot time: %w", err)
	}
	return time.Time{}, fmt.Errorf("boot time: %s has no btime line", procStat)
}

// LoadConfig reads the agent's configuration: confPath holds one line in
// the kernel command line's form (rackboot.api=https://…
// rackboot.node=ID rackboot.ca=sha256:…), tokenPath the hypervisor
// token.
func LoadConfig(confPath, tokenPath string) (agent.Cmdline, string, error) {
	b, err := os.ReadFile(confPath)
	if err != nil {
		return agent.Cmdline{}, "", fmt.Errorf("hypervisor config: %w", err)
	}
	c, err := agent.ParseCmdline(string(b))
	if err != nil {
		return c, "", fmt.Errorf("hypervisor config %s: %w", confPath, err)
	}
	if c.Node == "" {
		return c, "", fmt.Errorf("hypervisor config %s: no rackboot.node=ID", confPath)
	}
	tok, err := ReadToken(tokenPath)
	if err != nil {
		return c, "", err
	}
	return c, tok, nil
}

// ReadToken reads a token file, which only its owner may read: the token
// opens the host's GPU layout to whoever holds it.
func ReadToken(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("hypervisor token: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("hypervisor token: %w", err)
	}
	if m := fi.Mode().Perm(); m&0o077 != 0 {
		return "", fmt.Errorf("hypervisor token %s: mode %04o lets group or others read it: chmod 600 it", path, m)
	}
	b, err := io.ReadAll(io.LimitReader(f, 64<<10))
	if err != nil {
		return "", fmt.Errorf("hypervisor token: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("hypervisor token %s: the file is empty", path)
	}
	if strings.ContainsAny(tok, " \t\r\n") {
		return "", fmt.Errorf("hypervisor token %s: holds more than one word", path)
	}
	return tok, nil
}
