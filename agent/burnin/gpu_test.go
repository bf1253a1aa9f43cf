package burnin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rackboot/rackboot/agent/gpuburn/report"
)

// gpuScript plays nvidia-smi and rackboot-gpuburn: nvidia-smi prints
// before, during or after, as the load has not started, runs or has
// ended.
type gpuScript struct {
	before, during, after string
	// core is what an old driver prints for the core fields; with it,
	// a query naming any other field fails.
	core string
	// smiErr is what a failing nvidia-smi prints.
	smiErr string
	// burn is the helper's report, burnErr its failure.
	burn    report.Report
	burnErr error
	burnFor time.Duration

	mu       sync.Mutex
	state    int // 0 before, 1 during, 2 after
	burnArgs []string
	reads    [3]int
}

func (s *gpuScript) Run(ctx context.Context, argv []string) ([]byte, error) {
	switch argv[0] {
	case "nvidia-smi":
		s.mu.Lock()
		defer s.mu.Unlock()
		s.reads[s.state]++
		if s.smiErr != "" {
			return []byte(s.smiErr), errors.New("exit status 15")
		}
		if s.core != "" {
			if !strings.Contains(argv[1], strings.Join(smiCoreFields, ",")) || strings.Contains(argv[1], "remapped") {
				return []byte(`Field "remapped_rows.pending" is not a valid field to query.`), errors.New("exit status 2")
			}
			return []byte(s.core), nil
		}
		if argv[1] != "--query-gpu="+strings.Join(smiFields, ",") || argv[2] != "--format=csv,noheader,nounits" {
			return nil, fmt.Errorf("unexpected %q", argv)
		}
		return []byte([]string{s.before, s.during, s.after}[s.state]), nil
	case "rackboot-gpuburn":
		s.mu.Lock()
		s.state, s.burnArgs = 1, argv
		s.mu.Unlock()
		select {
		case <-time.After(s.burnFor):
		case <-ctx.Done():
		}
		s.mu.Lock()
		s.state = 2
		s.mu.Unlock()
		out, _ := json.Marshal(s.burn)
		return out, s.burnErr
	}
	return nil, fmt.Errorf("no %s here", argv[0])
}

// smiLine is one GPU's nvidia-smi line, in smiFields' order.
func smiLine(idx int, bus string, temp, sm int, width, widthMax int, throttle, ecc, retire, remap string) string {
	return fmt.Sprintf("%d, %s, %d, %d, 2619, %d, %d, %s, %s, %s, %s\n", idx, bus, temp, sm, width, widthMax, throttle, ecc, retire, remap)
}

const (
	bus0 = "00000000:19:00.0"
	bus1 = "00000000:9B:00.0"
)

// healthyScript is two sound H100s: idle before and after, loaded,
// hot and power-capped during.
func healthyScript() *gpuScript {
	idle := smiLine(0, bus0, 35, 345, 16, 16, "0x0000000000000001", "0", "No", "No") + smiLine(1, bus1, 37, 345, 16, 16, "0x0000000000000001", "0", "No", "No")
	return &gpuScript{
		before: idle,
		during: smiLine(0, bus0, 71, 1755, 16, 16, "0x0000000000000004", "0", "No", "No") + smiLine(1, bus1, 68, 1980, 16, 16, "0x0000000000000000", "0", "No", "No"),
		after:  idle,
		// CUDA's bus IDs, and the second GPU first: the match is by bus.
		burn: report.Report{GPUs: []report.GPU{
			{Index: 1, Name: "NVIDIA H100 80GB HBM3", PCIBusID: "0000:9B:00.0", Iterations: 40, TFLOPS: 49.5, MemoryGBps: 2900, Seconds: 0.1},
			{Index: 0, Name: "NVIDIA H100 80GB HBM3", PCIBusID: "0000:19:00.0", Iterations: 40, TFLOPS: 51.25, MemoryGBps: 2950, Seconds: 0.1},
		}},
		burnFor: 60 * time.Millisecond,
	}
}

func scripted(s *gpuScript) Params {
	return Params{GPUs: 2, Runner: s, SMI: "nvidia-smi", GPUBurn: "rackboot-gpuburn", GPUSample: 5 * time.Millisecond}
}

