// Package bmc is the agent's side of the node's BMC, spoken to in band:
// through the Linux IPMI character device (/dev/ipmi0, the ipmi_devintf
// driver over ipmi_si's KCS, SMIC or BT interface), with no network and no
// credentials, as the host's own root may. It reads the BMC's LAN
// addresses for the inventory (Discover) and creates or refreshes a user
// the server then power-manages the node with (Enroll).
//
// Everything above the device goes through Conn, one request and its
// answer, so the commands' bytes are tested against a table and, in the
// integration test, against OpenIPMI's ipmi_sim over the network.
package bmc

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
)

// Conn sends IPMI requests to one BMC.
type Conn interface {
	// Command sends one request (network function, command, request data)
	// and returns the response data after the completion code. A
	// non-zero completion code is a *CompletionError.
	Command(ctx context.Context, netfn, cmd byte, data []byte) ([]byte, error)
}

// Network functions (requests; the response is the next, odd one).
const (
	NetFnApp       = 0x06
	NetFnTransport = 0x0c
)

// Commands, IPMI v2.0 sections 22 and 23.
const (
	cmdGetChannelAccess = 0x41 // App
	cmdGetChannelInfo   = 0x42 // App
	cmdSetUserAccess    = 0x43 // App
	cmdGetUserAccess    = 0x44 // App
	cmdSetUserName      = 0x45 // App
	cmdGetUserName      = 0x46 // App
	cmdSetUserPassword  = 0x47 // App
	cmdGetLANConfig     = 0x02 // Transport
)

// CompletionError is a BMC's refusal: a response whose completion code is
// not 0x00 (normal).
type CompletionError struct {
	NetFn, Cmd, Code byte
}

// Common completion codes (IPMI v2.0 table 5-2) and the LAN
// configuration's own 0x80.
const (
	CodeParamNotSupported    = 0x80
	CodeNodeBusy             = 0xc0
	CodeInvalidCommand       = 0xc1
	CodeTimeout              = 0xc3
	CodeOutOfSpace           = 0xc4
	CodeInvalidLength        = 0xc7
	CodeOutOfRange           = 0xc9
	CodeNotPresent           = 0xcb
	CodeInvalidData          = 0xcc
	CodeInsufficientPriv     = 0xd4
	CodeNotSupportedInState  = 0xd5
	CodeUnspecifiedErrorCode = 0xff
)

var codeNames = map[byte]string{
	CodeParamNotSupported:    "parameter not supported",
	CodeNodeBusy:             "node busy",
	CodeInvalidCommand:       "invalid command",
	0xc2:                     "command invalid for this LUN",
	CodeTimeout:              "timeout while processing",
	CodeOutOfSpace:           "out of space",
	0xc5:                     "reservation cancelled or invalid",
	0xc6:                     "request data truncated",
	CodeInvalidLength:        "request data length invalid",
	0xc8:                     "request data field length limit exceeded",
	CodeOutOfRange:           "parameter out of range",
	0xca:                     "cannot return the number of requested bytes",
	CodeNotPresent:           "requested sensor, data or record not present",
	CodeInvalidData:          "invalid data field in request",
	0xcd:                     "command illegal for this sensor or record type",
	0xce:                     "response could not be provided",
	0xcf:                     "duplicated request",
	0xd0:                     "SDR repository in update mode",
	0xd1:                     "device in firmware update mode",
	0xd2:                     "BMC initialization in progress",
	0xd3:                     "destination unavailable",
	CodeInsufficientPriv:     "insufficient privilege level",
	CodeNotSupportedInState:  "not supported in present state",
	0xd6:                     "parameter is illegal: sub-function disabled or unavailable",
	CodeUnspecifiedErrorCode: "unspecified error",
}

func (e *CompletionError) Error() string {
	name := codeNames[e.Code]
	if name == "" {
		name = "unknown completion code"
	}
	return fmt.Sprintf("ipmi netfn 0x%02x cmd 0x%02x: completion code 0x%02x (%s)", e.NetFn, e.Cmd, e.Code, name)
}

// IsCode reports whether err is a BMC's refusal with one of codes.
func IsCode(err error, codes ...byte) bool {
	var ce *CompletionError
	if !errors.As(err, &ce) {
		return false
	}
	for _, c := range codes {
		if ce.Code == c {
			return true
		}
	}
	return false
}

// refused reports whether err is any completion code: the BMC answered.
func refused(err error) bool {
	var ce *CompletionError
	return errors.As(err, &ce)
}

// ErrNoDevice is a machine with no IPMI device file: no BMC, or its
// drivers are not loaded. It is not a failure for a machine to have none.
var ErrNoDevice = fmt.Errorf("no ipmi device (%s): %w", "/dev/ipmi0", fs.ErrNotExist)
