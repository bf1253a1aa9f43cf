package deploy

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
)

// ErrNoGPT is an image without a GPT (an MBR image, or a bare
// filesystem): there is no table to move or grow.
var ErrNoGPT = errors.New("the image has no GPT")

// table is a GPT read from a disk, to be changed and written back at
// the disk's end.
type table struct {
	f        *os.File
	sector   int64
	header   []byte // the primary header, hsize bytes
	entries  []byte
	esize    int64
	count    int64
	entryLBA int64
	// backupLBA, backupEntries and lastUsable are where things go on
	// this disk, whatever the image said.
	backupLBA, backupEntries, lastUsable int64
}

func readTable(f *os.File, sector int64) (*table, error) {
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return nil, err
	}
	hdr := make([]byte, sector)
	if _, err := f.ReadAt(hdr, sector); err != nil {
		return nil, fmt.Errorf("read GPT header: %w", err)
	}
	if string(hdr[:8]) != "EFI PART" {
		return nil, ErrNoGPT
	}
	hsize := binary.LittleEndian.Uint32(hdr[12:])
	if hsize < 92 || int64(hsize) > sector {
		return nil, fmt.Errorf("GPT header size %d", hsize)
	}
	if !crcOK(hdr[:hsize], 16) {
		return nil, errors.New("the GPT header's CRC is wrong")
	}
	t := &table{f: f, sector: sector, header: append([]byte{}, hdr[:hsize]...)}
	t.entryLBA = int64(binary.LittleEndian.Uint64(hdr[72:]))
	t.count = int64(binary.LittleEndian.Uint32(hdr[80:]))
	t.esize = int64(binary.LittleEndian.Uint32(hdr[84:]))
	if t.esize < 128 || t.count > 4096 || t.count*t.esize > 1<<20 {
		return nil, fmt.Errorf("%d GPT entries of %d bytes", t.count, t.esize)
	}
	t.entries = make([]byte, t.count*t.esize)
	if _, err := f.ReadAt(t.entries, t.entryLBA*sector); err != nil {
		return nil, fmt.Errorf("read GPT entries: %w", err)
	}
	if crc32.ChecksumIEEE(t.entries) != binary.LittleEndian.Uint32(hdr[88:]) {
		return nil, errors.New("the GPT entries' CRC is wrong")
	}
	sectors := size / sector
	t.backupLBA = sectors - 1
	t.backupEntries = t.backupLBA - (t.count*t.esize+sector-1)/sector
	t.lastUsable = t.backupEntries - 1
	return t, nil
}

func (t *table) entry(i int64) []byte { return t.entries[i*t.esize : (i+1)*t.esize] }

func (t *table) used(i int64) bool { return !bytes.Equal(t.entry(i)[:16], make([]byte, 16)) }

// last is the partition that ends last, or -1.
func (t *table) last() (int64, uint64) {
	idx, end := int64(-1), uint64(0)
	for i := int64(0); i < t.count; i++ {
		if t.used(i) {
			if e := binary.LittleEndian.Uint64(t.entry(i)[40:]); e >= end {
				idx, end = i, e
			}
		}
	}
	return idx, end
}

// write puts the table back: the backup at the disk's end first, the
// primary last, so a crash in between leaves a valid primary describing
// the old layout.
func (t *table) write() error {
	ecrc := crc32.ChecksumIEEE(t.entries)
	primary := append([]byte{}, t.header...)
	binary.LittleEndian.PutUint64(primary[32:], uint64(t.backupLBA))
	binary.LittleEndian.PutUint64(primary[48:], uint64(t.lastUsable))
	binary.LittleEndian.PutUint32(primary[88:], ecrc)
	setCRC(primary, 16)
	backup := append([]byte{}, primary...)
	binary.LittleEndian.PutUint64(backup[24:], uint64(t.backupLBA))
	binary.LittleEndian.PutUint64(backup[32:], 1)
	binary.LittleEndian.PutUint64(backup[72:], uint64(t.backupEntries))
	setCRC(backup, 16)
	for _, w := range []struct {
		b   []byte
		off int64
	}{{t.entries, t.backupEntries * t.sector}, {backup, t.backupLBA * t.sector}, {t.entries, t.entryLBA * t.sector}, {primary, t.sector}} {
		if _, err := t.f.WriteAt(w.b, w.off); err != nil {
			return fmt.Errorf("write GPT: %w", err)
		}
	}
	t.header = primary
	return t.f.Sync()
}

// GrowLast makes an image written to a bigger disk use all of it: the
// backup GPT moves to the disk's end, and the last partition grows to
// the new last usable sector. The filesystem inside grows on first boot
// (cloud-init's growpart and resize2fs, or the OS's own). sector is the
// logical sector size (512 or 4096).
func GrowLast(f *os.File, sector int64) (grown bool, err error) {
	t, err := readTable(f, sector)
	if err != nil {
		return false, fmt.Errorf("grow partition: %w", err)
	}
	return t.growTo(t.lastUsable)
}

// RelocateBackup moves the backup GPT of an image written to a bigger disk
// from the image's end to the disk's, where firmware and kernels look for
// it, leaving the partitions as they are (GrowLast does this too). The
// old backup header is zeroed, so no tool takes it for the live one.
func RelocateBackup(f *os.File, sector int64) (moved bool, err error) {
	t, err := readTable(f, sector)
	if err != nil {
		return false, fmt.Errorf("relocate backup GPT: %w", err)
	}
	old := int64(binary.LittleEndian.Uint64(t.header[32:]))
	if old == t.backupLBA {
		return false, nil
	}
	if err := t.write(); err != nil {
		return false, fmt.Errorf("relocate backup GPT: %w", err)
	}
	if old > 1 && old < t.backupLBA {
		if _, err := f.WriteAt(make([]byte, sector), old*sector); err != nil {
			return true, fmt.Errorf("relocate backup GPT: clear the old one: %w", err)
		}
	}
	return true, f.Sync()
}

func (t *table) growTo(end int64) (bool, error) {
	last, lastEnd := t.last()
	if last < 0 {
		return false, errors.New("grow partition: the GPT has no partitions")
	}
	if int64(lastEnd) == end && int64(binary.LittleEndian.Uint64(t.header[32:])) == t.backupLBA {
		return false, nil // already fills the disk
	}
	if int64(lastEnd) > end {
		return false, fmt.Errorf("grow partition: the last partition ends at sector %d, past %d", lastEnd, end)
	}
	binary.LittleEndian.PutUint64(t.entry(last)[40:], uint64(end))
	if err := t.write(); err != nil {
		return false, fmt.Errorf("grow partition: %w", err)
	}
	return true, nil
}

func crcOK(h []byte, at int) bool {
	want := binary.LittleEndian.Uint32(h[at:])
	c := append([]byte{}, h...)
	binary.LittleEndian.PutUint32(c[at:], 0)
	return crc32.ChecksumIEEE(c) == want
}

func setCRC(h []byte, at int) {
	binary.LittleEndian.PutUint32(h[at:], 0)
	binary.LittleEndian.PutUint32(h[at:], crc32.ChecksumIEEE(h))
}
