//go:build linux && (amd64 || arm64 || 386 || arm || riscv64 || loong64 || s390x)

package bmc

// The ioctl numbers follow asm-generic/ioctl.h (direction in bits 31:30,
// size in 29:16): the architectures above. powerpc, mips and sparc
// encode them otherwise and get device_other.go.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// linux/ipmi.h, laid out as the C compiler lays them out: Go aligns each
// field to its size as C does, so the sizes and offsets match on 32- and
// 64-bit alike (C long is Go int on Linux).
type ipmiMsg struct {
	NetFn   uint8
	Cmd     uint8
	DataLen uint16
	Data    *byte
}

type ipmiReq struct {
	Addr    *byte
	AddrLen uint32
	MsgID   int
	Msg     ipmiMsg
}

type ipmiRecv struct {
	RecvType int32
	Addr     *byte
	AddrLen  uint32
	MsgID    int
	Msg      ipmiMsg
}

type ipmiSystemInterfaceAddr struct {
	AddrType int32
	Channel  int16
	LUN      uint8
}

const (
	ipmiSystemInterfaceAddrType = 0x0c
	ipmiBMCChannel              = 0x0f
	ipmiResponseRecvType        = 1
	ipmiIOCMagic                = 'i'
	// ipmiMaxMsgLength is IPMI_MAX_MSG_LENGTH: the largest response.
	ipmiMaxMsgLength = 272
	// ipmiAddrSize holds any struct ipmi_addr (4 + 2 + 32, padded).
	ipmiAddrSize = 64

	iocWrite = 1
	iocRead  = 2
)

func ioc(dir, nr, size uintptr) uintptr {
	return dir<<30 | size<<16 | ipmiIOCMagic<<8 | nr
}

var (
	// _IOR('i', 13, struct ipmi_req) and _IOWR('i', 11, struct ipmi_recv).
	ipmictlSendCommand     = ioc(iocRead, 13, unsafe.Sizeof(ipmiReq{}))
	ipmictlReceiveMsgTrunc = ioc(iocRead|iocWrite, 11, unsafe.Sizeof(ipmiRecv{}))
)

// DevicePaths are where the IPMI character device appears: devtmpfs's
// name first, then the names of older udev rules.
var DevicePaths = []string{"/dev/ipmi0", "/dev/ipmi/0", "/dev/ipmidev/0"}

// Device is the local BMC through /dev/ipmi0. It is safe for concurrent
// use: requests are sent one at a time.
type Device struct {
	// Timeout bounds one try of a command when ctx has no sooner
	// deadline; 0 means 5 s. A command that times out is sent once more.
	Timeout time.Duration

	path  string
	mu    sync.Mutex
	fd    int
	msgID int
}

// Open opens the first IPMI device there is. No device at all (no BMC,
// or its drivers not loaded) is ErrNoDevice.
func Open(ctx context.Context) (*Device, error) {
	for _, p := range DevicePaths {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("open ipmi device: %w", err)
		}
		fd, err := unix.Open(p, unix.O_RDWR|unix.O_CLOEXEC, 0)
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENXIO) || errors.Is(err, unix.ENODEV) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("open ipmi device %s: %w", p, err)
		}
		return &Device{path: p, fd: fd}, nil
	}
	return nil, fmt.Errorf("open ipmi device: %w", ErrNoDevice)
}

// Path is the device file opened.
func (d *Device) Path() string { return d.path }

// Close closes the device.
func (d *Device) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fd < 0 {
		return nil
	}
	err := unix.Close(d.fd)
	d.fd = -1
	return err
}

// errTimeout is a try the BMC did not answer in time.
var errTimeout = errors.New("no response from the BMC")

