// Package store defines rackboot's state: nodes and their interfaces, DHCP
// leases, the boot trace of every node, lifecycle events, images, tasks,
// users and tokens, BMCs, hypervisors, flavors and VMs. The Store interface
// is what the core, the lifecycle and the API use; implementations (SQLite,
// PostgreSQL) live in sub-packages and pass one conformance suite
// (storetest).
package store

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/netip"
	"time"

	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/lease"
)

// ErrNotFound is returned when a node, or whatever a call names, does not exist.
var ErrNotFound = errors.New("not found")

// ErrConflict is returned when a write lost a race: a transition whose
// node is no longer in the state it was asked to leave, or a name that is
// already taken.
var ErrConflict = errors.New("conflict")

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

	// Kind is "metal" or "vm".
	Kind string
	// Rack and Position (the rack unit, 0 unknown) place the node.
	Rack     string
	Position int
	Tags     []string
	// Owner is who drives the node's lifecycle: OwnerRackboot or
	// OwnerIronic.
	Owner string
	// Inventory is the agent's last report, stored as it came
	// (agent/inventory's JSON); nil before the first inspection.
	Inventory json.RawMessage
	// InventoryRev counts the inventories set on the node (0: none), so
	// a reader that keeps what it made of one can tell when it changed.
	InventoryRev int64
	// GPUModels are the accelerator model names from the inventory, kept
	// beside it so lists can filter on them.
	GPUModels []string
	// LastError is the reason of the last failure, cleared by a
	// successful transition out of failed.
	LastError string
	// StateChanged is when State last changed.
	StateChanged time.Time
}

// Node owners.
const (
	OwnerRackboot = "rackboot"
	// OwnerIronic: OpenStack Ironic drives the node; rackboot boots it
	// nothing of its own and takes no action on it, and traces its boots.
	OwnerIronic = "ironic"
)

// NodeFilter selects nodes in a listing. Zero fields match everything.
type NodeFilter struct {
	State State
	Arch  boot.Arch
	Rack  string
	Tag   string
	// GPU matches nodes with an accelerator whose model name contains it
	// (case-insensitive).
	GPU string
	// Query matches id, name, MAC, rack or a tag (case-insensitive substring).
	Query string
	// After is a pagination cursor: the id of the last node of the previous page.
	After string
	// Limit is the page size; 0 means no limit.
	Limit int
}

// NodePatch changes a node's descriptive fields; nil fields stay.
type NodePatch struct {
	Name     *string
	Rack     *string
	Position *int
	Tags     *[]string
	Owner    *string
}

// Event is one entry of the audit log: a lifecycle transition, an action,
// or any mutating call, with who did it and why.
type Event struct {
	Seq    int64
	Time   time.Time
	NodeID string // empty for events about no node (a token created, say)
	// Actor is who caused it: "user:NAME", "token:ID", "agent:NODE", "system".
	Actor string
	// Kind names what happened: "transition", "action", "audit", "task".
	Kind    string
	From    State
	To      State
	Reason  string
	Message string
}

// EventFilter selects events; zero fields match everything.
type EventFilter struct {
	NodeID string
	// After returns only events with a higher Seq (for pagination and
	// for catching up a live stream).
	After int64
	// Limit is the most events returned; 0 means 1000.
	Limit int
	// Newest returns the newest events first; Before, when not 0, then
	// starts below that sequence number (the next page back).
	Newest bool
	Before int64
}

// Image is a disk image in the catalog.
type Image struct {
	Name   string
	Arch   boot.Arch
	Format string // as stored and served: "raw", "raw.gz", "raw.zst", "raw.xz"
	Size   int64  // bytes of the stored file
	SHA256 string // of the stored file
	// RawSize and RawSHA256 describe the disk image the file holds,
	// decompressed: what a deploy writes, and checks, on the disk.
	RawSize   int64
	RawSHA256 string
	Source    string // where it came from: a URL or "upload:FILENAME"
	Created   time.Time
}

