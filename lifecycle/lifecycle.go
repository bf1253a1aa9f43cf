// Package lifecycle is the node state machine, enforced in one place: the
// actions people ask for (inspect, deploy, release, wipe, burn-in,
// maintenance, reboot) and the outcomes agents report move a node between
// states only along the edges below, each move recorded as an event with
// its actor and reason, and each action that needs the agent queued as a
// task for it.
package lifecycle

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/rackboot/rackboot/internal/secret"
	"github.com/rackboot/rackboot/store"
)

// Action is something a person or script asks of a node.
type Action string

// Actions.
const (
	Inspect     Action = "inspect"
	Deploy      Action = "deploy"
	Release     Action = "release"
	Wipe        Action = "wipe"
	Burnin      Action = "burnin"
	Maintenance Action = "maintenance"
	Reboot      Action = "reboot"
)

// Actions lists every action, in the order people meet them.
// ImageTokenPrefix starts every image token, which tells them from
// credentials on sight.
const ImageTokenPrefix = "rbi_"

var Actions = []Action{Inspect, Deploy, Release, Wipe, Burnin, Maintenance, Reboot}

// edge is where an action may start and where it takes the node.
type edge struct {
	from []store.State
	to   store.State
	// task is the agent task the action queues ("" for none).
	task string
}

// agentStates are the states in which the node runs the agent and takes
// tasks from it.
var agentStates = []store.State{store.StateInspecting, store.StateAvailable, store.StateDeploying,
	store.StateCleaning, store.StateBurnin, store.StateFailed}

var edges = map[Action]edge{
	Inspect: {from: []store.State{store.StateDiscovered, store.StateAvailable, store.StateFailed}, to: store.StateInspecting, task: "inspect"},
	// From failed too: a deploy that failed is tried again without a
	// round through inspection.
	Deploy:  {from: []store.State{store.StateAvailable, store.StateFailed}, to: store.StateDeploying, task: "deploy"},
	Release: {from: []store.State{store.StateActive}, to: store.StateCleaning, task: "wipe"},
	Wipe:    {from: []store.State{store.StateAvailable, store.StateFailed}, to: store.StateCleaning, task: "wipe"},
	Burnin:  {from: []store.State{store.StateAvailable, store.StateFailed}, to: store.StateBurnin, task: "burnin"},
	// Reboot changes no state: it asks the agent to restart the node.
	Reboot: {from: agentStates, task: "reboot"},
}

// Params are an action's arguments, as the API's request body spells them.
type Params struct {
	Image string `json:"image,omitempty"` // deploy
	// RootDevice (hints: serial, wwn, model, size, min_size, by_path,
	// name, rotational), CloudInit (hostname, ssh_keys, network,
	// user_data) and Grow are passed to the agent with a deploy.
	RootDevice json.RawMessage `json:"root_device,omitempty"`
	CloudInit  json.RawMessage `json:"cloud_init,omitempty"`
	Grow       bool            `json:"grow,omitempty"`
	// Role "hypervisor" deploys the node as a libvirt host for rackboot:
	// the API writes its cloud-init user data (libvirt's TLS files).
	Role     string `json:"role,omitempty"`
	Method   string `json:"method,omitempty"`   // wipe and release: quick or full
	Duration string `json:"duration,omitempty"` // burnin, e.g. "30m"
	On       *bool  `json:"on,omitempty"`       // maintenance
	Reason   string `json:"reason,omitempty"`   // every action
}

// RefusedError is an action the node's state, or its arguments, do not
// allow. The API answers it with 409.
type RefusedError struct {
	Action Action
	State  store.State
	Reason string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("%s refused: node is %s: %s", e.Action, e.State, e.Reason)
}

// InvalidError is an action with arguments that make no sense whatever the
// state (an unknown action, a bad duration). The API answers it with 400.
type InvalidError struct{ Msg string }

func (e *InvalidError) Error() string { return e.Msg }

