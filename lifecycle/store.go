package lifecycle

import (
	"context"

	"github.com/rackboot/rackboot/store"
)

// Store is what the lifecycle reads and writes; store.Store implements it.
type Store interface {
	Node(ctx context.Context, ref string) (store.Node, error)
	ListNodes(ctx context.Context, f store.NodeFilter) ([]store.Node, error)
	Transition(ctx context.Context, id string, from, to store.State, lastError string, e store.Event) (store.Node, store.Event, error)
	Apply(ctx context.Context, c store.Change) (store.Node, store.Event, []store.Task, error)
	Events(ctx context.Context, f store.EventFilter) ([]store.Event, error)
	AddEvent(ctx context.Context, e store.Event) (store.Event, error)
	Image(ctx context.Context, name string) (store.Image, error)
	Tasks(ctx context.Context, f store.TaskFilter) ([]store.Task, error)
	UpdateTask(ctx context.Context, t store.Task) error
	// VMs lists the VMs a hypervisor runs: its node takes no action
	// that would reboot or rewrite it under them.
	VMs(ctx context.Context, hypervisor string) ([]store.VM, error)
}
