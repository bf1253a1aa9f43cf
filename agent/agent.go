// Package agent is the in-memory agent's side of rackboot: it finds its
// node through the API, keeps calling in, runs the tasks it is handed and
// reports them, and rides out a restarting server or a flapping network
// by retrying with backoff. Inventory and task work live in sub-packages
// and come in as functions, so this package carries only the protocol.
package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/rackboot/rackboot/agent/protocol"
	"github.com/rackboot/rackboot/internal/secret"
)

// TaskFunc does one task and returns its result (figures for the report)
// or why it failed.
type TaskFunc func(ctx context.Context, t protocol.Task) (result any, err error)

// Agent talks to one rackboot API for one node.
type Agent struct {
	// API is the API base URL, e.g. http://10.0.0.1:8080/api/v1.
	API string
	// NodeID is the id from the kernel command line ("" when unknown).
	NodeID string
	// BootSecret is this boot's secret from the kernel command line: the
	// lookup shows it to prove the node's own boot started this agent.
	BootSecret string
	// MACs are the node's interfaces, for the lookup.
	MACs []string
	// Inventory reads the machine; an inspect task posts it.
	Inventory func(ctx context.Context) (json.RawMessage, error)
	// EnrollBMC creates or refreshes rackboot's user on the node's BMC,
	// when an inspect task asks (bmc_enroll); the agent posts it to
	// BMCPath after the inventory. nil: such a task reports the
	// enrollment failed, and the inspection still succeeds.
	EnrollBMC func(ctx context.Context) (protocol.BMCEnrollment, error)
	// Tasks does the work of each kind other than inspect. A kind with
	// no function fails with "not supported by this agent".
	Tasks map[string]TaskFunc
	// After runs once a task's report has reached the server (e.g. a
	// reboot into the disk after a deploy).
	After  func(t protocol.Task, rep protocol.TaskReport)
	HTTP   *http.Client
	Logger *slog.Logger
	// MinBackoff and MaxBackoff bound the wait between failed calls
	// (defaults 1 s and 30 s).
	MinBackoff, MaxBackoff time.Duration
	// Keep, when set, is a file (on the ramdisk's tmpfs) where the agent
	// keeps its token and what its lookup said, so that an agent started
	// again in the same boot, after a crash or the OOM killer, carries
	// on as the node's agent: the boot secret buys one lookup only, and
	// a second is refused while the token lives.
	Keep string

	// mu guards token, which the task being run reads (its image
	// download shows it) while the heartbeat loop may renew it.
	mu        sync.Mutex
	token     string
	heartbeat time.Duration
	// done remembers the tasks this agent finished, so a task handed out
	// again by mistake is reported, not run twice.
	done map[string]protocol.TaskReport
	// asked is the token this agent's lookups ask for until one is
	// answered (protocol.Lookup.Token).
	asked string
}

// Token is the agent's current token, "" before its lookup; the server
// wants it for image files too.
func (a *Agent) Token() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.token
}

func (a *Agent) setToken(t string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.token = t
}

// statusError is an answer the server gave, as opposed to no answer.
type statusError struct {
	Code int
	Msg  string
}

func (e *statusError) Error() string { return fmt.Sprintf("%d: %s", e.Code, e.Msg) }

func (a *Agent) log() *slog.Logger {
	if a.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return a.Logger
}

func (a *Agent) call(ctx context.Context, path string, body, out any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(a.API, "/")+path, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if tok := a.Token(); tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	c := a.HTTP
	if c == nil {
		c = &http.Client{Timeout: 30 * time.Second}
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		var e struct {
			Error struct{ Message string } `json:"error"`
		}
		json.Unmarshal(data, &e)
		return &statusError{Code: resp.StatusCode, Msg: e.Error.Message}
	}
	if out != nil && len(data) > 0 {
		return json.Unmarshal(data, out)
	}
	return nil
}

// retryable is an error worth waiting out: no answer, or a server error.
// A refusal (4xx) is an answer, and waiting does not change it, except a
// dead token (401), which a new lookup cures.
func retryable(err error) bool {
	var se *statusError
	if errors.As(err, &se) {
		return se.Code >= 500
	}
	return true
}

func (a *Agent) sleep(ctx context.Context, d time.Duration) error { return Sleep(ctx, d) }