// Machine applies actions and outcomes to nodes in a store.
type Machine struct {
	Store Store
	// Notify, when set, is called with every event written, so live
	// views hear of it at once.
	Notify func(store.Event)
	// Now is the clock (default time.Now).
	Now func() time.Time

	// Power, when set, drives the BMCs of the nodes that have one (see
	// power.go): inspect, deploy, wipe, release and burn-in boot the node
	// into the agent, a deploy's end sets its next boots to the disk, and
	// the reaper cycles a quiet node once before failing it. Nil, or a
	// node without a BMC, leaves the node waiting for a reboot. The work
	// runs after the state change is stored, in goroutines RunPower ties
	// to the appliance's life.
	Power Power
	// PowerOn, when set, is what every power-on and cycle waits its turn
	// at (power.Limiter): the appliance's one limit on power-ons.
	PowerOn Limiter
	// PowerTimeout bounds the BMC work of one action, a release's wait
	// for the shutdown included (default DefaultPowerTimeout).
	PowerTimeout time.Duration
	// SoftOffTimeout is how long a release waits for the OS to shut down
	// before it forces the node off (default DefaultSoftOffTimeout);
	// SoftOffPoll is how often it reads the power state meanwhile
	// (default DefaultSoftOffPoll).
	SoftOffTimeout, SoftOffPoll time.Duration
	// BMCEnroll makes every inspect task ask its agent to enroll a
	// rackboot user on the node's BMC (protocol.InspectParams).
	BMCEnroll bool
	// Logger logs what cannot be recorded as an event; nil discards.
	Logger *slog.Logger

	pw powerWork
}

func (m *Machine) now() time.Time {
	if m.Now != nil {
		return m.Now().UTC()
	}
	return time.Now().UTC()
}

func (m *Machine) notify(e store.Event) {
	if m.Notify != nil {
		m.Notify(e)
	}
}

func names(states []store.State) string {
	var s []string
	for _, st := range states {
		s = append(s, string(st))
	}
	if len(s) > 1 {
		return strings.Join(s[:len(s)-1], ", ") + " or " + s[len(s)-1]
	}
	return strings.Join(s, "")
}

// Allowed reports the actions a node in state st may be asked for.
func Allowed(st store.State) []Action {
	var out []Action
	for _, a := range Actions {
		if a == Maintenance || slices.Contains(edges[a].from, st) {
			out = append(out, a)
		}
	}
	return out
}

// Do applies action a to the node ref names, on behalf of actor. It
// returns the node as it now is and the event written.
func (m *Machine) Do(ctx context.Context, ref string, a Action, p Params, actor string) (store.Node, store.Event, error) {
	n, err := m.Store.Node(ctx, ref)
	if err != nil {
		return n, store.Event{}, fmt.Errorf("%s: %w", a, err)
	}
	if n.Owner == store.OwnerIronic {
		return n, store.Event{}, &RefusedError{Action: a, State: n.State, Reason: "the node is owned by Ironic, which drives its lifecycle (take it back with rackboot node handover NODE --to rackboot once Ironic has released it)"}
	}
	if a == Maintenance {
		return m.maintenance(ctx, n, p, actor)
	}
	if _, known := edges[a]; known {
		vms, err := m.Store.VMs(ctx, n.ID)
		if err != nil {
			return n, store.Event{}, fmt.Errorf("%s: %w", a, err)
		}
		if len(vms) > 0 {
			return n, store.Event{}, &RefusedError{Action: a, State: n.State, Reason: fmt.Sprintf("the node is the hypervisor of %d VMs: drain it and delete or move them first", len(vms))}
		}
	}
	e, ok := edges[a]
	if !ok {
		return n, store.Event{}, &InvalidError{fmt.Sprintf("unknown action %q: want one of %v", a, Actions)}
	}
	if !slices.Contains(e.from, n.State) {
		return n, store.Event{}, &RefusedError{Action: a, State: n.State, Reason: fmt.Sprintf("%s needs the node %s", a, names(e.from))}
	}
	params, err := m.check(ctx, n, a, p)
	if err != nil {
		return n, store.Event{}, err
	}
	// The move, its event and the task it starts are one transaction:
	// a node is never left busy with no task for its agent.
	ch := store.Change{NodeID: n.ID, From: n.State, To: e.to,
		Event: store.Event{Time: m.now(), Actor: actor, Kind: "action", Reason: p.Reason, Message: string(a)}}
	if e.task != "" {
		ch.Create = []store.Task{{NodeID: n.ID, Kind: e.task, Params: params, Created: ch.Event.Time}}
	}
	n2, ev, _, err := m.Store.Apply(ctx, ch)
	if errors.Is(err, store.ErrConflict) {
		// Someone else moved the node between our read and write.
		cur, _ := m.Store.Node(ctx, n.ID)
		return cur, store.Event{}, &RefusedError{Action: a, State: cur.State, Reason: "the node changed state while the action was being applied"}
	}
	if err != nil {
		return n, ev, fmt.Errorf("%s: %w", a, err)
	}
	m.notify(ev)
	if e.to != "" {
		// Stored: now the BMC, if any, starts the work.
		m.afterAction(n, a, actor)
	}
	return n2, ev, nil
}

