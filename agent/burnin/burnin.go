// Package burnin proves a node sound before it takes work: every CPU
// computes and cross-checks, most of memory is written with patterns and
// read back, disks are written and read back, the network is timed
// against the appliance, and GPUs are loaded and checked where NVIDIA's
// driver and the rackboot-gpuburn helper are there.
// Each result carries its figures; a test that could not run says so and
// never counts as passed.
package burnin

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Params say what to run.
type Params struct {
	// Duration is the whole burn-in's length, shared out among the
	// tests.
	Duration time.Duration
	// Disks are written and read back; their data is destroyed.
	Disks []string
	// NetURL is fetched repeatedly to time the network (a large file on
	// the appliance).
	NetURL string
	// Root is where /proc lives (tests point it at a fake tree).
	Root string
	// MemoryFraction is how much of the available memory the memory test
	// takes (default 0.8).
	MemoryFraction float64
	// GPUs is how many GPUs the node has (its inventory's): with any, a
	// burn-in that could not test them is incomplete.
	GPUs int
	// Runner runs nvidia-smi and the GPU load; nil runs them as
	// processes.
	Runner Runner
	// SMI is nvidia-smi; "" finds it on PATH.
	SMI string
	// GPUBurn is the GPU load helper, rackboot-gpuburn; "" finds it on
	// PATH or beside this program.
	GPUBurn string
	// GPUSample is how often nvidia-smi is read while the GPUs are
	// loaded; 0 means every 5 s.
	GPUSample time.Duration
}

// Outcome of one test.
const (
	Passed = "passed"
	Failed = "failed"
	NotRun = "not run"
)

// Test is one test's result.
type Test struct {
	Name    string             `json:"name"`
	Outcome string             `json:"outcome"`
	Reason  string             `json:"reason,omitempty"`
	Seconds float64            `json:"seconds"`
	Figures map[string]float64 `json:"figures,omitempty"`
}

// Verdicts of a whole burn-in.
const (
	VerdictPassed = "passed"
	VerdictFailed = "failed"
	// VerdictIncomplete: nothing failed, but a part the node has was not
	// tested (its GPUs, without a driver and a load): never a pass.
	VerdictIncomplete = "incomplete"
)

// Result is a whole burn-in.
type Result struct {
	// Passed is Verdict == VerdictPassed.
	Passed  bool   `json:"passed"`
	Verdict string `json:"verdict"`
	// Untested says what an incomplete burn-in did not test, and why.
	Untested []string `json:"untested,omitempty"`
	Tests    []Test   `json:"tests"`
}

// Run runs the burn-in. It returns an error when a test failed, with the
// full result either way.
func Run(ctx context.Context, p Params) (Result, error) {
	if p.Duration <= 0 {
		p.Duration = 30 * time.Minute
	}
	if p.Root == "" {
		p.Root = "/"
	}
	if p.MemoryFraction == 0 {
		p.MemoryFraction = 0.8
	}
	slice := p.Duration / 4
	var res Result
	res.Tests = append(res.Tests, run("cpu", func() (map[string]float64, error) { return CPU(ctx, slice) }))
	res.Tests = append(res.Tests, run("memory", func() (map[string]float64, error) { return Memory(ctx, p.Root, p.MemoryFraction, slice) }))
	for _, d := range p.Disks {
		res.Tests = append(res.Tests, run("disk "+d, func() (map[string]float64, error) { return Disk(ctx, d, slice/time.Duration(len(p.Disks))) }))
	}
	if len(p.Disks) == 0 {
		res.Tests = append(res.Tests, Test{Name: "disk", Outcome: NotRun, Reason: "the node has no disks"})
	}
	if p.NetURL != "" {
		res.Tests = append(res.Tests, run("network", func() (map[string]float64, error) { return Network(ctx, p.NetURL, slice) }))
	} else {
		res.Tests = append(res.Tests, Test{Name: "network", Outcome: NotRun, Reason: "no URL to time the network against"})
	}
	gpu := GPU(ctx, p, slice)
	res.Tests = append(res.Tests, gpu)
	var failed []string
	for _, t := range res.Tests {
		if t.Outcome == Failed {
			failed = append(failed, t.Name+": "+t.Reason)
		}
	}
	switch {
	case len(failed) > 0:
		res.Verdict = VerdictFailed
		return res, errors.New("burn-in failed: " + strings.Join(failed, "; "))
	case p.GPUs > 0 && gpu.Outcome != Passed:
		res.Verdict, res.Untested = VerdictIncomplete, []string{"gpu: " + gpu.Reason}
	default:
		res.Verdict, res.Passed = VerdictPassed, true
	}
	return res, nil
}

func run(name string, f func() (map[string]float64, error)) Test {
	start := time.Now()
	figs, err := f()
	t := Test{Name: name, Outcome: Passed, Figures: figs, Seconds: time.Since(start).Seconds()}
	if err != nil {
		t.Outcome, t.Reason = Failed, err.Error()
	}
	return t
}