// Sleep waits for d, or less when ctx ends first (then it returns
// ctx's error).
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// backoff doubles a wait, within the agent's bounds.
func (a *Agent) backoff(d time.Duration) time.Duration {
	lo, hi := a.MinBackoff, a.MaxBackoff
	if lo == 0 {
		lo = time.Second
	}
	if hi == 0 {
		hi = 30 * time.Second
	}
	if d < lo {
		return lo
	}
	if d *= 2; d > hi {
		return hi
	}
	return d
}

// lookup gets the node's token, waiting out a server that is not there
// and a token that is still alive from a previous life of the agent.
func (a *Agent) lookup(ctx context.Context) error {
	var wait time.Duration
	if a.asked == "" {
		// One token for every try of this lookup, kept before the first:
		// if an answer is lost, the server knows the next try for the
		// same agent's, even from an agent started again.
		a.asked, _ = secret.New(protocol.TokenPrefix, 32)
		if err := a.keep(kept{Asked: a.asked}); err != nil {
			a.log().Warn("keep the agent token", "err", err)
		}
	}
	for {
		var res protocol.LookupResult
		a.setToken("")
		req := protocol.Lookup{MACs: a.MACs, NodeID: a.NodeID, BootSecret: a.BootSecret, Token: a.asked}
		err := a.call(ctx, "/agent/lookup", req, &res)
		var se *statusError
		if req.Token != "" && errors.As(err, &se) && se.Code == http.StatusBadRequest {
			// A server older than its agent (one of two on a database,
			// upgraded one at a time) refuses the field it does not know:
			// asked again as such an agent would, without the retry safety
			// the token buys.
			a.log().Warn("the server refused the token this agent asked for: asking without one", "err", err)
			req.Token = ""
			err = a.call(ctx, "/agent/lookup", req, &res)
		}
		if err == nil {
			a.asked = ""
			a.setToken(res.Token)
			a.NodeID, a.heartbeat = res.NodeID, time.Duration(res.Heartbeat)
			if a.heartbeat <= 0 {
				a.heartbeat = 10 * time.Second
			}
			a.log().Info("agent token issued", "node", a.NodeID, "state", res.State)
			if err := a.keep(kept{Token: res.Token, NodeID: res.NodeID, Heartbeat: time.Duration(res.Heartbeat)}); err != nil {
				a.log().Warn("keep the agent token", "err", err)
			}
			return nil
		}
		if errors.As(err, &se) && se.Code == http.StatusBadRequest {
			return fmt.Errorf("lookup: %w", err)
		}
		// 404 (not enrolled yet), 409 (token alive, node in a state
		// with no work) and no answer all may change: keep asking.
		wait = a.backoff(wait)
		a.log().Warn("lookup failed, retrying", "err", err, "in", wait)
		if err := a.sleep(ctx, wait); err != nil {
			return err
		}
	}
}

// kept is what Keep holds: the token and what the lookup said, or the
// token a lookup not yet answered asks for.
type kept struct {
	Token     string        `json:"token,omitempty"`
	NodeID    string        `json:"node_id,omitempty"`
	Heartbeat time.Duration `json:"heartbeat,omitempty"`
	Asked     string        `json:"asked,omitempty"`
}

// keep writes k to Keep, whole or not at all.
func (a *Agent) keep(k kept) error {
	if a.Keep == "" {
		return nil
	}
	b, err := json.Marshal(k)
	if err != nil {
		return err
	}
	tmp := a.Keep + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, a.Keep)
}

// resume takes the token an earlier agent of this boot kept, and says
// whether there was one. A dead one is found at the first call and
// looked up again, as any token that dies.
func (a *Agent) resume() bool {
	if a.Keep == "" {
		return false
	}
	b, err := os.ReadFile(a.Keep)
	if err != nil {
		return false
	}
	var k kept
	if err := json.Unmarshal(b, &k); err != nil {
		a.log().Warn("the kept agent token is unreadable: looking the node up", "file", a.Keep, "err", err)
		return false
	}
	if k.Token == "" || k.NodeID == "" {
		// An earlier agent's lookup was not answered: this one asks for
		// the same token, which the server may have issued already.
		a.asked = k.Asked
		return false
	}
	if a.NodeID != "" && a.NodeID != k.NodeID {
		return false
	}
	a.setToken(k.Token)
	a.NodeID, a.heartbeat = k.NodeID, k.Heartbeat
	if a.heartbeat <= 0 {
		a.heartbeat = 10 * time.Second
	}
	a.log().Info("agent token kept by an earlier agent of this boot", "node", a.NodeID)
	return true
}