// check validates an action's arguments against the node and returns the
// task's parameters.
//
// A deploy's parameters carry an image token (ImageTokenPrefix and hex)
// that reads its image file while the deploy runs.
func (m *Machine) check(ctx context.Context, n store.Node, a Action, p Params) (json.RawMessage, error) {
	task := map[string]any{}
	switch a {
	case Inspect:
		if m.BMCEnroll {
			task["bmc_enroll"] = true
		}
	case Deploy:
		if p.Image == "" {
			return nil, &InvalidError{"deploy needs an image"}
		}
		im, err := m.Store.Image(ctx, p.Image)
		if errors.Is(err, store.ErrNotFound) {
			return nil, &RefusedError{Action: a, State: n.State, Reason: fmt.Sprintf("no image named %q", p.Image)}
		}
		if err != nil {
			return nil, fmt.Errorf("deploy: %w", err)
		}
		if n.Arch != "" && im.Arch != n.Arch {
			return nil, &RefusedError{Action: a, State: n.State, Reason: fmt.Sprintf("image %s is %s, the node is %s", im.Name, im.Arch, n.Arch)}
		}
		task["image"], task["sha256"], task["format"], task["size"] = im.Name, im.SHA256, im.Format, im.Size
		task["raw_sha256"], task["raw_size"] = im.RawSHA256, im.RawSize
		// Relative to the server's base URL, which the agent knows.
		task["path"] = "/images/" + url.PathEscape(im.Name)
		// The image file's own credential: the agent's token never has to
		// cross the boot port, which may be plain HTTP.
		task["image_token"], _ = secret.New(ImageTokenPrefix, 24)
		for k, v := range map[string]json.RawMessage{"root_device": p.RootDevice, "cloud_init": p.CloudInit} {
			if len(v) > 0 {
				var obj map[string]any
				if json.Unmarshal(v, &obj) != nil {
					return nil, &InvalidError{k + " must be a JSON object"}
				}
				task[k] = obj
			}
		}
		task["grow"] = p.Grow
	case Wipe, Release:
		switch p.Method {
		case "":
			task["method"] = "quick"
		case "quick", "full":
			task["method"] = p.Method
		default:
			return nil, &InvalidError{fmt.Sprintf("wipe method %q: want quick or full", p.Method)}
		}
	case Burnin:
		d := 30 * time.Minute
		if p.Duration != "" {
			var err error
			if d, err = time.ParseDuration(p.Duration); err != nil || d <= 0 {
				return nil, &InvalidError{fmt.Sprintf("burn-in duration %q: want a positive duration such as 30m", p.Duration)}
			}
		}
		task["duration"] = d.String()
	}
	b, err := json.Marshal(task)
	return b, err
}

