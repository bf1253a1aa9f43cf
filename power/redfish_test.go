package power

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stmcginnis/gofish"
)

// vendor is the shape of one BMC's Redfish service: the paths and bodies
// it answers with, after each vendor's published examples (testdata/redfish).
type vendor struct {
	name   string
	system string // the ComputerSystem's path
	// allowed is the system's ResetType@Redfish.AllowableValues; nil
	// means the BMC names an @Redfish.ActionInfo instead (OpenBMC).
	allowed []string
	// unauthorized is the body of its 401.
	unauthorized string
	// resetStatus is how it answers a reset: 204 (iDRAC), 200 with a
	// body (iLO), 202 with a task monitor (OpenBMC here).
	resetStatus int
	resetBody   string
	// wantAuthMessage is in the error of a refused password.
	wantAuthMessage string
}

func load(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "redfish", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

var vendors = []vendor{
	{name: "openbmc", system: "/redfish/v1/Systems/system", resetStatus: 202,
		unauthorized: "", wantAuthMessage: "Unauthorized"},
	{name: "idrac", system: "/redfish/v1/Systems/System.Embedded.1",
		allowed:     []string{"On", "ForceOff", "ForceRestart", "GracefulRestart", "GracefulShutdown", "PushPowerButton", "Nmi", "PowerCycle"},
		resetStatus: 204, wantAuthMessage: "invalid username and/or password"},
	{name: "ilo", system: "/redfish/v1/Systems/1/",
		allowed:     []string{"On", "ForceOff", "GracefulShutdown", "ForceRestart", "Nmi", "PushPowerButton", "GracefulRestart"},
		resetStatus: 200, resetBody: `{"error":{"code":"iLO.0.10.ExtendedInfo","message":"See @Message.ExtendedInfo for more information.","@Message.ExtendedInfo":[{"MessageId":"Base.1.4.Success"}]}}`,
		wantAuthMessage: "Base.1.4.NoValidSession"},
}

// mockBMC serves a vendor's shapes: the service root, a systems
// collection of one, the system (its power state and boot override
// live), resets, PATCHes of Boot, and a task monitor.
type mockBMC struct {
	t     *testing.T
	v     vendor
	user  string
	pass  string
	mu    sync.Mutex
	power string
	boot  map[string]string
	calls []string
	// busy makes the next n requests answer 503.
	busy     int
	taskPoll int
}

func (m *mockBMC) record(s string) {
	m.calls = append(m.calls, s)
}

func (m *mockBMC) Calls() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.calls...)
}

func (m *mockBMC) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	m.mu.Lock()
	defer m.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	if m.busy > 0 {
		m.busy--
		w.WriteHeader(503)
		fmt.Fprint(w, `{"error":{"code":"Base.1.8.ServiceTemporarilyUnavailable","message":"The service is temporarily unavailable."}}`)
		return
	}
	root := strings.TrimSuffix(r.URL.Path, "/") == "/redfish/v1"
	if !root {
		u, p, ok := r.BasicAuth()
		if !ok || u != m.user || p != m.pass {
			w.Header().Set("WWW-Authenticate", `Basic realm="Redfish"`)
			w.WriteHeader(401)
			fmt.Fprint(w, load(m.t, m.v.name+"-401.json"))
			return
		}
	}
	sys := strings.TrimSuffix(m.v.system, "/")
	path := strings.TrimSuffix(r.URL.Path, "/")
	switch {
	case r.Method == "GET" && root:
		fmt.Fprint(w, load(m.t, m.v.name+"-root.json"))
	case r.Method == "GET" && path == "/redfish/v1/Systems":
		fmt.Fprintf(w, `{"@odata.id":"/redfish/v1/Systems","@odata.type":"#ComputerSystemCollection.ComputerSystemCollection","Members":[{"@odata.id":%q}],"Members@odata.count":1,"Name":"Computer System Collection"}`, m.v.system)
	case r.Method == "GET" && path == sys:
		body := load(m.t, m.v.name+"-system.json")
		body = strings.ReplaceAll(body, "{{POWER}}", m.power)
		for k, v := range m.boot {
			body = strings.ReplaceAll(body, "{{"+k+"}}", v)
		}
		w.Header().Set("ETag", `W/"`+m.power+`"`)
		fmt.Fprint(w, body)
	case r.Method == "POST" && path == sys+"/Actions/ComputerSystem.Reset":
		var in struct{ ResetType string }
		json.NewDecoder(r.Body).Decode(&in)
		m.record("reset " + in.ResetType)
		switch in.ResetType {
		case "On", "ForceRestart", "PowerCycle", "GracefulRestart":
			m.power = "On"
		case "ForceOff", "GracefulShutdown":
			m.power = "Off"
		default:
			w.WriteHeader(400)
			fmt.Fprint(w, `{"error":{"code":"Base.1.8.ActionParameterValueNotInList","message":"not in list"}}`)
			return
		}
		if m.v.resetStatus == 202 {
			w.Header().Set("Location", "/redfish/v1/TaskService/Tasks/7/Monitor")
			m.taskPoll = 0
		}
		w.WriteHeader(m.v.resetStatus)
		fmt.Fprint(w, m.v.resetBody)
	case r.Method == "GET" && path == "/redfish/v1/TaskService/Tasks/7/Monitor":
		m.taskPoll++
		m.record("task monitor")
		if m.taskPoll < 2 {
			w.WriteHeader(202)
			fmt.Fprint(w, `{"@odata.id":"/redfish/v1/TaskService/Tasks/7","TaskState":"Running","TaskStatus":"OK"}`)
			return
		}
		fmt.Fprint(w, `{"@odata.id":"/redfish/v1/TaskService/Tasks/7","TaskState":"Completed","TaskStatus":"OK","Messages":[{"Message":"The task with Id '7' has completed."}]}`)
	case r.Method == "PATCH" && path == sys:
		var in struct{ Boot map[string]string }
		json.NewDecoder(r.Body).Decode(&in)
		for k, v := range in.Boot {
			m.boot[k] = v
		}
		m.record(fmt.Sprintf("boot %s %s %s if-match=%s", in.Boot["BootSourceOverrideTarget"], in.Boot["BootSourceOverrideEnabled"], in.Boot["BootSourceOverrideMode"], r.Header.Get("If-Match")))
		w.WriteHeader(204)
	default:
		w.WriteHeader(404)
		fmt.Fprintf(w, `{"error":{"code":"Base.1.8.ResourceMissingAtURI","message":"The resource at the URI %s was not found."}}`, r.URL.Path)
	}
}