// Run serves the node until ctx ends.
func (a *Agent) Run(ctx context.Context) error {
	if a.done == nil {
		a.done = map[string]protocol.TaskReport{}
	}
	if !a.resume() {
		if err := a.lookup(ctx); err != nil {
			return err
		}
	}
	var wait time.Duration
	for {
		var hb protocol.HeartbeatResult
		err := a.call(ctx, fmt.Sprintf(protocol.HeartbeatPath, a.NodeID), protocol.Heartbeat{}, &hb)
		var se *statusError
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.As(err, &se) && (se.Code == http.StatusUnauthorized || se.Code == http.StatusForbidden):
			a.log().Info("agent token no longer valid, looking up again", "err", err)
			if err := a.lookup(ctx); err != nil {
				return err
			}
			continue
		case err != nil:
			wait = a.backoff(wait)
			a.log().Warn("heartbeat failed, retrying", "err", err, "in", wait)
			if a.sleep(ctx, wait) != nil {
				return nil
			}
			continue
		}
		wait = 0
		if hb.Task != nil {
			if a.runTask(ctx, *hb.Task) {
				continue
			}
			// A task handed out again, or one whose report did not
			// arrive: the next call waits a heartbeat, so that a server
			// that keeps handing it out is never called in a loop.
			if a.sleep(ctx, a.heartbeat) != nil {
				return nil
			}
			continue
		}
		if a.sleep(ctx, a.heartbeat) != nil {
			return nil
		}
	}
}

// progressBox holds a running task's latest progress for the heartbeats.
type progressBox struct {
	mu   sync.Mutex
	last *protocol.Progress
}

type progressKey struct{}

// ReportProgress records how far the task running under ctx has got; the
// agent's next heartbeat carries it to the server. Outside a task it does
// nothing.
func ReportProgress(ctx context.Context, p protocol.Progress) {
	if b, ok := ctx.Value(progressKey{}).(*progressBox); ok {
		b.mu.Lock()
		b.last = &p
		b.mu.Unlock()
	}
}

// beat keeps heartbeating while a task runs, so a long deploy or wipe is
// not taken for a dead agent, and carries the task's progress.
func (a *Agent) beat(ctx context.Context, id string, box *progressBox) {
	every := a.heartbeat
	if every <= 0 {
		every = 10 * time.Second
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	var sent *protocol.Progress
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		box.mu.Lock()
		hb := protocol.Heartbeat{Running: id}
		if box.last != sent {
			hb.Progress = box.last
		}
		box.mu.Unlock()
		// A failed beat is not the task's business: the next one, or
		// the report, tries again.
		if err := a.call(ctx, fmt.Sprintf(protocol.HeartbeatPath, a.NodeID), hb, nil); err != nil {
			if ctx.Err() == nil {
				a.log().Warn("heartbeat during a task failed", "task", id, "err", err)
			}
			continue
		}
		sent = hb.Progress
	}
}

// work runs a task with heartbeats beside it.
func (a *Agent) work(ctx context.Context, t protocol.Task) (any, error) {
	box := &progressBox{}
	tctx, cancel := context.WithCancel(context.WithValue(ctx, progressKey{}, box))
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		a.beat(tctx, t.ID, box)
	}()
	defer wg.Wait()
	defer cancel()
	return a.do(tctx, t)
}

// runTask runs t, or reports it again when this agent ran it already,
// and says whether it ran it and the server has its report.
func (a *Agent) runTask(ctx context.Context, t protocol.Task) bool {
	if a.done == nil {
		a.done = map[string]protocol.TaskReport{}
	}
	rep, seen := a.done[t.ID]
	if !seen {
		a.log().Info("task started", "task", t.ID, "kind", t.Kind)
		result, err := a.work(ctx, t)
		rep = protocol.TaskReport{State: protocol.Done}
		if err != nil {
			rep = protocol.TaskReport{State: protocol.Failed, Error: err.Error()}
		}
		if result != nil {
			rep.Result, _ = json.Marshal(result)
		}
		a.done[t.ID] = rep
		a.log().Info("task ended", "task", t.ID, "kind", t.Kind, "state", rep.State, "err", rep.Error)
	} else {
		a.log().Warn("task handed out again: reporting, not running it twice", "task", t.ID)
	}
	delivered := a.report(ctx, t, rep)
	if delivered && !seen && a.After != nil {
		a.After(t, rep)
	}
	return delivered && !seen
}

