package wipe

import (
	"encoding/binary"
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// passthru is the kernel's struct nvme_passthru_cmd (linux/nvme_ioctl.h),
// 72 bytes, for NVME_IOCTL_ADMIN_CMD.
type passthru struct {
	Opcode      uint8
	Flags       uint8
	Rsvd1       uint16
	NSID        uint32
	CDW2, CDW3  uint32
	Metadata    uint64
	Addr        uint64
	MetadataLen uint32
	DataLen     uint32
	CDW10       uint32
	CDW11       uint32
	CDW12       uint32
	CDW13       uint32
	CDW14       uint32
	CDW15       uint32
	TimeoutMS   uint32
	Result      uint32
}

const (
	// _IOWR('N', 0x41, struct nvme_passthru_cmd) and _IO('N', 0x40).
	nvmeIoctlAdminCmd = 0xC0484E41
	nvmeIoctlID       = 0x4E40

	opIdentify  = 0x06
	opFormatNVM = 0x80

	// Secure erase settings of Format NVM (cdw10 bits 11:9).
	sesUserData = 1
	sesCrypto   = 2
)

// nvmeFormat is what Identify says about formatting one namespace.
type nvmeFormat struct {
	Supported bool // OACS bit 1: the controller takes Format NVM
	Crypto    bool // FNA bit 2: it can erase by dropping the key
	// CDW10 formats the namespace again with its current LBA format,
	// metadata and protection settings; the erase setting is added.
	CDW10 uint32
}

// parseIdentify reads the controller's and the namespace's Identify data
// (4096 bytes each).
func parseIdentify(ctrl, ns []byte) (nvmeFormat, error) {
	if len(ctrl) < 4096 || len(ns) < 4096 {
		return nvmeFormat{}, fmt.Errorf("identify data of %d and %d bytes, want 4096", len(ctrl), len(ns))
	}
	oacs := binary.LittleEndian.Uint16(ctrl[256:])
	fna := ctrl[524]
	flbas, dps := ns[26], ns[29]
	f := nvmeFormat{Supported: oacs&(1<<1) != 0, Crypto: fna&(1<<2) != 0}
	f.CDW10 = uint32(flbas&0x0f) | // LBA format, low bits
		uint32(flbas>>4&1)<<4 | // metadata settings
		uint32(dps&0x07)<<5 | // protection information type
		uint32(dps>>3&1)<<8 | // protection information location
		uint32(flbas>>5&0x03)<<12 // LBA format, high bits
	return f, nil
}

// formatCDW10 adds the erase to f's command word.
func (f nvmeFormat) formatCDW10() (cdw10 uint32, method string) {
	if f.Crypto {
		return f.CDW10 | sesCrypto<<9, "nvme-format-crypto"
	}
	return f.CDW10 | sesUserData<<9, "nvme-format"
}

func adminCmd(f *os.File, c *passthru) error {
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), nvmeIoctlAdminCmd, uintptr(unsafe.Pointer(c)))
	if errno != 0 {
		return errno
	}
	if c.Result != 0 {
		return fmt.Errorf("NVMe status %#x", c.Result)
	}
	return nil
}

func identify(f *os.File, nsid, cns uint32) ([]byte, error) {
	buf := make([]byte, 4096)
	c := passthru{Opcode: opIdentify, NSID: nsid, Addr: uint64(uintptr(unsafe.Pointer(&buf[0]))), DataLen: uint32(len(buf)), CDW10: cns}
	err := adminCmd(f, &c)
	return buf, err
}

// nvmeSecureFormat erases an NVMe namespace with Format NVM: by crypto
// erase where the controller offers it, else by user data erase. It
// returns the method, or an error when f is not an NVMe namespace or its
// controller does not format; the caller then erases another way.
func nvmeSecureFormat(f *os.File) (string, error) {
	id, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), nvmeIoctlID, 0)
	if errno != 0 {
		return "", fmt.Errorf("not an NVMe namespace: %w", errno)
	}
	nsid := uint32(id)
	ctrl, err := identify(f, 0, 1)
	if err != nil {
		return "", fmt.Errorf("identify controller: %w", err)
	}
	ns, err := identify(f, nsid, 0)
	if err != nil {
		return "", fmt.Errorf("identify namespace %d: %w", nsid, err)
	}
	nf, err := parseIdentify(ctrl, ns)
	if err != nil {
		return "", err
	}
	if !nf.Supported {
		return "", fmt.Errorf("the controller does not support Format NVM")
	}
	cdw10, method := nf.formatCDW10()
	// A user data erase of a large drive takes minutes; the kernel's
	// default admin timeout is one.
	c := passthru{Opcode: opFormatNVM, NSID: nsid, CDW10: cdw10, TimeoutMS: 2 * 60 * 60 * 1000}
	if err := adminCmd(f, &c); err != nil {
		return "", fmt.Errorf("format NVM (namespace %d, cdw10 %#x): %w", nsid, cdw10, err)
	}
	// The kernel's view of the namespace is stale after a format.
	unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.BLKRRPART, 0)
	return method, nil
}
