package handover

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/ironic/baremetal"
	"github.com/rackboot/rackboot/store"
	"github.com/rackboot/rackboot/store/sqlite"
)

// fakeIronic serves the part of Ironic's API the handover uses, with
// Ironic's error body, and can be told to refuse port creation.
type fakeIronic struct {
	mu        sync.Mutex
	nodes     map[string]baremetal.Node
	ports     map[string]baremetal.Port // by address
	failPorts bool
	n         int
	versions  []string
}

func newFakeIronic() *fakeIronic {
	return &fakeIronic{nodes: map[string]baremetal.Node{}, ports: map[string]baremetal.Port{}}
}

func ironicError(w http.ResponseWriter, code int, msg string) {
	inner, _ := json.Marshal(map[string]any{"faultstring": msg, "faultcode": "Client", "debuginfo": nil})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]string{"error_message": string(inner)})
}

func (f *fakeIronic) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.versions = append(f.versions, r.Header.Get("X-OpenStack-Ironic-API-Version"))
	path := r.URL.Path
	switch {
	case r.Method == "POST" && path == "/v1/nodes":
		var n baremetal.Node
		json.NewDecoder(r.Body).Decode(&n)
		for _, o := range f.nodes {
			if n.Name != "" && o.Name == n.Name {
				ironicError(w, 409, fmt.Sprintf("A node with name %s already exists.", n.Name))
				return
			}
		}
		f.n++
		n.UUID = fmt.Sprintf("00000000-0000-0000-0000-%012d", f.n)
		n.ProvisionState = baremetal.StateEnroll
		f.nodes[n.UUID] = n
		w.WriteHeader(201)
		json.NewEncoder(w).Encode(n)
	case r.Method == "POST" && path == "/v1/ports":
		var p baremetal.Port
		json.NewDecoder(r.Body).Decode(&p)
		if f.failPorts {
			ironicError(w, 400, "Invalid port")
			return
		}
		p.UUID = "port-" + p.Address
		f.ports[p.Address] = p
		w.WriteHeader(201)
		json.NewEncoder(w).Encode(p)
	case r.Method == "GET" && path == "/v1/nodes":
		var out []baremetal.Node
		for _, n := range f.nodes {
			out = append(out, n)
		}
		json.NewEncoder(w).Encode(map[string]any{"nodes": out})
	case r.Method == "GET" && path == "/v1/ports":
		var out []baremetal.Port
		if p, ok := f.ports[r.URL.Query().Get("address")]; ok {
			out = append(out, p)
		}
		json.NewEncoder(w).Encode(map[string]any{"ports": out})
	case strings.HasPrefix(path, "/v1/nodes/"):
		id := strings.TrimPrefix(path, "/v1/nodes/")
		n, ok := f.nodes[id]
		if !ok {
			ironicError(w, 404, "Node "+id+" could not be found.")
			return
		}
		if r.Method == "DELETE" {
			delete(f.nodes, id)
			for a, p := range f.ports {
				if p.NodeUUID == id {
					delete(f.ports, a)
				}
			}
			w.WriteHeader(204)
			return
		}
		json.NewEncoder(w).Encode(n)
	default:
		ironicError(w, 404, "no route")
	}
}

func (f *fakeIronic) setState(uuid, state string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := f.nodes[uuid]
	n.ProvisionState = state
	f.nodes[uuid] = n
}

type plainSecrets struct{}

func (plainSecrets) Open(sealed, ad []byte) ([]byte, error) {
	if !strings.HasPrefix(string(ad), "bmc-password:") {
		return nil, errors.New("wrong ad")
	}
	return sealed, nil
}

func setup(t *testing.T) (*Service, *fakeIronic, store.Store) {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	f := newFakeIronic()
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	s := &Service{Store: st, Ironic: &baremetal.Client{URL: srv.URL}, Secrets: plainSecrets{},
		PasswordAD: func(id string) []byte { return []byte("bmc-password:" + id) }}
	return s, f, st
}

