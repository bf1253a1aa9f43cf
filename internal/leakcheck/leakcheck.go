// Package leakcheck reads what a test process holds (descriptors, live
// heap), for tests that show a server under hostile traffic keeps them
// bounded.
package leakcheck

import (
	"fmt"
	"os"
	"runtime"
)

// FDs counts the descriptors the process holds.
func FDs() (int, error) {
	es, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0, fmt.Errorf("count descriptors: %w", err)
	}
	return len(es), nil
}

// HeapAfterGC is the live heap once a collection has run.
func HeapAfterGC() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}
