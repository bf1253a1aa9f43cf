package gpuconf

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestRemoveMdevBounded: a remove the kernel sits on (vfio waits for the
// VM to let go) returns after the timeout instead of hanging the caller,
// and a second one does not pile up behind it.
func TestRemoveMdevBounded(t *testing.T) {
	ctx := context.Background()
	h, tr, _ := t4Host(t)
	h.SysfsTimeout = 50 * time.Millisecond
	const id = "6f4ac1d2-3b7e-4c59-9a1f-2d8e0b5c7a34"
	tr.Write(typeDir(t4, "nvidia-222")+"/create", id)
	tr.KernelCreate(t4, "nvidia-222")
	// A FIFO's open for writing blocks until a reader comes: the kernel
	// not answering.
	p := filepath.Join(tr.Root, devDir(t4), id, "remove")
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(p, 0o600); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	t.Cleanup(func() {
		// Let the blocked write finish.
		if f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NONBLOCK, 0); err == nil {
			time.Sleep(10 * time.Millisecond)
			f.Close()
		}
	})
	start := time.Now()
	err := h.RemoveMdev(ctx, id)
	if !errors.Is(err, ErrKernelSilent) || !strings.Contains(err.Error(), "remove mdev "+id) || !strings.Contains(err.Error(), "a VM may still hold") {
		t.Fatalf("RemoveMdev = %v, want ErrKernelSilent", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("RemoveMdev took %v", d)
	}
	if err := h.RemoveMdev(ctx, id); !errors.Is(err, ErrKernelSilent) || !strings.Contains(err.Error(), "an earlier write is still waiting") {
		t.Errorf("second RemoveMdev = %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := h.RemoveMdev(cctx, id); !errors.Is(err, context.Canceled) {
		t.Errorf("RemoveMdev with ctx ended = %v", err)
	}
}

func TestResetGPU(t *testing.T) {
	const (
		onNvidia = "0000:65:00.0"
		onVFIO   = "0000:66:00.0"
		cdev     = "0000:67:00.0"
		bare     = "0000:68:00.0"
		nouveau  = "0000:69:00.0"
	)
	setup := func(t *testing.T) (*Host, *tree, *script) {
		tr := newTree(t)
		for _, g := range []string{onNvidia, onVFIO, cdev, bare, nouveau} {
			tr.PCI(g, "10de", "26b9", "030200")
			tr.Write(devDir(g)+"/reset", "")
		}
		tr.Bind(onNvidia, "nvidia")
		tr.Bind(onVFIO, "vfio-pci")
		tr.IOMMUGroup(onVFIO, 42)
		tr.Bind(cdev, "vfio-pci")
		tr.IOMMUGroup(cdev, 43)
		tr.Mkdir(devDir(cdev) + "/vfio-dev/vfio3")
		tr.Bind(nouveau, "nouveau")
		tr.OpenFD(100, "systemd", 3, "/dev/null")
		tr.OpenFD(100, "systemd", 4, "/dev/vfio/vfio")
		s := &script{T: t, State: "host", Table: map[string]map[string]reply{"host": {
			"nvidia-smi -r -i " + onNvidia: {File: "l40/reset.txt"},
		}}}
		return &Host{Root: tr.Root, Runner: s}, tr, s
	}
	ctx := context.Background()
	t.Run("nvidia", func(t *testing.T) {
		h, tr, s := setup(t)
		if err := h.ResetGPU(ctx, onNvidia); err != nil {
			t.Fatal(err)
		}
		if got := calls(s); got != "nvidia-smi -r -i "+onNvidia+"\n" || tr.Read(devDir(onNvidia)+"/reset") != "" {
			t.Errorf("calls %q, reset %q", got, tr.Read(devDir(onNvidia)+"/reset"))
		}
	})
	t.Run("free", func(t *testing.T) {
		h, tr, s := setup(t)
		for _, g := range []string{onVFIO, cdev, bare} {
			if err := h.ResetGPU(ctx, g); err != nil {
				t.Fatal(err)
			}
			if got := tr.Read(devDir(g) + "/reset"); got != "1" {
				t.Errorf("%s reset holds %q", g, got)
			}
		}
		if len(s.Calls) > 0 {
			t.Errorf("calls %q", s.Calls)
		}
	})
	for _, tc := range []struct{ name, gpu, node string }{{"group", onVFIO, "/dev/vfio/42"}, {"cdev", cdev, "/dev/vfio/devices/vfio3"}} {
		t.Run("held by "+tc.name, func(t *testing.T) {
			h, tr, _ := setup(t)
			tr.OpenFD(4242, "qemu-system-x86", 31, tc.node)
			err := h.ResetGPU(ctx, tc.gpu)
			if !errors.Is(err, ErrInUse) || err.Error() != "reset "+tc.gpu+": "+tc.node+" is in use by pid 4242 (qemu-system-x86)" {
				t.Errorf("ResetGPU = %v", err)
			}
			if got := tr.Read(devDir(tc.gpu) + "/reset"); got != "" {
				t.Errorf("reset holds %q", got)
			}
		})
	}
	t.Run("other driver", func(t *testing.T) {
		h, _, _ := setup(t)
		if err := h.ResetGPU(ctx, nouveau); err == nil || !strings.Contains(err.Error(), "bound to driver nouveau") {
			t.Errorf("ResetGPU = %v", err)
		}
	})
}

// TestDisableMIG: instances destroyed, then MIG mode off; a card that
// keeps it until a reset is a pending error.
func TestDisableMIG(t *testing.T) {
	ctx := context.Background()
	h, s := h100Host(t, "layout")
	s.Table["layout"]["nvidia-smi mig -i 0 -dci"] = reply{File: "h100/dci.txt", Next: "no-ci"}
	s.Table["no-ci"] = map[string]reply{"nvidia-smi mig -i 0 -dgi": {File: "h100/dgi.txt", Next: "on"}}
	s.Table["on"]["nvidia-smi -i 0 -mig 0"] = reply{File: "h100/mig0.txt", Next: "off"}
	if err := h.DisableMIG(ctx); err != nil {
		t.Fatal(err)
	}
	want := strings.Join([]string{smiQuery, "nvidia-smi mig -lgi", "nvidia-smi mig -lci", "nvidia-smi mig -i 0 -dci", "nvidia-smi mig -i 0 -dgi", "nvidia-smi -i 0 -mig 0", smiQuery}, "\n") + "\n"
	if got := calls(s); got != want {
		t.Errorf("calls:\n%s\nwant:\n%s", got, want)
	}
	s.Calls = nil
	if err := h.DisableMIG(ctx); err != nil || calls(s) != smiQuery+"\n" {
		t.Errorf("MIG off already: %v\n%s", err, calls(s))
	}

	s.State = "on"
	s.Table["on"]["nvidia-smi -i 0 -mig 0"] = reply{File: "h100/mig0-busy.txt", Next: "disabling"}
	s.Table["disabling"]["nvidia-smi mig -lgi"] = reply{File: "lgi-none.txt", Fail: true}
	s.Table["disabling"]["nvidia-smi mig -lci"] = reply{File: "lci-none.txt", Fail: true}
	err := h.DisableMIG(ctx)
	var pe *PendingError
	if !errors.Is(err, ErrResetNeeded) || !errors.As(err, &pe) || !pe.Disable || !strings.HasPrefix(err.Error(), "disable MIG: GPU 0 (0000:18:00.0)") {
		t.Errorf("DisableMIG on a busy card = %v", err)
	}
}

// TestDisableVFs: sriov-manage -d on a card with virtual functions; not
// while one carries an mdev.
func TestDisableVFs(t *testing.T) {
	ctx := context.Background()
	h, tr, s, vfs := sriovHost(t)
	if err := h.DisableVFs(ctx); err != nil || len(s.Calls) > 0 {
		t.Fatalf("no virtual functions: %v %q", err, s.Calls)
	}
	if _, err := h.Parents(ctx, a100PCIe); err != nil {
		t.Fatal(err)
	}
	const id = "6f4ac1d2-3b7e-4c59-9a1f-2d8e0b5c7a34"
	tr.Write(typeDir(vfs[0], "nvidia-472")+"/create", id)
	tr.KernelCreate(vfs[0], "nvidia-472")
	s.Calls = nil
	if err := h.DisableVFs(ctx); err == nil || !strings.Contains(err.Error(), "carries mdev "+id) || len(s.Calls) > 0 {
		t.Errorf("with an mdev: %v %q", err, s.Calls)
	}
	tr.KernelRemove(vfs[0], "nvidia-472", id)
	s.Table["vfs on"] = map[string]reply{"/usr/lib/nvidia/sriov-manage -d " + a100PCIe: {Do: func() { tr.RemoveVFs(a100PCIe) }}}
	if err := h.DisableVFs(ctx); err != nil || calls(s) != "/usr/lib/nvidia/sriov-manage -d "+a100PCIe+"\n" {
		t.Errorf("DisableVFs = %v, calls %q", err, s.Calls)
	}
}
