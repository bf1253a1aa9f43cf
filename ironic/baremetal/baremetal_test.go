package baremetal

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

func TestFaultString(t *testing.T) {
	for body, want := range map[string]string{
		`{"error_message": "{\"faultstring\": \"Node x could not be found.\", \"faultcode\": \"Client\"}"}`: "Node x could not be found.",
		`{"error_message": {"faultstring": "inline", "faultcode": "Client"}}`:                               "inline",
		`{"error_message": "plain words"}`:                                                                  "plain words",
		`<html>Bad Gateway</html>`:                                                                          "<html>Bad Gateway</html>",
	} {
		if got := faultString([]byte(body)); got != want {
			t.Errorf("faultString(%s) = %q, want %q", body, got, want)
		}
	}
}

// TestKeystone: a token is asked for once and kept; one Ironic refuses is
// renewed once; application credentials and passwords send Keystone's
// documents.
func TestKeystone(t *testing.T) {
	var issued, asked atomic.Int32
	var lastAuth map[string]any
	ks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != "POST" || r.URL.Path != "/v3/auth/tokens" {
			http.NotFound(w, r)
			return
		}
		json.NewDecoder(r.Body).Decode(&lastAuth)
		n := issued.Add(1)
		w.Header().Set("X-Subject-Token", fmt.Sprintf("tok-%d", n))
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, `{"token": {"expires_at": %q}}`, time.Now().Add(time.Hour).UTC().Format(time.RFC3339))
	}))
	defer ks.Close()
	ironic := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		// The first token is refused, as after a Keystone restart.
		if r.Header.Get("X-Auth-Token") != "tok-2" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		json.NewEncoder(w).Encode(Node{UUID: "u1", ProvisionState: "available"})
	}))
	defer ironic.Close()
	k := &Keystone{AuthURL: ks.URL + "/v3", Username: "ironic", Password: "pw", Project: "service"}
	c := &Client{URL: ironic.URL, Auth: k}
	n, err := c.Node(context.Background(), "u1")
	if err != nil || n.UUID != "u1" {
		t.Fatalf("node %+v, %v", n, err)
	}
	if issued.Load() != 2 || asked.Load() != 2 {
		t.Errorf("%d tokens, %d requests; want 2 and 2", issued.Load(), asked.Load())
	}
	if _, err := c.Node(context.Background(), "u1"); err != nil || issued.Load() != 2 {
		t.Errorf("the kept token was not reused: %d tokens, %v", issued.Load(), err)
	}
	id := lastAuth["auth"].(map[string]any)["identity"].(map[string]any)
	if id["methods"].([]any)[0] != "password" || lastAuth["auth"].(map[string]any)["scope"] == nil {
		t.Errorf("password auth document %v", lastAuth)
	}
	app := &Keystone{AuthURL: ks.URL + "/v3", AppCredentialID: "id1", AppCredentialSecret: "s"}
	if _, err := app.Token(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	id = lastAuth["auth"].(map[string]any)["identity"].(map[string]any)
	if id["methods"].([]any)[0] != "application_credential" || id["application_credential"].(map[string]any)["id"] != "id1" {
		t.Errorf("application credential document %v", lastAuth)
	}
	// Always refused: the error says so, after one renewal.
	bad := &Client{URL: ironic.URL, Auth: &Keystone{AuthURL: ks.URL + "/v3", Username: "x"}}
	issued.Store(10)
	_, err = bad.Node(context.Background(), "u1")
	var e *Error
	if !errors.As(err, &e) || e.Status != http.StatusUnauthorized {
		t.Errorf("refused token: %v", err)
	}
}

func TestNotFoundAndPorts(t *testing.T) {
	pages := 0
	// Ironic behind a path (devstack's /baremetal): its next links name
	// the path it sees, rackboot asks under its own URL.
	srv := httptest.NewServer(http.StripPrefix("/baremetal", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/nodes/missing":
			w.WriteHeader(404)
			fmt.Fprint(w, `{"error_message": "{\"faultstring\": \"Node missing could not be found.\"}"}`)
		case "/v1/ports":
			pages++
			if r.URL.Query().Get("marker") == "" {
				fmt.Fprintf(w, `{"ports": [{"address": "aa:bb:cc:dd:ee:01", "node_uuid": "n1"}], "next": "http://%s/v1/ports?limit=1&marker=p1"}`, r.Host)
				return
			}
			fmt.Fprint(w, `{"ports": [{"address": "aa:bb:cc:dd:ee:02", "node_uuid": "n2"}]}`)
		case "/v1/nodes":
			// A server that links to the same page for ever.
			pages++
			fmt.Fprintf(w, `{"nodes": [{"uuid": "n1"}], "next": "http://%s/v1/nodes?%s"}`, r.Host, r.URL.RawQuery)
		}
	})))
	defer srv.Close()
	c := &Client{URL: srv.URL + "/baremetal"}
	if _, err := c.Node(context.Background(), "missing"); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing node: %v", err)
	}
	ps, err := c.Ports(context.Background())
	if err != nil || len(ps) != 2 || ps[1].NodeUUID != "n2" || pages != 2 {
		t.Errorf("ports %+v, %v, %d pages", ps, err, pages)
	}
	pages = 0
	if ns, err := c.Nodes(context.Background()); err != nil || len(ns) != 1 || pages != 1 {
		t.Errorf("a next link to the same page: %+v, %v, %d pages", ns, err, pages)
	}
}
