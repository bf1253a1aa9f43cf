package api

import (
	"context"
	"encoding/json"
	"net"
	"time"

	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/lifecycle"
	"github.com/rackboot/rackboot/store"
)

// Store is what the API reads and writes itself; store.Store implements
// it. State changes go through Lifecycle, not through the store.
type Store interface {
	Node(ctx context.Context, ref string) (store.Node, error)
	NodeByMAC(ctx context.Context, mac net.HardwareAddr) (store.Node, error)
	ListNodes(ctx context.Context, f store.NodeFilter) ([]store.Node, error)
	EnrollClient(ctx context.Context, c boot.Client, now time.Time) (n store.Node, created bool, err error)
	CountNodes(ctx context.Context) (map[store.State]int, error)
	UpdateNode(ctx context.Context, id string, p store.NodePatch) (store.Node, error)
	SetOwner(ctx context.Context, id, from, to string, states ...store.State) (store.Node, error)
	SetSecureBoot(ctx context.Context, id string, on *bool) error
	SetInventory(ctx context.Context, id string, inv json.RawMessage, gpuModels []string) error
	TouchNode(ctx context.Context, id string, now time.Time) error
	DeleteNode(ctx context.Context, id string) error
	Trace(ctx context.Context, nodeID string, limit int) ([]store.TraceEvent, error)
	AddTrace(ctx context.Context, nodeID string, e boot.Event) error

	SetBMC(ctx context.Context, b store.BMC) error
	BMC(ctx context.Context, nodeID string) (store.BMC, error)
	DeleteBMC(ctx context.Context, nodeID string) error
	RecordPower(ctx context.Context, p store.PowerState, e store.Event) (bool, error)
	PowerState(ctx context.Context, nodeID string) (store.PowerState, error)
	PowerStates(ctx context.Context) ([]store.PowerState, error)
	BMCs(ctx context.Context) ([]store.BMC, error)

	Hypervisor(ctx context.Context, nodeID string) (store.Hypervisor, error)
	HypervisorFleet(ctx context.Context) ([]store.FleetHost, error)
	Flavors(ctx context.Context) ([]store.Flavor, error)
	DeleteFlavor(ctx context.Context, name string) error

	AddEvent(ctx context.Context, e store.Event) (store.Event, error)
	Events(ctx context.Context, f store.EventFilter) ([]store.Event, error)

	CreateImage(ctx context.Context, im store.Image) error
	Image(ctx context.Context, name string) (store.Image, error)
	Images(ctx context.Context) ([]store.Image, error)
	DeleteImage(ctx context.Context, name string) error

	Task(ctx context.Context, id string) (store.Task, error)
	Tasks(ctx context.Context, f store.TaskFilter) ([]store.Task, error)
	UpdateTask(ctx context.Context, t store.Task) error
	LatestTasks(ctx context.Context, kind, key string) ([]store.NodeTask, error)
	TaskProgress(ctx context.Context, id string, progress json.RawMessage, now time.Time) error
	ClaimTask(ctx context.Context, nodeID string, now time.Time) (store.Task, error)

	PutUser(ctx context.Context, u store.User) error
	ReplaceUser(ctx context.Context, u store.User) error
	User(ctx context.Context, name string) (store.User, error)
	Users(ctx context.Context) ([]store.User, error)
	DeleteUser(ctx context.Context, name string) error

	CreateToken(ctx context.Context, t store.Token) (store.Token, error)
	TokenByHash(ctx context.Context, hash string) (store.Token, error)
	Tokens(ctx context.Context) ([]store.Token, error)
	DeleteToken(ctx context.Context, id string) error
	SetTokenKind(ctx context.Context, id, hash, from, to string) error
	DeleteTokens(ctx context.Context, kind, nodeID, user string) error
	DeleteTokensBut(ctx context.Context, kind, nodeID, keep string) error
}

// Lifecycle applies the actions users ask for and the outcomes agents
// report; lifecycle.Machine implements it.
type Lifecycle interface {
	Do(ctx context.Context, ref string, a lifecycle.Action, p lifecycle.Params, actor string) (store.Node, store.Event, error)
	TaskEnded(ctx context.Context, t store.Task, actor string, report []store.Event) (store.Node, error)
	NewBoot(ctx context.Context, id, actor string) (store.Node, error)
}

// New returns a Server on st with a broker of its own and a lifecycle
// machine on the same store whose events wake that broker: a server that
// stands alone, as tests and tools run one. The appliance builds and
// shares these parts itself. Set the other fields before Handler.
func New(st interface {
	Store
	lifecycle.Store
}) *Server {
	b := NewBroker()
	return &Server{Store: st, Broker: b, Lifecycle: &lifecycle.Machine{Store: st, Notify: func(store.Event) { b.Publish() }}}
}
