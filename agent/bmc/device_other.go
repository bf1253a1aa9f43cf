//go:build !(linux && (amd64 || arm64 || 386 || arm || riscv64 || loong64 || s390x))

package bmc

import (
	"context"
	"errors"
	"fmt"
)

// Device is the local BMC; on this system there is none to open.
type Device struct{}

// Open fails: the in-band interface is Linux's ipmi_devintf, with the
// ioctl encoding of the asm-generic architectures.
func Open(context.Context) (*Device, error) {
	return nil, fmt.Errorf("open ipmi device: %w", errors.ErrUnsupported)
}

// Path is "".
func (*Device) Path() string { return "" }

// Close does nothing.
func (*Device) Close() error { return nil }

// Command fails.
func (*Device) Command(context.Context, byte, byte, []byte) ([]byte, error) {
	return nil, fmt.Errorf("ipmi command: %w", errors.ErrUnsupported)
}
