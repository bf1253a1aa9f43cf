package api

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/store"
	"github.com/rackboot/rackboot/store/sqlite"
)

type fixture struct {
	srv    *httptest.Server
	st     store.Store
	api    *Server
	node   store.Node // available, x86_64, with a GPU inventory
	tokens map[store.Role]string
	bmc    *fakeBMC // the node's BMC, ipmi://10.9.9.9 with admin/pw-of-gpu-01
	// vm and hypervisor, once withVMs made them, stand for {id} in the
	// routes of VMs and hypervisors.
	vm, hypervisor string
}

const bootstrap = "bootstrap-secret"

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	mac, _ := net.ParseMAC("52:54:00:12:34:56")
	n, _, err := st.EnrollClient(ctx, boot.Client{MAC: mac, Arch: boot.ClientX64UEFI}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range []boot.Event{
		{Time: time.Now(), Proto: "dhcp", Kind: "discover", Options: map[string]string{"93": "7"}},
		{Time: time.Now(), Proto: "dhcp", Kind: "offer", File: "ipxe/snponly.efi"},
		{Time: time.Now(), Proto: "tftp", Kind: "file", File: "ipxe/snponly.efi", Bytes: 10, Size: 10, Complete: true},
	} {
		if err := st.AddTrace(ctx, n.ID, e); err != nil {
			t.Fatal(err)
		}
	}
	st.SetState(ctx, n.ID, store.StateAvailable)
	st.SetInventory(ctx, n.ID, json.RawMessage(`{"version":1,"cpu":{"count":8}}`), []string{"NVIDIA A100-SXM4-40GB"})
	st.UpdateNode(ctx, n.ID, store.NodePatch{Name: ptr("gpu-01"), Rack: ptr("R1"), Position: ptr(7)})
	st.CreateImage(ctx, store.Image{Name: "deb-x86", Arch: boot.ArchX86_64, Format: "raw.zst", SHA256: "ab", Size: 9})
	st.CreateImage(ctx, store.Image{Name: "deb-arm", Arch: boot.ArchAArch64, Format: "raw.zst", SHA256: "cd", Size: 9})
	n, _ = st.Node(ctx, n.ID)
	f := &fixture{st: st, node: n, tokens: map[store.Role]string{}}
	for _, r := range []store.Role{store.RoleAdmin, store.RoleTech, store.RoleReadonly} {
		secret, hash := NewSecret()
		if _, err := st.CreateToken(ctx, store.Token{Hash: hash, Kind: "api", Name: string(r), Role: r}); err != nil {
			t.Fatal(err)
		}
		f.tokens[r] = secret
	}
	hash, _ := HashPassword("correct horse battery")
	st.PutUser(ctx, store.User{Name: "ann", Role: store.RoleTech, PasswordHash: hash})
	f.api = New(st)
	f.api.Version = "test"
	f.bmc = withFakeBMC(t, f.api, st, n.ID)
	// The bootstrap token is an admin API token like any other, as the
	// appliance stores the one in its data dir.
	if _, err := st.CreateToken(ctx, store.Token{ID: "bootstrap-test", Hash: HashSecret(bootstrap), Kind: "api", Role: store.RoleAdmin, Name: "bootstrap"}); err != nil {
		t.Fatal(err)
	}
	f.srv = httptest.NewServer(f.api.Handler())
	t.Cleanup(f.srv.Close)
	return f
}

func ptr[T any](v T) *T { return &v }

