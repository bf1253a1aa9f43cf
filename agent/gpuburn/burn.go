// Package gpuburn loads NVIDIA GPUs through the CUDA driver API and checks
// what they compute, for the burn-in's GPU test: every block of a kernel
// computes the same chaotic values, so a block that disagrees is a GPU
// that computed wrongly under load, and each new launch length's answer
// is checked against the CPU's for two threads, so blocks that all agree
// on a wrong value are caught too. It also times device-to-device copies
// for a bandwidth figure. libcuda is loaded at run time (purego), so the
// helper needs no CUDA toolkit and no cgo, only the driver's libraries.
package gpuburn

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/rackboot/rackboot/agent/gpuburn/report"
)

//go:embed logistic.ptx
var logisticPTX string

// chains is how many independent chains each thread of logistic.ptx
// runs; each writes its final value and its hash.
const chains = 8

// wordsPerThread is what a thread writes: chains values, chains hashes.
const wordsPerThread = 2 * chains

// copyPattern fills the bandwidth buffer; what comes back must be it.
const copyPattern = 0xA55AC33C

// Options say how to load the GPUs.
type Options struct {
	// Lib is the driver library; "" means libcuda.so.1.
	Lib string
	// Duration is how long each GPU is loaded (at least one launch and
	// one round of copies whatever it is).
	Duration time.Duration
	// Devices are the CUDA ordinals to load; nil means all.
	Devices []int
	// Blocks and Threads are the kernel's grid; 0 means 2048 blocks of
	// 256 threads, several waves on any current data-centre GPU.
	Blocks, Threads int
	// Iterations is the first launch's steps per chain; they double
	// until a launch takes LaunchTime. 0 means 4096.
	Iterations uint32
	// LaunchTime is what a launch should take; 0 means 200 ms: long
	// enough to time well, short enough to check results often.
	LaunchTime time.Duration
	// CopyBytes is the bandwidth buffer; 0 means a quarter of the GPU's
	// memory, at most 1 GiB.
	CopyBytes int64
}

func (o *Options) defaults() {
	if o.Lib == "" {
		o.Lib = "libcuda.so.1"
	}
	if o.Blocks <= 0 {
		o.Blocks = 2048
	}
	if o.Threads <= 0 {
		o.Threads = 256
	}
	if o.Iterations == 0 {
		o.Iterations = 4096
	}
	if o.LaunchTime <= 0 {
		o.LaunchTime = 200 * time.Millisecond
	}
}

// Run loads the GPUs concurrently for o.Duration and reports each. The
// error is non-nil when the driver could not be used at all (the report
// then says why in Error) or a driver call failed on some GPU (its entry
// says which in Failed); counted wrong results are no error: the caller
// judges them.
func Run(ctx context.Context, o Options) (report.Report, error) {
	o.defaults()
	rep := report.Report{GPUs: []report.GPU{}}
	fail := func(err error) (report.Report, error) {
		rep.Error = err.Error()
		return rep, err
	}
	d, err := Open(o.Lib)
	if err != nil {
		return fail(err)
	}
	defer d.Close()
	n, err := d.deviceCount()
	if err != nil {
		return fail(err)
	}
	if n == 0 {
		return fail(errors.New("the CUDA driver sees no GPU"))
	}
	devs := o.Devices
	if devs == nil {
		for i := range n {
			devs = append(devs, i)
		}
	}
	for _, i := range devs {
		if i < 0 || i >= n {
			return fail(fmt.Errorf("no GPU %d: the CUDA driver sees %d", i, n))
		}
	}
	rep.GPUs = make([]report.GPU, len(devs))
	errs := make([]error, len(devs))
	deadline := time.Now().Add(o.Duration)
	var wg sync.WaitGroup
	for k, i := range devs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rep.GPUs[k], errs[k] = burn(ctx, d, i, o, deadline)
		}()
	}
	wg.Wait()
	var failed []error
	for k, err := range errs {
		if err != nil {
			rep.GPUs[k].Failed = err.Error()
			failed = append(failed, fmt.Errorf("GPU %d (%s): %w", rep.GPUs[k].Index, rep.GPUs[k].PCIBusID, err))
		}
	}
	return rep, errors.Join(failed...)
}