// TaskState is where a task stands.
type TaskState string

// Task states.
const (
	TaskPending TaskState = "pending"
	TaskRunning TaskState = "running"
	TaskDone    TaskState = "done"
	TaskFailed  TaskState = "failed"
)

// Task is work for a node's agent: inspect, deploy, wipe, burn-in.
type Task struct {
	ID      string
	NodeID  string
	Kind    string
	State   TaskState
	Params  json.RawMessage
	Result  json.RawMessage
	Error   string
	Created time.Time
	Updated time.Time
}

// Change is one lifecycle step that Store.Apply makes in one transaction:
// a node's move, the event that records it, the events beside it and the
// tasks it starts and ends. Either all of it is stored or none of it.
type Change struct {
	NodeID string
	// From is the state the node must be in, else ErrConflict. To is
	// where it moves, as Transition moves it (LastError stored, its agent
	// tokens die); empty, the node stays in From with its tokens.
	From, To  State
	LastError string
	// Event is appended with NodeID, From and To filled in (To is From
	// when the node stays).
	Event Event
	// Also are more events appended before Event (a task's report, say),
	// NodeID filled in where empty.
	Also []Event
	// Create are tasks queued (IDs filled in when empty); Update are
	// tasks whose state, result, error and updated time are stored, as
	// UpdateTask stores them.
	Create []Task
	Update []Task
}

// NodeTask is a task with the node it belongs to, as LatestTasks lists
// them: of the node, only its ID, Name, Rack, State and GPUModels.
type NodeTask struct {
	Node Node
	Task Task
}

// TaskFilter selects tasks; zero fields match everything.
type TaskFilter struct {
	NodeID string
	State  TaskState
	Limit  int
}

// Role is what a token or user may do.
type Role string

// Roles, from most to least powerful. RoleAgent is a node's agent, limited
// to its own node.
const (
	RoleAdmin    Role = "admin"
	RoleTech     Role = "tech"
	RoleReadonly Role = "readonly"
	RoleAgent    Role = "agent"
	// RoleHypervisor is a hypervisor's agent: it ranks with nobody.
	RoleHypervisor Role = "hypervisor"
)

// User is a person who logs in to the web UI.
type User struct {
	Name         string
	Role         Role
	PasswordHash string // bcrypt
	Created      time.Time
}

// Token is a bearer credential: an API token, a web session, or an
// agent's token. Only the SHA-256 of the secret is stored.
type Token struct {
	ID   string
	Hash string // hex SHA-256 of the secret
	// Kind is "api", "session", "agent", TokenBoot or TokenBootUsed.
	Kind string
	Name string // what it is for, as its creator said
	Role Role
	// User is the user a session or token belongs to, if any.
	User string
	// NodeID is the node an agent token is bound to.
	NodeID string
	// NodeState is the state the node was in when an agent token was
	// issued: the token dies when the node leaves it.
	NodeState State
	Created   time.Time
	// Expires is zero for tokens that do not expire.
	Expires time.Time
}

// Token kinds beside "api", "session" and "agent": a node's boot secret,
// the per-boot secret its agent proves itself with, before (TokenBoot)
// and after (TokenBootUsed) the first lookup of that boot. One per node,
// with the id BootTokenID(node): every boot replaces it.
const (
	TokenBoot     = "boot"
	TokenBootUsed = "boot-used"
	// TokenHypervisor is a hypervisor's agent's credential, bound to
	// its node: it opens that hypervisor's agent path and nothing else.
	TokenHypervisor = "hypervisor"
)

// BootTokenID is the id of a node's boot secret.
func BootTokenID(node string) string { return "boot-" + node }

