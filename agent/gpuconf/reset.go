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
)

// ErrInUse: a process holds the device a reset was asked for.
var ErrInUse = errors.New("in use")

// ResetFunction resets one PCI function of an NVIDIA GPU (a card, or a
// virtual function) through the kernel: a function-level reset, which
// returns a device a VM left in an unknown state. Anything but an NVIDIA
// GPU is refused, and so is a function the kernel cannot reset. It does
// not look at who holds the function: ResetGPU does.
func (h *Host) ResetFunction(ctx context.Context, addr string) error {
	dir, err := h.gpuFunction(addr)
	if err != nil {
		return err
	}
	return h.sysfsReset(ctx, addr, dir)
}

func (h *Host) gpuFunction(addr string) (string, error) {
	if err := checkPCI(addr); err != nil {
		return "", fmt.Errorf("reset: %w", err)
	}
	dir := h.path("sys/bus/pci/devices", addr)
	if _, err := os.Stat(dir); err != nil {
		return "", fmt.Errorf("reset %s: %w", addr, err)
	}
	if !isGPU(dir) {
		return "", fmt.Errorf("reset %s: %s:%s class %s is not an NVIDIA GPU", addr, readHex(filepath.Join(dir, "vendor")), readHex(filepath.Join(dir, "device")), readHex(filepath.Join(dir, "class")))
	}
	return dir, nil
}

func (h *Host) sysfsReset(ctx context.Context, addr, dir string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p := filepath.Join(dir, "reset")
	if _, err := os.Stat(p); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("reset %s: the kernel offers no reset for it (no reset attribute)", addr)
	}
	if err := h.writeSysfsBounded(ctx, p, "1"); err != nil {
		return fmt.Errorf("reset %s: %w", addr, err)
	}
	h.log().Info("function reset", "pci", addr)
	return nil
}

// ResetGPU resets a passthrough GPU a VM gave back, the way its driver
// allows. Bound to nvidia (libvirt's managed attach gives the card back
// to the host's driver when the VM ends) it is `nvidia-smi -r`: a
// function-level reset behind the nvidia driver's back can wedge the
// card, and nvidia-smi refuses while processes use it. Bound to vfio-pci
// or to no driver it is the kernel's function reset, refused with an
// ErrInUse while a process (a VM's QEMU) holds the device's VFIO group or
// cdev open: resetting under a running guest breaks it. Any other driver
// is refused.
func (h *Host) ResetGPU(ctx context.Context, addr string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	dir, err := h.gpuFunction(addr)
	if err != nil {
		return err
	}
	driver := ""
	if t, err := os.Readlink(filepath.Join(dir, "driver")); err == nil {
		driver = filepath.Base(t)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("reset %s: read its driver: %w", addr, err)
	}
	switch driver {
	case "nvidia":
		if _, err := h.smi(ctx, "-r", "-i", addr); err != nil {
			return fmt.Errorf("reset %s (bound to nvidia): %w", addr, err)
		}
		h.log().Info("GPU reset by nvidia-smi", "pci", addr)
		return nil
	case "vfio-pci", "":
		if err := h.checkUnheld(addr, dir); err != nil {
			return err
		}
		return h.sysfsReset(ctx, addr, dir)
	}
	return fmt.Errorf("reset %s: bound to driver %s; rackboot resets a GPU bound to nvidia or vfio-pci only", addr, driver)
}

// checkUnheld refuses when a process has the function's VFIO group
// (/dev/vfio/<group>) or its VFIO cdev (/dev/vfio/devices/vfioN) open,
// as /proc's fd links tell.
func (h *Host) checkUnheld(addr, dir string) error {
	return h.unheld("reset", addr, dir)
}

// unheld is checkUnheld for operation op.
func (h *Host) unheld(op, addr, dir string) error {
	return h.unheldIn(op, addr, dir, nil)
}

// unheldIn is unheld with the host's open files read once already (nil:
// read them now). A report asks it for every virtual function, and /proc
// is read once for all of them.
func (h *Host) unheldIn(op, addr, dir string, open *openFiles) error {
	var nodes []string
	if t, err := os.Readlink(filepath.Join(dir, "iommu_group")); err == nil {
		nodes = append(nodes, "/dev/vfio/"+filepath.Base(t))
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf(op+" %s: read its IOMMU group: %w", addr, err)
	}
	if ents, err := os.ReadDir(filepath.Join(dir, "vfio-dev")); err == nil {
		for _, e := range ents {
			nodes = append(nodes, "/dev/vfio/devices/"+e.Name())
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf(op+" %s: read its VFIO devices: %w", addr, err)
	}
	if len(nodes) == 0 {
		return nil // not under VFIO: no VM can hold it
	}
	if open == nil {
		open = &openFiles{}
	}
	pid, node, err := open.holder(h, nodes)
	if err != nil {
		return fmt.Errorf(op+" %s: %w", addr, err)
	}
	if pid != 0 {
		comm, _ := os.ReadFile(h.path("proc", strconv.Itoa(pid), "comm"))
		who := strconv.Itoa(pid)
		if c := strings.TrimSpace(string(comm)); c != "" {
			who += " (" + c + ")"
		}
		return fmt.Errorf(op+" %s: %s is %w by pid %s", addr, node, ErrInUse, who)
	}
	return nil
}

// openFiles is the host's /dev/vfio files held open, read from /proc
// once, on first use.
type openFiles struct {
	read bool
	by   map[string]int // link target to the lowest pid holding it
	err  error
}

// holder finds a process with one of nodes open: its pid and the node,
// or 0.
func (o *openFiles) holder(h *Host, nodes []string) (int, string, error) {
	if !o.read {
		o.read = true
		o.by, o.err = h.vfioOpen()
	}
	if o.err != nil {
		return 0, "", fmt.Errorf("look for processes holding %s: %w", strings.Join(nodes, ", "), o.err)
	}
	pid, node := 0, ""
	for _, n := range nodes {
		if p, ok := o.by[n]; ok && (pid == 0 || p < pid) {
			pid, node = p, n
		}
	}
	return pid, node, nil
}

// vfioOpen reads every process's fd links once: the /dev/vfio files
// open, each with the lowest pid holding it.
func (h *Host) vfioOpen() (map[string]int, error) {
	ents, err := os.ReadDir(h.path("proc"))
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, e := range ents {
		if n, err := strconv.Atoi(e.Name()); err == nil && n > 0 {
			pids = append(pids, n)
		}
	}
	sort.Ints(pids)
	by := map[string]int{}
	for _, pid := range pids {
		fdDir := h.path("proc", strconv.Itoa(pid), "fd")
		fds, err := os.ReadDir(fdDir)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue // it ended meanwhile
			}
			// A process whose files cannot be read may be the VM: saying
			// "not held" would be a guess.
			return nil, err
		}
		for _, fd := range fds {
			t, err := os.Readlink(filepath.Join(fdDir, fd.Name()))
			if err != nil {
				continue // closed meanwhile
			}
			if _, seen := by[t]; !seen && strings.HasPrefix(t, "/dev/vfio/") {
				by[t] = pid
			}
		}
	}
	return by, nil
}