// maintenance takes a node out of service, from any state, or puts it
// back in the state it was taken from.
func (m *Machine) maintenance(ctx context.Context, n store.Node, p Params, actor string) (store.Node, store.Event, error) {
	if p.On == nil {
		return n, store.Event{}, &InvalidError{`maintenance needs "on": true or false`}
	}
	ev := store.Event{Time: m.now(), Actor: actor, Kind: "action", Reason: p.Reason, Message: string(Maintenance)}
	var to store.State
	if *p.On {
		if n.State == store.StateMaintenance {
			return n, store.Event{}, &RefusedError{Action: Maintenance, State: n.State, Reason: "the node is already in maintenance"}
		}
		to = store.StateMaintenance
		ev.Message = "maintenance on"
	} else {
		if n.State != store.StateMaintenance {
			return n, store.Event{}, &RefusedError{Action: Maintenance, State: n.State, Reason: "the node is not in maintenance"}
		}
		prev, err := m.before(ctx, n.ID)
		if err != nil {
			return n, store.Event{}, fmt.Errorf("maintenance off: %w", err)
		}
		to = prev
		ev.Message = "maintenance off"
	}
	n, ev, err := m.Store.Transition(ctx, n.ID, n.State, to, n.LastError, ev)
	if errors.Is(err, store.ErrConflict) {
		cur, _ := m.Store.Node(ctx, n.ID)
		return cur, store.Event{}, &RefusedError{Action: Maintenance, State: cur.State, Reason: "the node changed state while the action was being applied"}
	}
	if err != nil {
		return n, ev, err
	}
	m.notify(ev)
	return n, ev, nil
}

// before finds the state a node entered maintenance from. A node whose
// work was interrupted goes back to failed: its agent may be gone.
func (m *Machine) before(ctx context.Context, id string) (store.State, error) {
	var last store.Event
	after := int64(0)
	for {
		evs, err := m.Store.Events(ctx, store.EventFilter{NodeID: id, After: after, Limit: 1000})
		if err != nil {
			return "", err
		}
		for _, e := range evs {
			if e.To == store.StateMaintenance && e.From != store.StateMaintenance {
				last = e
			}
		}
		if len(evs) < 1000 {
			break
		}
		after = evs[len(evs)-1].Seq
	}
	switch last.From {
	case "":
		return store.StateDiscovered, nil
	case store.StateInspecting, store.StateDeploying, store.StateCleaning, store.StateBurnin:
		return store.StateFailed, nil
	}
	return last.From, nil
}

// RunsAgent reports whether a node in state st runs the agent, which may
// then look it up and take its tasks.
func RunsAgent(st store.State) bool { return slices.Contains(agentStates, st) }

// taskStates are, per agent task, the state the node is in while the
// task runs and the state its success leads to.
var taskStates = map[string][2]store.State{
	"inspect": {store.StateInspecting, store.StateAvailable},
	"deploy":  {store.StateDeploying, store.StateActive},
	"wipe":    {store.StateCleaning, store.StateAvailable},
	"burnin":  {store.StateBurnin, store.StateAvailable},
}

// TaskEnded stores the end of a node's agent task t (its State, Result
// and Error set as the agent reported them) with the events that record
// the report, and moves the node: to where the task leads when t is done,
// else to failed with t's error as the reason. All of it is one
// transaction: a task is never marked ended while its node stays in the
// task's state. A task that moves no state (reboot), or a node that has
// already left the task's state, changes only the task and the log; the
// node is returned as it is.
func (m *Machine) TaskEnded(ctx context.Context, t store.Task, actor string, report []store.Event) (store.Node, error) {
	t.Updated = m.now()
	for attempt := 1; ; attempt++ {
		n, err := m.Store.Node(ctx, t.NodeID)
		if err != nil {
			return n, err
		}
		ch := store.Change{NodeID: n.ID, From: n.State, Update: []store.Task{t}}
		if st, moves := taskStates[t.Kind]; moves && n.State == st[0] {
			ch.To = st[1]
			reason := t.Kind + " done"
			if why := Untested(t); why != "" {
				// Done, but not a pass: the node is usable, and its
				// history says what was never tested.
				reason = t.Kind + " incomplete: " + why
			}
			if t.State != store.TaskDone {
				ch.To, reason = store.StateFailed, t.Kind+" failed: "+t.Error
				ch.LastError = reason
			}
			ch.Also = report
			ch.Event = store.Event{Time: t.Updated, Actor: actor, Kind: "transition", Reason: reason}
		} else if len(report) > 0 {
			ch.Also, ch.Event = report[:len(report)-1], report[len(report)-1]
		} else {
			return n, m.Store.UpdateTask(ctx, t)
		}
		moved, ev, _, err := m.Store.Apply(ctx, ch)
		if errors.Is(err, store.ErrConflict) && attempt < 3 {
			continue // the node moved meanwhile: look again
		}
		if err != nil {
			return n, fmt.Errorf("end task %s of node %s: %w", t.ID, n.ID, err)
		}
		m.notify(ev)
		if t.Kind == "deploy" && ch.To == store.StateActive {
			m.afterDeploy(moved)
		}
		return moved, nil
	}
}

