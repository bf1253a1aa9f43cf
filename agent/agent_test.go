package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rackboot/rackboot/agent/protocol"
	"github.com/rackboot/rackboot/api"
	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/internal/secret"
	"github.com/rackboot/rackboot/internal/tlspin"
	"github.com/rackboot/rackboot/store"
	"github.com/rackboot/rackboot/store/sqlite"
)

// server is a real API on a real store that can be stopped and started
// again on the same address, as a restarted rackboot would be.
type server struct {
	t    *testing.T
	db   string
	addr string
	mu   sync.Mutex
	srv  *http.Server
	st   store.Store
}

func (s *server) start() {
	s.t.Helper()
	st, err := sqlite.Open(context.Background(), s.db)
	if err != nil {
		s.t.Fatal(err)
	}
	var ln net.Listener
	for i := 0; i < 50; i++ {
		if ln, err = net.Listen("tcp", s.addr); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		s.t.Fatal(err)
	}
	s.addr = ln.Addr().String()
	srv := &http.Server{Handler: api.New(st).Handler()}
	go srv.Serve(ln)
	s.mu.Lock()
	s.srv, s.st = srv, st
	s.mu.Unlock()
}

func (s *server) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.srv.Close()
	s.st.Close()
}

func (s *server) store() store.Store {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st
}

// bootSecret gives a node the secret of its next boot, as the server
// does when it serves the node its boot script.
func bootSecret(t *testing.T, st store.Store, node string) string {
	t.Helper()
	s, hash := secret.New("", 16)
	if _, err := st.CreateToken(context.Background(), store.Token{ID: store.BootTokenID(node), Hash: hash, Kind: store.TokenBoot, NodeID: node,
		Expires: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestInspectionThroughAServerRestart(t *testing.T) {
	s := &server{t: t, db: filepath.Join(t.TempDir(), "db"), addr: "127.0.0.1:0"}
	s.start()
	defer func() { s.stop() }()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	mac, _ := net.ParseMAC("52:54:00:ab:00:01")
	n, _, err := s.store().EnrollClient(ctx, boot.Client{MAC: mac, Arch: boot.ClientX64UEFI}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var reads atomic.Int32
	a := &Agent{
		API: "http://" + s.addr + "/api/v1", NodeID: n.ID, MACs: []string{"52:54:00:ab:00:02", mac.String()}, BootSecret: bootSecret(t, s.store(), n.ID),
		MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
		Inventory: func(ctx context.Context) (json.RawMessage, error) {
			// The server goes away while the agent reads the machine,
			// and comes back a moment later.
			if reads.Add(1) == 1 {
				s.stop()
				go func() { time.Sleep(500 * time.Millisecond); s.start() }()
			}
			return json.RawMessage(`{"version":1,"gpus":[{"model":"NVIDIA H100 80GB HBM3"}]}`), nil
		},
	}
	runErr := make(chan error, 1)
	go func() { runErr <- a.Run(ctx) }()
	for {
		got, err := s.store().Node(ctx, n.ID)
		if err == nil && got.State == store.StateAvailable {
			if len(got.GPUModels) != 1 || got.GPUModels[0] != "NVIDIA H100 80GB HBM3" {
				t.Errorf("GPU models: %v", got.GPUModels)
			}
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("node never became available (state %s)", got.State)
		case <-time.After(100 * time.Millisecond):
		}
	}
	// The agent looks its node up again after the token died with the
	// move to available, and waits there for work.
	for {
		issued := 0
		evs, _ := s.store().Events(ctx, store.EventFilter{NodeID: n.ID})
		for _, e := range evs {
			if strings.HasPrefix(e.Message, "agent token issued") {
				issued++
			}
		}
		if issued == 2 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("agent did not look its node up again in available")
		case <-time.After(100 * time.Millisecond):
		}
	}
	if reads.Load() != 1 {
		t.Errorf("inventory read %d times, want once", reads.Load())
	}
	tasks, _ := s.store().Tasks(ctx, store.TaskFilter{NodeID: n.ID})
	if len(tasks) != 1 || tasks[0].State != store.TaskDone {
		t.Errorf("tasks: %+v", tasks)
	}
	cancel()
	if err := <-runErr; err != nil {
		t.Errorf("Run: %v", err)
	}
}

// TestTaskNeverRunsTwice: a server that hands the same task out twice gets
// its report twice, and the work is done once.
func TestTaskNeverRunsTwice(t *testing.T) {
	var heartbeats, reports atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasSuffix(r.URL.Path, "/lookup"):
			json.NewEncoder(w).Encode(protocol.LookupResult{NodeID: "n1", Token: "t", Heartbeat: protocol.Duration(10 * time.Millisecond)})
		case strings.HasSuffix(r.URL.Path, "/heartbeat"):
			res := protocol.HeartbeatResult{State: "burnin"}
			if heartbeats.Add(1) <= 2 {
				res.Task = &protocol.Task{ID: "task-1", Kind: protocol.TaskBurnin}
			}
			json.NewEncoder(w).Encode(res)
		case strings.Contains(r.URL.Path, "/tasks/"):
			reports.Add(1)
			w.WriteHeader(http.StatusOK)
			w.Write([]byte(`{"state":"burnin"}`))
		}
	}))
	defer srv.Close()
	var runs, afters atomic.Int32
	ctx, cancel := context.WithCancel(context.Background())
	a := &Agent{API: srv.URL, MACs: []string{"52:54:00:00:00:01"}, Tasks: map[string]TaskFunc{
		protocol.TaskBurnin: func(context.Context, protocol.Task) (any, error) {
			runs.Add(1)
			return map[string]int{"gflops": 1}, nil
		},
	}, After: func(t protocol.Task, rep protocol.TaskReport) {
		if rep.State == protocol.Done {
			afters.Add(1)
		}
	}}
	done := make(chan struct{})
	go func() { a.Run(ctx); close(done) }()
	for heartbeats.Load() < 4 {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	if runs.Load() != 1 || reports.Load() != 2 || afters.Load() != 1 {
		t.Fatalf("ran %d times, reported %d times, after-hook %d times; want 1, 2 and 1", runs.Load(), reports.Load(), afters.Load())
	}
}