// CPU keeps every CPU hashing for d, each worker twice over the same
// input, and fails on any disagreement: a core that computes wrongly
// under load shows here.
func CPU(ctx context.Context, d time.Duration) (map[string]float64, error) {
	n := runtime.NumCPU()
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var rounds int64
	var bad error
	for w := 0; w < n; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			var local int64
			seed := make([]byte, 64<<10)
			binary.LittleEndian.PutUint64(seed, uint64(w))
			for time.Now().Before(deadline) && ctx.Err() == nil {
				a := sha256.Sum256(seed)
				b := sha256.Sum256(seed)
				if a != b {
					mu.Lock()
					bad = fmt.Errorf("CPU worker %d: the same input hashed two ways", w)
					mu.Unlock()
					return
				}
				copy(seed, a[:])
				local++
			}
			mu.Lock()
			rounds += local
			mu.Unlock()
		}(w)
	}
	wg.Wait()
	secs := d.Seconds()
	return map[string]float64{"cpus": float64(n), "mb_hashed_per_s": float64(rounds) * 2 * 64 / 1024 / secs}, bad
}

// available reads MemAvailable from root's /proc/meminfo, in bytes.
func available(root string) (int64, error) {
	f, err := os.Open(root + "/proc/meminfo")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && k == "MemAvailable" {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb * 1024, err
		}
	}
	return 0, errors.New("no MemAvailable in /proc/meminfo")
}

// Memory writes patterns over fraction of the available memory and
// reads them back, passes repeating until d is spent (at least one).
func Memory(ctx context.Context, root string, fraction float64, d time.Duration) (map[string]float64, error) {
	avail, err := available(root)
	if err != nil {
		return nil, fmt.Errorf("memory: %w", err)
	}
	size := int64(float64(avail)*fraction) &^ 7
	if size < 8 {
		return nil, fmt.Errorf("memory: only %d bytes available", avail)
	}
	const chunk = 64 << 20
	var bufs [][]uint64
	for left := size; left > 0; left -= chunk {
		bufs = append(bufs, make([]uint64, min(left, chunk)/8))
	}
	defer func() { bufs = nil; runtime.GC() }()
	start := time.Now()
	passes := 0
	var moved int64
	patterns := []uint64{0xAAAAAAAAAAAAAAAA, 0x5555555555555555, 0xFFFFFFFF00000000}
	for passes == 0 || time.Since(start) < d {
		if ctx.Err() != nil {
			break
		}
		pat := patterns[passes%len(patterns)]
		for _, b := range bufs {
			for i := range b {
				b[i] = pat ^ uint64(i)
			}
		}
		for ci, b := range bufs {
			for i := range b {
				if b[i] != pat^uint64(i) {
					return nil, fmt.Errorf("memory: pattern %#x read back as %#x in chunk %d word %d", pat^uint64(i), b[i], ci, i)
				}
			}
		}
		moved += 2 * size
		passes++
	}
	secs := time.Since(start).Seconds()
	return map[string]float64{"bytes_tested": float64(size), "passes": float64(passes), "mb_per_s": float64(moved) / 1e6 / secs}, nil
}

// Disk writes a pattern over as much of the disk as d allows (at least
// 64 MiB, at most the whole disk), then reads it back.
func Disk(ctx context.Context, path string, d time.Duration) (map[string]float64, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("disk: %w", err)
	}
	defer f.Close()
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return nil, fmt.Errorf("disk: %w", err)
	}
	const block = 4 << 20
	buf := make([]byte, block)
	check := make([]byte, block)
	fill := func(off int64) {
		for i := 0; i < block; i += 8 {
			binary.LittleEndian.PutUint64(buf[i:], uint64(off+int64(i))^0x5A5A5A5A5A5A5A5A)
		}
	}
	start := time.Now()
	var written int64
	for written < size && (written < 64<<20 || time.Since(start) < d/2) && ctx.Err() == nil {
		n := min(block, size-written)
		fill(written)
		if _, err := f.WriteAt(buf[:n], written); err != nil {
			return nil, fmt.Errorf("disk %s: write at %d: %w", path, written, err)
		}
		written += n
	}
	if err := f.Sync(); err != nil {
		return nil, fmt.Errorf("disk %s: fsync: %w", path, err)
	}
	wsecs := time.Since(start).Seconds()
	dropCache(f, written)
	rstart := time.Now()
	for off := int64(0); off < written; off += block {
		n := min(block, written-off)
		if _, err := f.ReadAt(check[:n], off); err != nil {
			return nil, fmt.Errorf("disk %s: read at %d: %w", path, off, err)
		}
		fill(off)
		if string(check[:n]) != string(buf[:n]) {
			return nil, fmt.Errorf("disk %s: data read back at %d differs from what was written", path, off)
		}
	}
	rsecs := time.Since(rstart).Seconds()
	return map[string]float64{"bytes": float64(written), "write_mb_per_s": float64(written) / 1e6 / wsecs, "read_mb_per_s": float64(written) / 1e6 / rsecs}, nil
}

// Network downloads url again and again for d and reports the rate.
func Network(ctx context.Context, url string, d time.Duration) (map[string]float64, error) {
	start := time.Now()
	var n int64
	for n == 0 || time.Since(start) < d {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return nil, fmt.Errorf("network: %w", err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, fmt.Errorf("network: %w", err)
		}
		c, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("network: GET %s: %s %v", url, resp.Status, err)
		}
		if c == 0 {
			return nil, fmt.Errorf("network: GET %s: empty", url)
		}
		n += c
	}
	secs := time.Since(start).Seconds()
	return map[string]float64{"bytes": float64(n), "mbit_per_s": float64(n) * 8 / 1e6 / secs}, nil
}