func TestGPULoadHealthy(t *testing.T) {
	s := healthyScript()
	got := GPU(context.Background(), scripted(s), 90*time.Second)
	if got.Outcome != Passed {
		t.Fatalf("%+v", got)
	}
	want := map[string]float64{
		"gpus_seen": 2, "max_temperature_c": 71,
		"gpu0_tflops": 51.25, "gpu0_memory_gbps": 2950, "gpu0_errors": 0, "gpu0_max_temperature_c": 71,
		"gpu0_min_sm_clock_mhz": 1755, "gpu0_throttle_reasons": 4, "gpu0_pcie_width": 16, "gpu0_pcie_width_max": 16,
		"gpu1_tflops": 49.5, "gpu1_memory_gbps": 2900, "gpu1_min_sm_clock_mhz": 1980, "gpu1_throttle_reasons": 0,
	}
	for k, v := range want {
		if g, ok := got.Figures[k]; !ok || g != v {
			t.Errorf("figure %s = %v (%v), want %v", k, g, ok, v)
		}
	}
	if !strings.Contains(got.Reason, "2 GPUs loaded for 1m30s") || !strings.Contains(got.Reason, "GPU 0 (00000000:19:00.0) throttled: software power cap") {
		t.Errorf("reason %q", got.Reason)
	}
	if strings.Join(s.burnArgs, " ") != "rackboot-gpuburn --seconds 90" {
		t.Errorf("helper run as %q", s.burnArgs)
	}
	if s.reads[1] == 0 || s.reads[2] == 0 {
		t.Errorf("nvidia-smi read %v times before, during, after the load", s.reads)
	}
}

func TestGPULoadVerdicts(t *testing.T) {
	for _, c := range []struct {
		name   string
		change func(*gpuScript)
		want   string // the outcome
		reason string
	}{
		{"healthy", func(*gpuScript) {}, Passed, "every result right"},
		{"wrong results", func(s *gpuScript) {
			s.burn.GPUs[0].Errors, s.burn.GPUs[0].FirstError = 3, "launch 2: block 7 differs from block 0 at thread 4, chain 1's hash: 0x1, want 0x2"
		}, Failed, "GPU 1 (00000000:9B:00.0): 3 wrong results under load, the first: launch 2: block 7 differs"},
		{"ECC errors rising", func(s *gpuScript) {
			s.after = smiLine(0, bus0, 40, 345, 16, 16, "0x1", "2", "No", "No") + smiLine(1, bus1, 40, 345, 16, 16, "0x1", "0", "No", "No")
		}, Failed, "GPU 0 (00000000:19:00.0): uncorrected ECC errors rose from 0 to 2 under load"},
		{"link width degraded", func(s *gpuScript) {
			s.during = smiLine(0, bus0, 71, 1755, 16, 16, "0x0", "0", "No", "No") + smiLine(1, bus1, 68, 1980, 8, 16, "0x0", "0", "No", "No")
		}, Failed, "GPU 1 (00000000:9B:00.0): PCIe link at x8 of its x16 under load"},
		{"link narrow only at idle", func(s *gpuScript) {
			s.before = smiLine(0, bus0, 35, 345, 4, 16, "0x1", "0", "No", "No") + smiLine(1, bus1, 37, 345, 4, 16, "0x1", "0", "No", "No")
		}, Passed, "every result right"},
		{"rows pending remap", func(s *gpuScript) {
			s.after = smiLine(0, bus0, 40, 345, 16, 16, "0x1", "0", "No", "Yes") + smiLine(1, bus1, 40, 345, 16, 16, "0x1", "0", "No", "No")
		}, Failed, "GPU 0 (00000000:19:00.0): memory rows waiting for remapping"},
		{"a GPU lost under load", func(s *gpuScript) {
			s.after = smiLine(0, bus0, 40, 345, 16, 16, "0x1", "0", "No", "No")
		}, Failed, "after the load nvidia-smi sees 1 of the 2 GPUs"},
		{"a GPU the load missed", func(s *gpuScript) { s.burn.GPUs = s.burn.GPUs[1:] }, Failed, "GPU 1 (00000000:9B:00.0): the load did not reach it"},
		{"a driver call failing on a GPU", func(s *gpuScript) {
			s.burn.GPUs[1].Failed = "cuCtxCreate_v2: CUDA error 46: CUDA-capable device(s) is/are busy or unavailable"
			s.burnErr = errors.New("exit status 1")
		}, Failed, "GPU 0 (00000000:19:00.0): the load failed: cuCtxCreate_v2: CUDA error 46"},
		{"a driver call failing before the bus id is read", func(s *gpuScript) {
			s.burn.GPUs[1] = report.GPU{Index: 0, Failed: "cuDeviceGetPCIBusId: CUDA error 999: unknown error"}
			s.burnErr = errors.New("exit status 1")
		}, Failed, "CUDA device 0: the load failed before it could read the device's PCI bus id: cuDeviceGetPCIBusId: CUDA error 999"},
		{"no libcuda", func(s *gpuScript) {
			s.burn = report.Report{GPUs: []report.GPU{}, Error: "load libcuda.so.1: libcuda.so.1: cannot open shared object file"}
			s.burnErr = errors.New("exit status 1")
		}, NotRun, "2 GPUs healthy, but the load could not start: load libcuda.so.1"},
		{"fields an old driver lacks", func(s *gpuScript) {
			na := smiLine(0, bus0, 50, 1400, 16, 16, "[N/A]", "[N/A]", "[N/A]", "[Not Supported]") + smiLine(1, bus1, 50, 1400, 16, 16, "[N/A]", "[Not Supported]", "No", "[N/A]")
			s.before, s.during, s.after = na, na, na
		}, Passed, "every result right"},
		{"a driver that refuses a field", func(s *gpuScript) {
			s.core = "0, " + bus0 + ", 40, 0, No\n1, " + bus1 + ", 41, 0, No\n"
		}, Passed, "PCIe link width, clocks, throttle reasons and row remapping were not checked"},
		{"nvidia-smi failing", func(s *gpuScript) {
			s.smiErr = "Unable to determine the device handle for GPU0000:19:00.0: Unknown Error"
		},
			Failed, "Unknown Error"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := healthyScript()
			c.change(s)
			got := GPU(context.Background(), scripted(s), time.Second)
			if got.Outcome != c.want || !strings.Contains(got.Reason, c.reason) {
				t.Errorf("%s %q, want %s %q", got.Outcome, got.Reason, c.want, c.reason)
			}
			if got.Outcome == Passed && (got.Figures["gpu0_tflops"] != 51.25 || got.Figures["gpu1_memory_gbps"] != 2900) {
				t.Errorf("figures %v", got.Figures)
			}
		})
	}
}

