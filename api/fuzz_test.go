package api

import (
	"context"
	"encoding/json"
	"net"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/store"
	"github.com/rackboot/rackboot/store/sqlite"
)

// FuzzBodies sends every JSON body the API reads from people and agents
// with made-up bytes: no panic, and never a server error (a 5xx) for
// what is only a bad request. Routes that reach out of the appliance
// (URL imports, BMCs) are left out: a fuzzer must not make it connect
// anywhere.
func FuzzBodies(f *testing.F) {
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(f.TempDir(), "db"))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { st.Close() })
	mac, _ := net.ParseMAC("52:54:00:12:34:56")
	n, _, err := st.EnrollClient(ctx, boot.Client{MAC: mac, Arch: boot.ClientX64UEFI}, time.Now())
	if err != nil {
		f.Fatal(err)
	}
	st.SetState(ctx, n.ID, store.StateAvailable)
	st.CreateImage(ctx, store.Image{Name: "deb-x86", Arch: boot.ArchX86_64, Format: "raw.zst", SHA256: "ab", Size: 9})
	admin, hash := NewSecret()
	if _, err := st.CreateToken(ctx, store.Token{Hash: hash, Kind: "api", Name: "admin", Role: store.RoleAdmin}); err != nil {
		f.Fatal(err)
	}
	agent, ahash := NewSecret()
	if _, err := st.CreateToken(ctx, store.Token{Hash: ahash, Kind: "agent", Role: store.RoleAgent, NodeID: n.ID}); err != nil {
		f.Fatal(err)
	}
	h := New(st).Handler()
	routes := []struct{ method, path, token string }{
		{"POST", "/api/v1/login", ""},
		{"POST", "/api/v1/nodes", admin},
		{"PATCH", "/api/v1/nodes/" + n.ID, admin},
		{"POST", "/api/v1/nodes/" + n.ID + "/actions/inspect", admin},
		{"POST", "/api/v1/nodes/" + n.ID + "/actions/deploy", admin},
		{"POST", "/api/v1/nodes/" + n.ID + "/actions/wipe", admin},
		{"POST", "/api/v1/nodes/" + n.ID + "/actions/burnin", admin},
		{"POST", "/api/v1/nodes/" + n.ID + "/actions/maintenance", admin},
		{"POST", "/api/v1/tokens", admin},
		{"POST", "/api/v1/users", admin},
		{"POST", "/api/v1/agent/lookup", ""},
		{"POST", "/api/v1/agent/nodes/" + n.ID + "/inventory", agent},
		{"POST", "/api/v1/agent/nodes/" + n.ID + "/heartbeat", agent},
		{"POST", "/api/v1/agent/nodes/" + n.ID + "/tasks/t1", agent},
	}
	for i := range routes {
		f.Add(uint8(i), []byte(`{}`))
	}
	f.Add(uint8(1), []byte(`{"mac":"52:54:00:00:00:01","arch":"x86_64","name":"n"}`))
	f.Add(uint8(2), []byte(`{"name":"gpu-01","rack":"R1","position":3,"tags":["a"],"secure_boot":"on"}`))
	f.Add(uint8(4), []byte(`{"image":"deb-x86","cloud_init":{"user_data":"#cloud-config"},"root_device":{"size":">1"}}`))
	f.Add(uint8(10), []byte(`{"macs":["52:54:00:12:34:56"],"boot_secret":"00"}`))
	f.Add(uint8(11), []byte(`{"version":1,"cpu":{"count":8},"gpus":[{"model":"NVIDIA A100"}]}`))
	f.Add(uint8(12), []byte(`{"task":"t1","progress":{"phase":"writing","done":1,"total":2}}`))
	f.Add(uint8(13), []byte(`{"state":"done","result":{"x":1}}`))
	f.Fuzz(func(t *testing.T, which uint8, body []byte) {
		r := routes[int(which)%len(routes)]
		req := httptest.NewRequest(r.method, r.path, strings.NewReader(string(body)))
		req.Header.Set("Content-Type", "application/json")
		if r.token != "" {
			req.Header.Set("Authorization", "Bearer "+r.token)
		}
		// Each from an address of its own, so login throttling does not
		// turn the run into a run of 429s.
		req.RemoteAddr = net.JoinHostPort(net.IPv4(10, which, byte(len(body)), 1).String(), "40000")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code >= 500 {
			t.Fatalf("%s %s %q: %d %s", r.method, r.path, body, w.Code, w.Body)
		}
		if w.Code >= 400 {
			var e ErrorBody
			if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Error.Message == "" {
				t.Fatalf("%s %s %q: %d without an error message: %q", r.method, r.path, body, w.Code, w.Body)
			}
		}
	})
}
