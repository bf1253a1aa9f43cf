package wipe

import (
	"encoding/binary"
	"os"
	"testing"
	"unsafe"
)

// The ioctl number encodes the struct's size: they must agree.
func TestPassthruLayout(t *testing.T) {
	if n := unsafe.Sizeof(passthru{}); n != 72 {
		t.Fatalf("nvme_passthru_cmd is %d bytes, want 72", n)
	}
	if got := uint32(nvmeIoctlAdminCmd) >> 16 & 0x3fff; got != 72 {
		t.Fatalf("NVME_IOCTL_ADMIN_CMD encodes size %d", got)
	}
	if off := unsafe.Offsetof(passthru{}.CDW10); off != 40 {
		t.Errorf("cdw10 at %d, want 40", off)
	}
	if off := unsafe.Offsetof(passthru{}.Result); off != 68 {
		t.Errorf("result at %d, want 68", off)
	}
}

func TestParseIdentify(t *testing.T) {
	ident := func(oacs uint16, fna, flbas, dps byte) ([]byte, []byte) {
		ctrl, ns := make([]byte, 4096), make([]byte, 4096)
		binary.LittleEndian.PutUint16(ctrl[256:], oacs)
		ctrl[524], ns[26], ns[29] = fna, flbas, dps
		return ctrl, ns
	}
	for _, tc := range []struct {
		name            string
		oacs            uint16
		fna, flbas, dps byte
		supported       bool
		wantCDW10       uint32
		wantMethod      string
	}{
		// Format index 0, no metadata: a user data erase is SES 1.
		{"plain", 0x0002, 0, 0, 0, true, 1 << 9, "nvme-format"},
		// Crypto erase offered; 4 KiB format at index 2 is kept.
		{"crypto", 0x0006, 0x04, 0x02, 0, true, 2 | 2<<9, "nvme-format-crypto"},
		// Index 17 (high bits 01, low 0001), extended metadata, PI type 1
		// first: every setting survives the format.
		{"settings kept", 0x0002, 0, 0x31, 0x09, true, 1 | 1<<4 | 1<<5 | 1<<8 | 1<<12 | 1<<9, "nvme-format"},
		{"no format support", 0x0000, 0x04, 0, 0, false, 2 << 9, "nvme-format-crypto"},
	} {
		ctrl, ns := ident(tc.oacs, tc.fna, tc.flbas, tc.dps)
		f, err := parseIdentify(ctrl, ns)
		if err != nil {
			t.Fatal(err)
		}
		cdw10, method := f.formatCDW10()
		if f.Supported != tc.supported || cdw10 != tc.wantCDW10 || method != tc.wantMethod {
			t.Errorf("%s: supported %v cdw10 %#x %s, want %v %#x %s", tc.name, f.Supported, cdw10, method, tc.supported, tc.wantCDW10, tc.wantMethod)
		}
	}
	if _, err := parseIdentify(make([]byte, 100), make([]byte, 4096)); err == nil {
		t.Error("short identify data accepted")
	}
}

// A file is no NVMe namespace: the format is refused and the full wipe
// goes on another way.
func TestNVMeFormatOfAFile(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "disk")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if m, err := nvmeSecureFormat(f); err == nil {
		t.Fatalf("formatted a plain file (%s)", m)
	}
}
