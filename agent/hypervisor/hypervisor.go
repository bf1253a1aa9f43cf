// Package hypervisor is rackboot-agent hypervisor: the service that runs
// on a deployed GPU hypervisor and keeps its GPUs as rackboot wants them.
// MIG instances, vGPU mediated devices and SR-IOV virtual functions do
// not survive a reboot, and the VMs placed on the host come and go, so
// the agent calls the rackboot API in at an interval with what the cards
// carry (package gpuconf's State) and is answered with the layout they
// must carry and the devices the host's VMs hold. It applies the layout
// once per boot or when it changes, makes each VM's mediated device with
// the UUID its domain names, removes those no VM holds, and resets a
// passthrough GPU a VM gave back before its next tenant gets it.
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
	ResetFunction(ctx context.Context, addr string) error
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
	// StateFile keeps the passthrough GPUs the last answer held, so that
	// an agent restarted meanwhile still resets one freed while it was
	// down; "" keeps them in memory only.
	StateFile string
	// Booted says when the host booted; nil reads /proc/stat.
	Booted  func() time.Time
	Logger  *slog.Logger
	Version string

	booted  time.Time
	mode    string // the GPUMode the last answer gave
	applied string // the layout applied on this boot, as reported
	layout  bool   // whether a layout was applied on this boot
	errs    []string
	held    []string // passthrough GPUs of the last answer (and resets still owed)
	loaded  bool     // held was read from StateFile
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
	if !booted.Equal(a.booted) {
		if !a.booted.IsZero() {
			a.log().Info("host booted again: applying the layout again", "booted", booted)
		}
		a.booted, a.layout, a.applied = booted, false, ""
	}
	rep := protocol.HypervisorReport{Booted: booted, Applied: a.applied, Errors: slices.Clone(a.errs), Version: a.Version}
	st, err := a.GPUs.State(ctx)
	switch {
	case err == nil:
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
	a.mode = work.GPUMode
	want := strings.TrimSpace(work.GPUMode + " " + work.GPUProfile)
	if !a.layout || want != a.applied {
		ok, err := a.applyLayout(ctx, work)
		if err != nil {
			fail(err)
		}
		if ok {
			a.layout, a.applied, changed = true, want, true
		}
	}
	if c, err := a.applyMdevs(ctx, work.Devices, fail); err != nil {
		fail(err)
	} else if c {
		changed = true
	}
	if a.applyPassthrough(ctx, work.Devices, fail) {
		changed = true
	}
	a.errs = errs
	return changed
}

// applyLayout applies the mode's layout; ok when it did. Passthrough and
// no mode have none, and are applied by doing nothing.
func (a *Agent) applyLayout(ctx context.Context, work protocol.HypervisorWork) (ok bool, err error) {
	switch work.GPUMode {
	case "", protocol.DevicePassthrough:
		return true, nil
	case protocol.DeviceMIG:
		if err := a.GPUs.ApplyMIG(ctx, strings.Split(work.GPUProfile, ",")); err != nil {
			return false, err
		}
		a.log().Info("MIG layout applied", "layout", work.GPUProfile)
		return true, nil
	case protocol.DeviceVGPU:
		// The devices themselves come with the VMs; the layout is the
		// virtual functions they are made on.
		cards, err := a.GPUs.Cards()
		if err != nil {
			return false, fmt.Errorf("apply vGPU mode: %w", err)
		}
		var errs []error
		for _, c := range cards {
			if !c.Known || !c.Model.SRIOV {
				continue
			}
			if _, err := a.GPUs.Parents(ctx, c.Addr); err != nil {
				errs = append(errs, fmt.Errorf("apply vGPU mode: %w", err))
			}
		}
		if len(errs) > 0 {
			return false, errors.Join(errs...)
		}
		return true, nil
	}
	return false, fmt.Errorf("GPU mode %q: want passthrough, vgpu or mig", work.GPUMode)
}

