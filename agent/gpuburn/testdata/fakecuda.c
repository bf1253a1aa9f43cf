/*
 * A stand-in for NVIDIA's libcuda.so.1 with the driver API calls
 * rackboot-gpuburn makes, so its tests run on machines without a GPU.
 * Device memory is host memory (a CUdeviceptr is the malloc'd pointer)
 * and cuLaunchKernel runs logistic.ptx's kernel on the CPU with the same
 * IEEE single-precision operations: fmaf for fma.rn.f32, a float multiply
 * for mul.rn.f32, so its results are the ones a sound GPU computes.
 *
 * Environment:
 *   FAKECUDA_DEVICES=N         how many devices (default 2)
 *   FAKECUDA_MEM=BYTES         each device's memory (default 64 MiB)
 *   FAKECUDA_CORRUPT=dev:block flip a bit of that block's output on every
 *                              launch on that device; dev:all, of every
 *                              block
 *   FAKECUDA_FAIL=name         that call fails with
 *                              CUDA_ERROR_DEVICES_UNAVAILABLE
 *
 * gcc -shared -fPIC -O2 -o libcuda.so.1 fakecuda.c -lm
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
typedef struct ctx *CUcontext;
typedef struct module *CUmodule;
typedef struct function *CUfunction;
typedef void *CUstream;

enum {
	SUCCESS = 0,
	INVALID_VALUE = 1,
	OUT_OF_MEMORY = 2,
	NOT_INITIALIZED = 3,
	DEVICES_UNAVAILABLE = 46,
	INVALID_DEVICE = 101,
	INVALID_IMAGE = 200,
	INVALID_CONTEXT = 201,
	NOT_FOUND = 500,
};

struct ctx { CUdevice dev; };
struct module { int unused; };
struct function { int unused; };

static int initialised;
static __thread CUcontext current;

static int fails(const char *name) {
	const char *f = getenv("FAKECUDA_FAIL");
	return f && strcmp(f, name) == 0;
}

#define CALL(name) do { if (fails(name)) return DEVICES_UNAVAILABLE; } while (0)
#define NEED_INIT() do { if (!initialised) return NOT_INITIALIZED; } while (0)
#define NEED_CTX() do { NEED_INIT(); if (!current) return INVALID_CONTEXT; } while (0)

static int devices(void) {
	const char *s = getenv("FAKECUDA_DEVICES");
	return s ? atoi(s) : 2;
}

CUresult cuGetErrorString(CUresult r, const char **s) {
	if (!s) return INVALID_VALUE;
	switch (r) {
	case SUCCESS: *s = "no error"; break;
	case INVALID_VALUE: *s = "invalid argument"; break;
	case OUT_OF_MEMORY: *s = "out of memory"; break;
	case NOT_INITIALIZED: *s = "initialization error"; break;
	case DEVICES_UNAVAILABLE: *s = "CUDA-capable device(s) is/are busy or unavailable"; break;
	case INVALID_DEVICE: *s = "invalid device ordinal"; break;
	case INVALID_IMAGE: *s = "device kernel image is invalid"; break;
	case INVALID_CONTEXT: *s = "invalid device context"; break;
	case NOT_FOUND: *s = "named symbol not found"; break;
	default: *s = 0; return INVALID_VALUE;
	}
	return SUCCESS;
}

CUresult cuInit(unsigned int flags) {
	CALL("cuInit");
	if (flags != 0) return INVALID_VALUE;
	initialised = 1;
	return SUCCESS;
}

CUresult cuDeviceGetCount(int *n) {
	CALL("cuDeviceGetCount");
	NEED_INIT();
	if (!n) return INVALID_VALUE;
	*n = devices();
	return SUCCESS;
}

CUresult cuDeviceGet(CUdevice *d, int ordinal) {
	CALL("cuDeviceGet");
	NEED_INIT();
	if (!d) return INVALID_VALUE;
	if (ordinal < 0 || ordinal >= devices()) return INVALID_DEVICE;
	*d = ordinal;
	return SUCCESS;
}

CUresult cuDeviceGetName(char *name, int len, CUdevice d) {
	CALL("cuDeviceGetName");
	NEED_INIT();
	if (!name || len <= 0) return INVALID_VALUE;
	if (d < 0 || d >= devices()) return INVALID_DEVICE;
	snprintf(name, len, "Fake GPU %d", d);
	return SUCCESS;
}

CUresult cuDeviceGetPCIBusId(char *id, int len, CUdevice d) {
	CALL("cuDeviceGetPCIBusId");
	NEED_INIT();
	if (!id || len < 13) return INVALID_VALUE;
	if (d < 0 || d >= devices()) return INVALID_DEVICE;
	snprintf(id, len, "0000:%02X:00.0", 0x17 + d);
	return SUCCESS;
}

CUresult cuDeviceTotalMem_v2(size_t *bytes, CUdevice d) {
	CALL("cuDeviceTotalMem_v2");
	NEED_INIT();
	if (!bytes) return INVALID_VALUE;
	if (d < 0 || d >= devices()) return INVALID_DEVICE;
	const char *s = getenv("FAKECUDA_MEM");
	*bytes = s ? strtoull(s, 0, 10) : 64u << 20;
	return SUCCESS;
}

CUresult cuCtxCreate_v2(CUcontext *c, unsigned int flags, CUdevice d) {
	CALL("cuCtxCreate_v2");
	NEED_INIT();
	if (!c || flags != 0) return INVALID_VALUE;
	if (d < 0 || d >= devices()) return INVALID_DEVICE;
	*c = malloc(sizeof **c);
	(*c)->dev = d;
	current = *c;
	return SUCCESS;
}

CUresult cuCtxDestroy_v2(CUcontext c) {
	CALL("cuCtxDestroy_v2");
	NEED_INIT();
	if (!c) return INVALID_CONTEXT;
	if (current == c) current = 0;
	free(c);
	return SUCCESS;
}

CUresult cuCtxSynchronize(void) {
	CALL("cuCtxSynchronize");
	NEED_CTX();
	return SUCCESS;
}

CUresult cuModuleLoadData(CUmodule *m, const void *image) {
	CALL("cuModuleLoadData");
	NEED_CTX();
	if (!m || !image) return INVALID_VALUE;
	/* The real driver JIT-compiles the PTX; this one only checks that
	   it is PTX with the kernel it knows. */
	if (strncmp(image, ".version", 8) != 0 && !strstr(image, "\n.version ")) return INVALID_IMAGE;
	if (!strstr(image, ".entry logistic(")) return INVALID_IMAGE;
	*m = malloc(sizeof **m);
	return SUCCESS;
}

