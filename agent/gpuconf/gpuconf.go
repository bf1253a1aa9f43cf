// Package gpuconf applies a GPU hypervisor's layout and keeps it: MIG
// instances, vGPU mediated devices and SR-IOV virtual functions vanish on
// every reboot, so a hypervisor's agent applies them again on each boot
// and on demand, and reports what the cards really carry. It drives the
// NVIDIA driver through nvidia-smi and sriov-manage and the kernel through
// sysfs; it never resets a GPU on its own.
package gpuconf

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/rackboot/rackboot/agent/inventory"
)

// Runner runs a tool and returns what it printed, stdout and stderr
// together: nvidia-smi writes its errors to either.
type Runner interface {
	Run(ctx context.Context, argv []string) ([]byte, error)
}

// ExecRunner runs tools as processes.
type ExecRunner struct{}

// Run runs argv[0] with the rest as its arguments.
func (ExecRunner) Run(ctx context.Context, argv []string) ([]byte, error) {
	if len(argv) == 0 {
		return nil, fmt.Errorf("run: no command")
	}
	return exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
}

// Host is one hypervisor's GPUs. The zero value drives the running
// machine.
type Host struct {
	// Root is where /sys is; "" means "/".
	Root string
	// Runner runs nvidia-smi and sriov-manage; nil runs them as processes.
	Runner Runner
	// SMI is nvidia-smi's path; "" finds it on PATH.
	SMI string
	// SRIOVManage is NVIDIA's script that enables a card's virtual
	// functions; "" means /usr/lib/nvidia/sriov-manage.
	SRIOVManage string
	// Log receives what changed on the cards; nil discards.
	Log *slog.Logger
	// SysfsTimeout bounds the sysfs writes the kernel may sit on (an
	// mdev's remove, a function reset); 0 means 10 s.
	SysfsTimeout time.Duration

	mu sync.Mutex
	// inflight are the sysfs attributes whose write has not returned:
	// another write to one would only pile up behind it.
	inflight map[string]bool
}

func (h *Host) path(p ...string) string {
	root := h.Root
	if root == "" {
		root = "/"
	}
	return filepath.Join(append([]string{root}, p...)...)
}

func (h *Host) log() *slog.Logger {
	if h.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return h.Log
}

func (h *Host) run(ctx context.Context, argv ...string) ([]byte, error) {
	r := h.Runner
	if r == nil {
		r = ExecRunner{}
	}
	out, err := r.Run(ctx, argv)
	if err != nil {
		return out, fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(string(out)))
	}
	return out, nil
}

func (h *Host) smi(ctx context.Context, args ...string) ([]byte, error) {
	smi := h.SMI
	if smi == "" {
		smi = "nvidia-smi"
	}
	return h.run(ctx, append([]string{smi}, args...)...)
}

var pciAddrRE = regexp.MustCompile(`^[0-9a-f]{4,8}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$`)

// pciAddr reads nvidia-smi's bus id, 00000000:07:00.0, as sysfs names
// the function, 0000:07:00.0.
func pciAddr(busID string) string {
	a := strings.ToLower(strings.TrimSpace(busID))
	if dom, rest, ok := strings.Cut(a, ":"); ok && len(dom) == 8 && strings.HasPrefix(dom, "0000") {
		a = dom[4:] + ":" + rest
	}
	return a
}

// card is an NVIDIA GPU's physical function as sysfs shows it.
type card struct {
	addr     string
	deviceID string
	model    inventory.NVIDIAModel
	known    bool
}

func (c card) name() string {
	if c.known {
		return c.model.Name
	}
	return "10de:" + c.deviceID
}

func readHex(p string) string {
	b, _ := os.ReadFile(p)
	return strings.ToLower(strings.TrimPrefix(strings.TrimSpace(string(b)), "0x"))
}

// isGPU says whether a PCI function is an NVIDIA GPU: a display
// controller or a processing accelerator, not the card's audio function
// nor an NVSwitch.
func isGPU(dir string) bool {
	class := readHex(filepath.Join(dir, "class"))
	return readHex(filepath.Join(dir, "vendor")) == "10de" && (strings.HasPrefix(class, "03") || strings.HasPrefix(class, "12"))
}

// cards lists the NVIDIA GPUs' physical functions; virtual functions
// (they have a physfn link) are parts of their card.
func (h *Host) cards() ([]card, error) {
	base := h.path("sys/bus/pci/devices")
	ents, err := os.ReadDir(base)
	if err != nil {
		return nil, fmt.Errorf("list pci devices: %w", err)
	}
	var out []card
	for _, e := range ents {
		dir := filepath.Join(base, e.Name())
		if !pciAddrRE.MatchString(e.Name()) || !isGPU(dir) {
			continue
		}
		if _, err := os.Lstat(filepath.Join(dir, "physfn")); err == nil {
			continue
		}
		c := card{addr: e.Name(), deviceID: readHex(filepath.Join(dir, "device"))}
		c.model, c.known = inventory.LookupNVIDIA(c.deviceID)
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].addr < out[j].addr })
	return out, nil
}
