package api

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/store/sqlite"
)

func newServer(t *testing.T) (*httptest.Server, string) {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	mac, _ := net.ParseMAC("52:54:00:12:34:56")
	n, _, err := st.EnrollClient(context.Background(), boot.Client{MAC: mac, Arch: boot.ClientX64UEFI}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range []boot.Event{
		{Time: time.Now(), Proto: "dhcp", Kind: "discover", Options: map[string]string{"93": "7"}},
		{Time: time.Now(), Proto: "dhcp", Kind: "offer", File: "ipxe/snponly.efi"},
		{Time: time.Now(), Proto: "tftp", Kind: "file", File: "ipxe/snponly.efi", Bytes: 10, Size: 10, Complete: true},
	} {
		if err := st.AddTrace(context.Background(), n.ID, e); err != nil {
			t.Fatal(err)
		}
	}
	srv := httptest.NewServer((&Server{Store: st, Token: "secret"}).Handler())
	t.Cleanup(srv.Close)
	return srv, n.ID
}

func TestRoutes(t *testing.T) {
	srv, id := newServer(t)
	tests := []struct {
		name, method, path, token, body string
		code                            int
		want                            string
	}{
		{"no token", "GET", "/api/v1/nodes", "", "", 401, "missing or bad token"},
		{"bad token", "GET", "/api/v1/nodes", "nope", "", 401, "missing or bad token"},
		{"list", "GET", "/api/v1/nodes", "secret", "", 200, `"arch": "x86_64"`},
		{"get by MAC", "GET", "/api/v1/nodes/52:54:00:12:34:56", "secret", "", 200, id},
		{"get by id", "GET", "/api/v1/nodes/" + id, "secret", "", 200, `"firmware": "uefi"`},
		{"unknown node", "GET", "/api/v1/nodes/nope", "secret", "", 404, "not found"},
		{"trace", "GET", "/api/v1/nodes/" + id + "/trace", "secret", "", 200, "got the loader, never asked for its config"},
		{"trace bad limit", "GET", "/api/v1/nodes/" + id + "/trace?limit=x", "secret", "", 400, "limit"},
		{"trace unknown", "GET", "/api/v1/nodes/nope/trace", "secret", "", 404, "not found"},
		{"patch secure boot", "PATCH", "/api/v1/nodes/" + id, "secret", `{"secure_boot":"on"}`, 200, `"secure_boot": true`},
		{"patch inherit", "PATCH", "/api/v1/nodes/" + id, "secret", `{"secure_boot":"inherit"}`, 200, `"secure_boot": null`},
		{"patch bad value", "PATCH", "/api/v1/nodes/" + id, "secret", `{"secure_boot":"maybe"}`, 400, "secure_boot must be"},
		{"patch bad JSON", "PATCH", "/api/v1/nodes/" + id, "secret", `{"secure_boot":`, 400, "bad JSON"},
		{"patch unknown field", "PATCH", "/api/v1/nodes/" + id, "secret", `{"colour":"red"}`, 400, "unknown field"},
		{"patch unknown node", "PATCH", "/api/v1/nodes/nope", "secret", `{}`, 404, "not found"},
		{"unknown route", "GET", "/api/v1/nope", "secret", "", 404, "no such route"},
		{"wrong method", "DELETE", "/api/v1/nodes", "secret", "", 405, "method not allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, srv.URL+tt.path, strings.NewReader(tt.body))
			if tt.token != "" {
				req.Header.Set("Authorization", "Bearer "+tt.token)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var raw json.RawMessage
			if err := json.NewDecoder(resp.Body).Decode(&raw); err != nil {
				t.Fatalf("body is not JSON: %v", err)
			}
			if resp.StatusCode != tt.code || !strings.Contains(string(raw), tt.want) {
				t.Errorf("%s %s = %d %s; want %d containing %q", tt.method, tt.path, resp.StatusCode, raw, tt.code, tt.want)
			}
		})
	}
}