// Untested is what an ended task reports it could not test (a burn-in
// whose verdict is incomplete), or "": such a task is done, not passed.
func Untested(t store.Task) string {
	var r struct {
		Verdict  string   `json:"verdict"`
		Untested []string `json:"untested"`
	}
	if t.State != store.TaskDone || json.Unmarshal(t.Result, &r) != nil || r.Verdict != "incomplete" {
		return ""
	}
	if len(r.Untested) == 0 {
		return "the agent did not say what"
	}
	return strings.Join(r.Untested, "; ")
}

// NewBoot closes the previous agent's work when a node's new agent has
// proven it belongs to a new boot (its lookup showed the boot's secret):
// the old agent is gone, so a reboot it was asked for is done and any
// other task it was running failed, and with it the node's work. A boot
// request alone never does this: anyone can make one.
func (m *Machine) NewBoot(ctx context.Context, id, actor string) (store.Node, error) {
	n, err := m.Store.Node(ctx, id)
	if err != nil {
		return n, err
	}
	running, err := m.Store.Tasks(ctx, store.TaskFilter{NodeID: id, State: store.TaskRunning})
	if err != nil {
		return n, fmt.Errorf("tasks of rebooted node %s: %w", id, err)
	}
	reason := ""
	for i, t := range running {
		t.State, t.Updated = store.TaskDone, m.now()
		if t.Kind != "reboot" {
			t.State, t.Error = store.TaskFailed, t.Kind+" interrupted: the node booted again before its agent reported"
			reason = cmp.Or(reason, t.Error)
		}
		running[i] = t
	}
	if reason != "" && slices.Contains(busy, n.State) {
		// The tasks end with the node's work, in one transaction.
		moved, err := m.finish(ctx, id, n.State, store.StateFailed, actor, reason, running)
		var refused *RefusedError
		if err == nil || !errors.As(err, &refused) {
			return moved, err
		}
		// It moved on meanwhile: end the tasks alone.
	}
	for _, t := range running {
		if err := m.Store.UpdateTask(ctx, t); err != nil {
			return n, fmt.Errorf("close task %s of rebooted node %s: %w", t.ID, id, err)
		}
	}
	return n, nil
}

// outcomes are the moves agents and the system make when work ends.
var outcomes = map[store.State][]store.State{
	store.StateInspecting: {store.StateAvailable, store.StateFailed},
	store.StateDeploying:  {store.StateActive, store.StateFailed},
	store.StateCleaning:   {store.StateAvailable, store.StateFailed},
	store.StateBurnin:     {store.StateAvailable, store.StateFailed},
}

// Finish records the end of a node's work: from the busy state it is in
// to the state the work leads to (available, active) or to failed with
// reason as the node's last error.
func (m *Machine) Finish(ctx context.Context, id string, from, to store.State, actor, reason string) (store.Node, error) {
	return m.finish(ctx, id, from, to, actor, reason, nil)
}

// finish is Finish ending tasks, stored as given, in the same transaction.
func (m *Machine) finish(ctx context.Context, id string, from, to store.State, actor, reason string, end []store.Task) (store.Node, error) {
	if !slices.Contains(outcomes[from], to) {
		n, _ := m.Store.Node(ctx, id)
		return n, &RefusedError{Action: Action("finish"), State: from, Reason: fmt.Sprintf("work in state %s cannot end in %s", from, to)}
	}
	lastErr := ""
	if to == store.StateFailed {
		lastErr = reason
	}
	n, ev, _, err := m.Store.Apply(ctx, store.Change{NodeID: id, From: from, To: to, LastError: lastErr,
		Event: store.Event{Time: m.now(), Actor: actor, Kind: "transition", Reason: reason}, Update: end})
	if errors.Is(err, store.ErrConflict) {
		cur, _ := m.Store.Node(ctx, id)
		return cur, &RefusedError{Action: Action("finish"), State: cur.State, Reason: fmt.Sprintf("the node is no longer %s", from)}
	}
	if err != nil {
		return n, err
	}
	m.notify(ev)
	return n, nil
}