func (f *fixture) call(t *testing.T, c *http.Client, method, path, token, body string, hdr ...string) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, f.srv.URL+path, rd)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func TestRoutes(t *testing.T) {
	f := newFixture(t)
	id := f.node.ID
	admin, tech := f.tokens[store.RoleAdmin], f.tokens[store.RoleTech]
	tests := []struct {
		name, method, path, token, body string
		code                            int
		want                            string // a substring of the answer
	}{
		{"list", "GET", "/api/v1/nodes", tech, "", 200, `"gpu-01"`},
		{"list by gpu", "GET", "/api/v1/nodes?gpu=a100", tech, "", 200, id},
		{"list by gpu, none", "GET", "/api/v1/nodes?gpu=h100", tech, "", 200, `"items": []`},
		{"list by state", "GET", "/api/v1/nodes?state=available&rack=R1", tech, "", 200, id},
		{"list bad limit", "GET", "/api/v1/nodes?limit=0", tech, "", 400, `"bad_request"`},
		{"get by name", "GET", "/api/v1/nodes/gpu-01", tech, "", 200, `"cpu"`},
		{"get by MAC", "GET", "/api/v1/nodes/52:54:00:12:34:56", tech, "", 200, id},
		{"get unknown", "GET", "/api/v1/nodes/nope", tech, "", 404, `"not_found"`},
		{"patch", "PATCH", "/api/v1/nodes/" + id, tech, `{"rack":"R9","tags":["hv"],"secure_boot":"on"}`, 200, `"R9"`},
		{"patch bad JSON", "PATCH", "/api/v1/nodes/" + id, tech, `{"rack":`, 400, "bad JSON"},
		{"patch unknown field", "PATCH", "/api/v1/nodes/" + id, tech, `{"colour":"red"}`, 400, "colour"},
		{"patch bad secure boot", "PATCH", "/api/v1/nodes/" + id, tech, `{"secure_boot":"maybe"}`, 400, "secure_boot"},
		{"patch bad owner", "PATCH", "/api/v1/nodes/" + id, tech, `{"owner":"me"}`, 400, "owner"},
		{"patch unknown", "PATCH", "/api/v1/nodes/nope", tech, `{"rack":"x"}`, 404, "not_found"},
		{"trace", "GET", "/api/v1/nodes/" + id + "/trace", tech, "", 200, `"stage": "loader"`},
		{"trace unknown", "GET", "/api/v1/nodes/nope/trace", tech, "", 404, "not_found"},
		{"deploy wrong arch", "POST", "/api/v1/nodes/" + id + "/actions/deploy", tech, `{"image":"deb-arm"}`, 409, "aarch64"},
		{"deploy no image", "POST", "/api/v1/nodes/" + id + "/actions/deploy", tech, `{}`, 400, "needs an image"},
		{"release available", "POST", "/api/v1/nodes/" + id + "/actions/release", tech, ``, 409, "needs the node active"},
		{"unknown action", "POST", "/api/v1/nodes/" + id + "/actions/explode", tech, ``, 400, "unknown action"},
		{"action bad JSON", "POST", "/api/v1/nodes/" + id + "/actions/inspect", tech, `[`, 400, "bad JSON"},
		{"action unknown node", "POST", "/api/v1/nodes/nope/actions/inspect", tech, ``, 404, "not_found"},
		{"deploy", "POST", "/api/v1/nodes/" + id + "/actions/deploy", tech, `{"image":"deb-x86","reason":"ticket 7"}`, 200, `"to": "deploying"`},
		{"inspect while deploying", "POST", "/api/v1/nodes/" + id + "/actions/inspect", tech, ``, 409, "node is deploying"},
		{"maintenance on", "POST", "/api/v1/nodes/" + id + "/actions/maintenance", tech, `{"on":true,"reason":"fan"}`, 200, `"to": "maintenance"`},
		{"maintenance without on", "POST", "/api/v1/nodes/" + id + "/actions/maintenance", tech, `{}`, 400, "maintenance needs"},
		{"events", "GET", "/api/v1/events?node=" + id, tech, "", 200, "ticket 7"},
		{"events bad after", "GET", "/api/v1/events?after=x", tech, "", 400, "after"},
		{"events newest first", "GET", "/api/v1/events?order=desc&limit=1&node=" + id, tech, "", 200, "maintenance on"},
		{"events bad order", "GET", "/api/v1/events?order=up", tech, "", 400, "order"},
		{"events bad before", "GET", "/api/v1/events?order=desc&before=-1", tech, "", 400, "before"},
		{"events unknown node", "GET", "/api/v1/events?node=nope", tech, "", 404, "not_found"},
		{"tasks", "GET", "/api/v1/tasks?node=" + id, tech, "", 200, `"deploy"`},
		{"task unknown", "GET", "/api/v1/tasks/nope", tech, "", 404, "not_found"},
		{"images", "GET", "/api/v1/images", tech, "", 200, "deb-arm"},
		{"image", "GET", "/api/v1/images/deb-arm", tech, "", 200, `"aarch64"`},
		{"image unknown", "GET", "/api/v1/images/nope", tech, "", 404, "not_found"},
		{"image delete", "DELETE", "/api/v1/images/deb-arm", admin, "", 204, ""},
		{"image delete again", "DELETE", "/api/v1/images/deb-arm", admin, "", 404, "not_found"},
		{"token bad role", "POST", "/api/v1/tokens", admin, `{"name":"x","role":"root"}`, 400, "role"},
		{"token no name", "POST", "/api/v1/tokens", admin, `{"role":"tech"}`, 400, "name"},
		{"token bad ttl", "POST", "/api/v1/tokens", admin, `{"name":"x","role":"tech","ttl":"soon"}`, 400, "ttl"},
		{"token delete unknown", "DELETE", "/api/v1/tokens/nope", admin, "", 404, "not_found"},
		{"user short password", "POST", "/api/v1/users", admin, `{"name":"bob","password":"short","role":"tech"}`, 400, "12 characters"},
		{"user bad name", "POST", "/api/v1/users", admin, `{"name":"bob smith","password":"long enough password","role":"tech"}`, 400, "user name"},
		{"user bad role", "POST", "/api/v1/users", admin, `{"name":"bob","password":"long enough password","role":"god"}`, 400, "role"},
		{"user", "POST", "/api/v1/users", admin, `{"name":"bob","password":"long enough password","role":"readonly"}`, 201, `"readonly"`},
		{"users", "GET", "/api/v1/users", admin, "", 200, `"bob"`},
		{"user delete unknown", "DELETE", "/api/v1/users/nope", admin, "", 404, "not_found"},
		{"whoami", "GET", "/api/v1/whoami", tech, "", 200, `"role": "tech"`},
		{"version", "GET", "/api/v1/version", tech, "", 200, `"test"`},
		{"unknown route", "GET", "/api/v1/nothing", tech, "", 404, "no such route"},
		{"wrong method", "PUT", "/api/v1/nodes", tech, "", 405, "not allowed"},
		{"metrics", "GET", "/metrics", "", "", 200, `rackboot_nodes{state="maintenance"} 1`},
		{"delete node", "DELETE", "/api/v1/nodes/" + id, admin, "", 204, ""},
		{"delete node again", "DELETE", "/api/v1/nodes/" + id, admin, "", 404, "not_found"},
	}
	for _, tc := range tests {
		code, body := f.call(t, nil, tc.method, tc.path, tc.token, tc.body)
		if code != tc.code || !strings.Contains(string(body), tc.want) {
			t.Errorf("%s: %s %s = %d %s; want %d with %q", tc.name, tc.method, tc.path, code, body, tc.code, tc.want)
		}
		if code >= 400 && tc.method != "" {
			var e ErrorBody
			if err := json.Unmarshal(body, &e); err != nil || e.Error.Code == "" || e.Error.Message == "" {
				t.Errorf("%s: error body %s lacks the stable shape", tc.name, body)
			}
		}
	}
	// Every change was audited with its actor.
	evs, _ := f.st.Events(context.Background(), store.EventFilter{})
	var audited []string
	for _, e := range evs {
		audited = append(audited, e.Actor+" "+e.Kind+" "+e.Message)
	}
	all := strings.Join(audited, "\n")
	for _, want := range []string{"audit PATCH /api/v1/nodes/" + id, "action deploy", "audit DELETE /api/v1/images/deb-arm", "audit POST /api/v1/users", "audit DELETE /api/v1/nodes/" + id} {
		if !strings.Contains(all, want) {
			t.Errorf("audit log lacks %q:\n%s", want, all)
		}
	}
	if !strings.Contains(all, "token:") {
		t.Errorf("audit log does not name the token that acted:\n%s", all)
	}
}

