package api

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rackboot/rackboot/store"
)

// Online password guessing meets a 429 before any bcrypt: five tries for
// one user from one address, fifty for one user from anywhere, twenty
// from one address; tries sent at once count too, and a success takes its
// try back. Nobody locks a user out from a few addresses.
func TestLoginThrottle(t *testing.T) {
	f := newFixture(t)
	// Smaller limits than the appliance's, the same rules: each try is
	// a bcrypt.
	f.api.logins.perPair, f.api.logins.perUser, f.api.logins.perPeer = 3, 8, 6
	perPair, perUser, perPeer := 3, 8, 6
	h := f.api.Handler()
	login := func(peer, user, pw string) (int, http.Header) {
		w := httptest.NewRecorder()
		req := httptest.NewRequest("POST", "/api/v1/login", strings.NewReader(fmt.Sprintf(`{"username":%q,"password":%q}`, user, pw)))
		req.Header.Set("Content-Type", "application/json")
		req.RemoteAddr = peer + ":4000"
		h.ServeHTTP(w, req)
		return w.Code, w.Header()
	}
	const good = "correct horse battery"
	if code, _ := login("10.0.0.1", "ann", "wrong"); code != 401 {
		t.Fatalf("wrong password: %d", code)
	}
	for range 5 {
		if code, _ := login("10.0.0.1", "ann", good); code != 200 {
			t.Fatalf("right password: %d (successes must not add up)", code)
		}
	}
	// One address guessing one user's password.
	for i := range perPair {
		if code, _ := login("10.0.1.1", "ann", "wrong"); code != 401 {
			t.Fatalf("failure %d: %d", i, code)
		}
	}
	code, hdr := login("10.0.1.1", "ann", good)
	if code != 429 || hdr.Get("Retry-After") == "" {
		t.Errorf("past the limit, right password, same address: %d (Retry-After %q)", code, hdr.Get("Retry-After"))
	}
	if code, _ := login("10.0.2.1", "ann", good); code != 200 {
		t.Errorf("ann from another address is locked out by one address's guesses: %d", code)
	}
	// Many addresses guessing one user's password.
	for i := range perUser {
		login(fmt.Sprintf("10.1.%d.%d", i/200, i%200), "ann", "wrong")
	}
	if code, _ := login("10.0.3.1", "ann", good); code != 429 {
		t.Errorf("a user past the limit from anywhere: %d", code)
	}
	hash, _ := HashPassword(good)
	f.st.PutUser(context.Background(), store.User{Name: "bob", Role: store.RoleReadonly, PasswordHash: hash})
	if code, _ := login("10.0.3.1", "bob", good); code != 200 {
		t.Errorf("another user is not held by ann's failures: %d", code)
	}
	// One address guessing across many names.
	for i := range perPeer {
		login("10.0.4.1", fmt.Sprintf("user%d", i), "wrong")
	}
	if code, _ := login("10.0.4.1", "bob", good); code != 429 {
		t.Errorf("an address past the limit: %d", code)
	}
	// Tries sent all at once are counted before bcrypt runs.
	var wg sync.WaitGroup
	var passed atomic.Int32
	for range 30 {
		wg.Go(func() {
			if code, _ := login("10.0.5.1", "carl", "wrong"); code == 401 {
				passed.Add(1)
			}
		})
	}
	wg.Wait()
	if n := passed.Load(); n > int32(perPair) {
		t.Errorf("%d of 30 simultaneous tries ran bcrypt, want at most %d", n, perPair)
	}
}

// A user's API token acts with the user's role as it is now, not as it
// was when the token was made; a deleted user's tokens die.
func TestTokenFollowsItsUser(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	secret, hash := NewSecret()
	if _, err := f.st.CreateToken(ctx, store.Token{Hash: hash, Kind: "api", Name: "ann's", Role: store.RoleTech, User: "ann"}); err != nil {
		t.Fatal(err)
	}
	inspect := "/api/v1/nodes/" + f.node.ID + "/actions/inspect"
	if code, b := f.call(t, nil, "POST", inspect, secret, `{}`); code != 200 {
		t.Fatalf("tech token: %d %s", code, b)
	}
	u, _ := f.st.User(ctx, "ann")
	u.Role = store.RoleReadonly
	f.st.PutUser(ctx, u)
	if code, _ := f.call(t, nil, "POST", inspect, secret, `{}`); code != 403 {
		t.Errorf("token of a user demoted to readonly: %d, want 403", code)
	}
	if code, _ := f.call(t, nil, "GET", "/api/v1/nodes", secret, ""); code != 200 {
		t.Errorf("token of a readonly user reading: %d", code)
	}
	f.st.DeleteUser(ctx, "ann")
	if code, _ := f.call(t, nil, "GET", "/api/v1/nodes", secret, ""); code != 401 {
		t.Errorf("token of a deleted user: %d, want 401", code)
	}
}

