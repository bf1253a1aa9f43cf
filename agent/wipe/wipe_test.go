package wipe

import (
	"bytes"
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// usedDisk is a disk image that looks used: a GPT with two partitions,
// an ext4-like superblock in each, md and btrfs signatures, and data.
func usedDisk(t *testing.T, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.Truncate(size)
	fill := bytes.Repeat([]byte("DATA"), 1024)
	for off := int64(0); off < size; off += 1 << 20 {
		f.WriteAt(fill, off+512<<10)
	}
	mbr := make([]byte, 512)
	mbr[446+4] = 0xee // protective MBR
	mbr[510], mbr[511] = 0x55, 0xaa
	f.WriteAt(mbr, 0)
	hdr := make([]byte, 92)
	copy(hdr, "EFI PART")
	binary.LittleEndian.PutUint64(hdr[72:], 2) // entries at LBA 2
	binary.LittleEndian.PutUint32(hdr[80:], 128)
	binary.LittleEndian.PutUint32(hdr[84:], 128)
	f.WriteAt(hdr, 512)
	f.WriteAt(hdr, size-512) // backup header
	parts := [][2]int64{{2048, 2048 + 8*2048 - 1}, {12 * 2048, 20*2048 - 1}}
	for i, pt := range parts {
		e := make([]byte, 128)
		e[0] = 0xaf // a type GUID
		binary.LittleEndian.PutUint64(e[32:], uint64(pt[0]))
		binary.LittleEndian.PutUint64(e[40:], uint64(pt[1]))
		f.WriteAt(e, 2*512+int64(i)*128)
		// A filesystem superblock near each partition's start and an md
		// 1.0 superblock near its end.
		f.WriteAt([]byte("EXT4SUPERBLOCK"), pt[0]*512+1024)
		f.WriteAt([]byte("MDRAID10"), (pt[1]+1)*512-8192)
	}
	if size > 65<<20 {
		f.WriteAt([]byte("_BHRfS_M"), 64<<20+0x40)
	}
	return p
}

func TestQuickWipe(t *testing.T) {
	size := int64(96 << 20)
	p := usedDisk(t, size)
	rec, err := Disk(context.Background(), p, "SER1", Quick, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	for _, sig := range []string{"EFI PART", "EXT4SUPERBLOCK", "MDRAID10", "_BHRfS_M"} {
		if bytes.Contains(b, []byte(sig)) {
			t.Errorf("%q survived a quick wipe", sig)
		}
	}
	if b[510] != 0 || b[511] != 0 {
		t.Error("MBR signature survived")
	}
	// Quick leaves the data between the signatures.
	if !bytes.Contains(b, []byte("DATADATA")) {
		t.Error("quick wipe erased everything: it should be quick")
	}
	// Disk ends (2), btrfs mirror, two partitions' ends (4).
	if rec.Method != "signatures" || rec.Regions != 7 || rec.Samples < 7 || rec.Serial != "SER1" {
		t.Errorf("record %+v", rec)
	}
}

func TestFullWipe(t *testing.T) {
	p := usedDisk(t, 24<<20)
	var last int64
	rec, err := Disk(context.Background(), p, "", Full, func(done, total int64) { last = done })
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	if !allZero(b) {
		t.Errorf("full wipe left data at %d", bytes.IndexFunc(b, func(r rune) bool { return r != 0 }))
	}
	if rec.Method != "overwrite" || rec.Bytes != 24<<20 || last != 24<<20 || rec.Samples < 200 {
		t.Errorf("record %+v, last progress %d", rec, last)
	}
}

// A disk whose writes do not stick must fail the wipe, never pass it.
func TestWipeThatDoesNotEraseFails(t *testing.T) {
	p := usedDisk(t, 8<<20)
	data, _ := os.ReadFile(p)
	_, err := verify(bytes.NewReader(data), []region{{0, int64(len(data))}}, 64)
	if err == nil || !strings.Contains(err.Error(), "still holds data") {
		t.Fatalf("verify of a used disk: %v", err)
	}
	if _, err := Disk(context.Background(), p, "", "shred", nil); err == nil {
		t.Fatal("unknown method: no error")
	}
}

func TestPartitionsOfGarbage(t *testing.T) {
	junk := bytes.Repeat([]byte{0xff}, 64<<10)
	copy(junk[512:], "EFI PART")
	if ps := partitions(bytes.NewReader(junk), int64(len(junk))); len(ps) != 0 {
		t.Fatalf("partitions of junk: %v", ps)
	}
}

func FuzzPartitions(f *testing.F) {
	f.Add(make([]byte, 4096))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, r := range partitions(bytes.NewReader(b), int64(len(b))) {
			if r.off < 0 || r.n <= 0 || r.off+r.n > int64(len(b)) {
				t.Fatalf("region %+v outside a %d-byte disk", r, len(b))
			}
		}
	})
}
