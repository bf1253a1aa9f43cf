// Package store defines rackboot's state: nodes and their interfaces,
// DHCP leases and the boot trace of every node. The Store interface is what
// the core uses; implementations (SQLite now, PostgreSQL beside it) live in
// sub-packages and pass one conformance suite (storetest).
package store

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/dhcp"
)

// ErrNotFound is returned when a node, or whatever a call names, does not exist.
var ErrNotFound = errors.New("not found")

// State is a node's place in its lifecycle.
type State string

// Node states.
const (
	StateDiscovered  State = "discovered"
	StateInspecting  State = "inspecting"
	StateAvailable   State = "available"
	StateDeploying   State = "deploying"
	StateActive      State = "active"
	StateCleaning    State = "cleaning"
	StateBurnin      State = "burnin"
	StateFailed      State = "failed"
	StateMaintenance State = "maintenance"
)

// Node is one machine rackboot has seen.
type Node struct {
	ID       string
	Name     string
	Arch     boot.Arch
	Firmware boot.Firmware
	// ClientArch is the option 93 value of the node's last network boot.
	ClientArch boot.ClientArch
	State      State
	// SecureBoot overrides the subnet's choice of the shim → GRUB path for
	// an x86-64 UEFI node: nil inherits, otherwise on or off.
	SecureBoot *bool
	UUID       string
	MACs       []string // lower-case, colon-separated
	FirstSeen  time.Time
	LastSeen   time.Time
}

// TraceEvent is a boot event stored against a node.
type TraceEvent struct {
	Seq    int64
	NodeID string
	boot.Event
}

// Store keeps rackboot's state. Every method is safe for concurrent use.
type Store interface {
	dhcp.Leases

	// EnrollClient records a network-boot client: the node owning one of
	// its MACs is updated (last seen, architecture), or a new node in state
	// discovered is created. created says which.
	EnrollClient(ctx context.Context, c boot.Client, now time.Time) (n Node, created bool, err error)
	// NodeByMAC returns the node owning mac, or ErrNotFound.
	NodeByMAC(ctx context.Context, mac net.HardwareAddr) (Node, error)
	// Node returns a node by id, name or one of its MACs, or ErrNotFound.
	Node(ctx context.Context, ref string) (Node, error)
	// Nodes lists every node, oldest first.
	Nodes(ctx context.Context) ([]Node, error)
	// SetState moves a node to state. Whether the move is allowed is the
	// lifecycle's business, not the store's.
	SetState(ctx context.Context, id string, s State) error
	// SetSecureBoot sets or (nil) clears a node's Secure Boot override.
	SetSecureBoot(ctx context.Context, id string, on *bool) error

	// AddTrace appends a boot event to a node's trace.
	AddTrace(ctx context.Context, nodeID string, e boot.Event) error
	// Trace returns the newest limit events of a node, oldest first.
	Trace(ctx context.Context, nodeID string, limit int) ([]TraceEvent, error)

	Close() error
}