func enroll(t *testing.T, st store.Store, mac string, arch boot.ClientArch) store.Node {
	t.Helper()
	m, _ := net.ParseMAC(mac)
	n, _, err := st.EnrollClient(context.Background(), boot.Client{MAC: m, Arch: arch}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestToIronicAndBack(t *testing.T) {
	ctx := context.Background()
	s, f, st := setup(t)
	n := enroll(t, st, "52:54:00:00:00:01", boot.ClientX64UEFI)
	name := "gpu-01"
	if _, err := st.UpdateNode(ctx, n.ID, store.NodePatch{Name: &name}); err != nil {
		t.Fatal(err)
	}
	inv := `{"cpu":{"count":64,"architecture":"x86_64"},"memory":{"total":1,"physical_mb":524288},
		"disks":[{"name":"/dev/sda","size":480103981056},{"name":"/dev/nvme0n1","size":3840755982336}],
		"boot":{"current_boot_mode":"uefi","pxe_interface":"52:54:00:00:00:01"}}`
	if err := st.SetInventory(ctx, n.ID, json.RawMessage(inv), nil); err != nil {
		t.Fatal(err)
	}
	if err := st.SetBMC(ctx, store.BMC{NodeID: n.ID, URL: "ipmi://10.1.0.5:6230", User: "admin", Password: []byte("s3cret")}); err != nil {
		t.Fatal(err)
	}

	res, err := s.ToIronic(ctx, "gpu-01", Options{ConductorGroup: "g1"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Node.Owner != store.OwnerIronic || res.IronicUUID == "" || res.IronicState != baremetal.StateEnroll {
		t.Fatalf("result %+v", res)
	}
	in := f.nodes[res.IronicUUID]
	want := map[string]any{"ipmi_address": "10.1.0.5", "ipmi_port": float64(6230), "ipmi_username": "admin", "ipmi_password": "s3cret"}
	for k, v := range want {
		if in.DriverInfo[k] != v {
			t.Errorf("driver_info[%s] = %v, want %v", k, in.DriverInfo[k], v)
		}
	}
	if in.Driver != "ipmi" || in.Name != "gpu-01" || in.Extra["rackboot_node"] != n.ID || in.ConductorGroup != "g1" {
		t.Errorf("ironic node %+v", in)
	}
	props := map[string]any{"cpus": float64(64), "memory_mb": float64(524288), "local_gb": float64(3575), "cpu_arch": "x86_64", "capabilities": "boot_mode:uefi"}
	for k, v := range props {
		if in.Properties[k] != v {
			t.Errorf("properties[%s] = %v, want %v", k, in.Properties[k], v)
		}
	}
	if p := f.ports["52:54:00:00:00:01"]; p.NodeUUID != res.IronicUUID || p.PXEEnabled == nil || !*p.PXEEnabled {
		t.Errorf("port %+v", p)
	}
	for _, v := range f.versions {
		if v != baremetal.APIVersion {
			t.Errorf("a request asked for API version %q", v)
		}
	}
	// Twice is refused.
	if _, err := s.ToIronic(ctx, n.ID, Options{}); !errors.Is(err, ErrState) {
		t.Errorf("second handover: %v", err)
	}

	// Ironic deploys it: it cannot be taken back.
	f.setState(res.IronicUUID, "active")
	if _, err := s.ToRackboot(ctx, n.ID); !errors.Is(err, ErrState) || !strings.Contains(err.Error(), "active") {
		t.Errorf("take back from an active node: %v", err)
	}
	if got, _ := st.Node(ctx, n.ID); got.Owner != store.OwnerIronic {
		t.Errorf("owner %s after a refused take back", got.Owner)
	}
	// Cleaned and released: taken back, deleted in Ironic.
	f.setState(res.IronicUUID, baremetal.StateAvailable)
	back, err := s.ToRackboot(ctx, n.ID)
	if err != nil {
		t.Fatal(err)
	}
	if back.Node.Owner != store.OwnerRackboot || back.IronicUUID != res.IronicUUID {
		t.Errorf("take back: %+v", back)
	}
	if len(f.nodes) != 0 || len(f.ports) != 0 {
		t.Errorf("Ironic still has %d nodes, %d ports", len(f.nodes), len(f.ports))
	}
	if _, err := s.ToRackboot(ctx, n.ID); !errors.Is(err, ErrState) {
		t.Errorf("second take back: %v", err)
	}

	// Handed over again; in Ironic its port is deleted and the MAC given
	// to a node of Ironic's own: the node made for rackboot is still
	// found (by extra), and the other one blocks the take back.
	res, err = s.ToIronic(ctx, n.ID, Options{})
	if err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	delete(f.ports, "52:54:00:00:00:01")
	f.mu.Unlock()
	f.setState(res.IronicUUID, "active")
	if _, err := s.ToRackboot(ctx, n.ID); !errors.Is(err, ErrState) || !strings.Contains(err.Error(), "active") {
		t.Errorf("take back of a node Ironic runs, found without its port: %v", err)
	}
	f.setState(res.IronicUUID, baremetal.StateAvailable)
	f.mu.Lock()
	f.ports["52:54:00:00:00:01"] = baremetal.Port{Address: "52:54:00:00:00:01", NodeUUID: "theirs"}
	f.mu.Unlock()
	if _, err := s.ToRackboot(ctx, n.ID); !errors.Is(err, ErrState) || !strings.Contains(err.Error(), "theirs") {
		t.Errorf("take back with Ironic's own node on the MAC: %v", err)
	}
}

// TestToIronicLostAnswer: Ironic made the node but its answer was lost
// (a 503 from a proxy): the node made is deleted again.
func TestToIronicLostAnswer(t *testing.T) {
	ctx := context.Background()
	s, f, st := setup(t)
	n := enroll(t, st, "52:54:00:00:00:05", boot.ClientX64UEFI)
	s.Ironic = &lossyCreate{Ironic: s.Ironic, f: f}
	if _, err := s.ToIronic(ctx, n.ID, Options{}); err == nil {
		t.Fatal("a lost answer counted as a handover")
	}
	if len(f.nodes) != 0 {
		t.Errorf("Ironic kept %d nodes after the lost answer", len(f.nodes))
	}
}

// lossyCreate makes the node in Ironic and then answers 503.
type lossyCreate struct {
	Ironic
	f *fakeIronic
}

func (l *lossyCreate) CreateNode(ctx context.Context, n baremetal.Node) (baremetal.Node, error) {
	if _, err := l.Ironic.CreateNode(ctx, n); err != nil {
		return baremetal.Node{}, err
	}
	return baremetal.Node{}, &baremetal.Error{Op: "create node", Status: 503, Message: "Service Unavailable"}
}

// TestToIronicUndoes: a step Ironic refuses leaves nothing behind in
// either system.
func TestToIronicUndoes(t *testing.T) {
	ctx := context.Background()
	s, f, st := setup(t)
	n := enroll(t, st, "52:54:00:00:00:02", boot.ClientARM64UEFI)
	f.failPorts = true
	_, err := s.ToIronic(ctx, n.ID, Options{})
	var ie *baremetal.Error
	if !errors.As(err, &ie) || ie.Message != "Invalid port" || !strings.Contains(err.Error(), "deleted again") {
		t.Fatalf("err %v: want Ironic's message and the undo", err)
	}
	if len(f.nodes) != 0 {
		t.Errorf("Ironic kept %d nodes", len(f.nodes))
	}
	if got, _ := st.Node(ctx, n.ID); got.Owner != store.OwnerRackboot {
		t.Errorf("owner %s", got.Owner)
	}
	f.failPorts = false
	// Without a BMC: the configured hardware type, no driver info.
	s.Driver, s.ConductorGroup = "fake-hardware", "arm"
	res, err := s.ToIronic(ctx, n.ID, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if in := f.nodes[res.IronicUUID]; in.Driver != "fake-hardware" || in.ConductorGroup != "arm" || len(in.DriverInfo) != 0 || in.Properties["cpu_arch"] != "aarch64" {
		t.Errorf("ironic node %+v", in)
	}
}

func TestRefusals(t *testing.T) {
	ctx := context.Background()
	s, f, st := setup(t)
	busy := enroll(t, st, "52:54:00:00:00:03", boot.ClientX64UEFI)
	if err := st.SetState(ctx, busy.ID, store.StateDeploying); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ToIronic(ctx, busy.ID, Options{}); !errors.Is(err, ErrState) || !strings.Contains(err.Error(), "deploying") {
		t.Errorf("a deploying node: %v", err)
	}
	// A MAC Ironic already has.
	taken := enroll(t, st, "52:54:00:00:00:04", boot.ClientX64UEFI)
	f.ports["52:54:00:00:00:04"] = baremetal.Port{Address: "52:54:00:00:00:04", NodeUUID: "other"}
	if _, err := s.ToIronic(ctx, taken.ID, Options{}); !errors.Is(err, ErrState) || !strings.Contains(err.Error(), "other") {
		t.Errorf("a MAC Ironic has: %v", err)
	}
	if len(f.nodes) != 0 {
		t.Errorf("Ironic got %d nodes", len(f.nodes))
	}
	// An Ironic that does not answer.
	s.Ironic = &baremetal.Client{URL: "http://127.0.0.1:1", HTTP: &http.Client{Timeout: 2 * time.Second}}
	if _, err := s.ToIronic(ctx, taken.ID, Options{}); err == nil || errors.Is(err, ErrState) {
		t.Errorf("a dead Ironic: %v", err)
	}
	if got, _ := st.Node(ctx, taken.ID); got.Owner != store.OwnerRackboot {
		t.Errorf("owner %s", got.Owner)
	}
}

// racingStore starts a deploy of the node just before the handover moves
// its owner, as another tech's action between the check and the move.
type racingStore struct{ store.Store }

func (r racingStore) SetOwner(ctx context.Context, id, from, to string, states ...store.State) (store.Node, error) {
	r.Store.SetState(ctx, id, store.StateDeploying)
	return r.Store.SetOwner(ctx, id, from, to, states...)
}

// TestToIronicLosesTheRace: the action wins; the node made in Ironic is
// deleted again and rackboot keeps the node.
func TestToIronicLosesTheRace(t *testing.T) {
	ctx := context.Background()
	s, f, st := setup(t)
	n := enroll(t, st, "52:54:00:00:00:06", boot.ClientX64UEFI)
	s.Store = racingStore{st}
	if _, err := s.ToIronic(ctx, n.ID, Options{}); !errors.Is(err, ErrState) {
		t.Fatalf("err %v, want ErrState", err)
	}
	if len(f.nodes) != 0 {
		t.Errorf("Ironic kept %d nodes", len(f.nodes))
	}
	if got, _ := st.Node(ctx, n.ID); got.Owner != store.OwnerRackboot || got.State != store.StateDeploying {
		t.Errorf("node %s, %s", got.Owner, got.State)
	}
}
