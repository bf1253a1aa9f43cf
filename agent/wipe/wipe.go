// Package wipe erases disks for the agent: quick (every partition table
// and the signatures filesystems, RAID and LVM leave at the ends of the
// disk and of each partition) or full (an NVMe Format with secure erase,
// else discard where the device returns zeroes after it, else zeroes
// written over every block). Each wipe is
// checked by reading back what it erased; a method that did not erase is
// an error, never a success.
package wipe

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Methods.
const (
	Quick = "quick"
	Full  = "full"
)

// Record is what a wipe did to one disk, for the audit log.
type Record struct {
	Disk   string `json:"disk"`
	Serial string `json:"serial,omitempty"`
	// Method is how it was erased: "signatures" (quick),
	// "nvme-format-crypto" or "nvme-format" (Format NVM with a secure
	// erase), "discard", "zeroout" (the kernel wrote zeroes) or
	// "overwrite".
	Method string `json:"method"`
	// Tried says why the device's own erase was not used.
	Tried   []string `json:"tried,omitempty"`
	Bytes   int64    `json:"bytes"`
	Regions int      `json:"regions"`
	Samples int      `json:"samples_verified"`
	Seconds float64  `json:"seconds"`
}

// region is a byte range to erase.
type region struct{ off, n int64 }

const mib = 1 << 20

// signatureRegions are the places that make a disk look used: the first
// and last MiB of the disk (MBR, GPT and its backup, md superblocks 0.90,
// 1.0 and 1.2, LVM labels, ZFS labels, the superblocks of ext4, XFS and
// btrfs), btrfs's mirror superblocks, and the first and last MiB of every
// partition the old tables named.
func signatureRegions(f io.ReaderAt, size int64) []region {
	ends := func(off, n int64) []region {
		if n <= 2*mib {
			return []region{{off, n}}
		}
		return []region{{off, mib}, {off + n - mib, mib}}
	}
	rs := ends(0, size)
	for _, m := range []int64{64 * mib, 256 << 30} { // btrfs mirrors
		if m+mib <= size {
			rs = append(rs, region{m, 64 << 10})
		}
	}
	for _, p := range partitions(f, size) {
		rs = append(rs, ends(p.off, p.n)...)
	}
	return rs
}

// partitions reads the partitions of an MBR and a GPT (512-byte or 4 KiB
// sectors), ignoring whatever does not parse: a wipe must not stop at a
// damaged table.
func partitions(f io.ReaderAt, size int64) []region {
	var out []region
	add := func(off, n int64) {
		if off > 0 && n > 0 && off < size && off+n <= size {
			out = append(out, region{off, n})
		}
	}
	mbr := make([]byte, 512)
	if _, err := f.ReadAt(mbr, 0); err == nil && mbr[510] == 0x55 && mbr[511] == 0xaa {
		for i := 0; i < 4; i++ {
			e := mbr[446+16*i:]
			if e[4] == 0 || e[4] == 0xee {
				continue
			}
			add(int64(binary.LittleEndian.Uint32(e[8:]))*512, int64(binary.LittleEndian.Uint32(e[12:]))*512)
		}
	}
	for _, sector := range []int64{512, 4096} {
		hdr := make([]byte, 92)
		if _, err := f.ReadAt(hdr, sector); err != nil || string(hdr[:8]) != "EFI PART" {
			continue
		}
		lba := int64(binary.LittleEndian.Uint64(hdr[72:]))
		count := int64(binary.LittleEndian.Uint32(hdr[80:]))
		esize := int64(binary.LittleEndian.Uint32(hdr[84:]))
		if esize < 128 || esize > 4096 || count > 1024 {
			continue
		}
		entries := make([]byte, count*esize)
		if _, err := f.ReadAt(entries, lba*sector); err != nil {
			continue
		}
		for i := int64(0); i < count; i++ {
			e := entries[i*esize:]
			if allZero(e[:16]) {
				continue
			}
			first, last := int64(binary.LittleEndian.Uint64(e[32:])), int64(binary.LittleEndian.Uint64(e[40:]))
			if last >= first {
				add(first*sector, (last-first+1)*sector)
			}
		}
	}
	return out
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// Disk wipes the disk at path with method, reporting progress in bytes.
func Disk(ctx context.Context, path, serial, method string, progress func(done, total int64)) (Record, error) {
	start := time.Now()
	rec := Record{Disk: path, Serial: serial}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return rec, fmt.Errorf("wipe %s: %w", path, err)
	}
	defer f.Close()
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return rec, fmt.Errorf("wipe %s: size: %w", path, err)
	}
	st, err := f.Stat()
	if err != nil {
		return rec, fmt.Errorf("wipe %s: %w", path, err)
	}
	block := st.Mode()&os.ModeDevice != 0
	var rs []region
	switch method {
	case Quick:
		rs = signatureRegions(f, size)
		rec.Method = "signatures"
		for _, r := range rs {
			if err := zero(ctx, f, r, block, nil); err != nil {
				return rec, fmt.Errorf("wipe %s: %w", path, err)
			}
			rec.Bytes += r.n
		}
	case Full:
		rs = []region{{0, size}}
		rec.Method, rec.Bytes = "", size
		// The device's own erase first: it reaches blocks the host
		// cannot (spare and remapped ones), and is quick.
		if block {
			if m, err := nvmeSecureFormat(f); err != nil {
				rec.Tried = append(rec.Tried, "nvme-format: "+err.Error())
			} else if err := sampledZero(f, size, 64); err != nil {
				rec.Tried = append(rec.Tried, m+": did not read back zero: "+err.Error())
			} else {
				rec.Method = m
			}
		}
		if rec.Method != "" {
			break
		}
		if block && discard(f, size) == nil && sampledZero(f, size, 64) == nil {
			rec.Method = "discard"
		} else {
			rec.Method = "overwrite"
			if block {
				rec.Method = "zeroout"
			}
			if err := zero(ctx, f, region{0, size}, block, progress); err != nil {
				return rec, fmt.Errorf("wipe %s: %w", path, err)
			}
		}
	default:
		return rec, fmt.Errorf("wipe %s: method %q: want quick or full", path, method)
	}
	if err := f.Sync(); err != nil {
		return rec, fmt.Errorf("wipe %s: fsync: %w", path, err)
	}
	unix.Fadvise(int(f.Fd()), 0, size, unix.FADV_DONTNEED)
	// Verify: every erased region's first and last 4 KiB, and random
	// 4 KiB samples across all of them.
	n, err := verify(f, rs, 256)
	rec.Samples, rec.Regions = n, len(rs)
	if err != nil {
		return rec, fmt.Errorf("wipe %s: %s did not erase: %w", path, rec.Method, err)
	}
	rec.Seconds = time.Since(start).Seconds()
	if progress != nil {
		progress(size, size)
	}
	return rec, nil
}