// testPath fills a route's pattern with ids that exist.
func (f *fixture) testPath(pattern string) string {
	id := f.node.ID
	switch {
	case strings.HasPrefix(pattern, "/api/v1/vms/") && f.vm != "":
		id = f.vm
	case strings.HasPrefix(pattern, "/api/v1/hypervisors/") && f.hypervisor != "":
		id = f.hypervisor
	}
	r := strings.NewReplacer("{id}", id, "{action}", "inspect", "{name}", "deb-x86", "{tid}", "none")
	return r.Replace(pattern)
}

// TestAuthorization walks every route with every role, no token and a bad
// token: 401 without valid credentials, 403 below the route's role, and
// anything but those with enough. Agent routes open to the node's own
// agent token only, and that token opens nothing else; so do a
// hypervisor's agent route and token.
func TestAuthorization(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	agentTokens := map[string]string{}
	for who, node := range map[string]string{"agent": f.node.ID, "other-agent": "some-other-node"} {
		secret, hash := NewSecret()
		if _, err := f.st.CreateToken(ctx, store.Token{Hash: hash, Kind: "agent", Role: store.RoleAgent, NodeID: node}); err != nil {
			t.Fatal(err)
		}
		agentTokens[who] = secret
	}
	for who, node := range map[string]string{"hypervisor": f.node.ID, "other-hypervisor": "some-other-node"} {
		secret, hash := NewSecret()
		if _, err := f.st.CreateToken(ctx, store.Token{Hash: hash, Kind: store.TokenHypervisor, NodeID: node}); err != nil {
			t.Fatal(err)
		}
		agentTokens[who] = secret
	}
	for _, rt := range f.api.table() {
		for _, who := range []string{"none", "bad", "readonly", "tech", "admin", "bootstrap", "agent", "other-agent", "hypervisor", "other-hypervisor"} {
			tok := map[string]string{"none": "", "bad": "rbt_nope", "readonly": f.tokens[store.RoleReadonly], "tech": f.tokens[store.RoleTech],
				"admin": f.tokens[store.RoleAdmin], "bootstrap": bootstrap, "agent": agentTokens["agent"], "other-agent": agentTokens["other-agent"],
				"hypervisor": agentTokens["hypervisor"], "other-hypervisor": agentTokens["other-hypervisor"]}[who]
			if who == "agent" {
				// Actions on the node kill its agent token: issue a fresh one.
				f.st.DeleteTokens(ctx, "agent", f.node.ID, "")
				secret, hash := NewSecret()
				if _, err := f.st.CreateToken(ctx, store.Token{Hash: hash, Kind: "agent", Role: store.RoleAgent, NodeID: f.node.ID}); err != nil {
					t.Fatal(err)
				}
				tok = secret
			}
			role := store.Role(who)
			if who == "bootstrap" {
				role = store.RoleAdmin
			}
			path := f.testPath(rt.pattern)
			if strings.HasSuffix(path, "/stream") {
				path += "?after=999999"
			}
			body := ""
			if rt.method != "GET" {
				body = "{}"
			}
			if rt.pattern == "/api/v1/nodes/{id}" && rt.method == "DELETE" {
				// Keep the node for the other routes: delete one that does not exist.
				path = "/api/v1/nodes/nope"
			}
			code, resp := f.callTimeout(t, rt.method, path, tok, body)
			var want string
			switch {
			case rt.role == "":
				continue
			case who == "none" || who == "bad":
				want = "401"
			case rt.role == store.RoleAgent:
				if who != "agent" {
					want = "403"
				}
			case rt.role == store.RoleHypervisor:
				if who != "hypervisor" {
					want = "403"
				}
			case who == "agent" || who == "other-agent" || who == "hypervisor" || who == "other-hypervisor":
				want = "403"
			case rank(role) < rank(rt.role):
				want = "403"
			}
			got := http.StatusText(code)
			if want != "" && strconv.Itoa(code) != want {
				t.Errorf("%s %s as %s: %d %s, want %s", rt.method, rt.pattern, who, code, resp, want)
			}
			if want == "" && (code == 401 || code == 403) && !(rt.pattern == "/api/v1/logout") {
				t.Errorf("%s %s as %s: %d (%s) %s, want access", rt.method, rt.pattern, who, code, got, resp)
			}
		}
	}
}

