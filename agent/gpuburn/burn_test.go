package gpuburn

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rackboot/rackboot/agent/gpuburn/report"
)

// fakeCUDA builds testdata/fakecuda.c, a libcuda that runs the kernel
// on the CPU, and returns its path.
func fakeCUDA(t *testing.T) string {
	t.Helper()
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		t.Fatal("these tests need gcc to build the fake libcuda (apt-get install gcc libc6-dev, or make deps)")
	}
	lib := filepath.Join(t.TempDir(), "libcuda.so.1")
	// No contraction: the fake's float operations must be the ones
	// written, as the PTX's .rn operations are.
	out, err := exec.Command(gcc, "-shared", "-fPIC", "-O2", "-ffp-contract=off", "-o", lib, "testdata/fakecuda.c", "-lm").CombinedOutput()
	if err != nil {
		t.Fatalf("gcc fakecuda.c: %v\n%s", err, out)
	}
	return lib
}

// small keeps the CPU-run kernel cheap.
func small(lib string) Options {
	return Options{Lib: lib, Duration: 300 * time.Millisecond, Blocks: 16, Threads: 32, Iterations: 256, LaunchTime: 20 * time.Millisecond}
}

func TestHealthy(t *testing.T) {
	lib := fakeCUDA(t)
	t.Setenv("FAKECUDA_DEVICES", "2")
	rep, err := Run(context.Background(), small(lib))
	if err != nil {
		t.Fatalf("Run: %v (%+v)", err, rep)
	}
	if rep.Error != "" || len(rep.GPUs) != 2 {
		t.Fatalf("report: %+v", rep)
	}
	for i, g := range rep.GPUs {
		if g.Index != i || g.Name != "Fake GPU "+string(rune('0'+i)) || g.MemoryBytes != 64<<20 || g.Failed != "" {
			t.Errorf("GPU %d: %+v", i, g)
		}
		if g.Errors != 0 || g.FirstError != "" {
			t.Errorf("GPU %d: a sound GPU counted errors: %+v", i, g)
		}
		if g.Iterations < 2 || g.TFLOPS <= 0 || g.MemoryGBps <= 0 || g.Seconds < 0.3 {
			t.Errorf("GPU %d: figures %+v", i, g)
		}
	}
	if rep.GPUs[0].PCIBusID != "0000:17:00.0" || rep.GPUs[1].PCIBusID != "0000:18:00.0" {
		t.Errorf("bus IDs %s %s", rep.GPUs[0].PCIBusID, rep.GPUs[1].PCIBusID)
	}
}

func TestCorruptBlock(t *testing.T) {
	lib := fakeCUDA(t)
	t.Setenv("FAKECUDA_CORRUPT", "1:5")
	rep, err := Run(context.Background(), small(lib))
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if g := rep.GPUs[0]; g.Errors != 0 {
		t.Errorf("GPU 0, sound, counted errors: %+v", g)
	}
	g := rep.GPUs[1]
	// One block wrong in every launch.
	if g.Errors != g.Iterations || g.Errors == 0 {
		t.Errorf("GPU 1: %d errors in %d launches", g.Errors, g.Iterations)
	}
	if !strings.Contains(g.FirstError, "block 5 differs from block 0") {
		t.Errorf("first error %q", g.FirstError)
	}
}

// TestBlockZeroWrong: when block 0 is the wrong one, the majority wins
// and the report says block 0 is the odd one out.
func TestBlockZeroWrong(t *testing.T) {
	lib := fakeCUDA(t)
	t.Setenv("FAKECUDA_CORRUPT", "0:0")
	o := small(lib)
	o.Devices = []int{0}
	rep, err := Run(context.Background(), o)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	g := rep.GPUs[0]
	if g.Errors != g.Iterations || !strings.Contains(g.FirstError, "block 0 is the odd one out") {
		t.Errorf("%+v", g)
	}
}

