package gpuconf

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// ResetFunction resets one PCI function of an NVIDIA GPU (a card, or a
// virtual function) through the kernel: a function-level reset, which
// returns a device a VM left in an unknown state. Anything but an NVIDIA
// GPU is refused, and so is a function the kernel cannot reset.
func (h *Host) ResetFunction(ctx context.Context, addr string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := checkPCI(addr); err != nil {
		return fmt.Errorf("reset: %w", err)
	}
	dir := h.path("sys/bus/pci/devices", addr)
	if _, err := os.Stat(dir); err != nil {
		return fmt.Errorf("reset %s: %w", addr, err)
	}
	if !isGPU(dir) {
		return fmt.Errorf("reset %s: %s:%s class %s is not an NVIDIA GPU", addr, readHex(filepath.Join(dir, "vendor")), readHex(filepath.Join(dir, "device")), readHex(filepath.Join(dir, "class")))
	}
	p := filepath.Join(dir, "reset")
	if _, err := os.Stat(p); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("reset %s: the kernel offers no reset for it (no reset attribute)", addr)
	}
	if err := writeSysfs(p, "1"); err != nil {
		return fmt.Errorf("reset %s: %w", addr, err)
	}
	h.log().Info("function reset", "pci", addr)
	return nil
}