// callTimeout is call for routes that may stream: it reads the status
// and at most a little of the body.
func (f *fixture) callTimeout(t *testing.T, method, path, token, body string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequestWithContext(ctx, method, f.srv.URL+path, rd)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	buf := make([]byte, 300)
	n, _ := io.ReadAtLeast(resp.Body, buf, 1)
	return resp.StatusCode, string(buf[:n])
}

func TestExpiredAndRevokedTokens(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	secret, hash := NewSecret()
	f.st.CreateToken(ctx, store.Token{Hash: hash, Kind: "api", Name: "old", Role: store.RoleAdmin, Expires: time.Now().Add(-time.Minute)})
	if code, _ := f.call(t, nil, "GET", "/api/v1/nodes", secret, ""); code != 401 {
		t.Errorf("expired token: %d, want 401", code)
	}
	// A session secret is no bearer token; an agent's opens no people's route.
	for kind, want := range map[string]int{"session": 401, "agent": 403} {
		secret, hash := NewSecret()
		f.st.CreateToken(ctx, store.Token{Hash: hash, Kind: kind, Role: store.RoleAdmin, User: "ann", NodeID: f.node.ID})
		if code, _ := f.call(t, nil, "GET", "/api/v1/nodes", secret, ""); code != want {
			t.Errorf("%s secret as bearer token: %d, want %d", kind, code, want)
		}
	}
	code, body := f.call(t, nil, "POST", "/api/v1/tokens", f.tokens[store.RoleAdmin], `{"name":"ci","role":"readonly"}`)
	var ct CreatedToken
	if code != 201 || json.Unmarshal(body, &ct) != nil || !strings.HasPrefix(ct.Secret, TokenPrefix) {
		t.Fatalf("create token: %d %s", code, body)
	}
	if code, _ := f.call(t, nil, "GET", "/api/v1/nodes", ct.Secret, ""); code != 200 {
		t.Fatalf("new token: %d", code)
	}
	if code, _ := f.call(t, nil, "GET", "/api/v1/tokens", ct.Secret, ""); code != 403 {
		t.Fatalf("readonly token listing tokens: %d", code)
	}
	if code, body := f.call(t, nil, "GET", "/api/v1/tokens", f.tokens[store.RoleAdmin], ""); code != 200 || strings.Contains(string(body), ct.Secret) || strings.Contains(string(body), HashSecret(ct.Secret)) {
		t.Fatalf("token list shows a secret or hash: %s", body)
	}
	if code, _ := f.call(t, nil, "DELETE", "/api/v1/tokens/"+ct.Token.ID, f.tokens[store.RoleAdmin], ""); code != 204 {
		t.Fatalf("revoke: %d", code)
	}
	if code, _ := f.call(t, nil, "GET", "/api/v1/nodes", ct.Secret, ""); code != 401 {
		t.Fatalf("revoked token: %d, want 401", code)
	}
}