// TestGPUBurnIn: what the GPU test says becomes the burn-in's verdict.
func TestGPUBurnIn(t *testing.T) {
	root := fakeRoot(t, 64<<10)
	for _, c := range []struct {
		name    string
		change  func(*testing.T, *Params, *gpuScript)
		verdict string
		why     string
	}{
		{"loaded and sound", func(*testing.T, *Params, *gpuScript) {}, VerdictPassed, ""},
		{"no helper", func(t *testing.T, p *Params, _ *gpuScript) {
			p.GPUBurn = ""
			t.Setenv("PATH", t.TempDir())
		}, VerdictIncomplete, "gpu: 2 GPUs healthy (no uncorrected ECC error, no page to retire), but not loaded: no rackboot-gpuburn on PATH or beside"},
		{"wrong results", func(_ *testing.T, _ *Params, s *gpuScript) { s.burn.GPUs[1].Errors = 1 }, VerdictFailed, "gpu: GPU 0 (00000000:19:00.0): 1 wrong results"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := healthyScript()
			p := scripted(s)
			p.Duration, p.Root, p.MemoryFraction = 40*time.Millisecond, root, 0.5
			c.change(t, &p, s)
			res, err := Run(context.Background(), p)
			why := strings.Join(res.Untested, "; ")
			if err != nil {
				why = err.Error()
			}
			if res.Verdict != c.verdict || res.Passed != (c.verdict == VerdictPassed) || !strings.Contains(why, c.why) {
				t.Errorf("verdict %s (%q), want %s (%q)", res.Verdict, why, c.verdict, c.why)
			}
		})
	}
}

func TestBusKey(t *testing.T) {
	for in, want := range map[string]string{
		"00000000:9B:00.0": "0000:9b:00.0", "0000:9b:00.0": "0000:9b:00.0", "0001:17:00.0": "0001:17:00.0", "junk": "junk",
	} {
		if got := busKey(in); got != want {
			t.Errorf("busKey(%q) = %q, want %q", in, got, want)
		}
	}
}
