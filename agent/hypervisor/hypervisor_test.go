package hypervisor

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/rackboot/rackboot/agent/gpuconf"
	"github.com/rackboot/rackboot/agent/gpuconf/gpufake"
	"github.com/rackboot/rackboot/agent/gpuconf/gpufake/fakehost"
	"github.com/rackboot/rackboot/agent/protocol"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata")

const (
	nodeID = "node-7"
	token  = "hv-token-1"
)

// api plays the server: it checks each call, keeps the reports, and
// answers with the work the test set.
type api struct {
	t       *testing.T
	mu      sync.Mutex
	work    protocol.HypervisorWork
	status  int    // answered instead of the work when not 0
	body    string // with status
	reports []protocol.HypervisorReport
}

func (s *api) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if want := "/api/v1" + fmt.Sprintf(protocol.HypervisorPath, nodeID); r.Method != http.MethodPost || r.URL.Path != want {
		s.t.Errorf("call %s %s, want POST %s", r.Method, r.URL.Path, want)
	}
	if got := r.Header.Get("Authorization"); got != "Bearer "+token {
		s.t.Errorf("Authorization %q", got)
	}
	if got := r.Header.Get("Content-Type"); got != "application/json" {
		s.t.Errorf("Content-Type %q", got)
	}
	var rep protocol.HypervisorReport
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rep); err != nil {
		s.t.Errorf("report: %v", err)
	}
	s.reports = append(s.reports, rep)
	w.Header().Set("Content-Type", "application/json")
	if s.status != 0 {
		w.WriteHeader(s.status)
		fmt.Fprint(w, s.body)
		return
	}
	json.NewEncoder(w).Encode(s.work)
}

func (s *api) set(w protocol.HypervisorWork) {
	s.mu.Lock()
	s.work = w
	s.mu.Unlock()
}

// taken returns the reports since the last call.
func (s *api) taken() []protocol.HypervisorReport {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.reports
	s.reports = nil
	return r
}

type rig struct {
	t     *testing.T
	api   *api
	srv   *httptest.Server
	tr    *gpufake.Tree
	s     *gpufake.Script
	k     *fakehost.Kernel
	boot  time.Time
	boots int    // the boots so far, which make the boot id
	state string // the agent's state file
}

func newRig(t *testing.T, table map[string]map[string]gpufake.Reply, start string) *rig {
	r := &rig{t: t, api: &api{t: t}, tr: gpufake.NewTree(t), boot: time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)}
	r.srv = httptest.NewServer(r.api)
	t.Cleanup(r.srv.Close)
	r.s = &gpufake.Script{T: t, State: start, Table: table, Dir: "../gpuconf/testdata/smi"}
	r.k = fakehost.NewKernel(&gpuconf.Host{Root: r.tr.Root, Runner: r.s}, r.tr, r.s)
	r.state = filepath.Join(t.TempDir(), "lib/hypervisor-agent.json")
	r.reboot()
	return r
}

// reboot gives the host a new boot id, as the kernel does on each boot.
func (r *rig) reboot() {
	r.boots++
	r.tr.Write("proc/sys/kernel/random/boot_id", fmt.Sprintf("6b1f0c3e-2a4d-4f8e-9c7b-%012d\n", r.boots))
}

// saved reads the agent's state file.
func (r *rig) saved() stateFile {
	r.t.Helper()
	b, err := os.ReadFile(r.state)
	if err != nil {
		r.t.Fatal(err)
	}
	var st stateFile
	if err := json.Unmarshal(b, &st); err != nil {
		r.t.Fatal(err)
	}
	return st
}

// noDriver makes the host one without NVIDIA's driver: no nvidia-smi.
func (r *rig) noDriver() {
	r.k.Host.Runner = gpuconf.ExecRunner{}
	r.k.Host.SMI = filepath.Join(r.tr.Root, "no-driver/nvidia-smi")
}