// Command sends a request to the BMC and waits for its response.
func (d *Device) Command(ctx context.Context, netfn, cmd byte, data []byte) ([]byte, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fd < 0 {
		return nil, fmt.Errorf("ipmi netfn 0x%02x cmd 0x%02x: %w", netfn, cmd, os.ErrClosed)
	}
	if len(data) > ipmiMaxMsgLength {
		return nil, fmt.Errorf("ipmi netfn 0x%02x cmd 0x%02x: request data is %d bytes, the interface takes %d", netfn, cmd, len(data), ipmiMaxMsgLength)
	}
	timeout := d.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	var resp []byte
	var err error
	for try := 0; try < 2; try++ {
		deadline := time.Now().Add(timeout)
		if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
			deadline = dl
		}
		resp, err = d.exchange(ctx, netfn, cmd, data, deadline)
		if !errors.Is(err, errTimeout) || ctx.Err() != nil {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("ipmi netfn 0x%02x cmd 0x%02x: %w", netfn, cmd, err)
	}
	if len(resp) < 1 {
		return nil, fmt.Errorf("ipmi netfn 0x%02x cmd 0x%02x: response without a completion code", netfn, cmd)
	}
	if resp[0] != 0 {
		return nil, &CompletionError{NetFn: netfn, Cmd: cmd, Code: resp[0]}
	}
	return resp[1:], nil
}

// exchange sends one request with a fresh message id and reads responses
// until the one with that id comes (a late answer to an earlier try is
// dropped).
func (d *Device) exchange(ctx context.Context, netfn, cmd byte, data []byte, deadline time.Time) ([]byte, error) {
	d.msgID++
	id := d.msgID
	if err := d.send(netfn, cmd, data, id); err != nil {
		return nil, err
	}
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		left := time.Until(deadline)
		if left <= 0 {
			return nil, errTimeout
		}
		// Short polls, so that a cancelled ctx is noticed.
		ms := int(min(left, 200*time.Millisecond) / time.Millisecond)
		fds := []unix.PollFd{{Fd: int32(d.fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, max(ms, 1))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("poll: %w", err)
		}
		if n == 0 {
			continue
		}
		resp, got, ok, err := d.receive()
		if err != nil {
			return nil, err
		}
		if ok && got == id {
			return resp, nil
		}
	}
}

func (d *Device) send(netfn, cmd byte, data []byte, id int) error {
	addr := &ipmiSystemInterfaceAddr{AddrType: ipmiSystemInterfaceAddrType, Channel: ipmiBMCChannel}
	req := &ipmiReq{Addr: (*byte)(unsafe.Pointer(addr)), AddrLen: uint32(unsafe.Sizeof(*addr)), MsgID: id,
		Msg: ipmiMsg{NetFn: netfn, Cmd: cmd, DataLen: uint16(len(data))}}
	// The kernel reads addr and data through the pointers in req: they
	// stay pinned until the call returns.
	var pin runtime.Pinner
	defer pin.Unpin()
	pin.Pin(addr)
	var buf []byte
	if len(data) > 0 {
		buf = append([]byte(nil), data...)
		pin.Pin(&buf[0])
		req.Msg.Data = &buf[0]
	}
	err := ioctl(d.fd, ipmictlSendCommand, unsafe.Pointer(req))
	runtime.KeepAlive(req)
	runtime.KeepAlive(addr)
	runtime.KeepAlive(buf)
	if err != nil {
		return fmt.Errorf("send command: %w", err)
	}
	return nil
}

// receive reads one message; ok is false for anything but a response
// (an event or a command for the host).
func (d *Device) receive() (resp []byte, id int, ok bool, err error) {
	addr := make([]byte, ipmiAddrSize)
	buf := make([]byte, ipmiMaxMsgLength)
	recv := &ipmiRecv{Addr: &addr[0], AddrLen: uint32(len(addr)), Msg: ipmiMsg{Data: &buf[0], DataLen: uint16(len(buf))}}
	var pin runtime.Pinner
	defer pin.Unpin()
	pin.Pin(&addr[0])
	pin.Pin(&buf[0])
	err = ioctl(d.fd, ipmictlReceiveMsgTrunc, unsafe.Pointer(recv))
	runtime.KeepAlive(recv)
	runtime.KeepAlive(addr)
	runtime.KeepAlive(buf)
	switch {
	case errors.Is(err, unix.EAGAIN):
		return nil, 0, false, nil
	case errors.Is(err, unix.EMSGSIZE):
		// Truncated to buf: still the message, and more than any
		// response Discover or Enroll reads.
	case err != nil:
		return nil, 0, false, fmt.Errorf("receive message: %w", err)
	}
	if recv.RecvType != ipmiResponseRecvType {
		return nil, 0, false, nil
	}
	n := min(int(recv.Msg.DataLen), len(buf))
	return buf[:n], recv.MsgID, true, nil
}

func ioctl(fd int, req uintptr, arg unsafe.Pointer) error {
	for {
		_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(arg))
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return e
		}
		return nil
	}
}
