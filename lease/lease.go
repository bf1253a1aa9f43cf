// Package lease is the DHCP lease record that the DHCP server and the
// stores that keep leases share: one address held for one client, its
// state, and the errors a lease store returns. It imports nothing of
// rackboot, so the store need not import the protocol package dhcp, nor
// dhcp the store.
package lease

import (
	"errors"
	"net"
	"net/netip"
	"time"
)

// ErrPoolExhausted is returned when allocating in a range whose every
// address is leased, reserved or declined.
var ErrPoolExhausted = errors.New("address pool exhausted")

// ErrNoLease is returned when a lease that a call refers to does not exist.
var ErrNoLease = errors.New("no such lease")

// State says how far a lease got.
type State string

// Lease states.
const (
	Offered  State = "offered"  // held for the client between OFFER and REQUEST
	Bound    State = "bound"    // ACKed
	Declined State = "declined" // the client saw the address in use; MAC is empty
)

// Lease is one address held for one client.
type Lease struct {
	MAC      net.HardwareAddr
	IP       netip.Addr
	Subnet   netip.Prefix
	State    State
	Expires  time.Time
	Hostname string
}
