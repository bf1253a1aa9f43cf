package gpuburn

import (
	"fmt"
	"unsafe"

	"github.com/ebitengine/purego"
)

// The CUDA driver API's handles, as libcuda passes them.
type (
	cuDevice   int32
	cuContext  uintptr
	cuModule   uintptr
	cuFunction uintptr
	cuDevPtr   uint64
)

// Driver is libcuda, opened at run time: the helper needs the NVIDIA
// driver's library, never the CUDA toolkit, and builds without cgo.
type Driver struct {
	lib uintptr
	fn  map[string]uintptr
}

// symbols are every driver call the load makes: all are looked up when
// the library opens, so a library that lacks one fails at once, by name.
var symbols = []string{
	"cuInit", "cuDeviceGetCount", "cuDeviceGet", "cuDeviceGetName",
	"cuDeviceGetPCIBusId", "cuDeviceTotalMem_v2", "cuCtxCreate_v2",
	"cuCtxDestroy_v2", "cuCtxSynchronize", "cuModuleLoadData",
	"cuModuleGetFunction", "cuMemAlloc_v2", "cuMemFree_v2",
	"cuMemcpyDtoH_v2", "cuMemcpyDtoD_v2", "cuMemsetD32_v2",
	"cuLaunchKernel", "cuGetErrorString",
}

// Open loads the driver library at path ("libcuda.so.1" searches the
// loader's paths) and initialises it.
func Open(path string) (*Driver, error) {
	lib, err := purego.Dlopen(path, purego.RTLD_NOW|purego.RTLD_LOCAL)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", path, err)
	}
	d := &Driver{lib: lib, fn: map[string]uintptr{}}
	for _, s := range symbols {
		p, err := purego.Dlsym(lib, s)
		if err != nil {
			purego.Dlclose(lib)
			return nil, fmt.Errorf("load %s: no %s: %w", path, s, err)
		}
		d.fn[s] = p
	}
	if err := d.check("cuInit", d.call("cuInit", 0)); err != nil {
		purego.Dlclose(lib)
		return nil, err
	}
	return d, nil
}

// Close unloads the library.
func (d *Driver) Close() error { return purego.Dlclose(d.lib) }

// call calls a driver function. uintptrescapes makes what the callers'
// uintptr(unsafe.Pointer(...)) arguments point to escape to the heap and
// stay alive through the call: without it a result variable may sit on a
// goroutine stack that moves before the C code writes to it (seen as a
// GPU getting another's device handle under concurrent calls).
//
//go:uintptrescapes
func (d *Driver) call(name string, args ...uintptr) int32 {
	r, _, _ := purego.SyscallN(d.fn[name], args...)
	return int32(r)
}

// Error is a driver call's failure.
type Error struct {
	Call string
	Code int32
	// Text is cuGetErrorString's description.
	Text string
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s: CUDA error %d: %s", e.Call, e.Code, e.Text)
}

func (d *Driver) check(call string, r int32) error {
	if r == 0 {
		return nil
	}
	return &Error{Call: call, Code: r, Text: d.errorString(r)}
}

func (d *Driver) errorString(r int32) string {
	var s *byte
	if d.call("cuGetErrorString", uintptr(r), uintptr(unsafe.Pointer(&s))) != 0 || s == nil {
		return "unknown error"
	}
	return cString(s)
}

// cString copies a NUL-terminated C string.
func cString(p *byte) string {
	var b []byte
	for i := 0; ; i++ {
		c := *(*byte)(unsafe.Add(unsafe.Pointer(p), i))
		if c == 0 {
			return string(b)
		}
		b = append(b, c)
	}
}

func bufString(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}

func (d *Driver) deviceCount() (int, error) {
	var n int32
	err := d.check("cuDeviceGetCount", d.call("cuDeviceGetCount", uintptr(unsafe.Pointer(&n))))
	return int(n), err
}

func (d *Driver) device(ordinal int) (cuDevice, error) {
	var dev cuDevice
	err := d.check("cuDeviceGet", d.call("cuDeviceGet", uintptr(unsafe.Pointer(&dev)), uintptr(ordinal)))
	return dev, err
}