// BMC is how rackboot reaches a node's baseboard management controller.
// The store keeps the password as the caller sealed it (package sealbox)
// and never looks inside.
type BMC struct {
	NodeID string
	// URL is ipmi://HOST[:PORT], redfish://HOST[:PORT][/redfish/v1/Systems/ID]
	// (https) or redfish+http://... (labs).
	URL  string
	User string
	// Password is the sealed password; nil when none is set.
	Password []byte
	// Fingerprint is the hex SHA-256 of a Redfish BMC's certificate, pinned;
	// empty verifies it against the CA roots instead.
	Fingerprint string
	Updated     time.Time
}

// Power states a PowerState holds besides the BMC's own "on" and "off".
const (
	// PowerUnknown: the BMC did not answer, or refused; PowerState.Error
	// says why.
	PowerUnknown = "unknown"
)

// PowerState is a node's power state as rackboot last asked its BMC (the
// poller, or a user's power status).
type PowerState struct {
	NodeID string
	// State is "on", "off" or PowerUnknown.
	State string
	// Error is why State is unknown; empty otherwise.
	Error string
	// Checked is when the BMC was last asked; Changed is when State last
	// became what it is.
	Checked time.Time
	Changed time.Time
}

// Hypervisor is a node that runs VMs through its libvirt daemon. Its CPUs,
// memory, NUMA nodes and GPUs are the node's inventory; this is what an
// operator adds to that.
type Hypervisor struct {
	NodeID string
	// URI is the libvirt endpoint: qemu+tls://, qemu+tcp://, qemu+ssh://
	// or qemu+unix://.
	URI string
	// GPUMode is how its GPUs are offered: "" (not at all),
	// "passthrough", "vgpu" or "mig".
	GPUMode string
	// GPUProfile is the vGPU type (vgpu) or the MIG layout, its profiles
	// comma-separated (mig).
	GPUProfile string
	// VGPUMax is how many instances of the vGPU type one GPU holds.
	VGPUMax int
	// CPURatio and RAMRatio are the overcommit ratios, ReservedMiB the
	// memory kept for the host itself.
	CPURatio, RAMRatio float64
	ReservedMiB        int64
	// Drained hosts take no new VMs.
	Drained bool
	// Native are the architectures it runs with hardware virtualisation
	// (from libvirt's capabilities), Emulated those an operator allows
	// under TCG.
	Native, Emulated []boot.Arch
	// Bridge is the host bridge VM NICs join, VLAN the 802.1Q tag of
	// their ports (0 none; an Open vSwitch bridge); Pool the libvirt
	// storage pool their disks are volumes in.
	Bridge           string
	VLAN             int
	Pool             string
	Created, Updated time.Time
}

// HypervisorAgent is what a hypervisor's agent (rackboot-agent
// hypervisor) last reported of the host's GPUs.
type HypervisorAgent struct {
	NodeID string
	// Booted is when the host last booted, as the agent read it.
	Booted time.Time
	// Applied is the GPU mode and profile the agent last applied.
	Applied string
	// GPUs is what the cards carry, as package gpuconf's State in JSON;
	// nil where the host has no NVIDIA driver.
	GPUs json.RawMessage
	// Errors are what the agent could not do on its last round.
	Errors []string
	// Round counts the agent's reports, 1 for its first; ErrorSince,
	// one per error, is the round from which it has said that error in
	// every report. A waiter that polls may miss a report, but it can
	// still tell how many in a row carried an error.
	Round      int64
	ErrorSince []int64
	Version    string
	// Seen is when it last called in.
	Seen time.Time
}

// Flavor is a named VM shape, as in Nova.
type Flavor struct {
	Name      string
	VCPUs     int
	MemoryMiB int64
	DiskGiB   int
	Arch      boot.Arch
	// GPUMode is "", "passthrough", "vgpu" or "mig"; GPUProfile the vGPU
	// type or MIG profile; GPUModel a substring of the GPU's model name,
	// empty for any.
	GPUModel, GPUMode, GPUProfile string
	GPUCount                      int
	Created                       time.Time
}