// applyMdevs removes the NVIDIA cards' mdevs no device names, then makes
// the ones missing. Removing first gives a card's room back to the VM
// that replaces another.
func (a *Agent) applyMdevs(ctx context.Context, devs []protocol.HypervisorDevice, fail func(error)) (changed bool, err error) {
	wanted := map[string]protocol.HypervisorDevice{}
	for _, d := range devs {
		if d.Kind != protocol.DeviceVGPU && d.Kind != protocol.DeviceMIG {
			continue
		}
		if d.Mdev == "" {
			fail(fmt.Errorf("device of VM %s (%s on %s) has no mdev UUID", d.VM, d.Kind, d.GPU))
			continue
		}
		wanted[strings.ToLower(d.Mdev)] = d
	}
	have, err := a.GPUs.Mdevs(ctx)
	if err != nil {
		return false, err
	}
	if len(have) > 0 {
		cards, err := a.GPUs.Cards()
		if err != nil {
			return false, err
		}
		nvidia := map[string]bool{}
		for _, c := range cards {
			nvidia[c.Addr] = true
		}
		for _, m := range have {
			if _, ok := wanted[m.UUID]; ok || !nvidia[m.GPU] {
				continue
			}
			// The kernel refuses while a VM still holds it: the next
			// round tries again.
			if err := a.GPUs.RemoveMdev(ctx, m.UUID); err != nil {
				fail(fmt.Errorf("mdev %s on %s is in no VM's devices, but: %w", m.UUID, m.GPU, err))
				continue
			}
			a.log().Info("mdev removed: no VM holds it", "mdev", m.UUID, "gpu", m.GPU)
			changed = true
		}
	}
	existed := map[string]bool{}
	for _, m := range have {
		existed[m.UUID] = true
	}
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
	return changed, nil
}

// stateFile is what StateFile holds.
type stateFile struct {
	// Held are the passthrough GPUs of the last answer, and those freed
	// whose reset failed: both are reset once no answer holds them.
	Held []string `json:"held"`
}

// applyPassthrough resets the passthrough GPUs held before and not now.
func (a *Agent) applyPassthrough(ctx context.Context, devs []protocol.HypervisorDevice, fail func(error)) (changed bool) {
	if !a.loaded && a.StateFile != "" {
		b, err := os.ReadFile(a.StateFile)
		switch {
		case err == nil:
			var st stateFile
			if err := json.Unmarshal(b, &st); err != nil {
				fail(fmt.Errorf("read state file %s: %w", a.StateFile, err))
				return false // a later round reads it again rather than forget a GPU owed a reset
			}
			a.held = slices.Sorted(slices.Values(st.Held))
		case !errors.Is(err, fs.ErrNotExist):
			fail(fmt.Errorf("read state file: %w", err))
			return false
		}
	}
	a.loaded = true
	var now []string
	for _, d := range devs {
		if d.Kind == protocol.DevicePassthrough && !slices.Contains(now, d.GPU) {
			now = append(now, d.GPU)
		}
	}
	next := slices.Clone(now)
	for _, g := range a.held {
		if slices.Contains(now, g) {
			continue
		}
		if err := a.GPUs.ResetFunction(ctx, g); err != nil {
			fail(fmt.Errorf("GPU %s was given back, but: %w", g, err))
			next = append(next, g)
			continue
		}
		a.log().Info("passthrough GPU given back: reset", "gpu", g)
		changed = true
	}
	slices.Sort(next)
	if !slices.Equal(next, a.held) {
		if err := a.saveState(stateFile{Held: next}); err != nil {
			// Kept as it was, so a GPU freed now is still reset.
			fail(err)
			return changed
		}
	}
	a.held = next
	return changed
}

func (a *Agent) saveState(st stateFile) error {
	if a.StateFile == "" {
		return nil
	}
	if st.Held == nil {
		st.Held = []string{}
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
	// Renamed only once on disk, so a crash leaves the old list or the
	// new one, never none: a lost list is a GPU never reset.
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

func (a *Agent) bootTime() time.Time {
	if a.Booted != nil {
		return a.Booted()
	}
	t, err := BootTime("/proc/stat")
	if err != nil {
		a.log().Warn("boot time", "err", err)
	}
	return t
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