func TestSessionAndCSRF(t *testing.T) {
	f := newFixture(t)
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar}
	if code, _ := f.call(t, c, "POST", "/api/v1/login", "", `{"username":"ann","password":"wrong"}`); code != 401 {
		t.Fatalf("wrong password: %d", code)
	}
	if code, _ := f.call(t, c, "POST", "/api/v1/login", "", `{"username":"nobody","password":"correct horse battery"}`); code != 401 {
		t.Fatalf("unknown user: %d", code)
	}
	code, body := f.call(t, c, "POST", "/api/v1/login", "", `{"username":"ann","password":"correct horse battery"}`)
	var who WhoAmI
	if code != 200 || json.Unmarshal(body, &who) != nil || who.CSRFToken == "" || who.Role != "tech" {
		t.Fatalf("login: %d %s", code, body)
	}
	u, _ := http.NewRequest("GET", f.srv.URL, nil)
	cookies := jar.Cookies(u.URL)
	if len(cookies) != 1 || cookies[0].Name != SessionCookie {
		t.Fatalf("cookies after login: %v", cookies)
	}
	if code, _ := f.call(t, c, "GET", "/api/v1/nodes", "", ""); code != 200 {
		t.Fatalf("session GET: %d", code)
	}
	path := "/api/v1/nodes/" + f.node.ID + "/actions/inspect"
	if code, body := f.call(t, c, "POST", path, "", `{}`); code != 403 || !strings.Contains(string(body), "csrf") {
		t.Fatalf("POST without CSRF token: %d %s", code, body)
	}
	if code, _ := f.call(t, c, "POST", path, "", `{}`, "X-CSRF-Token", "0000"); code != 403 {
		t.Fatalf("POST with a wrong CSRF token: %d", code)
	}
	code, body = f.call(t, c, "POST", path, "", `{}`, "X-CSRF-Token", who.CSRFToken)
	if code != 200 || !strings.Contains(string(body), `"actor": "user:ann"`) {
		t.Fatalf("POST with CSRF token: %d %s", code, body)
	}
	if code, _ := f.call(t, c, "GET", "/api/v1/users", "", ""); code != 403 {
		t.Fatalf("tech session listing users: %d", code)
	}
	// Demoting the user takes effect in the live session.
	hash, _ := HashPassword("correct horse battery")
	f.st.PutUser(context.Background(), store.User{Name: "ann", Role: store.RoleReadonly, PasswordHash: hash})
	if code, _ := f.call(t, c, "POST", path, "", `{}`, "X-CSRF-Token", who.CSRFToken); code != 403 {
		t.Fatalf("demoted session acting: %d", code)
	}
	if code, _ := f.call(t, c, "POST", "/api/v1/logout", "", ``, "X-CSRF-Token", who.CSRFToken); code != 204 {
		t.Fatalf("logout: %d", code)
	}
	if code, _ := f.call(t, c, "GET", "/api/v1/whoami", "", ""); code != 401 {
		t.Fatalf("after logout: %d", code)
	}
}