func (d *Driver) deviceName(dev cuDevice) (string, error) {
	b := make([]byte, 256)
	err := d.check("cuDeviceGetName", d.call("cuDeviceGetName", uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), uintptr(dev)))
	return bufString(b), err
}

func (d *Driver) busID(dev cuDevice) (string, error) {
	b := make([]byte, 64)
	err := d.check("cuDeviceGetPCIBusId", d.call("cuDeviceGetPCIBusId", uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), uintptr(dev)))
	return bufString(b), err
}

func (d *Driver) totalMem(dev cuDevice) (int64, error) {
	var n uintptr
	err := d.check("cuDeviceTotalMem_v2", d.call("cuDeviceTotalMem_v2", uintptr(unsafe.Pointer(&n)), uintptr(dev)))
	return int64(n), err
}

// ctxCreate makes a context current on the calling thread, which must
// stay locked to its goroutine for the context's life.
func (d *Driver) ctxCreate(dev cuDevice) (cuContext, error) {
	var c cuContext
	err := d.check("cuCtxCreate_v2", d.call("cuCtxCreate_v2", uintptr(unsafe.Pointer(&c)), 0, uintptr(dev)))
	return c, err
}

func (d *Driver) ctxDestroy(c cuContext) error {
	return d.check("cuCtxDestroy_v2", d.call("cuCtxDestroy_v2", uintptr(c)))
}

func (d *Driver) synchronize() error {
	return d.check("cuCtxSynchronize", d.call("cuCtxSynchronize"))
}

// moduleLoad JIT-compiles PTX, which the driver wants NUL-terminated.
func (d *Driver) moduleLoad(ptx string) (cuModule, error) {
	img := append([]byte(ptx), 0)
	var m cuModule
	err := d.check("cuModuleLoadData", d.call("cuModuleLoadData", uintptr(unsafe.Pointer(&m)), uintptr(unsafe.Pointer(&img[0]))))
	return m, err
}

func (d *Driver) function(m cuModule, name string) (cuFunction, error) {
	n := append([]byte(name), 0)
	var f cuFunction
	err := d.check("cuModuleGetFunction", d.call("cuModuleGetFunction", uintptr(unsafe.Pointer(&f)), uintptr(m), uintptr(unsafe.Pointer(&n[0]))))
	return f, err
}

func (d *Driver) alloc(n int64) (cuDevPtr, error) {
	var p cuDevPtr
	err := d.check("cuMemAlloc_v2", d.call("cuMemAlloc_v2", uintptr(unsafe.Pointer(&p)), uintptr(n)))
	return p, err
}

func (d *Driver) free(p cuDevPtr) error {
	return d.check("cuMemFree_v2", d.call("cuMemFree_v2", uintptr(p)))
}

// copyToHost fills dst from device memory.
func (d *Driver) copyToHost(dst []uint32, src cuDevPtr) error {
	return d.check("cuMemcpyDtoH_v2", d.call("cuMemcpyDtoH_v2", uintptr(unsafe.Pointer(&dst[0])), uintptr(src), uintptr(len(dst)*4)))
}

func (d *Driver) copyOnDevice(dst, src cuDevPtr, n int64) error {
	return d.check("cuMemcpyDtoD_v2", d.call("cuMemcpyDtoD_v2", uintptr(dst), uintptr(src), uintptr(n)))
}

func (d *Driver) memset32(dst cuDevPtr, v uint32, words int64) error {
	return d.check("cuMemsetD32_v2", d.call("cuMemsetD32_v2", uintptr(dst), uintptr(v), uintptr(words)))
}

// launchLogistic runs logistic.ptx's kernel on blocks×threads and
// returns when it was queued; cuCtxSynchronize waits for it.
func (d *Driver) launchLogistic(f cuFunction, blocks, threads int, out cuDevPtr, iters uint32) error {
	// kernelParams is an array of pointers to each argument's value.
	params := [2]unsafe.Pointer{unsafe.Pointer(&out), unsafe.Pointer(&iters)}
	return d.check("cuLaunchKernel", d.call("cuLaunchKernel", uintptr(f),
		uintptr(blocks), 1, 1, uintptr(threads), 1, 1,
		0, 0, uintptr(unsafe.Pointer(&params[0])), 0))
}