// VM is a virtual machine placed on a hypervisor. It is also a node (kind
// vm, the same NodeID) that network-boots through rackboot like metal.
type VM struct {
	NodeID     string
	Hypervisor string // the hypervisor's node id
	Flavor     string // empty for a shape given inline
	Image      string
	Arch       boot.Arch
	VCPUs      int
	MemoryMiB  int64
	DiskGiB    int
	// NUMA is the host NUMA node it was placed in, -1 when spread.
	NUMA int
	MAC  string // lower-case, colon-separated
	UUID string
	// Volume is its disk's name in the hypervisor's pool.
	Volume string
	// Note is what the placement said about it.
	Note    string
	Devices []VMDevice
	Created time.Time
}

// VMDevice is a host device a VM holds. Device and Slot are unique on a
// hypervisor: no two VMs ever hold one partition, vGPU instance or
// passed-through function.
type VMDevice struct {
	// Device is the PCI address held: the GPU itself, or for
	// passthrough another function of its IOMMU group (Kind "group").
	Device string
	// Slot is the vGPU instance or MIG partition on the GPU; 0 for
	// passthrough.
	Slot int
	// GPU is the card the device belongs to.
	GPU string
	// Kind is "passthrough", "group", "vgpu" or "mig".
	Kind    string
	Profile string
	// Mdev is the mediated device's UUID (vgpu, mig).
	Mdev string
}

// PlaceCheck is asked, inside the transaction that stores a VM, whether the
// VM still fits its hypervisor given the VMs already on it and what its
// agent last reported: the rules are the placement engine's, the store
// only makes the check and the write one step.
type PlaceCheck func(PlaceState) error

// PlaceState is what a PlaceCheck is given, read in the transaction.
type PlaceState struct {
	Hypervisor Hypervisor
	// Agent is what the hypervisor's agent last reported; HasAgent is
	// false when it never called in.
	Agent    HypervisorAgent
	HasAgent bool
	// VMs are the VMs already on the hypervisor.
	VMs []VM
}

// FleetHost is a hypervisor as placement reads it: its record, its node
// (only its ID, Name, Arch and InventoryRev), and its agent's last report
// (HasAgent false when it never called in).
type FleetHost struct {
	Hypervisor Hypervisor
	Node       Node
	Agent      HypervisorAgent
	HasAgent   bool
}

// NodeInventory is a node's inventory and its revision (Node.InventoryRev).
type NodeInventory struct {
	Rev       int64
	Inventory json.RawMessage
}

// TraceEvent is a boot event stored against a node.
type TraceEvent struct {
	Seq    int64
	NodeID string
	boot.Event
}

