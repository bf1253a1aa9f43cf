package burnin

import (
	"os"

	"golang.org/x/sys/unix"
)

// dropCache makes the read-back come from the disk, not from memory.
func dropCache(f *os.File, n int64) { unix.Fadvise(int(f.Fd()), 0, n, unix.FADV_DONTNEED) }