// TestOpenAPI keeps the document true: every route served is documented
// and every documented path is served, and the answers of the GET routes
// have only the fields their schemas name.
func TestOpenAPI(t *testing.T) {
	f := newFixture(t)
	withVMs(t, f)
	code, body := f.call(t, nil, "GET", "/api/v1/openapi.json", "", "")
	if code != 200 {
		t.Fatalf("openapi.json: %d", code)
	}
	var doc struct {
		OpenAPI    string                               `json:"openapi"`
		Paths      map[string]map[string]map[string]any `json:"paths"`
		Components struct {
			Schemas map[string]map[string]any `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(body, &doc); err != nil || doc.OpenAPI != "3.1.0" {
		t.Fatalf("openapi.json: %v %q", err, doc.OpenAPI)
	}
	served := map[string]bool{}
	chi.Walk(f.srv.Config.Handler.(chi.Routes), func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		if route != "/metrics" {
			served[method+" "+route] = true
		}
		return nil
	})
	documented := map[string]bool{}
	for p, ops := range doc.Paths {
		for m := range ops {
			documented[strings.ToUpper(m)+" "+p] = true
		}
	}
	for k := range served {
		if !documented[k] {
			t.Errorf("%s is served but not documented", k)
		}
	}
	for k := range documented {
		if !served[k] {
			t.Errorf("%s is documented but not served", k)
		}
	}
	ref := regexp.MustCompile(`#/components/schemas/(\w+)`)
	for p, ops := range doc.Paths {
		get, ok := ops["get"]
		if !ok || strings.HasSuffix(p, "/stream") || strings.HasSuffix(p, "/console") || strings.HasSuffix(p, "openapi.json") || strings.Contains(p, "{tid}") {
			continue
		}
		resp, _ := json.Marshal(get["responses"].(map[string]any)["200"])
		m := ref.FindStringSubmatch(string(resp))
		if m == nil {
			t.Errorf("GET %s: no response schema", p)
			continue
		}
		code, body := f.call(t, nil, "GET", f.testPath(p), f.tokens[store.RoleAdmin], "")
		if code != 200 {
			t.Errorf("GET %s: %d %s", p, code, body)
			continue
		}
		checkSchema(t, "GET "+p, doc.Components.Schemas, m[1], body)
	}
}

// checkSchema checks that an object answer has exactly the properties its
// schema lists (all required ones, no others), one level deep and into
// list items.
func checkSchema(t *testing.T, what string, schemas map[string]map[string]any, name string, body []byte) {
	t.Helper()
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(body, &obj); err != nil {
		t.Errorf("%s: answer is not an object: %s", what, body)
		return
	}
	sch := schemas[name]
	props, _ := sch["properties"].(map[string]any)
	for k := range obj {
		if _, ok := props[k]; !ok {
			t.Errorf("%s: field %q is not in schema %s", what, k, name)
		}
	}
	req, _ := sch["required"].([]any)
	for _, k := range req {
		if _, ok := obj[k.(string)]; !ok {
			t.Errorf("%s: required field %q of %s missing", what, k, name)
		}
	}
	if items, ok := obj["items"]; ok {
		var list []json.RawMessage
		json.Unmarshal(items, &list)
		b, _ := json.Marshal(props["items"])
		if m := regexp.MustCompile(`#/components/schemas/(\w+)`).FindStringSubmatch(string(b)); m != nil && len(list) > 0 {
			checkSchema(t, what+" items", schemas, m[1], list[0])
		}
	}
}

func TestEventStream(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", f.srv.URL+"/api/v1/events/stream?node="+f.node.ID, nil)
	req.Header.Set("Authorization", "Bearer "+f.tokens[store.RoleReadonly])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("stream: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	rd := bufio.NewReader(resp.Body)
	// Only events from now on: the fixture's history is not replayed.
	if code, body := f.call(t, nil, "POST", "/api/v1/nodes/"+f.node.ID+"/actions/inspect", f.tokens[store.RoleTech], `{"reason":"live"}`); code != 200 {
		t.Fatalf("inspect: %d %s", code, body)
	}
	var data string
	for data == "" {
		line, err := rd.ReadString('\n')
		if err != nil {
			t.Fatalf("stream ended: %v", err)
		}
		if d, ok := strings.CutPrefix(line, "data: "); ok {
			data = d
		}
	}
	var e Event
	if err := json.Unmarshal([]byte(data), &e); err != nil || e.To != "inspecting" || e.Reason != "live" {
		t.Fatalf("streamed event: %s (%v)", data, err)
	}
}

func TestBrokerWakesEveryWaiter(t *testing.T) {
	b := NewBroker()
	w1, w2 := b.Wait(), b.Wait()
	select {
	case <-w1:
		t.Fatal("woken before Publish")
	default:
	}
	b.Publish()
	<-w1
	<-w2
	select {
	case <-b.Wait():
		t.Fatal("a wait after Publish is already woken")
	default:
	}
}