// TestRefusedReport: a report the server refuses (too large, say) ends
// the task failed with the refusal, rather than leaving it running; and a
// server that keeps handing the task out is called a heartbeat apart, not
// in a loop.
func TestRefusedReport(t *testing.T) {
	var heartbeats atomic.Int32
	var mu sync.Mutex
	var reports []protocol.TaskReport
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasSuffix(r.URL.Path, "/lookup"):
			json.NewEncoder(w).Encode(protocol.LookupResult{NodeID: "n1", Token: "t", Heartbeat: protocol.Duration(50 * time.Millisecond)})
		case strings.HasSuffix(r.URL.Path, "/heartbeat"):
			heartbeats.Add(1)
			// Handed out on every call: the report never lands.
			json.NewEncoder(w).Encode(protocol.HeartbeatResult{State: "burnin", Task: &protocol.Task{ID: "task-1", Kind: protocol.TaskBurnin}})
		case strings.Contains(r.URL.Path, "/tasks/"):
			var rep protocol.TaskReport
			json.NewDecoder(r.Body).Decode(&rep)
			mu.Lock()
			reports = append(reports, rep)
			mu.Unlock()
			http.Error(w, `{"error":"bad_request","message":"request body too large"}`, http.StatusBadRequest)
		}
	}))
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	a := &Agent{API: srv.URL, MACs: []string{"52:54:00:00:00:01"}, Tasks: map[string]TaskFunc{
		protocol.TaskBurnin: func(context.Context, protocol.Task) (any, error) { return map[string]int{"gflops": 1}, nil },
	}}
	done := make(chan struct{})
	go func() { a.Run(ctx); close(done) }()
	time.Sleep(500 * time.Millisecond)
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	if len(reports) < 2 || reports[0].State != protocol.Done || reports[1].State != protocol.Failed || !strings.Contains(reports[1].Error, "refused") {
		t.Fatalf("reports %+v: want the result, then the task failed with the refusal", reports)
	}
	// A heartbeat apart (50 ms) for 500 ms: about ten calls, never hundreds.
	if n := heartbeats.Load(); n > 20 {
		t.Errorf("%d heartbeats in 500 ms with a heartbeat of 50 ms: the agent called in a loop", n)
	}
}

