package burnin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rackboot/rackboot/agent/gpuburn/report"
)

// Runner runs a command and returns its standard output; a failure's
// error carries what it wrote to standard error.
type Runner interface {
	Run(ctx context.Context, argv []string) ([]byte, error)
}

// ExecRunner runs commands as processes.
type ExecRunner struct{}

// Run runs argv[0] with the rest as its arguments.
func (ExecRunner) Run(ctx context.Context, argv []string) ([]byte, error) {
	if len(argv) == 0 {
		return nil, errors.New("run: no command")
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s: %w: %s", argv[0], err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// GPUBurnName is the GPU load helper's command name.
const GPUBurnName = "rackboot-gpuburn"

// smiFields is what the GPU test reads of every GPU, before, during and
// after the load.
var smiFields = []string{
	"index", "pci.bus_id", "temperature.gpu", "clocks.sm", "clocks.mem",
	"pcie.link.width.current", "pcie.link.width.max", "clocks_throttle_reasons.active",
	"ecc.errors.uncorrected.volatile.total", "retired_pages.pending", "remapped_rows.pending",
}

// smiCoreFields are for a driver that refuses a field of smiFields by
// name (an old one): health without the figures.
var smiCoreFields = []string{
	"index", "pci.bus_id", "temperature.gpu",
	"ecc.errors.uncorrected.volatile.total", "retired_pages.pending",
}

// smiRow is one GPU's line, by field; a field the driver or card does
// not report ("[N/A]", "[Not Supported]") is absent.
type smiRow map[string]string

func (r smiRow) num(f string) (float64, bool) {
	v, ok := r[f]
	if !ok {
		return 0, false
	}
	if h, ok := strings.CutPrefix(v, "0x"); ok {
		u, err := strconv.ParseUint(h, 16, 64)
		return float64(u), err == nil
	}
	n, err := strconv.ParseFloat(v, 64)
	return n, err == nil
}

func (r smiRow) name() string {
	return fmt.Sprintf("GPU %s (%s)", r["index"], r["pci.bus_id"])
}

// unknown is how nvidia-smi writes a value it does not have.
func unknown(v string) bool {
	return v == "" || strings.HasPrefix(v, "[") || v == "N/A"
}

func parseSMI(out []byte, fields []string) []smiRow {
	var rows []smiRow
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Split(line, ",")
		if len(f) != len(fields) {
			continue
		}
		r := smiRow{}
		for i, v := range f {
			if v = strings.TrimSpace(v); !unknown(v) {
				r[fields[i]] = v
			}
		}
		rows = append(rows, r)
	}
	return rows
}

// busKey puts nvidia-smi's "00000000:17:00.0" and CUDA's "0000:17:00.0"
// in one form, to match the load's GPUs with nvidia-smi's: their
// indexes can differ.
func busKey(id string) string {
	id = strings.ToLower(strings.TrimSpace(id))
	dom, rest, ok := strings.Cut(id, ":")
	if !ok {
		return id
	}
	d, err := strconv.ParseUint(dom, 16, 32)
	if err != nil {
		return id
	}
	return fmt.Sprintf("%04x:%s", d, rest)
}

// gpuTools is how the GPU test reaches nvidia-smi and the load.
type gpuTools struct {
	run    Runner
	smi    string
	fields []string
}

func (g *gpuTools) query(ctx context.Context) ([]smiRow, error) {
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	out, err := g.run.Run(cctx, []string{g.smi, "--query-gpu=" + strings.Join(g.fields, ","), "--format=csv,noheader,nounits"})
	if err != nil {
		return nil, fmt.Errorf("nvidia-smi: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return parseSMI(out, g.fields), nil
}

// findGPUBurn is the helper on PATH, or else beside this program (the
// agent and the helper come in one overlay).
func findGPUBurn() (string, error) {
	if p, err := exec.LookPath(GPUBurnName); err == nil {
		return p, nil
	}
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("no %s on PATH: %w", GPUBurnName, err)
	}
	p := filepath.Join(filepath.Dir(exe), GPUBurnName)
	if fi, err := os.Stat(p); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
		return "", fmt.Errorf("no %s on PATH or beside %s", GPUBurnName, exe)
	}
	return p, nil
}

// gpuSeen is what the samples showed of one GPU.
type gpuSeen struct {
	row smiRow // the first sample's
	// ecc0 is the count before the load, eccMax the highest since.
	ecc0, eccMax float64
	eccKnown     bool
	pending      []string // the fields that said "Yes"
	maxTemp      float64
	tempKnown    bool
	minSM        float64 // under load
	smKnown      bool
	// loadWidth is the widest link seen under load, allWidth in any
	// sample: a short load may have had no sample of its own.
	loadWidth, allWidth, widthMax float64
	widthKnown                    bool
	throttle                      uint64 // under load
	throttleKnown                 bool
	loadSamples                   int
}

// GPU checks the node's GPUs where NVIDIA's driver is there. Every GPU
// must be seen by nvidia-smi, with no uncorrected ECC error and no page
// waiting for retirement. With the rackboot-gpuburn helper, each is then
// loaded for d while nvidia-smi is read every few seconds, and fails on a
// wrong result, uncorrected ECC errors that rose, pages or rows pending
// retirement or remap, a PCIe link below its width, or a GPU lost under
// load; the figures (TFLOP/s, bandwidth, the hottest temperature, the
// lowest SM clock, the throttle reasons seen) are kept per GPU to compare
// cards across the fleet. Without the helper or the driver the GPUs were
// not loaded: the test is "not run", and a node with GPUs is incomplete.
func GPU(ctx context.Context, p Params, d time.Duration) Test {
	start := time.Now()
	t := gpuTest(ctx, p, d)
	t.Name, t.Seconds = "gpu", time.Since(start).Seconds()
	return t
}

func gpuTest(ctx context.Context, p Params, d time.Duration) Test {
	tools := gpuTools{run: p.Runner, smi: p.SMI, fields: smiFields}
	if tools.run == nil {
		tools.run = ExecRunner{}
	}
	if tools.smi == "" {
		path, err := exec.LookPath("nvidia-smi")
		if err != nil {
			if p.GPUs == 0 {
				return Test{Outcome: NotRun, Reason: "the node has no GPUs"}
			}
			return Test{Outcome: NotRun, Reason: fmt.Sprintf("%d GPUs, but no NVIDIA driver here (no nvidia-smi): the ramdisk needs a driver overlay to test them", p.GPUs)}
		}
		tools.smi = path
	}
	base, err := tools.query(ctx)
	reduced := false
	if err != nil {
		// An older driver refuses fields it does not know by name; any
		// other failure is the GPUs' or the driver's, not a reason to
		// check less.
		if !strings.Contains(err.Error(), "is not a valid field") {
			return Test{Outcome: Failed, Reason: err.Error()}
		}
		tools.fields, reduced = smiCoreFields, true
		var cerr error
		if base, cerr = tools.query(ctx); cerr != nil {
			return Test{Outcome: Failed, Reason: err.Error()}
		}
	}
	figs := map[string]float64{"gpus_seen": float64(len(base))}
	seen := map[string]*gpuSeen{}
	var order []string
	for _, r := range base {
		k := busKey(r["pci.bus_id"])
		if _, dup := seen[k]; !dup {
			order = append(order, k)
		}
		seen[k] = &gpuSeen{row: r}
	}
	var bad []string
	observe := func(rows []smiRow, underLoad bool) {
		for _, r := range rows {
			s := seen[busKey(r["pci.bus_id"])]
			if s == nil {
				continue
			}
			s.add(r, underLoad)
		}
	}
	observe(base, false)
	for _, k := range order {
		s := seen[k]
		if s.eccKnown && s.ecc0 > 0 {
			bad = append(bad, fmt.Sprintf("%s: %g uncorrected ECC errors", s.row.name(), s.ecc0))
		}
		bad = append(bad, s.pendingReasons()...)
	}
	maxTemp := func() float64 {
		hottest := 0.0
		for _, s := range seen {
			hottest = max(hottest, s.maxTemp)
		}
		return hottest
	}
	switch {
	case len(base) < p.GPUs:
		return Test{Outcome: Failed, Reason: fmt.Sprintf("nvidia-smi sees %d of the node's %d GPUs", len(base), p.GPUs), Figures: figs}
	case len(bad) > 0:
		figs["max_temperature_c"] = maxTemp()
		return Test{Outcome: Failed, Reason: strings.Join(bad, "; "), Figures: figs}
	case len(base) == 0:
		return Test{Outcome: NotRun, Reason: "nvidia-smi sees no GPU", Figures: figs}
	}
	helper := p.GPUBurn
	if helper == "" {
		if helper, err = findGPUBurn(); err != nil {
			figs["max_temperature_c"] = maxTemp()
			return Test{Outcome: NotRun, Figures: figs, Reason: fmt.Sprintf("%d GPUs healthy (no uncorrected ECC error, no page to retire), but not loaded: %v", len(base), err)}
		}
	}

	// The load, with nvidia-smi read alongside until it ends.
	hctx, cancel := context.WithTimeout(ctx, d+2*time.Minute)
	defer cancel()
	var (
		wg   sync.WaitGroup
		out  []byte
		herr error
	)
	done := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(done)
		out, herr = tools.run.Run(hctx, []string{helper, "--seconds", strconv.FormatFloat(d.Seconds(), 'f', -1, 64)})
	}()
	every := p.GPUSample
	if every <= 0 {
		every = 5 * time.Second
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for running := true; running; {
		select {
		case <-done:
			running = false
		case <-tick.C:
			// A sample that fails under load is not the verdict; the
			// one after the load is.
			if rows, err := tools.query(hctx); err == nil {
				select {
				case <-done:
					observe(rows, false)
				default:
					observe(rows, true)
				}
			}
		}
	}
	wg.Wait()
	after, err := tools.query(ctx)
	if err != nil {
		return Test{Outcome: Failed, Figures: figs, Reason: "after the load, " + err.Error()}
	}
	observe(after, false)
	figs["max_temperature_c"] = maxTemp()
	if len(after) < len(base) {
		return Test{Outcome: Failed, Figures: figs, Reason: fmt.Sprintf("after the load nvidia-smi sees %d of the %d GPUs it saw before", len(after), len(base))}
	}

	var rep report.Report
	if jerr := json.Unmarshal(out, &rep); jerr != nil {
		switch {
		case hctx.Err() != nil && ctx.Err() == nil:
			return Test{Outcome: Failed, Figures: figs, Reason: fmt.Sprintf("the GPU load did not end within %s of its %s", 2*time.Minute, d)}
		case herr != nil:
			return Test{Outcome: NotRun, Figures: figs, Reason: fmt.Sprintf("%d GPUs healthy, but the load could not run: %v", len(base), herr)}
		}
		return Test{Outcome: NotRun, Figures: figs, Reason: fmt.Sprintf("%d GPUs healthy, but the load's report is unreadable: %v", len(base), jerr)}
	}
	if rep.Error != "" {
		return Test{Outcome: NotRun, Figures: figs, Reason: fmt.Sprintf("%d GPUs healthy, but the load could not start: %s", len(base), rep.Error)}
	}
	loaded := map[string]report.GPU{}
	// A device whose first driver calls failed never learnt its bus id,
	// so no nvidia-smi row can be matched to it; its CUDA error is kept
	// for the verdict, not lost behind "the load did not reach it".
	var unnamed []string
	for _, g := range rep.GPUs {
		if g.PCIBusID == "" {
			if g.Failed != "" {
				unnamed = append(unnamed, fmt.Sprintf("CUDA device %d: the load failed before it could read the device's PCI bus id: %s", g.Index, g.Failed))
			}
			continue
		}
		loaded[busKey(g.PCIBusID)] = g
	}
	var notes []string
	if reduced {
		figs["smi_core_fields_only"] = 1
		notes = append(notes, "this driver's nvidia-smi reads only the core fields: PCIe link width, clocks, throttle reasons and row remapping were not checked")
	}
	for _, k := range order {
		s := seen[k]
		name, idx := s.row.name(), s.row["index"]
		fig := func(f string, v float64) { figs["gpu"+idx+"_"+f] = v }
		g, ok := loaded[k]
		switch {
		case !ok:
			bad = append(bad, name+": the load did not reach it")
		case g.Failed != "":
			bad = append(bad, name+": the load failed: "+g.Failed)
		case g.Errors > 0:
			bad = append(bad, fmt.Sprintf("%s: %d wrong results under load, the first: %s", name, g.Errors, g.FirstError))
		}
		if ok {
			fig("tflops", g.TFLOPS)
			fig("memory_gbps", g.MemoryGBps)
			fig("errors", float64(g.Errors))
		}
		if s.eccKnown && s.eccMax > s.ecc0 {
			bad = append(bad, fmt.Sprintf("%s: uncorrected ECC errors rose from %g to %g under load", name, s.ecc0, s.eccMax))
		}
		bad = append(bad, s.pendingReasons()...)
		if s.widthKnown {
			w := s.allWidth
			if s.loadSamples > 0 {
				w = s.loadWidth
			}
			fig("pcie_width", w)
			fig("pcie_width_max", s.widthMax)
			if w < s.widthMax {
				bad = append(bad, fmt.Sprintf("%s: PCIe link at x%g of its x%g under load", name, w, s.widthMax))
			}
		}
		if s.tempKnown {
			fig("max_temperature_c", s.maxTemp)
		}
		if s.smKnown {
			fig("min_sm_clock_mhz", s.minSM)
		}
		if s.throttleKnown {
			fig("throttle_reasons", float64(s.throttle))
			if r := throttleNames(s.throttle); r != "" {
				notes = append(notes, name+" throttled: "+r)
			}
		}
	}
	bad = append(bad, unnamed...)
	if len(bad) > 0 {
		return Test{Outcome: Failed, Figures: figs, Reason: strings.Join(bad, "; ")}
	}
	if herr != nil {
		// Nothing named a GPU, yet the helper failed.
		return Test{Outcome: NotRun, Figures: figs, Reason: fmt.Sprintf("%d GPUs healthy, but the load failed: %v", len(base), herr)}
	}
	reason := fmt.Sprintf("%d GPUs loaded for %s: every result right, no ECC error", len(base), d.Round(time.Second))
	if len(notes) > 0 {
		reason += "; " + strings.Join(notes, "; ")
	}
	return Test{Outcome: Passed, Figures: figs, Reason: reason}
}

// throttleIdle is NVML's clocks-event reason "GPU idle": a sample that
// says so was taken before the load reached the card (its context and
// first kernel take a moment) or after it left, whatever the clock says.
const throttleIdle = 0x1

func (s *gpuSeen) add(r smiRow, underLoad bool) {
	if v, ok := r.num("clocks_throttle_reasons.active"); ok && uint64(v)&throttleIdle != 0 {
		underLoad = false
	}
	if v, ok := r.num("ecc.errors.uncorrected.volatile.total"); ok {
		if !s.eccKnown {
			s.ecc0 = v
		}
		s.eccMax, s.eccKnown = max(s.eccMax, v), true
	}
	for _, f := range []string{"retired_pages.pending", "remapped_rows.pending"} {
		if r[f] == "Yes" && !slices.Contains(s.pending, f) {
			s.pending = append(s.pending, f)
		}
	}
	if v, ok := r.num("temperature.gpu"); ok {
		s.maxTemp, s.tempKnown = max(s.maxTemp, v), true
	}
	cur, okc := r.num("pcie.link.width.current")
	wmax, okm := r.num("pcie.link.width.max")
	if okc && okm {
		s.widthKnown, s.widthMax = true, wmax
		s.allWidth = max(s.allWidth, cur)
		if underLoad {
			s.loadWidth = max(s.loadWidth, cur)
		}
	}
	if !underLoad {
		return
	}
	// Clocks and throttling mean something only under load: an idle GPU
	// clocks down and says so.
	s.loadSamples++
	if v, ok := r.num("clocks.sm"); ok && (!s.smKnown || v < s.minSM) {
		s.minSM, s.smKnown = v, true
	}
	if v, ok := r.num("clocks_throttle_reasons.active"); ok {
		s.throttle |= uint64(v)
		s.throttleKnown = true
	}
}

func (s *gpuSeen) pendingReasons() []string {
	var out []string
	for _, f := range s.pending {
		what := "pages waiting for retirement"
		if f == "remapped_rows.pending" {
			what = "memory rows waiting for remapping (a reset remaps them)"
		}
		out = append(out, s.row.name()+": "+what)
	}
	return out
}

// throttleNames are NVML's clock throttle reasons in a mask, those that
// slow a loaded GPU down (not idle, not an application clock setting).
func throttleNames(mask uint64) string {
	var names []string
	for _, r := range []struct {
		bit  uint64
		name string
	}{
		{0x4, "software power cap"}, {0x8, "hardware slowdown"}, {0x20, "software thermal slowdown"},
		{0x40, "hardware thermal slowdown"}, {0x80, "hardware power brake"},
	} {
		if mask&r.bit != 0 {
			names = append(names, r.name)
		}
	}
	return strings.Join(names, ", ")
}