// burn loads one GPU from a goroutine of its own: a CUDA context is
// current on one OS thread, so the goroutine stays on it.
func burn(ctx context.Context, d *Driver, ordinal int, o Options, deadline time.Time) (g report.GPU, err error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	start := time.Now()
	g.Index = ordinal
	defer func() { g.Seconds = time.Since(start).Seconds() }()
	dev, err := d.device(ordinal)
	if err != nil {
		return g, err
	}
	if g.Name, err = d.deviceName(dev); err != nil {
		return g, err
	}
	if g.PCIBusID, err = d.busID(dev); err != nil {
		return g, err
	}
	if g.MemoryBytes, err = d.totalMem(dev); err != nil {
		return g, err
	}
	c, err := d.ctxCreate(dev)
	if err != nil {
		return g, err
	}
	defer func() {
		// Destroying the context frees its module and memory too.
		if derr := d.ctxDestroy(c); derr != nil && err == nil {
			err = derr
		}
	}()
	m, err := d.moduleLoad(logisticPTX)
	if err != nil {
		return g, err
	}
	fn, err := d.function(m, "logistic")
	if err != nil {
		return g, err
	}
	l, err := newLoad(d, fn, o, g.MemoryBytes)
	if err != nil {
		return g, err
	}
	defer func() {
		if ferr := l.free(); ferr != nil && err == nil {
			err = ferr
		}
	}()
	for {
		if err := l.compute(); err != nil {
			return l.fill(g), err
		}
		if err := l.copies(); err != nil {
			return l.fill(g), err
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
	}
	if err := l.verifyCopies(); err != nil {
		return l.fill(g), err
	}
	return l.fill(g), nil
}

// load is one GPU's state under load.
type load struct {
	d               *Driver
	fn              cuFunction
	blocks, threads int
	iters           uint32
	target          time.Duration
	calibrated      bool

	out  cuDevPtr
	host []uint32
	// ref is the block every launch with the same iterations must
	// reproduce: a GPU whose blocks all agree on a wrong answer differs
	// from it.
	ref      []uint32
	refIters uint32

	copyBuf   cuDevPtr
	copyBytes int64 // each half's
	copied    int64
	copyTime  time.Duration

	launches int64
	flops    float64
	flopTime time.Duration
	// last is the latest launch, the figure's source when the run ended
	// before the steps were calibrated.
	lastFlops  float64
	lastTime   time.Duration
	errors     int64
	firstError string
}

func newLoad(d *Driver, fn cuFunction, o Options, mem int64) (*load, error) {
	l := &load{d: d, fn: fn, blocks: o.Blocks, threads: o.Threads, iters: o.Iterations, target: o.LaunchTime}
	words := int64(l.blocks) * int64(l.threads) * wordsPerThread
	var err error
	if l.out, err = d.alloc(words * 4); err != nil {
		return nil, err
	}
	l.host = make([]uint32, words)
	size := o.CopyBytes
	if size <= 0 {
		size = min(1<<30, mem/4)
	}
	l.copyBytes = size / 2 &^ 3
	if l.copyBytes < 4 {
		return nil, errors.Join(fmt.Errorf("%d bytes of GPU memory: too little for the copies", mem), l.free())
	}
	if l.copyBuf, err = d.alloc(2 * l.copyBytes); err != nil {
		return nil, errors.Join(err, l.free())
	}
	if err := d.memset32(l.copyBuf, copyPattern, l.copyBytes/4); err != nil {
		return nil, errors.Join(err, l.free())
	}
	return l, nil
}

func (l *load) free() error {
	var errs []error
	if l.out != 0 {
		errs = append(errs, l.d.free(l.out))
		l.out = 0
	}
	if l.copyBuf != 0 {
		errs = append(errs, l.d.free(l.copyBuf))
		l.copyBuf = 0
	}
	return errors.Join(errs...)
}

func (l *load) fill(g report.GPU) report.GPU {
	g.Iterations, g.Errors, g.FirstError = l.launches, l.errors, l.firstError
	switch {
	case l.flopTime > 0:
		g.TFLOPS = l.flops / l.flopTime.Seconds() / 1e12
	case l.lastTime > 0:
		g.TFLOPS = l.lastFlops / l.lastTime.Seconds() / 1e12
	}
	if l.copyTime > 0 {
		g.MemoryGBps = float64(l.copied) / l.copyTime.Seconds() / 1e9
	}
	return g
}

func (l *load) wrong(n int64, format string, args ...any) {
	if l.errors == 0 {
		l.firstError = fmt.Sprintf(format, args...)
	}
	l.errors += n
}

// compute runs one launch and checks it. Launches double their steps
// until one takes half the target; the figure counts only the launches
// after that, whose time is the GPU's, not the launch's overhead.
func (l *load) compute() error {
	// NaN in every word first: a kernel that wrote nothing cannot pass
	// as a kernel that agreed with itself.
	if err := l.d.memset32(l.out, 0xFFFFFFFF, int64(len(l.host))); err != nil {
		return err
	}
	if err := l.d.synchronize(); err != nil {
		return err
	}
	start := time.Now()
	if err := l.d.launchLogistic(l.fn, l.blocks, l.threads, l.out, l.iters); err != nil {
		return err
	}
	if err := l.d.synchronize(); err != nil {
		return err
	}
	took := time.Since(start)
	if err := l.d.copyToHost(l.host, l.out); err != nil {
		return err
	}
	l.launches++
	l.check()
	l.lastFlops = 3 * float64(l.iters) * float64(l.blocks) * float64(l.threads) * chains
	l.lastTime = took
	if l.calibrated {
		l.flops += l.lastFlops
		l.flopTime += took
	} else if took >= l.target/2 || l.iters >= 1<<30 {
		l.calibrated = true
	} else {
		l.iters *= 2
	}
	return nil
}

// check compares every block with the reference block: block 0, unless
// most blocks agree on something else, when block 0 is the odd one out.
func (l *load) check() {
	per := l.threads * wordsPerThread
	block := func(b int) []uint32 { return l.host[b*per : (b+1)*per] }
	ref := majority(l.blocks, func(a, b int) bool { return slices.Equal(block(a), block(b)) })
	refb := block(ref)
	bad, first := 0, -1
	for b := range l.blocks {
		if b != ref && !slices.Equal(block(b), refb) {
			if first < 0 {
				first = b
			}
			bad++
		}
	}
	if bad > 0 {
		i := firstDiff(block(first), refb)
		what := fmt.Sprintf("block %d differs from block %d", first, ref)
		if ref != 0 {
			what = fmt.Sprintf("block 0 is the odd one out: %d of %d blocks agree on other values; block %d differs from them", l.blocks-bad, l.blocks, first)
		}
		l.wrong(int64(bad), "launch %d: %s at thread %d, %s: %#08x, want %#08x", l.launches, what, i/wordsPerThread, word(i%wordsPerThread), block(first)[i], refb[i])
	}
	if i := implausible(refb); i >= 0 {
		l.wrong(1, "launch %d: block %d's thread %d wrote %s %#08x: not what the kernel computes", l.launches, ref, i/wordsPerThread, word(i%wordsPerThread), refb[i])
		return
	}
	if l.ref != nil && l.refIters == l.iters && !slices.Equal(refb, l.ref) {
		i := firstDiff(refb, l.ref)
		l.wrong(1, "launch %d: the blocks agree, but not with the first launch of %d steps: thread %d, %s: %#08x, want %#08x", l.launches, l.iters, i/wordsPerThread, word(i%wordsPerThread), refb[i], l.ref[i])
		return
	}
	if l.refIters != l.iters {
		// A new length's first answer becomes the reference, so it is
		// checked against the CPU's: blocks that all agree on a wrong
		// value (or a kernel that computes other than this host
		// expects) show here. Two threads, to keep this to a fraction
		// of a launch.
		for _, tid := range []int{0, l.threads - 1} {
			want := referenceThread(uint32(tid), l.iters)
			got := refb[tid*wordsPerThread : (tid+1)*wordsPerThread]
			if i := firstDiff(got, want[:]); i >= 0 {
				l.wrong(int64(l.blocks), "launch %d: every block's thread %d, %s: %#08x, but the CPU computes %#08x", l.launches, tid, word(i), got[i], want[i])
				return
			}
		}
		l.ref, l.refIters = slices.Clone(refb), l.iters
	}
}

// majority is the block most others equal, when more than half do
// (Boyer-Moore's vote), and block 0 otherwise.
func majority(n int, eq func(a, b int) bool) int {
	cand, count := 0, 0
	for b := range n {
		switch {
		case count == 0:
			cand, count = b, 1
		case eq(b, cand):
			count++
		default:
			count--
		}
	}
	if cand == 0 {
		return 0
	}
	agree := 0
	for b := range n {
		if eq(b, cand) {
			agree++
		}
	}
	if 2*agree > n {
		return cand
	}
	return 0
}

func firstDiff(a, b []uint32) int {
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}

func word(i int) string {
	if i < chains {
		return fmt.Sprintf("chain %d's value", i)
	}
	return fmt.Sprintf("chain %d's hash", i-chains)
}

// implausible is the first value word outside (0, 1), where the map
// keeps its chains, or -1.
func implausible(b []uint32) int {
	for i := 0; i < len(b); i += wordsPerThread {
		for k := range chains {
			if x := math.Float32frombits(b[i+k]); !(x > 0 && x < 1) {
				return i + k
			}
		}
	}
	return -1
}

// copies runs a round of device-to-device copies between the buffer's
// halves, timed together.
func (l *load) copies() error {
	const rounds = 8
	start := time.Now()
	src, dst := l.copyBuf, l.copyBuf+cuDevPtr(l.copyBytes)
	for r := 0; r < rounds; r++ {
		if err := l.d.copyOnDevice(dst, src, l.copyBytes); err != nil {
			return err
		}
		src, dst = dst, src
	}
	if err := l.d.synchronize(); err != nil {
		return err
	}
	l.copyTime += time.Since(start)
	l.copied += rounds * 2 * l.copyBytes
	return nil
}

// verifyCopies reads both halves back in pieces and counts the words
// that are not the pattern, which every copy carried from half to half.
func (l *load) verifyCopies() error {
	const piece = 16 << 20
	buf := make([]uint32, min(piece, 2*l.copyBytes)/4)
	total := 2 * l.copyBytes
	for off := int64(0); off < total; off += int64(len(buf)) * 4 {
		n := min(int64(len(buf))*4, total-off) / 4
		if err := l.d.copyToHost(buf[:n], l.copyBuf+cuDevPtr(off)); err != nil {
			return err
		}
		for i, w := range buf[:n] {
			if w != copyPattern {
				l.wrong(1, "memory copies: the word at offset %d read back as %#08x, want %#08x", off+int64(i)*4, w, uint32(copyPattern))
			}
		}
	}
	return nil
}