// An event stream ends when its credential is revoked.
func TestStreamEndsWithItsToken(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	secret, hash := NewSecret()
	tok, err := f.st.CreateToken(ctx, store.Token{Hash: hash, Kind: "api", Name: "watcher", Role: store.RoleReadonly})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", f.srv.URL+"/api/v1/events/stream", nil)
	req.Header.Set("Authorization", "Bearer "+secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("stream: %v %v", resp, err)
	}
	defer resp.Body.Close()
	if code, _ := f.call(t, nil, "DELETE", "/api/v1/tokens/"+tok.ID, f.tokens[store.RoleAdmin], ""); code != 204 {
		t.Fatalf("revoke: %d", code)
	}
	ended := make(chan string, 1)
	go func() {
		rd := bufio.NewReader(resp.Body)
		var last string
		for {
			line, err := rd.ReadString('\n')
			if err != nil {
				ended <- last
				return
			}
			if strings.HasPrefix(line, "event: end") {
				last = line
			}
		}
	}()
	select {
	case last := <-ended:
		if last == "" {
			t.Error("the stream ended without saying why")
		}
	case <-time.After(3 * streamPoll):
		t.Fatal("the stream of a revoked token is still open")
	}
}

// A deploy's secrets (cloud-init user data, SSH keys, anything named a
// password) are shown to admins only; tech and readonly see they are set.
func TestTaskSecretsAdminOnly(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.st.CreateImage(ctx, store.Image{Name: "deb-x86-2", Arch: "x86_64", Format: "raw", SHA256: "ef", Size: 9})
	body := `{"image":"deb-x86","cloud_init":{"hostname":"gpu-01","ssh_keys":["ssh-ed25519 AAAASECRETKEY"],"user_data":"#cloud-config\npassword: hunter2"},"root_device":{"size":">= 4 GiB"}}`
	if code, b := f.call(t, nil, "POST", "/api/v1/nodes/"+f.node.ID+"/actions/deploy", f.tokens[store.RoleTech], body); code != 200 {
		t.Fatalf("deploy: %d %s", code, b)
	}
	for _, role := range []store.Role{store.RoleReadonly, store.RoleTech, store.RoleAdmin} {
		for _, path := range []string{"/api/v1/tasks?node=" + f.node.ID, ""} {
			if path == "" {
				tasks, _ := f.st.Tasks(ctx, store.TaskFilter{NodeID: f.node.ID})
				path = "/api/v1/tasks/" + tasks[len(tasks)-1].ID
			}
			code, b := f.call(t, nil, "GET", path, f.tokens[role], "")
			got := string(b)
			if code != 200 || !strings.Contains(got, "gpu-01") {
				t.Fatalf("%s %s: %d %s", role, path, code, got)
			}
			leaked := strings.Contains(got, "SECRETKEY") || strings.Contains(got, "hunter2")
			if role == store.RoleAdmin && !leaked {
				t.Errorf("admin does not see the task's cloud-init: %s", got)
			}
			if role != store.RoleAdmin && (leaked || !strings.Contains(got, Withheld)) {
				t.Errorf("%s sees the task's secrets: %s", role, got)
			}
		}
	}
}

// Nodes can be admitted before they boot, for enroll: known.
func TestCreateNode(t *testing.T) {
	f := newFixture(t)
	tech := f.tokens[store.RoleTech]
	code, b := f.call(t, nil, "POST", "/api/v1/nodes", tech, `{"mac":"52-54-00-AB-00-01","arch":"aarch64","name":"altra-09"}`)
	if code != 201 || !strings.Contains(string(b), `"52:54:00:ab:00:01"`) || !strings.Contains(string(b), `"altra-09"`) || !strings.Contains(string(b), `"discovered"`) {
		t.Fatalf("add: %d %s", code, b)
	}
	for _, tc := range []struct {
		body string
		code int
	}{
		{`{"mac":"52:54:00:ab:00:01"}`, 409},
		{`{"mac":"gpu-01"}`, 400},
		{`{"mac":"52:54:00:ab:00:02","arch":"riscv64"}`, 400},
	} {
		if code, b := f.call(t, nil, "POST", "/api/v1/nodes", tech, tc.body); code != tc.code {
			t.Errorf("%s: %d %s, want %d", tc.body, code, b, tc.code)
		}
	}
	if code, _ := f.call(t, nil, "POST", "/api/v1/nodes", f.tokens[store.RoleReadonly], `{"mac":"52:54:00:ab:00:03"}`); code != 403 {
		t.Errorf("readonly added a node: %d", code)
	}
}
