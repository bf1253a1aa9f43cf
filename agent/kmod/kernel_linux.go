package kmod

import (
	"os"

	"golang.org/x/sys/unix"
)

// sysKernel makes the real system calls.
type sysKernel struct{}

func (sysKernel) FinitModule(f *os.File, params string) error {
	return unix.FinitModule(int(f.Fd()), params, 0)
}

func (sysKernel) InitModule(image []byte, params string) error {
	return unix.InitModule(image, params)
}