// TestAllBlocksWrong: a GPU whose blocks agree on a wrong answer is
// caught by the CPU's reference.
func TestAllBlocksWrong(t *testing.T) {
	lib := fakeCUDA(t)
	t.Setenv("FAKECUDA_CORRUPT", "1:all")
	rep, err := Run(context.Background(), small(lib))
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if g := rep.GPUs[0]; g.Errors != 0 {
		t.Errorf("GPU 0, sound, counted errors: %+v", g)
	}
	g := rep.GPUs[1]
	if g.Errors == 0 || !strings.Contains(g.FirstError, "launch 1: every block's thread 0, chain 3's value") || !strings.Contains(g.FirstError, "but the CPU computes") {
		t.Errorf("%+v", g)
	}
}

// TestReference: the Go model of the kernel agrees with the fake's C
// (fmaf, float multiply) over many steps, chaotic ones, so a rounding
// slip in either would show.
func TestReference(t *testing.T) {
	lib := fakeCUDA(t)
	d, err := Open(lib)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	dev, err := d.device(0)
	if err != nil {
		t.Fatal(err)
	}
	c, err := d.ctxCreate(dev)
	if err != nil {
		t.Fatal(err)
	}
	defer d.ctxDestroy(c)
	m, err := d.moduleLoad(logisticPTX)
	if err != nil {
		t.Fatal(err)
	}
	fn, err := d.function(m, "logistic")
	if err != nil {
		t.Fatal(err)
	}
	const threads, iters = 64, 20000
	out, err := d.alloc(threads * wordsPerThread * 4)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.launchLogistic(fn, 1, threads, out, iters); err != nil {
		t.Fatal(err)
	}
	host := make([]uint32, threads*wordsPerThread)
	if err := d.copyToHost(host, out); err != nil {
		t.Fatal(err)
	}
	for tid := range threads {
		want := referenceThread(uint32(tid), iters)
		if got := host[tid*wordsPerThread : (tid+1)*wordsPerThread]; !slices.Equal(got, want[:]) {
			t.Fatalf("thread %d: C %x, Go %x", tid, got, want)
		}
	}
}

func TestContextFails(t *testing.T) {
	lib := fakeCUDA(t)
	t.Setenv("FAKECUDA_FAIL", "cuCtxCreate_v2")
	rep, err := Run(context.Background(), small(lib))
	var ce *Error
	if !errors.As(err, &ce) || ce.Call != "cuCtxCreate_v2" || ce.Code != 46 {
		t.Fatalf("err = %v", err)
	}
	want := "cuCtxCreate_v2: CUDA error 46: CUDA-capable device(s) is/are busy or unavailable"
	if !strings.Contains(err.Error(), "GPU 0 (0000:17:00.0): "+want) {
		t.Errorf("err = %v", err)
	}
	if len(rep.GPUs) != 2 || rep.GPUs[1].Failed != want || rep.GPUs[1].Iterations != 0 {
		t.Errorf("report %+v", rep)
	}
}

func TestNoDriver(t *testing.T) {
	rep, err := Run(context.Background(), Options{Lib: filepath.Join(t.TempDir(), "libcuda.so.1")})
	if err == nil || !strings.Contains(err.Error(), "load ") || !strings.Contains(err.Error(), "libcuda.so.1") {
		t.Fatalf("err = %v", err)
	}
	if rep.Error != err.Error() || len(rep.GPUs) != 0 {
		t.Errorf("report %+v", rep)
	}
	lib := fakeCUDA(t)
	t.Setenv("FAKECUDA_DEVICES", "0")
	if _, err := Run(context.Background(), Options{Lib: lib}); err == nil || !strings.Contains(err.Error(), "sees no GPU") {
		t.Errorf("no devices: %v", err)
	}
	t.Setenv("FAKECUDA_DEVICES", "1")
	if _, err := Run(context.Background(), Options{Lib: lib, Devices: []int{1}}); err == nil || !strings.Contains(err.Error(), "no GPU 1") {
		t.Errorf("a device that is not there: %v", err)
	}
}