CUresult cuModuleGetFunction(CUfunction *f, CUmodule m, const char *name) {
	CALL("cuModuleGetFunction");
	NEED_CTX();
	if (!f || !m || !name) return INVALID_VALUE;
	if (strcmp(name, "logistic") != 0) return NOT_FOUND;
	*f = malloc(sizeof **f);
	return SUCCESS;
}

CUresult cuMemAlloc_v2(CUdeviceptr *p, size_t n) {
	CALL("cuMemAlloc_v2");
	NEED_CTX();
	if (!p || n == 0) return INVALID_VALUE;
	void *m = malloc(n);
	if (!m) return OUT_OF_MEMORY;
	*p = (CUdeviceptr)(uintptr_t)m;
	return SUCCESS;
}

CUresult cuMemFree_v2(CUdeviceptr p) {
	CALL("cuMemFree_v2");
	NEED_CTX();
	free((void *)(uintptr_t)p);
	return SUCCESS;
}

CUresult cuMemcpyDtoH_v2(void *dst, CUdeviceptr src, size_t n) {
	CALL("cuMemcpyDtoH_v2");
	NEED_CTX();
	if (!dst || !src) return INVALID_VALUE;
	memcpy(dst, (void *)(uintptr_t)src, n);
	return SUCCESS;
}

CUresult cuMemcpyDtoD_v2(CUdeviceptr dst, CUdeviceptr src, size_t n) {
	CALL("cuMemcpyDtoD_v2");
	NEED_CTX();
	if (!dst || !src) return INVALID_VALUE;
	memmove((void *)(uintptr_t)dst, (void *)(uintptr_t)src, n);
	return SUCCESS;
}

CUresult cuMemsetD32_v2(CUdeviceptr dst, unsigned int v, size_t n) {
	CALL("cuMemsetD32_v2");
	NEED_CTX();
	if (!dst) return INVALID_VALUE;
	uint32_t *p = (uint32_t *)(uintptr_t)dst;
	for (size_t i = 0; i < n; i++) p[i] = v;
	return SUCCESS;
}

enum { K = 8 };

/* One thread of logistic.ptx: the same seeds, operations and layout. */
static void thread(uint32_t tid, uint32_t iters, uint32_t *out) {
	float x[K];
	uint32_t h[K];
	x[0] = fmaf((float)(tid << 3), 0x1p-20f, 0.1f);
	for (int k = 1; k < K; k++) x[k] = x[k - 1] + 0x1p-20f;
	for (int k = 0; k < K; k++) h[k] = 0x811C9DC5u;
	for (uint32_t i = 0; i < iters; i++) {
		for (int k = 0; k < K; k++) {
			float t = x[k] * 0x1.ffep+1f; /* 4 - 2^-10 */
			x[k] = fmaf(-t, x[k], t);
			uint32_t b;
			memcpy(&b, &x[k], 4);
			h[k] = h[k] * 16777619u + b;
		}
	}
	memcpy(out, x, sizeof x);
	memcpy(out + K, h, sizeof h);
}

static void corrupt(CUdevice dev, unsigned int block, uint32_t *base, unsigned int threads) {
	const char *s = getenv("FAKECUDA_CORRUPT");
	int d, b, n = 0;
	if (!s) return;
	/* dev:all: every block alike, a GPU that agrees with itself. */
	if (sscanf(s, "%d:all%n", &d, &n) == 1 && n > 0 && s[n] == 0) {
		if (d == dev) base[block * threads * 2 * K + 3] ^= 1u << 7;
		return;
	}
	if (sscanf(s, "%d:%d", &d, &b) != 2 || d != dev || (unsigned)b != block) return;
	base[block * threads * 2 * K + 3] ^= 1u << 7;
}

CUresult cuLaunchKernel(CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz,
	unsigned int bx, unsigned int by, unsigned int bz, unsigned int shared,
	CUstream stream, void **params, void **extra) {
	CALL("cuLaunchKernel");
	NEED_CTX();
	if (!f || !params || extra) return INVALID_VALUE;
	if (gx == 0 || bx == 0 || bx > 1024 || gy != 1 || gz != 1 || by != 1 || bz != 1) return INVALID_VALUE;
	(void)shared;
	(void)stream;
	uint32_t *out = (uint32_t *)(uintptr_t)*(CUdeviceptr *)params[0];
	uint32_t iters = *(uint32_t *)params[1];
	if (!out) return INVALID_VALUE;
	/* Every block computes the same: the first's threads are computed
	   once and copied, which keeps large grids cheap here. */
	for (unsigned int t = 0; t < bx; t++) thread(t, iters, out + t * 2 * K);
	for (unsigned int b = 1; b < gx; b++) memcpy(out + b * bx * 2 * K, out, bx * 2 * K * 4);
	for (unsigned int b = 0; b < gx; b++) corrupt(current->dev, b, out, bx);
	return SUCCESS;
}