func newMock(t *testing.T, v vendor) *mockBMC {
	return &mockBMC{t: t, v: v, user: "root", pass: "calvin", power: "Off",
		boot: map[string]string{"BootSourceOverrideTarget": "None", "BootSourceOverrideEnabled": "Disabled", "BootSourceOverrideMode": "UEFI"}}
}

func redfishConfig(srv *httptest.Server, system string) Config {
	return Config{URL: "redfish://" + strings.TrimPrefix(srv.URL, "https://") + system, User: "root", Password: "calvin",
		Fingerprint: Fingerprint(srv.Certificate()), Timeout: 2 * time.Second, Backoff: 10 * time.Millisecond}
}

func TestRedfishVendors(t *testing.T) {
	ctx := context.Background()
	for _, v := range vendors {
		t.Run(v.name, func(t *testing.T) {
			m := newMock(t, v)
			srv := httptest.NewTLSServer(m)
			defer srv.Close()
			// The system named in the URL, and found in the collection.
			for _, system := range []string{strings.TrimSuffix(v.system, "/"), ""} {
				d, err := Dial(redfishConfig(srv, system))
				if err != nil {
					t.Fatal(err)
				}
				if st, err := d.State(ctx); err != nil || st != StateOff {
					t.Fatalf("State (system %q) = %s, %v", system, st, err)
				}
			}
			d, err := Dial(redfishConfig(srv, ""))
			if err != nil {
				t.Fatal(err)
			}
			cycle := "reset ForceRestart"
			if v.allowed != nil && contains(v.allowed, "PowerCycle") {
				cycle = "reset PowerCycle"
			}
			steps := []struct {
				do   func(context.Context) error
				want string
				then State
			}{
				{d.On, "reset On", StateOn},
				{d.On, "", StateOn}, // already on: nothing sent
				{d.Cycle, cycle, StateOn},
				{d.Reset, "reset ForceRestart", StateOn},
				{d.SoftOff, "reset GracefulShutdown", StateOff},
				{d.Off, "", StateOff},
				{d.Reset, "reset On", StateOn}, // off: powered on
				{d.Off, "reset ForceOff", StateOff},
				{d.Cycle, "reset On", StateOn},
			}
			for i, s := range steps {
				before := len(m.Calls())
				if err := s.do(ctx); err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
				var resets []string
				for _, c := range m.Calls()[before:] {
					if strings.HasPrefix(c, "reset") {
						resets = append(resets, c)
					}
				}
				if got := strings.Join(resets, ","); got != s.want {
					t.Errorf("step %d sent %q, want %q", i, got, s.want)
				}
				if st, err := d.State(ctx); err != nil || st != s.then {
					t.Errorf("after step %d: %s, %v; want %s", i, st, err, s.then)
				}
			}
			if v.resetStatus == 202 && !contains(m.Calls(), "task monitor") {
				t.Error("the reset's task monitor was not followed")
			}
			for _, tc := range []struct {
				b    Boot
				want string
			}{
				{Boot{Device: DevicePXE, UEFI: true}, "boot Pxe Once UEFI"},
				{Boot{Device: DeviceDisk, Persistent: true, UEFI: true}, "boot Hdd Continuous UEFI"},
				{Boot{Device: DevicePXE}, "boot Pxe Once Legacy"},
			} {
				if err := d.SetBootDevice(ctx, tc.b); err != nil {
					t.Fatal(err)
				}
				calls := m.Calls()
				if last := calls[len(calls)-1]; !strings.HasPrefix(last, tc.want+" if-match=W/") {
					t.Errorf("SetBootDevice(%+v) sent %q, want %q with the system's ETag", tc.b, last, tc.want)
				}
			}

			// A wrong password: ErrAuth with the vendor's words, at once.
			bad := redfishConfig(srv, "")
			bad.Password = "wrong"
			bd, _ := Dial(bad)
			before := len(m.Calls())
			_, err = bd.State(ctx)
			if !errors.Is(err, ErrAuth) || !strings.Contains(err.Error(), v.wantAuthMessage) || !strings.Contains(err.Error(), "401") {
				t.Fatalf("State with a wrong password: %v; want ErrAuth with %q", err, v.wantAuthMessage)
			}
			if len(m.Calls()) != before {
				t.Errorf("a refused password still reached the system: %v", m.Calls()[before:])
			}
			t.Logf("wrong password: %v", err)
		})
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func TestRedfishCertificate(t *testing.T) {
	ctx := context.Background()
	m := newMock(t, vendors[1])
	srv := httptest.NewTLSServer(m)
	defer srv.Close()
	// A wrong pin: refused in the handshake, never retried.
	c := redfishConfig(srv, "")
	c.Fingerprint = strings.Repeat("ab", 32)
	d, err := Dial(c)
	if err != nil {
		t.Fatal(err)
	}
	_, err = d.State(ctx)
	if !errors.Is(err, ErrCertificate) || !strings.Contains(err.Error(), Fingerprint(srv.Certificate())) || strings.Contains(err.Error(), "tries") {
		t.Fatalf("State with a wrong pin: %v", err)
	}
	// Colons and capitals in a pin are fine.
	c = redfishConfig(srv, "")
	var parts []string
	for i := 0; i < len(c.Fingerprint); i += 2 {
		parts = append(parts, strings.ToUpper(c.Fingerprint[i:i+2]))
	}
	c.Fingerprint = strings.Join(parts, ":")
	if d, err := Dial(c); err != nil {
		t.Fatal(err)
	} else if _, err := d.State(ctx); err != nil {
		t.Fatalf("State with an AB:CD pin: %v", err)
	}
	if _, err := Dial(Config{URL: c.URL, Fingerprint: "abc"}); err == nil {
		t.Fatal("a short pin was taken")
	}
	// No pin and no CA: the system roots do not know httptest's CA.
	c.Fingerprint = ""
	d, _ = Dial(c)
	if _, err := d.State(ctx); !errors.Is(err, ErrCertificate) || !strings.Contains(err.Error(), "--bmc-fingerprint") {
		t.Fatalf("State with an unknown CA: %v", err)
	}
	// The CA file that signed it.
	ca := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644)
	c.CAFile = ca
	d, err = Dial(c)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := d.State(ctx); err != nil || st != StateOff {
		t.Fatalf("State with the CA file: %s, %v", st, err)
	}
}

func TestRedfishHTTPAndRetries(t *testing.T) {
	ctx := context.Background()
	m := newMock(t, vendors[2])
	srv := httptest.NewServer(m)
	defer srv.Close()
	c := Config{URL: "redfish+http://" + strings.TrimPrefix(srv.URL, "http://"), User: "root", Password: "calvin", Timeout: time.Second, Backoff: 10 * time.Millisecond}
	d, err := Dial(c)
	if err != nil {
		t.Fatal(err)
	}
	// Two 503s: retried, then it works.
	m.mu.Lock()
	m.busy = 2
	m.mu.Unlock()
	if st, err := d.State(ctx); err != nil || st != StateOff {
		t.Fatalf("State after two 503s: %s, %v", st, err)
	}
	// Three: ErrNoAnswer after 3 tries.
	m.mu.Lock()
	m.busy = 3
	m.mu.Unlock()
	if _, err := d.State(ctx); !errors.Is(err, ErrNoAnswer) || !strings.Contains(err.Error(), "3 tries") || !strings.Contains(err.Error(), "temporarily unavailable") {
		t.Fatalf("State after three 503s: %v", err)
	}
	// A port nothing listens on.
	srv.Close()
	start := time.Now()
	if err := d.On(ctx); !errors.Is(err, ErrNoAnswer) || time.Since(start) > 30*time.Second {
		t.Fatalf("On against a closed port: %v after %s", err, time.Since(start))
	}
	// A reset type the BMC does not offer is refused before it is sent.
	m2 := newMock(t, vendors[2])
	m2.power = "On"
	srv2 := httptest.NewServer(m2)
	defer srv2.Close()
	d2, _ := Dial(Config{URL: "redfish+http://" + strings.TrimPrefix(srv2.URL, "http://"), User: "root", Password: "calvin"})
	err = d2.(*redfishDriver).call(ctx, "test", true, func(ctx context.Context, cl *gofish.APIClient, s *system) error {
		return d2.(*redfishDriver).reset(ctx, cl, s, "PowerCycle")
	})
	if err == nil || !strings.Contains(err.Error(), "allows only") {
		t.Fatalf("a reset type iLO does not offer: %v", err)
	}
}