// discard asks the device to drop every block.
func discard(f *os.File, size int64) error {
	r := [2]uint64{0, uint64(size)}
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.BLKDISCARD, uintptr(unsafe.Pointer(&r)))
	if errno != 0 {
		return errno
	}
	return nil
}

// zero writes zeroes over r: BLKZEROOUT on a block device (the device may
// do it without the data crossing the bus), else plain writes.
func zero(ctx context.Context, f *os.File, r region, block bool, progress func(done, total int64)) error {
	if block {
		const step = 1 << 30
		for off := r.off; off < r.off+r.n; off += step {
			n := min(step, r.off+r.n-off)
			rg := [2]uint64{uint64(off), uint64(n)}
			if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.BLKZEROOUT, uintptr(unsafe.Pointer(&rg))); errno != 0 {
				block = false
				break
			}
			if progress != nil {
				progress(off+n-r.off, r.n)
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
		if block {
			return nil
		}
	}
	buf := make([]byte, 4*mib)
	for off := r.off; off < r.off+r.n; {
		n := min(int64(len(buf)), r.off+r.n-off)
		if _, err := f.WriteAt(buf[:n], off); err != nil {
			return fmt.Errorf("write zeroes at %d: %w", off, err)
		}
		off += n
		if progress != nil {
			progress(off-r.off, r.n)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return nil
}

func sampledZero(f io.ReaderAt, size int64, n int) error {
	_, err := verify(f, []region{{0, size}}, n)
	return err
}

// verify reads the ends of every region and n random 4 KiB samples
// within them, and fails on a byte that is not zero.
func verify(f io.ReaderAt, rs []region, n int) (int, error) {
	buf := make([]byte, 4096)
	checked := 0
	check := func(off int64, l int64) error {
		l = min(l, int64(len(buf)))
		if _, err := f.ReadAt(buf[:l], off); err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("read back at %d: %w", off, err)
		}
		checked++
		if !allZero(buf[:l]) {
			return fmt.Errorf("byte range %d+%d still holds data", off, l)
		}
		return nil
	}
	var total int64
	for _, r := range rs {
		if err := check(r.off, r.n); err != nil {
			return checked, err
		}
		if r.n > 4096 {
			if err := check(r.off+r.n-4096, 4096); err != nil {
				return checked, err
			}
		}
		total += r.n
	}
	for i := 0; i < n && total > 0; i++ {
		x, _ := rand.Int(rand.Reader, big.NewInt(total))
		at := x.Int64()
		for _, r := range rs {
			if at < r.n {
				if err := check(r.off+at, r.n-at); err != nil {
					return checked, err
				}
				break
			}
			at -= r.n
		}
	}
	return checked, nil
}