func (r *rig) agent() *Agent {
	return &Agent{
		API: r.srv.URL + "/api/v1", NodeID: nodeID, Token: token, HTTP: r.srv.Client(),
		GPUs: r.k, StateFile: r.state, Root: r.tr.Root, Booted: func() time.Time { return r.boot },
		Logger: slog.New(slog.NewTextHandler(testWriter{r.t}, nil)), Version: "test",
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// round runs one Round with the work w, and returns the reports it made
// and the calls it ran.
func (r *rig) round(a *Agent, w protocol.HypervisorWork) ([]protocol.HypervisorReport, string) {
	r.t.Helper()
	r.api.set(w)
	r.s.Calls = nil
	got, err := a.Round(context.Background())
	if err != nil {
		r.t.Fatalf("Round: %v", err)
	}
	if d := cmp.Diff(w, got); d != "" {
		r.t.Errorf("Round's work (-served +got):\n%s", d)
	}
	return r.api.taken(), strings.Join(r.s.Calls, "\n") + "\n"
}

// golden compares got with testdata/name, or rewrites it under -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	gpufake.Golden(t, *update, name, got)
}

const smiQuery = "nvidia-smi --query-gpu=index,pci.bus_id,mig.mode.current,mig.mode.pending --format=csv,noheader"

const h100 = "0000:18:00.0"

// h100Host is an H100 80GB HBM3 with MIG off; its virtual functions,
// enabled by sriov-manage, offer MIG-backed vGPU types.
func h100Host(t *testing.T) *rig {
	none := map[string]gpufake.Reply{
		"nvidia-smi mig -lgi": {File: "lgi-none.txt", Fail: true},
		"nvidia-smi mig -lci": {File: "lci-none.txt", Fail: true},
	}
	table := map[string]map[string]gpufake.Reply{
		"off": {
			smiQuery:                 {File: "h100/query-off.txt"},
			"nvidia-smi -L":          {File: "h100/list-off.txt"},
			"nvidia-smi -i 0 -mig 1": {File: "h100/mig1.txt", Next: "on"},
		},
		// MIG on, no instances: how the card comes up after a reboot.
		"on": {
			smiQuery:                          {File: "h100/query-on.txt"},
			"nvidia-smi -L":                   {File: "h100/list-off.txt"},
			"nvidia-smi mig -lgi":             none["nvidia-smi mig -lgi"],
			"nvidia-smi mig -lci":             none["nvidia-smi mig -lci"],
			"nvidia-smi mig -lgip":            {File: "h100/lgip.txt"},
			"nvidia-smi mig -i 0 -cgi 9,9 -C": {File: "h100/cgi-3g2.txt", Next: "layout"},
		},
		"layout": {
			smiQuery:              {File: "h100/query-on.txt"},
			"nvidia-smi -L":       {File: "h100/list-3g2.txt"},
			"nvidia-smi mig -lgi": {File: "h100/lgi-3g2.txt"},
			"nvidia-smi mig -lci": {File: "h100/lci-3g2.txt"},
		},
	}
	r := newRig(t, table, "off")
	r.tr.PCI(h100, "10de", "2330", "030200")
	vfs := []string{"0000:18:00.4", "0000:18:00.5"}
	enable := func() {
		for i, vf := range vfs {
			r.tr.PCI(vf, "10de", "2330", "030200")
			r.tr.VF(h100, vf, i)
			r.tr.MdevType(vf, "nvidia-1050", "NVIDIA H100-10C", 1)
			r.tr.MdevType(vf, "nvidia-1080", "NVIDIA H100-3-40CME", 1)
			r.tr.MdevType(vf, "nvidia-1081", "NVIDIA H100-3-40C", 1)
			r.tr.MdevType(vf, "nvidia-1082", "NVIDIA H100-7-80C", 1)
		}
	}
	for _, st := range table {
		st["/usr/lib/nvidia/sriov-manage -e "+h100] = gpufake.Reply{Do: enable}
	}
	return r
}

var mig3g2 = protocol.HypervisorWork{GPUMode: "mig", GPUProfile: "3g.40gb,3g.40gb", Devices: []protocol.HypervisorDevice{}, Interval: protocol.Duration(10 * time.Second)}

// TestMIGLayout: the layout is applied on the first round of a boot, and
// only then, and the report right after shows it.
func TestMIGLayout(t *testing.T) {
	r := h100Host(t)
	a := r.agent()
	reps, calls := r.round(a, mig3g2)
	golden(t, "mig-first.calls", calls)
	if len(reps) != 2 {
		t.Fatalf("first round made %d reports, want 2: the apply changed the host", len(reps))
	}
	if reps[0].Applied != "" || reps[1].Applied != "mig 3g.40gb,3g.40gb" {
		t.Errorf("Applied %q then %q", reps[0].Applied, reps[1].Applied)
	}
	for _, rep := range reps {
		if !rep.Booted.Equal(r.boot) || rep.Version != "test" || len(rep.Errors) > 0 {
			t.Errorf("report %+v", rep)
		}
	}
	var st gpuconf.State
	if err := json.Unmarshal(reps[1].GPUs, &st); err != nil || len(st.GPUs) != 1 || len(st.GPUs[0].Instances) != 2 || st.GPUs[0].Instances[1].Compute[0].UUID != "MIG-8b0d2f4a-6c8e-5a0c-b2d4-6e8a0c2e4f22" {
		t.Errorf("second report's GPUs: %v %s", err, reps[1].GPUs)
	}

	reps, calls = r.round(a, mig3g2)
	golden(t, "mig-again.calls", calls)
	if len(reps) != 1 || reps[0].Applied != "mig 3g.40gb,3g.40gb" {
		t.Errorf("second round: %+v", reps)
	}
	if strings.Contains(calls, "-cgi") || strings.Contains(calls, "ApplyMIG") {
		t.Errorf("applied again on the same boot:\n%s", calls)
	}

	// The reboot: MIG mode outlives it, the instances do not.
	r.s.State, r.boot = "on", r.boot.Add(time.Hour)
	r.reboot()
	reps, calls = r.round(a, mig3g2)
	golden(t, "mig-reboot.calls", calls)
	if len(reps) != 2 || reps[0].Applied != "" || !reps[0].Booted.Equal(r.boot) || reps[1].Applied != "mig 3g.40gb,3g.40gb" {
		t.Errorf("after the reboot: %+v", reps)
	}
	if r.s.State != "layout" {
		t.Errorf("host left in state %s", r.s.State)
	}
}

// TestMIGBackedVGPU: a VM's mig device is the MIG-backed vGPU type of
// its profile, made on a virtual function; a profile no type serves is
// reported with what the card offers.
func TestMIGBackedVGPU(t *testing.T) {
	r := h100Host(t)
	a := r.agent()
	r.round(a, mig3g2)
	const id = "3f9c2a1e-7b4d-4e8f-9a6c-1d2e3f4a5b6c"
	w := mig3g2
	w.Devices = []protocol.HypervisorDevice{{VM: "vm-a", Kind: "mig", GPU: h100, Profile: "3g.40gb", Mdev: id}}
	reps, calls := r.round(a, w)
	golden(t, "mig-vgpu.calls", calls)
	if len(reps) != 2 {
		t.Fatalf("%d reports, want 2", len(reps))
	}
	want := []gpuconf.Mdev{{UUID: id, Type: "nvidia-1081", TypeName: "NVIDIA H100-3-40C", Parent: "0000:18:00.4", GPU: h100}}
	if d := cmp.Diff(want, reportMdevs(t, reps[1])); d != "" {
		t.Errorf("mdevs reported (-want +got):\n%s", d)
	}

	w.Devices = append(w.Devices, protocol.HypervisorDevice{VM: "vm-b", Kind: "mig", GPU: h100, Profile: "2g.20gb", Mdev: "4a0d3b2f-8c5e-4f90-ab7d-2e3f4a5b6c7d"})
	reps, _ = r.round(a, w)
	if len(reps) != 1 {
		t.Fatalf("%d reports, want 1: nothing changed", len(reps))
	}
	errs := a.LastErrors()
	wantErr := "VM vm-b: ensure mdev 4a0d3b2f-8c5e-4f90-ab7d-2e3f4a5b6c7d (mig 2g.20gb on 0000:18:00.0): 0000:18:00.4 offers no MIG-backed vGPU type named *-2-20C; it offers nvidia-1050 (NVIDIA H100-10C), nvidia-1080 (NVIDIA H100-3-40CME), nvidia-1081 (NVIDIA H100-3-40C), nvidia-1082 (NVIDIA H100-7-80C)"
	if d := cmp.Diff([]string{wantErr}, errs); d != "" {
		t.Errorf("errors (-want +got):\n%s", d)
	}
	reps, _ = r.round(a, w)
	if len(reps) != 1 || !slices.Equal(reps[0].Errors, []string{wantErr}) {
		t.Errorf("the next report's errors: %+v", reps)
	}
}

func reportMdevs(t *testing.T, rep protocol.HypervisorReport) []gpuconf.Mdev {
	t.Helper()
	var st gpuconf.State
	if err := json.Unmarshal(rep.GPUs, &st); err != nil {
		t.Fatal(err)
	}
	var ms []gpuconf.Mdev
	for _, g := range st.GPUs {
		ms = append(ms, g.Mdevs...)
	}
	return ms
}

const (
	t4   = "0000:3b:00.0"
	a100 = "0000:41:00.0"
)

// vgpuHost is a Tesla T4 (vGPUs on the card) and an A100-PCIE-40GB
// (vGPUs on SR-IOV virtual functions that sriov-manage enables).
func vgpuHost(t *testing.T) *rig {
	table := map[string]map[string]gpufake.Reply{
		"host": {
			smiQuery:        {File: "a100-t4/query.txt"},
			"nvidia-smi -L": {File: "a100-t4/list.txt"},
		},
	}
	r := newRig(t, table, "host")
	r.tr.PCI(t4, "10de", "1eb8", "030200")
	r.tr.MdevType(t4, "nvidia-222", "GRID T4-1B", 16)
	r.tr.MdevType(t4, "nvidia-233", "GRID T4-8Q", 2)
	r.tr.PCI(a100, "10de", "20f1", "030200")
	vfs := []string{"0000:41:00.4", "0000:41:00.5"}
	table["host"]["/usr/lib/nvidia/sriov-manage -e "+a100] = gpufake.Reply{Do: func() {
		for i, vf := range vfs {
			r.tr.PCI(vf, "10de", "20f1", "030200")
			r.tr.VF(a100, vf, i)
			r.tr.MdevType(vf, "nvidia-472", "NVIDIA A100-10C", 1)
			r.tr.MdevType(vf, "nvidia-473", "NVIDIA A100-20C", 1)
		}
	}}
	return r
}

func TestVGPUDevices(t *testing.T) {
	r := vgpuHost(t)
	a := r.agent()
	const (
		idA = "11111111-2222-4333-8444-555555555555"
		idB = "66666666-7777-4888-9999-aaaaaaaaaaaa"
		idC = "bbbbbbbb-cccc-4ddd-aeee-ffffffffffff"
	)
	w := protocol.HypervisorWork{GPUMode: "vgpu", Devices: []protocol.HypervisorDevice{}}
	reps, calls := r.round(a, w)
	golden(t, "vgpu-first.calls", calls)
	if len(reps) != 2 || reps[1].Applied != "vgpu" {
		t.Errorf("first round: %+v", reps)
	}

	w.Devices = []protocol.HypervisorDevice{
		{VM: "vm-a", Kind: "vgpu", GPU: a100, Profile: "nvidia-472", Mdev: idA},
		{VM: "vm-b", Kind: "vgpu", GPU: t4, Profile: "nvidia-233", Mdev: idB},
		{VM: "vm-c", Kind: "vgpu", GPU: a100, Profile: "nvidia-472", Mdev: idC},
	}
	reps, calls = r.round(a, w)
	golden(t, "vgpu-create.calls", calls)
	want := []gpuconf.Mdev{
		{UUID: idB, Type: "nvidia-233", TypeName: "GRID T4-8Q", Parent: t4, GPU: t4},
		{UUID: idA, Type: "nvidia-472", TypeName: "NVIDIA A100-10C", Parent: "0000:41:00.4", GPU: a100},
		{UUID: idC, Type: "nvidia-472", TypeName: "NVIDIA A100-10C", Parent: "0000:41:00.5", GPU: a100},
	}
	if len(reps) != 2 {
		t.Fatalf("%d reports, want 2: the mdevs are reported at once", len(reps))
	}
	if d := cmp.Diff(want, reportMdevs(t, reps[1])); d != "" {
		t.Errorf("mdevs reported (-want +got):\n%s", d)
	}

	// vm-b goes: its mdev is removed; vm-a's is in use and the kernel
	// refuses, which the next report says.
	w.Devices = []protocol.HypervisorDevice{w.Devices[2]}
	r.k.Busy[idA] = true
	reps, calls = r.round(a, w)
	golden(t, "vgpu-remove.calls", calls)
	if len(reps) != 2 {
		t.Fatalf("%d reports, want 2", len(reps))
	}
	if d := cmp.Diff([]gpuconf.Mdev{want[1], want[2]}, reportMdevs(t, reps[1])); d != "" {
		t.Errorf("mdevs reported (-want +got):\n%s", d)
	}
	wantErr := []string{"mdev " + idA + " on " + a100 + " is in no VM's devices, but: remove mdev " + idA + ": write " + idA + "/remove: device or resource busy"}
	if d := cmp.Diff(wantErr, reps[1].Errors); d != "" {
		t.Errorf("errors reported (-want +got):\n%s", d)
	}

	// Given back: removed on the next round, and the errors clear.
	delete(r.k.Busy, idA)
	reps, _ = r.round(a, w)
	if len(reps) != 2 || len(reps[1].Errors) > 0 {
		t.Fatalf("reports %+v", reps)
	}
	if d := cmp.Diff([]gpuconf.Mdev{want[2]}, reportMdevs(t, reps[1])); d != "" {
		t.Errorf("mdevs reported (-want +got):\n%s", d)
	}
}

const (
	l40a = "0000:65:00.0"
	l40b = "0000:66:00.0"
)

// TestPassthroughReset: a GPU given back is reset once, also by an agent
// that restarted meanwhile. The host has no NVIDIA driver (its GPUs are
// on vfio-pci): the report carries no GPUs and, in passthrough, no error.
func TestPassthroughReset(t *testing.T) {
	r := newRig(t, nil, "")
	r.noDriver()
	for _, g := range []string{l40a, l40b} {
		r.tr.PCI(g, "10de", "26b9", "030200")
		r.tr.Write(gpufake.DevDir(g)+"/reset", "")
	}
	a := r.agent()
	dev := func(vm, gpu string) protocol.HypervisorDevice {
		return protocol.HypervisorDevice{VM: vm, Kind: "passthrough", GPU: gpu}
	}
	w := protocol.HypervisorWork{GPUMode: "passthrough", Devices: []protocol.HypervisorDevice{dev("vm-a", l40a), dev("vm-b", l40b)}}
	reps, _ := r.round(a, w)
	for _, rep := range reps {
		if rep.GPUs != nil || len(rep.Errors) > 0 {
			t.Errorf("report %+v, want no GPUs and no errors", rep)
		}
	}
	held := func() string {
		st := r.saved()
		return strings.Join(append(slices.Sorted(maps.Keys(st.Passthrough)), st.Owed...), " ")
	}
	if got := held(); got != l40a+" "+l40b {
		t.Errorf("state file holds %q", got)
	}
	w.Devices = w.Devices[1:]
	r.round(a, w)
	r.round(a, w)
	if d := cmp.Diff(map[string]int{l40a: 1}, r.k.Resets); d != "" {
		t.Errorf("resets (-want +got):\n%s", d)
	}
	if got := r.tr.Read(gpufake.DevDir(l40a) + "/reset"); got != "1" {
		t.Errorf("%s reset holds %q", l40a, got)
	}
	if got := held(); got != l40b {
		t.Errorf("state file holds %q", got)
	}

	// The agent restarts; vm-b was given back while it was down.
	a = r.agent()
	w.Devices = nil
	r.round(a, w)
	r.round(a, w)
	if d := cmp.Diff(map[string]int{l40a: 1, l40b: 1}, r.k.Resets); d != "" {
		t.Errorf("resets (-want +got):\n%s", d)
	}
	if got := held(); got != "" {
		t.Errorf("state file holds %q", got)
	}

	// A mode that needs GPUs says the driver is missing, on the report
	// after the answer that asked for it.
	r.round(a, protocol.HypervisorWork{GPUMode: "vgpu"})
	reps, _ = r.round(a, protocol.HypervisorWork{GPUMode: "vgpu"})
	if len(reps) != 1 || !slices.ContainsFunc(reps[0].Errors, func(e string) bool {
		return e == "GPU mode vgpu, but this host has no NVIDIA driver (nvidia-smi not found)"
	}) {
		t.Errorf("vgpu without a driver: %+v", reps)
	}
}

func TestTokenRefused(t *testing.T) {
	r := newRig(t, nil, "")
	r.noDriver()
	r.api.status = http.StatusUnauthorized
	r.api.body = `{"error":{"code":"token_invalid","message":"the hypervisor token was revoked"}}`
	_, err := r.agent().Round(context.Background())
	if !errors.Is(err, ErrTokenRefused) {
		t.Fatalf("Round = %v, want ErrTokenRefused", err)
	}
	for _, want := range []string{"hypervisor call", "refused the hypervisor token", "401 Unauthorized token_invalid: the hypervisor token was revoked", "token file"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	r.api.status, r.api.body = http.StatusInternalServerError, "<html>oops</html>"
	_, err = r.agent().Round(context.Background())
	if err == nil || errors.Is(err, ErrTokenRefused) || !strings.Contains(err.Error(), "500 Internal Server Error") {
		t.Errorf("Round on a 500 = %v", err)
	}
}

func TestRunStops(t *testing.T) {
	r := newRig(t, nil, "")
	r.noDriver()
	r.api.set(protocol.HypervisorWork{Interval: protocol.Duration(time.Millisecond)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.agent().Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r.api.mu.Lock()
		n := len(r.api.reports)
		r.api.mu.Unlock()
		if n >= 2 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run = %v, want nil when ctx ends", err)
	}
	if n := len(r.api.taken()); n < 2 {
		t.Errorf("Run called in %d times", n)
	}
}

func TestInterval(t *testing.T) {
	for _, tc := range []struct{ in, want time.Duration }{
		{0, 10 * time.Second},
		{time.Millisecond, time.Second},
		{30 * time.Second, 30 * time.Second},
		{time.Hour, 5 * time.Minute},
	} {
		if got := interval(protocol.Duration(tc.in)); got != tc.want {
			t.Errorf("interval(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestBootTime(t *testing.T) {
	p := filepath.Join(t.TempDir(), "stat")
	if err := os.WriteFile(p, []byte("cpu  1 2 3\nintr 5\nbtime 1772352000\nprocesses 9\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := BootTime(p); err != nil || !got.Equal(time.Unix(1772352000, 0)) {
		t.Errorf("BootTime = %v, %v", got, err)
	}
	if err := os.WriteFile(p, []byte("cpu  1 2 3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := BootTime(p); err == nil || !strings.Contains(err.Error(), "no btime") {
		t.Errorf("BootTime without btime = %v", err)
	}
}

func TestLoadConfig(t *testing.T) {
	dir := t.TempDir()
	n := 0
	write := func(s string, mode os.FileMode) string {
		n++
		p := filepath.Join(dir, fmt.Sprint("f", n))
		if err := os.WriteFile(p, []byte(s), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // past the umask
			t.Fatal(err)
		}
		return p
	}
	const pin = "sha256:" + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	good := write("rackboot.api=https://rackboot.example:8443 rackboot.node=node-7 rackboot.ca="+pin+"\n", 0o644)
	tok := write("  hv-token-1\n", 0o600)
	c, got, err := LoadConfig(good, tok)
	if err != nil || got != "hv-token-1" || c.API != "https://rackboot.example:8443/api/v1" || c.Node != "node-7" || len(c.Pins) != 1 {
		t.Errorf("LoadConfig = %+v, %q, %v", c, got, err)
	}
	for _, tc := range []struct {
		name, conf, token, want string
	}{
		{"no config", filepath.Join(dir, "missing"), tok, "no such file"},
		{"no api", write("rackboot.node=n\n", 0o644), tok, "no rackboot.api"},
		{"https without pins", write("rackboot.api=https://x rackboot.node=n", 0o644), tok, "no rackboot.ca"},
		{"no node", write("rackboot.api=http://x:8080", 0o644), tok, "no rackboot.node"},
		{"no token", good, filepath.Join(dir, "missing"), "no such file"},
		{"empty token", good, write(" \n", 0o600), "is empty"},
		{"token readable by others", good, write("hv-token-1\n", 0o644), "mode 0644 lets group or others read it"},
		{"token readable by group", good, write("hv-token-1\n", 0o640), "chmod 600"},
		{"two tokens", good, write("a b\n", 0o400), "more than one word"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := LoadConfig(tc.conf, tc.token)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("LoadConfig = %v, want an error saying %q", err, tc.want)
			}
			if err != nil && !strings.HasPrefix(err.Error(), "hypervisor ") {
				t.Errorf("error %q does not name what it read", err)
			}
		})
	}
}