// TestHelper runs the built command against the fake, as the burn-in
// runs it.
func TestHelper(t *testing.T) {
	lib := fakeCUDA(t)
	bin := filepath.Join(t.TempDir(), "rackboot-gpuburn")
	build := exec.Command("go", "build", "-o", bin, "../../cmd/rackboot-gpuburn")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "--seconds", "0.3", "--lib", lib, "--devices", "1", "--blocks", "8", "--threads", "32")
	cmd.Env = append(os.Environ(), "FAKECUDA_DEVICES=3", "FAKECUDA_CORRUPT=1:2")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	var rep report.Report
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("report %s: %v", out, err)
	}
	if len(rep.GPUs) != 1 || rep.GPUs[0].Index != 1 || rep.GPUs[0].Errors == 0 || rep.GPUs[0].TFLOPS <= 0 {
		t.Errorf("report %s", out)
	}
	// The report's JSON names are the ones the issue asks for.
	for _, k := range []string{`"index"`, `"name"`, `"pci_bus_id"`, `"memory_bytes"`, `"iterations"`, `"errors"`, `"first_error"`, `"tflops"`, `"memory_gbps"`, `"seconds"`} {
		if !strings.Contains(string(out), k) {
			t.Errorf("no %s in %s", k, out)
		}
	}
	cmd = exec.Command(bin, "--lib", filepath.Join(t.TempDir(), "none.so"))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err = cmd.Output()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || !strings.Contains(stderr.String(), "none.so") || !strings.Contains(string(out), `"error"`) {
		t.Errorf("without a driver: %v, stderr %q, stdout %s", err, stderr.String(), out)
	}
}

func TestMajority(t *testing.T) {
	for _, c := range []struct {
		blocks string
		want   byte // the reference block's content
	}{
		{"aaaa", 'a'}, {"abbb", 'b'}, {"abab", 'a'}, {"bbba", 'b'}, {"abcd", 'a'}, {"abb", 'b'}, {"a", 'a'}, {"abcbb", 'b'},
	} {
		eq := func(a, b int) bool { return c.blocks[a] == c.blocks[b] }
		if got := majority(len(c.blocks), eq); c.blocks[got] != c.want {
			t.Errorf("majority(%s) = block %d (%c), want %c", c.blocks, got, c.blocks[got], c.want)
		}
	}
}

// TestConcurrentCalls: GPUs are driven from a goroutine each, and each
// call's results must land in its own variables.
func TestConcurrentCalls(t *testing.T) {
	lib := fakeCUDA(t)
	d, err := Open(lib)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := 0; g < 2; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 20000; i++ {
				dev, err := d.device(g)
				if err != nil || int(dev) != g {
					t.Errorf("device(%d) = %d, %v at %d", g, dev, err, i)
					return
				}
			}
		}()
	}
	wg.Wait()
}

func TestFMA32(t *testing.T) {
	for _, c := range []struct{ a, b, c, want float32 }{
		{2, 3, 1, 7},
		{-4, 0.5, 4, 2},
		// 1+2^-23 squared minus 1: exact is 2^-22 + 2^-46, which a
		// rounding of the product first would lose.
		{1 + 0x1p-23, 1 + 0x1p-23, -1, 0x1p-22 + 0x1p-46},
		// Exact is 1 + 2^-23 + 2^-24 - 2^-70, just below a tie between
		// singles: rounded to a double first it becomes the tie, which
		// goes to even, 1 + 2^-22; correctly rounded it stays down.
		{1 + 0x1p-23, 0x1p-24 - 0x1p-47, 1 + 0x1p-23, 1 + 0x1p-23},
	} {
		if got := fma32(c.a, c.b, c.c); got != c.want {
			t.Errorf("fma32(%g, %g, %g) = %g, want %g", c.a, c.b, c.c, got, c.want)
		}
	}
}