// report delivers a task's end, through restarts of the server. The token
// may die with the report itself (the node changes state): that is the
// report arriving, not failing.
// It says whether the server has the report.
func (a *Agent) report(ctx context.Context, t protocol.Task, rep protocol.TaskReport) bool {
	var wait time.Duration
	for {
		err := a.call(ctx, fmt.Sprintf(protocol.TaskPath, a.NodeID, t.ID), rep, nil)
		var se *statusError
		switch {
		case err == nil:
			return true
		case ctx.Err() != nil:
			return false
		case errors.As(err, &se) && se.Code == http.StatusConflict:
			// Already reported (a retry whose first try arrived).
			return true
		case errors.As(err, &se) && se.Code == http.StatusUnauthorized:
			if a.lookup(ctx) != nil {
				return false
			}
			continue
		case !retryable(err) && rep.State != protocol.Failed:
			// A report the server will not take (a result over its
			// size limit, say) would leave the task running: it ends
			// failed instead, saying why.
			a.log().Error("task report refused, reporting the task failed", "task", t.ID, "err", err)
			rep = protocol.TaskReport{State: protocol.Failed, Error: fmt.Sprintf("the server refused the agent's report of the task: %.300s", err.Error())}
			a.done[t.ID] = rep
			continue
		case !retryable(err):
			a.log().Error("task report refused", "task", t.ID, "err", err)
			return false
		}
		wait = a.backoff(wait)
		a.log().Warn("task report failed, retrying", "task", t.ID, "err", err, "in", wait)
		if a.sleep(ctx, wait) != nil {
			return false
		}
	}
}

func (a *Agent) do(ctx context.Context, t protocol.Task) (any, error) {
	if t.Kind == protocol.TaskInspect {
		return a.inspect(ctx, t)
	}
	f := a.Tasks[t.Kind]
	if f == nil {
		return nil, fmt.Errorf("%s is not supported by this agent", t.Kind)
	}
	return f(ctx, t)
}

func (a *Agent) inspect(ctx context.Context, t protocol.Task) (any, error) {
	if a.Inventory == nil {
		return nil, errors.New("this agent cannot read an inventory")
	}
	var params protocol.InspectParams
	if len(t.Params) > 0 {
		if err := json.Unmarshal(t.Params, &params); err != nil {
			return nil, fmt.Errorf("inspect params: %w", err)
		}
	}
	start := time.Now()
	inv, err := a.Inventory(ctx)
	if err != nil {
		return nil, fmt.Errorf("read inventory: %w", err)
	}
	if err := a.post(ctx, fmt.Sprintf(protocol.InventoryPath, a.NodeID), inv); err != nil {
		return nil, fmt.Errorf("post inventory: %w", err)
	}
	result := map[string]any{"seconds": time.Since(start).Seconds(), "bytes": len(inv)}
	if params.BMCEnroll {
		// The inventory is in: a BMC that will not take a user leaves
		// the node inspected, with the reason in the result.
		if msg, err := a.enrollBMC(ctx, t); err != nil {
			a.log().Warn("bmc enrollment failed", "task", t.ID, "err", err)
			result["bmc_enroll"] = "failed: " + err.Error()
		} else {
			a.log().Info("bmc user enrolled", "task", t.ID, "user", msg)
			result["bmc_enroll"] = msg
		}
	}
	return result, nil
}

// enrollBMC enrolls the BMC user and posts it; it returns what the task
// result says of it, never the password.
func (a *Agent) enrollBMC(ctx context.Context, t protocol.Task) (string, error) {
	if a.EnrollBMC == nil {
		return "", errors.New("this agent cannot enroll a BMC user")
	}
	e, err := a.EnrollBMC(ctx)
	if err != nil {
		return "", err
	}
	e.TaskID = t.ID
	if err := a.post(ctx, fmt.Sprintf(protocol.BMCPath, a.NodeID), e); err != nil {
		return "", fmt.Errorf("post bmc enrollment: %w", err)
	}
	return fmt.Sprintf("user %s (id %d) on channel %d", e.User, e.UserID, e.Channel), nil
}

// post sends body to path, waiting out a server that does not answer or
// answers 5xx.
func (a *Agent) post(ctx context.Context, path string, body any) error {
	var wait time.Duration
	for {
		err := a.call(ctx, path, body, nil)
		if err == nil || !retryable(err) || ctx.Err() != nil {
			return err
		}
		wait = a.backoff(wait)
		if a.sleep(ctx, wait) != nil {
			return err
		}
	}
}
