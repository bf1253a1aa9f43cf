//go:build linux && amd64

package bmc

import (
	"testing"
	"unsafe"
)

// The ioctl numbers as ipmitool's build on x86-64 has them, and the
// structs laid out as gcc lays out linux/ipmi.h's there.
func TestIoctlLayout(t *testing.T) {
	if ipmictlSendCommand != 0x8028690d || ipmictlReceiveMsgTrunc != 0xc030690b {
		t.Errorf("IPMICTL_SEND_COMMAND %#x, IPMICTL_RECEIVE_MSG_TRUNC %#x", ipmictlSendCommand, ipmictlReceiveMsgTrunc)
	}
	var req ipmiReq
	var recv ipmiRecv
	var addr ipmiSystemInterfaceAddr
	for _, c := range []struct {
		name      string
		got, want uintptr
	}{
		{"sizeof(struct ipmi_msg)", unsafe.Sizeof(ipmiMsg{}), 16},
		{"offsetof(struct ipmi_msg, data)", unsafe.Offsetof(req.Msg.Data), 8},
		{"offsetof(struct ipmi_req, msgid)", unsafe.Offsetof(req.MsgID), 16},
		{"offsetof(struct ipmi_req, msg)", unsafe.Offsetof(req.Msg), 24},
		{"offsetof(struct ipmi_recv, addr)", unsafe.Offsetof(recv.Addr), 8},
		{"offsetof(struct ipmi_recv, msgid)", unsafe.Offsetof(recv.MsgID), 24},
		{"offsetof(struct ipmi_recv, msg)", unsafe.Offsetof(recv.Msg), 32},
		{"sizeof(struct ipmi_system_interface_addr)", unsafe.Sizeof(addr), 8},
		{"offsetof(struct ipmi_system_interface_addr, lun)", unsafe.Offsetof(addr.LUN), 6},
	} {
		if c.got != c.want {
			t.Errorf("%s = %d, want %d", c.name, c.got, c.want)
		}
	}
}