// Store keeps rackboot's state. Every method is safe for concurrent use.
type Store interface {
	// The DHCP leases: a Store is the dhcp.Leases of an authoritative
	// server, and that interface documents the methods. Two servers on one
	// database never give one address to two MACs.
	Allocate(ctx context.Context, subnet netip.Prefix, first, last netip.Addr, mac net.HardwareAddr, want netip.Addr, reserved []netip.Addr, expires time.Time) (lease.Lease, error)
	Bind(ctx context.Context, subnet netip.Prefix, mac net.HardwareAddr, ip netip.Addr, hostname string, expires time.Time) (lease.Lease, error)
	Release(ctx context.Context, mac net.HardwareAddr, ip netip.Addr) error
	ReleaseOffer(ctx context.Context, subnet netip.Prefix, mac net.HardwareAddr, keep netip.Addr) error
	Decline(ctx context.Context, ip netip.Addr, expires time.Time) error
	ByMAC(ctx context.Context, subnet netip.Prefix, mac net.HardwareAddr) (lease.Lease, error)
	ByIP(ctx context.Context, ip netip.Addr) (lease.Lease, error)

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
	// ListNodes lists the nodes a filter selects, ordered by id.
	ListNodes(ctx context.Context, f NodeFilter) ([]Node, error)
	// SetState moves a node to state. Whether the move is allowed is the
	// lifecycle's business, not the store's.
	SetState(ctx context.Context, id string, s State) error
	// Transition moves a node from state from to state to and appends e
	// (with From, To and NodeID filled in) in one transaction. It returns
	// ErrConflict, changing nothing, if the node is no longer in from.
	// lastError is stored as the node's LastError. The node's agent tokens
	// die with the move.
	Transition(ctx context.Context, id string, from, to State, lastError string, e Event) (Node, Event, error)
	// Apply makes a Change in one transaction: nothing of it is stored
	// unless all of it is. It returns the node as it now is, the event
	// as stored, and the tasks created. A node no longer in c.From is
	// ErrConflict, an unknown node or task ErrNotFound.
	Apply(ctx context.Context, c Change) (Node, Event, []Task, error)
	// SetSecureBoot sets or (nil) clears a node's Secure Boot override.
	SetSecureBoot(ctx context.Context, id string, on *bool) error
	// TouchNode records that the node (its agent) was heard from at now.
	TouchNode(ctx context.Context, id string, now time.Time) error
	// UpdateNode applies a patch. A name taken by another node is ErrConflict.
	UpdateNode(ctx context.Context, id string, p NodePatch) (Node, error)
	// SetOwner moves node id from owner from to owner to, in one statement
	// that also requires its state to be one of states (any, when none):
	// a node that an action took meanwhile, or another server handed over
	// first, is ErrConflict and keeps its owner.
	SetOwner(ctx context.Context, id, from, to string, states ...State) (Node, error)
	// SetInventory stores an inventory and the GPU models found in it.
	SetInventory(ctx context.Context, id string, inv json.RawMessage, gpuModels []string) error
	// DeleteNode removes a node with its interfaces, trace, tasks and
	// tokens; its events stay in the audit log. The hypervisor of VMs,
	// and a VM's node (DeleteVM removes it), are ErrConflict.
	DeleteNode(ctx context.Context, id string) error
	// CountNodes returns the number of nodes in each state.
	CountNodes(ctx context.Context) (map[State]int, error)

	// SetBMC creates or replaces a node's BMC (b.NodeID); a node that does
	// not exist is ErrNotFound.
	SetBMC(ctx context.Context, b BMC) error
	// BMC returns a node's BMC, or ErrNotFound when it has none.
	BMC(ctx context.Context, nodeID string) (BMC, error)
	// DeleteBMC forgets a node's BMC; none is ErrNotFound.
	DeleteBMC(ctx context.Context, nodeID string) error
	// BMCs lists every BMC, by node id.
	BMCs(ctx context.Context) ([]BMC, error)
	// ResealBMC replaces a BMC's sealed password with resealed if it is
	// still old (a key rotation); otherwise it changes nothing and returns
	// ErrConflict (someone set a new password meanwhile), or ErrNotFound.
	ResealBMC(ctx context.Context, nodeID string, old, resealed []byte) error

	// RecordPower stores a node's power state as just asked of its BMC
	// (p.Checked; p.Changed is ignored). When the state differs from the
	// one stored, or none was, Changed becomes p.Checked and e is appended
	// (NodeID and Time filled in) in the same transaction, so two servers
	// polling one node write one event per change. changed says whether
	// it did. A node that does not exist is ErrNotFound.
	RecordPower(ctx context.Context, p PowerState, e Event) (changed bool, err error)
	// PowerState returns a node's last power state, or ErrNotFound when
	// none was recorded.
	PowerState(ctx context.Context, nodeID string) (PowerState, error)
	// PowerStates lists every recorded power state, by node id.
	PowerStates(ctx context.Context) ([]PowerState, error)

	// PutHypervisor creates or replaces a hypervisor (h.NodeID); a node
	// that does not exist is ErrNotFound, a change of GPU mode, profile
	// or vGPU count while VMs hold its devices ErrConflict.
	PutHypervisor(ctx context.Context, h Hypervisor) error
	// Hypervisor returns a node's hypervisor record, or ErrNotFound.
	Hypervisor(ctx context.Context, nodeID string) (Hypervisor, error)
	// Hypervisors lists every hypervisor, by node id.
	Hypervisors(ctx context.Context) ([]Hypervisor, error)
	// DeleteHypervisor forgets a hypervisor; one with VMs is ErrConflict.
	DeleteHypervisor(ctx context.Context, nodeID string) error
	// PutHypervisorAgent keeps what a hypervisor's agent reported
	// (ErrNotFound when the node is no hypervisor); HypervisorAgent reads
	// it back (ErrNotFound when its agent never called in). Deleting the
	// hypervisor forgets it.
	PutHypervisorAgent(ctx context.Context, a HypervisorAgent) error
	HypervisorAgent(ctx context.Context, nodeID string) (HypervisorAgent, error)
	// HypervisorFleet lists every hypervisor with the little of its node
	// placement needs (InventoryRev says which inventory it has, not
	// read) and its agent's last report: what each decision reads.
	HypervisorFleet(ctx context.Context) ([]FleetHost, error)
	// NodeInventories returns the inventories of the nodes given, by id,
	// with their revisions; an id that is no node is not in the map.
	NodeInventories(ctx context.Context, ids []string) (map[string]NodeInventory, error)
	// NodeHeaders returns the nodes given, by id, without their
	// inventories; ids that are no node are left out.
	NodeHeaders(ctx context.Context, ids []string) ([]Node, error)

	// CreateFlavor adds a flavor; a name already taken is ErrConflict.
	CreateFlavor(ctx context.Context, f Flavor) error
	Flavor(ctx context.Context, name string) (Flavor, error)
	Flavors(ctx context.Context) ([]Flavor, error)
	DeleteFlavor(ctx context.Context, name string) error

	// CreateVM stores a VM and creates its node (kind vm, in state
	// discovered, with vm.MAC and the given name) in one transaction
	// that holds the hypervisor's row: check is called there with the
	// hypervisor, its agent's last report and the VMs on it, and its
	// error aborts the write. Two
	// servers placing on one hypervisor take turns, so neither places on
	// what the other took. A MAC, name or device already taken is
	// ErrConflict, a hypervisor that does not exist ErrNotFound. vm.NodeID
	// is filled in when empty.
	CreateVM(ctx context.Context, vm VM, name string, check PlaceCheck) (VM, error)
	// VM returns a VM by its node id, or ErrNotFound.
	VM(ctx context.Context, nodeID string) (VM, error)
	// VMs lists the VMs on a hypervisor, or every VM when it is empty, by
	// creation.
	VMs(ctx context.Context, hypervisor string) ([]VM, error)
	// DeleteVM removes a VM, its devices and its node in one transaction
	// (its events stay).
	DeleteVM(ctx context.Context, nodeID string) error

	// AddEvent appends to the audit log and returns the event as stored.
	AddEvent(ctx context.Context, e Event) (Event, error)
	// Events returns events a filter selects, oldest first unless the
	// filter asks for the newest first.
	Events(ctx context.Context, f EventFilter) ([]Event, error)

	// CreateImage adds an image; a name already taken is ErrConflict.
	CreateImage(ctx context.Context, im Image) error
	Image(ctx context.Context, name string) (Image, error)
	Images(ctx context.Context) ([]Image, error)
	DeleteImage(ctx context.Context, name string) error

	// CreateTask adds a task (ID filled in when empty) and returns it.
	CreateTask(ctx context.Context, t Task) (Task, error)
	Task(ctx context.Context, id string) (Task, error)
	Tasks(ctx context.Context, f TaskFilter) ([]Task, error)
	// UpdateTask stores a task's state, result and error.
	UpdateTask(ctx context.Context, t Task) error
	// TaskProgress stores a running task's progress as its result. A task
	// that is not running (it ended meanwhile) is left alone and gives
	// ErrConflict, so a late heartbeat never overwrites a task's end.
	TaskProgress(ctx context.Context, id string, progress json.RawMessage, now time.Time) error
	// LatestTasks lists, in one query, the newest ended (done or failed)
	// task of kind of every node that has one, with its node, by node
	// id: a node's latest burn-in, say, while a newer one still runs.
	// With key set, only tasks whose result object has that top-level
	// key count: a task failed before it reported (reaped, its node
	// booted again) keeps no result or only its progress, and must not
	// hide the run before it.
	LatestTasks(ctx context.Context, kind, key string) ([]NodeTask, error)
	// ClaimTask hands out a node's oldest pending task, moving it to
	// running in the same transaction, so no task is handed out twice.
	// It returns ErrNotFound when the node has none pending.
	ClaimTask(ctx context.Context, nodeID string, now time.Time) (Task, error)

	// PutUser creates or replaces a user.
	PutUser(ctx context.Context, u User) error
	// ReplaceUser is PutUser ending the user's sessions (not their API
	// tokens) in the same transaction: what a new password does.
	ReplaceUser(ctx context.Context, u User) error
	// CreateUser creates a user; a name already taken is ErrConflict.
	CreateUser(ctx context.Context, u User) error
	User(ctx context.Context, name string) (User, error)
	Users(ctx context.Context) ([]User, error)
	// DeleteUser removes a user and every token of theirs.
	DeleteUser(ctx context.Context, name string) error

	// CreateToken stores a token (ID filled in when empty) and returns it;
	// an ID or hash already taken is ErrConflict.
	CreateToken(ctx context.Context, t Token) (Token, error)
	// TokenByHash finds a token by the hash of its secret.
	TokenByHash(ctx context.Context, hash string) (Token, error)
	// Tokens lists every token but sessions and agent tokens.
	Tokens(ctx context.Context) ([]Token, error)
	DeleteToken(ctx context.Context, id string) error
	// SetTokenKind changes token id's kind from from to to in one
	// statement, if its secret still has hash: ErrConflict, changing
	// nothing, when it is not of kind from or has another secret by now
	// (another caller changed or replaced it first), ErrNotFound when it
	// is gone.
	SetTokenKind(ctx context.Context, id, hash, from, to string) error
	// DeleteTokens removes every token of a kind bound to a node (or, with
	// nodeID empty, of a user), e.g. an agent's token when its node moves.
	DeleteTokens(ctx context.Context, kind, nodeID, user string) error
	// DeleteTokensBut removes every token of a kind bound to a node but
	// the one with id keep: a new credential replaces the old ones only
	// once what it was made for has succeeded.
	DeleteTokensBut(ctx context.Context, kind, nodeID, keep string) error

	// AddTrace appends a boot event to a node's trace.
	AddTrace(ctx context.Context, nodeID string, e boot.Event) error
	// AddTraces appends boot events (each naming its node) in one
	// transaction whose commit does not wait for the disk: a trace is a
	// diagnosis, and a boot storm's events would otherwise cost one
	// fsync each.
	AddTraces(ctx context.Context, es []TraceEvent) error
	// Trace returns the newest limit events of a node, oldest first.
	Trace(ctx context.Context, nodeID string, limit int) ([]TraceEvent, error)

	// Prune deletes boot events (traces) older than bootBefore and audit
	// events older than eventsBefore, a zero time deleting none, in
	// batches that let other writers in between. Events that put a node
	// into maintenance stay: taking it out again goes back to the state
	// they name. It returns how many of each it deleted.
	Prune(ctx context.Context, bootBefore, eventsBefore time.Time) (boot, events int64, err error)

	// Ping checks that the database answers a query.
	Ping(ctx context.Context) error

	Close() error
}