// TestRefusals: a second lookup while a token lives is refused by the
// server, and the agent waits it out instead of giving up; a task kind the
// agent does not know is reported failed, not dropped.
func TestRefusals(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := &server{t: t, db: filepath.Join(t.TempDir(), "db"), addr: "127.0.0.1:0"}
	s.start()
	defer func() { s.stop() }()
	mac, _ := net.ParseMAC("52:54:00:ab:00:09")
	n, _, _ := s.store().EnrollClient(ctx, boot.Client{MAC: mac, Arch: boot.ClientX64UEFI}, time.Now())
	s.store().SetState(ctx, n.ID, store.StateAvailable)
	// Another agent holds the node's token.
	first := &Agent{API: "http://" + s.addr + "/api/v1", MACs: []string{mac.String()}, BootSecret: bootSecret(t, s.store(), n.ID)}
	if err := first.lookup(ctx); err != nil {
		t.Fatal(err)
	}
	second := &Agent{API: first.API, MACs: first.MACs, BootSecret: first.BootSecret, MinBackoff: 20 * time.Millisecond, MaxBackoff: 50 * time.Millisecond}
	lctx, lcancel := context.WithTimeout(ctx, 300*time.Millisecond)
	err := second.lookup(lctx)
	lcancel()
	if err == nil || second.Token() != "" {
		t.Fatalf("second lookup while a token lives: err %v token %q", err, second.Token())
	}
	// A reboot task this agent cannot do is reported as failed.
	s.store().CreateTask(ctx, store.Task{NodeID: n.ID, Kind: "firmware-flash"})
	first.done = map[string]protocol.TaskReport{}
	var hb protocol.HeartbeatResult
	if err := first.call(ctx, "/agent/nodes/"+n.ID+"/heartbeat", protocol.Heartbeat{}, &hb); err != nil || hb.Task == nil {
		t.Fatalf("heartbeat: %+v %v", hb, err)
	}
	first.runTask(ctx, *hb.Task)
	task, _ := s.store().Task(ctx, hb.Task.ID)
	if task.State != store.TaskFailed || !strings.Contains(task.Error, "not supported") {
		t.Fatalf("unknown task kind: %+v", task)
	}
}

// TestProgressRidesHeartbeats: while a task runs the agent keeps calling
// in, naming the task and carrying the progress the task reported, so a
// long deploy is neither taken for a dead agent nor silent.
func TestProgressRidesHeartbeats(t *testing.T) {
	got := make(chan protocol.Heartbeat, 100)
	var handed atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasSuffix(r.URL.Path, "/lookup"):
			json.NewEncoder(w).Encode(protocol.LookupResult{NodeID: "n1", Token: "t", Heartbeat: protocol.Duration(10 * time.Millisecond)})
		case strings.HasSuffix(r.URL.Path, "/heartbeat"):
			var hb protocol.Heartbeat
			json.NewDecoder(r.Body).Decode(&hb)
			res := protocol.HeartbeatResult{State: "deploying"}
			if hb.Running == "" && !handed.Swap(true) {
				res.Task = &protocol.Task{ID: "task-1", Kind: protocol.TaskDeploy}
			}
			if hb.Running != "" {
				got <- hb
			}
			json.NewEncoder(w).Encode(res)
		case strings.Contains(r.URL.Path, "/tasks/"):
			w.Write([]byte(`{"state":"active"}`))
		}
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a := &Agent{API: srv.URL, MACs: []string{"52:54:00:00:00:01"}, Tasks: map[string]TaskFunc{
		protocol.TaskDeploy: func(ctx context.Context, _ protocol.Task) (any, error) {
			ReportProgress(ctx, protocol.Progress{Phase: "writing /dev/vda", Done: 42, Total: 100, Rate: 7})
			// The task goes on until the server has heard of it.
			for {
				select {
				case hb := <-got:
					if hb.Running == "task-1" && hb.Progress != nil && hb.Progress.Done == 42 && hb.Progress.Phase == "writing /dev/vda" {
						return nil, nil
					}
				case <-ctx.Done():
					return nil, ctx.Err()
				}
			}
		},
	}}
	done := make(chan struct{})
	var reported protocol.TaskReport
	a.After = func(_ protocol.Task, rep protocol.TaskReport) { reported = rep; cancel() }
	go func() { a.Run(ctx); close(done) }()
	<-done
	if reported.State != protocol.Done {
		t.Fatalf("the task never saw its progress reach the server: %+v", reported)
	}
	// Outside a task, progress goes nowhere and harms nothing.
	ReportProgress(context.Background(), protocol.Progress{Done: 1})
}

