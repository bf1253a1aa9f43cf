// Package fakehost is package gpuconf's Host on gpufake's tree and
// script with what the kernel does on top, for tests of what drives a
// hypervisor's GPUs. It is imported by tests only.
package fakehost

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/rackboot/rackboot/agent/gpuconf"
	"github.com/rackboot/rackboot/agent/gpuconf/gpufake"
)

// Kernel is gpuconf's Host on the fake tree, with what the kernel does
// on top: an mdev written to a type's create appears, one removed goes,
// and one a VM holds (busy) is refused. Each operation is logged among
// the script's calls, so one list shows what the agent did in order.
type Kernel struct {
	*gpuconf.Host
	tr *gpufake.Tree
	s  *gpufake.Script
	// Busy are mdevs a VM holds: their remove is refused. Resets counts
	// the function resets of each PCI address.
	Busy   map[string]bool
	Resets map[string]int
}

// NewKernel is h on tr, its calls noted in s's.
func NewKernel(h *gpuconf.Host, tr *gpufake.Tree, s *gpufake.Script) *Kernel {
	return &Kernel{Host: h, tr: tr, s: s, Busy: map[string]bool{}, Resets: map[string]int{}}
}

func (k *Kernel) note(f string, args ...any) {
	k.s.Calls = append(k.s.Calls, "> "+fmt.Sprintf(f, args...))
}

func (k *Kernel) ApplyMIG(ctx context.Context, layout []string) error {
	k.note("ApplyMIG %s", strings.Join(layout, ","))
	return k.Host.ApplyMIG(ctx, layout)
}

func (k *Kernel) EnsureMdev(ctx context.Context, gpu, kind, profile, id string) (gpuconf.Mdev, error) {
	k.note("EnsureMdev %s %s %s %s", gpu, kind, profile, id)
	m, err := k.Host.EnsureMdev(ctx, gpu, kind, profile, id)
	if err != nil {
		k.note("  %v", err)
		return m, err
	}
	td := gpufake.TypeDir(m.Parent, m.Type)
	if got := strings.TrimSpace(k.tr.Read(td + "/create")); got == id {
		k.tr.KernelCreate(m.Parent, m.Type)
		k.tr.Write(td+"/create", "")
		k.note("  created on %s as %s (%s)", m.Parent, m.Type, m.TypeName)
	}
	return m, nil
}

func (k *Kernel) RemoveMdev(ctx context.Context, id string) error {
	k.note("RemoveMdev %s", id)
	if k.Busy[id] {
		return fmt.Errorf("remove mdev %s: write %s/remove: device or resource busy", id, id)
	}
	ms, err := k.Host.Mdevs(ctx)
	if err != nil {
		return err
	}
	if err := k.Host.RemoveMdev(ctx, id); err != nil {
		return err
	}
	for _, m := range ms {
		if m.UUID == id {
			k.tr.KernelRemove(m.Parent, m.Type, id)
		}
	}
	return nil
}

func (k *Kernel) ResetFunction(ctx context.Context, addr string) error {
	k.note("ResetFunction %s", addr)
	if err := k.Host.ResetFunction(ctx, addr); err != nil {
		return err
	}
	k.Resets[addr]++
	return nil
}

// ResetGPU is counted in Resets once it succeeded; its errors are noted.
func (k *Kernel) ResetGPU(ctx context.Context, addr string) error {
	k.note("ResetGPU %s", addr)
	if err := k.Host.ResetGPU(ctx, addr); err != nil {
		k.note("  %v", err)
		return err
	}
	k.Resets[addr]++
	return nil
}

func (k *Kernel) DisableMIG(ctx context.Context) error {
	k.note("DisableMIG")
	return k.Host.DisableMIG(ctx)
}

func (k *Kernel) DisableVFs(ctx context.Context) error {
	k.note("DisableVFs")
	return k.Host.DisableVFs(ctx)
}

func (k *Kernel) Parents(ctx context.Context, gpu string) ([]string, error) {
	k.note("Parents %s", gpu)
	return k.Host.Parents(ctx, gpu)
}

// EnsureVF notes the call and what the write did: the file holds the
// type id, as the driver's attribute reads back.
func (k *Kernel) EnsureVF(ctx context.Context, r gpuconf.VFRequest) (gpuconf.VF, bool, error) {
	k.note("EnsureVF %s %s %s %s", r.GPU, r.VF, r.Kind, r.Profile)
	v, changed, err := k.Host.EnsureVF(ctx, r)
	switch {
	case err != nil:
		k.note("  %v", err)
	case changed:
		k.noteType(r.VF)
	}
	return v, changed, err
}

// FreeVF notes the call and its error.
func (k *Kernel) FreeVF(ctx context.Context, vf string) error {
	k.note("FreeVF %s", vf)
	err := k.Host.FreeVF(ctx, vf)
	if err != nil {
		k.note("  %v", err)
	} else {
		k.noteType(vf)
	}
	return err
}

// noteType notes what a virtual function's current_vgpu_type holds, or
// that the function is gone.
func (k *Kernel) noteType(vf string) {
	b, err := os.ReadFile(filepath.Join(k.tr.Root, gpufake.DevDir(vf), "nvidia/current_vgpu_type"))
	if err != nil {
		k.note("  %s: no current_vgpu_type (%v)", vf, errors.Unwrap(err))
		return
	}
	k.note("  current_vgpu_type %s", strings.TrimSpace(string(b)))
}
