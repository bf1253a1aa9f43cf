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

// GrowLast makes an image written to a bigger disk use all of it: the
// backup GPT moves to the disk's end, and the last partition grows to
// the new last usable sector. The filesystem inside grows on first boot
// (cloud-init's growpart and resize2fs, or the OS's own). sector is the
// logical sector size (512 or 4096).
func GrowLast(f *os.File, sector int64) (grown bool, err error) {
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return false, fmt.Errorf("grow partition: %w", err)
	}
	hdr := make([]byte, sector)
	if _, err := f.ReadAt(hdr, sector); err != nil {
		return false, fmt.Errorf("grow partition: read GPT header: %w", err)
	}
	if string(hdr[:8]) != "EFI PART" {
		return false, errors.New("grow partition: the image has no GPT")
	}
	hsize := binary.LittleEndian.Uint32(hdr[12:])
	if hsize < 92 || int64(hsize) > sector {
		return false, fmt.Errorf("grow partition: GPT header size %d", hsize)
	}
	if !crcOK(hdr[:hsize], 16) {
		return false, errors.New("grow partition: the GPT header's CRC is wrong")
	}
	entriesLBA := int64(binary.LittleEndian.Uint64(hdr[72:]))
	count := int64(binary.LittleEndian.Uint32(hdr[80:]))
	esize := int64(binary.LittleEndian.Uint32(hdr[84:]))
	if esize < 128 || count > 4096 || count*esize > 1<<20 {
		return false, fmt.Errorf("grow partition: %d entries of %d bytes", count, esize)
	}
	entries := make([]byte, count*esize)
	if _, err := f.ReadAt(entries, entriesLBA*sector); err != nil {
		return false, fmt.Errorf("grow partition: read GPT entries: %w", err)
	}
	if crc32.ChecksumIEEE(entries) != binary.LittleEndian.Uint32(hdr[88:]) {
		return false, errors.New("grow partition: the GPT entries' CRC is wrong")
	}
	sectors := size / sector
	entrySectors := (count*esize + sector - 1) / sector
	backupLBA := sectors - 1
	backupEntries := backupLBA - entrySectors
	lastUsable := backupEntries - 1
	// The partition that ends last is the one to grow.
	last := -1
	var lastEnd uint64
	for i := int64(0); i < count; i++ {
		e := entries[i*esize:]
		if bytes.Equal(e[:16], make([]byte, 16)) {
			continue
		}
		if end := binary.LittleEndian.Uint64(e[40:]); end >= lastEnd {
			last, lastEnd = int(i), end
		}
	}
	if last < 0 {
		return false, errors.New("grow partition: the GPT has no partitions")
	}
	if int64(lastEnd) >= lastUsable && int64(binary.LittleEndian.Uint64(hdr[32:])) == backupLBA {
		return false, nil // already fills the disk
	}
	if int64(lastEnd) > lastUsable {
		return false, fmt.Errorf("grow partition: the last partition ends at sector %d, past the disk's last usable %d", lastEnd, lastUsable)
	}
	binary.LittleEndian.PutUint64(entries[int64(last)*esize+40:], uint64(lastUsable))
	ecrc := crc32.ChecksumIEEE(entries)
	primary := append([]byte{}, hdr[:hsize]...)
	binary.LittleEndian.PutUint64(primary[32:], uint64(backupLBA)) // alternate LBA
	binary.LittleEndian.PutUint64(primary[48:], uint64(lastUsable))
	binary.LittleEndian.PutUint32(primary[88:], ecrc)
	setCRC(primary, 16)
	backup := append([]byte{}, primary...)
	binary.LittleEndian.PutUint64(backup[24:], uint64(backupLBA)) // my LBA
	binary.LittleEndian.PutUint64(backup[32:], 1)
	binary.LittleEndian.PutUint64(backup[72:], uint64(backupEntries))
	setCRC(backup, 16)
	// Backup first, primary last: a crash in between leaves a valid
	// primary describing the old layout.
	for _, w := range []struct {
		b   []byte
		off int64
	}{{entries, backupEntries * sector}, {backup, backupLBA * sector}, {entries, entriesLBA * sector}, {primary, sector}} {
		if _, err := f.WriteAt(w.b, w.off); err != nil {
			return false, fmt.Errorf("grow partition: write: %w", err)
		}
	}
	if err := f.Sync(); err != nil {
		return false, fmt.Errorf("grow partition: fsync: %w", err)
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