// Over TLS the agent trusts only a certificate chain its pins name: a
// server with another certificate (an impostor on the provisioning
// network) never sees the agent's boot secret, and the pinned server does.
func TestAgentPinsTheServer(t *testing.T) {
	real, err := tlspin.Generated(t.TempDir(), []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	impostor, err := tlspin.Generated(t.TempDir(), []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		server tlspin.Bundle
		ok     bool
	}{{"pinned server", real, true}, {"impostor", impostor, false}} {
		t.Run(tc.name, func(t *testing.T) {
			var secrets atomic.Int32
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				var l protocol.Lookup
				if json.NewDecoder(r.Body).Decode(&l) == nil && l.BootSecret == "s3cret" {
					secrets.Add(1)
				}
				json.NewEncoder(w).Encode(protocol.LookupResult{NodeID: "n1", Token: "t"})
			}))
			srv.TLS = tc.server.ServerConfig()
			srv.StartTLS()
			defer srv.Close()
			cl, err := ParseCmdline("rackboot.api=" + srv.URL + " rackboot.boot=s3cret rackboot.ca=" + strings.Join(real.Pins, ","))
			if err != nil {
				t.Fatal(err)
			}
			a := &Agent{API: cl.API, BootSecret: cl.BootSecret, MACs: []string{"52:54:00:00:00:01"}, HTTP: cl.Client(5 * time.Second)}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			err = a.lookup(ctx)
			if tc.ok != (err == nil) || tc.ok != (a.Token() == "t") || tc.ok != (secrets.Load() == 1) {
				t.Fatalf("lookup: %v, token %q, the server saw the boot secret %d times", err, a.Token(), secrets.Load())
			}
			if !tc.ok {
				// What the agent logs of each try: the pin it refused.
				if err := a.call(context.Background(), "/agent/lookup", protocol.Lookup{}, nil); !errors.Is(err, tlspin.ErrPin) {
					t.Errorf("call to the impostor: %v, want ErrPin", err)
				}
			}
		})
	}
}

// TestInspectEnrollsTheBMC: an inspect task with bmc_enroll posts the
// inventory, then the BMC user (with the task's id) to BMCPath, and
// reports the enrollment in the result without its password; one without
// bmc_enroll posts no user; an enrollment that fails leaves the
// inspection done, with the failure in the result.
func TestInspectEnrollsTheBMC(t *testing.T) {
	enrolled := protocol.BMCEnrollment{Address: "10.0.0.21", Channel: 1, User: "rackboot", UserID: 3, Password: "Zq3examplePassw0"}
	for _, tc := range []struct {
		name       string
		params     string
		enroll     func(context.Context) (protocol.BMCEnrollment, error)
		bmcFails   int // 503s before the BMC post is taken
		wantPaths  []string
		wantResult string // the result's bmc_enroll, "" for none
		wantPost   bool   // the enrollment reaches BMCPath
	}{
		{
			name:       "bmc_enroll",
			params:     `{"bmc_enroll":true}`,
			enroll:     func(context.Context) (protocol.BMCEnrollment, error) { return enrolled, nil },
			bmcFails:   1,
			wantPaths:  []string{"/agent/nodes/n1/inventory", "/agent/nodes/n1/bmc", "/agent/nodes/n1/bmc", "/agent/nodes/n1/tasks/task-1"},
			wantResult: "user rackboot (id 3) on channel 1",
			wantPost:   true,
		},
		{
			name:      "no bmc_enroll",
			params:    ``,
			enroll:    func(context.Context) (protocol.BMCEnrollment, error) { return enrolled, nil },
			wantPaths: []string{"/agent/nodes/n1/inventory", "/agent/nodes/n1/tasks/task-1"},
		},
		{
			name:   "enrollment fails",
			params: `{"bmc_enroll":true}`,
			enroll: func(context.Context) (protocol.BMCEnrollment, error) {
				return protocol.BMCEnrollment{}, errors.New("enroll bmc user rackboot: no free user slot on the BMC")
			},
			wantPaths:  []string{"/agent/nodes/n1/inventory", "/agent/nodes/n1/tasks/task-1"},
			wantResult: "failed: enroll bmc user rackboot: no free user slot on the BMC",
		},
		{
			name:       "an agent that cannot enroll",
			params:     `{"bmc_enroll":true}`,
			wantPaths:  []string{"/agent/nodes/n1/inventory", "/agent/nodes/n1/tasks/task-1"},
			wantResult: "failed: this agent cannot enroll a BMC user",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			var paths []string
			var posted protocol.BMCEnrollment
			var report protocol.TaskReport
			var auth string
			bmcFails := tc.bmcFails
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				defer mu.Unlock()
				if !strings.HasSuffix(r.URL.Path, "/lookup") && !strings.HasSuffix(r.URL.Path, "/heartbeat") {
					paths = append(paths, r.URL.Path)
				}
				switch {
				case strings.HasSuffix(r.URL.Path, "/lookup"):
					json.NewEncoder(w).Encode(protocol.LookupResult{NodeID: "n1", Token: "tok", Heartbeat: protocol.Duration(time.Hour)})
				case strings.HasSuffix(r.URL.Path, "/bmc"):
					if bmcFails > 0 {
						bmcFails--
						w.WriteHeader(http.StatusServiceUnavailable)
						return
					}
					auth = r.Header.Get("Authorization")
					json.NewDecoder(r.Body).Decode(&posted)
				case strings.HasSuffix(r.URL.Path, "/inventory"):
				case strings.Contains(r.URL.Path, "/tasks/"):
					json.NewDecoder(r.Body).Decode(&report)
				}
			}))
			defer srv.Close()
			a := &Agent{API: srv.URL, MACs: []string{"52:54:00:00:00:01"}, MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond,
				Inventory: func(context.Context) (json.RawMessage, error) { return json.RawMessage(`{"version":1}`), nil },
				EnrollBMC: tc.enroll, done: map[string]protocol.TaskReport{}}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := a.lookup(ctx); err != nil {
				t.Fatal(err)
			}
			a.runTask(ctx, protocol.Task{ID: "task-1", Kind: protocol.TaskInspect, Params: json.RawMessage(tc.params)})
			mu.Lock()
			defer mu.Unlock()
			if strings.Join(paths, " ") != strings.Join(tc.wantPaths, " ") {
				t.Errorf("posted to %v, want %v", paths, tc.wantPaths)
			}
			if report.State != protocol.Done {
				t.Errorf("inspect task reported %+v, want done", report)
			}
			var result map[string]any
			json.Unmarshal(report.Result, &result)
			got, _ := result["bmc_enroll"].(string)
			if got != tc.wantResult {
				t.Errorf("result bmc_enroll %q, want %q", got, tc.wantResult)
			}
			if strings.Contains(string(report.Result), enrolled.Password) {
				t.Errorf("the task result carries the password: %s", report.Result)
			}
			if tc.wantPost {
				want := enrolled
				want.TaskID = "task-1"
				if posted != want || auth != "Bearer tok" {
					t.Errorf("posted %+v with %q, want %+v with the agent's token", posted, auth, want)
				}
			}
		})
	}
}

