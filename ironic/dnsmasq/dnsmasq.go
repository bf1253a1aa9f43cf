// Package dnsmasq reads the files OpenStack Ironic's "dnsmasq" DHCP
// provider writes for an external dnsmasq, and answers what that dnsmasq
// would answer: which MACs Ironic boots (dhcp-hostsdir), which DHCPv4
// options each gets (dhcp-optsdir), and the lease file Ironic reads back
// to learn its nodes' addresses (dhcp-leasefile).
//
// Ironic writes, per PXE-enabled port, hostsdir/ironic-<mac>.conf with
// "<mac>,set:<tag>,set:ironic" (or "<mac>,ignore" once it is done with the
// node), and per node optsdir/ironic-<node uuid>.conf with lines
// "tag:<tag>,[tag:[!]ipxe,]<option>,<value>". The tag is a UUID Ironic
// draws per node. Lines are read with dnsmasq's rules for dhcp-host and
// dhcp-option; what rackboot cannot honour is reported per line and the
// rest of the file still counts.
package dnsmasq

import (
	"errors"
	"fmt"
)

// Sentinels a LineError wraps, for errors.Is.
var (
	// ErrSyntax: dnsmasq would refuse the line too.
	ErrSyntax = errors.New("syntax error")
	// ErrUnsupported: a valid dnsmasq line that rackboot does not honour;
	// the line has no effect.
	ErrUnsupported = errors.New("not supported")
	// ErrNotDHCPv4: a line meant for DHCPv6 (option6:, or the DHCPv6
	// boot-file URL Ironic writes as a bare 59); it has no effect on
	// DHCPv4 and is no fault of the file.
	ErrNotDHCPv4 = errors.New("not a DHCPv4 option")
)

// LineError is one line of a file that has no effect, and why.
type LineError struct {
	File string
	Line int
	Err  error
}

func (e *LineError) Error() string { return fmt.Sprintf("%s:%d: %v", e.File, e.Line, e.Err) }

func (e *LineError) Unwrap() error { return e.Err }