// busy are the states in which a node's agent is at work and must keep
// calling in.
var busy = []store.State{store.StateInspecting, store.StateDeploying, store.StateCleaning, store.StateBurnin}

// Reap fails the busy nodes nobody has heard from for timeout: no
// heartbeat of their agent, no network boot. Their unfinished tasks fail
// with them. A node with a BMC (Machine.Power) is first power-cycled
// into a fresh network boot, once, recorded as a power event; it fails
// when timeout passes again with no word. It returns the nodes it failed.
func (m *Machine) Reap(ctx context.Context, timeout time.Duration) ([]store.Node, error) {
	now := m.now()
	var reaped []store.Node
	for _, st := range busy {
		nodes, err := m.Store.ListNodes(ctx, store.NodeFilter{State: st})
		if err != nil {
			return reaped, fmt.Errorf("reap: %w", err)
		}
		for _, n := range nodes {
			last := n.LastSeen
			if n.StateChanged.After(last) {
				last = n.StateChanged
			}
			if now.Sub(last) < timeout {
				continue
			}
			reason := fmt.Sprintf("no word from the node's agent for %s (last at %s)", now.Sub(last).Round(time.Second), last.Format(time.RFC3339))
			if m.Power != nil {
				// One power cycle into a fresh network boot, then
				// another timeout, before the node fails.
				cycled, err := m.reapCycled(ctx, n)
				if err != nil {
					return reaped, fmt.Errorf("reap: %w", err)
				}
				if cycled.IsZero() {
					started, err := m.reapPower(ctx, n, reason)
					if err != nil {
						return reaped, fmt.Errorf("reap: %w", err)
					}
					if started {
						continue
					}
				} else if now.Sub(cycled) < timeout {
					continue
				} else {
					reason += fmt.Sprintf("; a power cycle at %s did not bring it back", cycled.Format(time.RFC3339))
				}
			}
			tasks, err := m.Store.Tasks(ctx, store.TaskFilter{NodeID: n.ID})
			if err != nil {
				return reaped, fmt.Errorf("reap: %w", err)
			}
			var end []store.Task
			for _, t := range tasks {
				if t.State == store.TaskPending || t.State == store.TaskRunning {
					t.State, t.Error, t.Updated = store.TaskFailed, reason, now
					end = append(end, t)
				}
			}
			// The node fails with its tasks, in one transaction.
			failed, err := m.finish(ctx, n.ID, st, store.StateFailed, "system", reason, end)
			var refused *RefusedError
			if errors.As(err, &refused) {
				continue // it moved on meanwhile
			}
			if err != nil {
				return reaped, fmt.Errorf("reap: %w", err)
			}
			reaped = append(reaped, failed)
		}
	}
	return reaped, nil
}

// RunReaper reaps every interval until ctx ends, and returns nil then.
// A failed reap (a database that does not answer, say) never ends it:
// failed, when set, is told the error and how long the reaper waits
// before it tries again: an eighth of interval after the first failure
// in a row, doubling with each one after it, never more than interval. reaped, when set, is
// told each node reaped.
func (m *Machine) RunReaper(ctx context.Context, timeout, interval time.Duration, reaped func(store.Node), failed func(err error, retry time.Duration)) error {
	wait, backoff := interval, time.Duration(0)
	for {
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		nodes, err := m.Reap(ctx, timeout)
		if ctx.Err() != nil {
			return nil
		}
		for _, n := range nodes {
			if reaped != nil {
				reaped(n)
			}
		}
		wait = interval
		if err != nil {
			backoff = min(max(2*backoff, interval/8), interval)
			wait = backoff
			if failed != nil {
				failed(err, wait)
			}
		} else {
			backoff = 0
		}
	}
}