// TestKeptToken: an agent started again in the same boot carries on with
// the token the first one kept, without a lookup (the boot secret buys
// one); a kept token that died is looked up again; an unreadable file is
// no token.
func TestKeptToken(t *testing.T) {
	var lookups atomic.Int32
	var mu sync.Mutex
	var auth []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasSuffix(r.URL.Path, "/lookup"):
			n := lookups.Add(1)
			json.NewEncoder(w).Encode(protocol.LookupResult{NodeID: "n1", Token: fmt.Sprintf("t%d", n), Heartbeat: protocol.Duration(10 * time.Millisecond)})
		case strings.HasSuffix(r.URL.Path, "/heartbeat"):
			mu.Lock()
			auth = append(auth, r.Header.Get("Authorization"))
			mu.Unlock()
			if r.Header.Get("Authorization") == "Bearer dead" {
				http.Error(w, `{"error":"unauthorized"}`, http.StatusUnauthorized)
				return
			}
			json.NewEncoder(w).Encode(protocol.HeartbeatResult{State: "available"})
		}
	}))
	defer srv.Close()
	keep := filepath.Join(t.TempDir(), "token")
	life := func() {
		t.Helper()
		ctx, cancel := context.WithCancel(context.Background())
		a := &Agent{API: srv.URL, MACs: []string{"52:54:00:00:00:01"}, Keep: keep}
		done := make(chan struct{})
		go func() { a.Run(ctx); close(done) }()
		// A life ends once a heartbeat was taken: one refused (the dead
		// token's) is not yet the end, as the lookup after it is what the
		// test counts.
		for {
			mu.Lock()
			ok := slices.ContainsFunc(auth, func(a string) bool { return a != "Bearer dead" })
			mu.Unlock()
			if ok {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		cancel()
		<-done
		mu.Lock()
		auth = auth[:0]
		mu.Unlock()
	}
	life()
	if st, err := os.Stat(keep); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("kept token: %v %v, want a file only its owner reads", st, err)
	}
	life()
	if n := lookups.Load(); n != 1 {
		t.Fatalf("%d lookups over two lives of the agent: want one, the second carrying on with the kept token", n)
	}
	// A kept token the server no longer takes: looked up again, and the
	// new one kept.
	os.WriteFile(keep, []byte(`{"token":"dead","node_id":"n1","heartbeat":10000000}`), 0o600)
	life()
	if n := lookups.Load(); n != 2 {
		t.Fatalf("%d lookups after a dead kept token: want 2", n)
	}
	if b, _ := os.ReadFile(keep); !strings.Contains(string(b), `"t2"`) {
		t.Fatalf("kept after the new lookup: %s", b)
	}
	os.WriteFile(keep, []byte("{not json"), 0o600)
	life()
	if n := lookups.Load(); n != 3 {
		t.Fatalf("%d lookups after an unreadable kept token: want 3", n)
	}
}

