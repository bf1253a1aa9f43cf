package gpuburn

import "math"

// The kernel's constants, as the PTX writes them.
const (
	logisticR = 0x1.ffep+1 // 4 - 2^-10, 0f407FF000
	seedStep  = 0x1p-20    // 0f35800000
	seedBase  = float32(0.1)
	hashMul   = 16777619
	hashSeed  = 0x811C9DC5
)

// fma32 is fma.rn.f32: a*b+c rounded once to single precision. The
// product of two singles is exact in a double; the sum is rounded to odd
// (the nearest double with an odd last bit, when inexact), after which
// rounding to single is the correctly rounded result — a plain double sum
// rounded twice is not, in rare ties.
func fma32(a, b, c float32) float32 {
	p := float64(a) * float64(b)
	s := p + float64(c)
	// TwoSum: e is exactly what rounding s lost.
	v := s - p
	e := (p - (s - v)) + (float64(c) - v)
	if bits := math.Float64bits(s); e != 0 && bits&1 == 0 {
		if (e > 0) == (s > 0) {
			bits++
		} else {
			bits--
		}
		s = math.Float64frombits(bits)
	}
	return float32(s)
}

// referenceThread computes what thread tid of logistic.ptx writes after
// iters steps: its chains' values, then their hashes.
func referenceThread(tid uint32, iters uint32) [wordsPerThread]uint32 {
	var x [chains]float32
	var h [chains]uint32
	x[0] = fma32(float32(tid<<3), seedStep, seedBase)
	for k := 1; k < chains; k++ {
		x[k] = float32(x[k-1] + seedStep)
	}
	for k := range h {
		h[k] = hashSeed
	}
	for range iters {
		for k := range x {
			t := float32(logisticR * x[k])
			x[k] = fma32(-t, x[k], t)
			h[k] = h[k]*hashMul + math.Float32bits(x[k])
		}
	}
	var out [wordsPerThread]uint32
	for k := range x {
		out[k], out[chains+k] = math.Float32bits(x[k]), h[k]
	}
	return out
}