// TestLookupAskedAgain: the answer to the agent's lookup is lost (the
// server took it and the connection died): the agent asks again for the
// same token, which a server answers again, and serves on.
func TestLookupAskedAgain(t *testing.T) {
	var mu sync.Mutex
	var asked []string
	beat := make(chan string, 100)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasSuffix(r.URL.Path, "/lookup"):
			var l protocol.Lookup
			json.NewDecoder(r.Body).Decode(&l)
			mu.Lock()
			asked = append(asked, l.Token)
			first, want := len(asked) == 1, asked[0]
			mu.Unlock()
			if first {
				// Issued, and the answer never arrives.
				c, _, _ := w.(http.Hijacker).Hijack()
				c.Close()
				return
			}
			if l.Token != want {
				http.Error(w, `{"error":"conflict","message":"an agent token was already issued"}`, http.StatusConflict)
				return
			}
			json.NewEncoder(w).Encode(protocol.LookupResult{NodeID: "n1", Token: l.Token, Heartbeat: protocol.Duration(10 * time.Millisecond)})
		case strings.HasSuffix(r.URL.Path, "/heartbeat"):
			beat <- r.Header.Get("Authorization")
			json.NewEncoder(w).Encode(protocol.HeartbeatResult{State: "available"})
		}
	}))
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	a := &Agent{API: srv.URL, MACs: []string{"52:54:00:00:00:01"}, MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond,
		Keep: filepath.Join(t.TempDir(), "token")}
	done := make(chan struct{})
	go func() { a.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	select {
	case got := <-beat:
		mu.Lock()
		defer mu.Unlock()
		if len(asked) != 2 || asked[0] == "" || got != "Bearer "+asked[0] || !strings.HasPrefix(asked[0], protocol.TokenPrefix) {
			t.Fatalf("lookups asked for %q, heartbeat with %q: want the same token twice, then used", asked, got)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no heartbeat after a lost lookup answer; lookups asked for %q", asked)
	}
}

// TestLookupOlderServer: a server older than its agent refuses the token
// the agent asks for as an unknown field (400); the agent asks again
// without it and serves with the token that server issued.
func TestLookupOlderServer(t *testing.T) {
	var lookups atomic.Int32
	beat := make(chan string, 100)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasSuffix(r.URL.Path, "/lookup"):
			lookups.Add(1)
			// The lookup as the server before agent-chosen tokens knew it.
			var l struct {
				MACs       []string `json:"macs"`
				NodeID     string   `json:"node_id,omitempty"`
				BootSecret string   `json:"boot_secret,omitempty"`
			}
			dec := json.NewDecoder(r.Body)
			dec.DisallowUnknownFields()
			if err := dec.Decode(&l); err != nil {
				http.Error(w, `{"error":"bad request","message":"`+strings.ReplaceAll(err.Error(), `"`, `\"`)+`"}`, http.StatusBadRequest)
				return
			}
			json.NewEncoder(w).Encode(protocol.LookupResult{NodeID: "n1", Token: "old-server-token", Heartbeat: protocol.Duration(10 * time.Millisecond)})
		case strings.HasSuffix(r.URL.Path, "/heartbeat"):
			beat <- r.Header.Get("Authorization")
			json.NewEncoder(w).Encode(protocol.HeartbeatResult{State: "available"})
		}
	}))
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	a := &Agent{API: srv.URL, MACs: []string{"52:54:00:00:00:01"}, MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond}
	done := make(chan struct{})
	go func() { a.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	select {
	case got := <-beat:
		if got != "Bearer old-server-token" || lookups.Load() != 2 {
			t.Fatalf("heartbeat with %q after %d lookups: want the older server's token after 2", got, lookups.Load())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no heartbeat from an agent whose server is older; %d lookups", lookups.Load())
	}
}
