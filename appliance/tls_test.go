package appliance

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rackboot/rackboot/internal/tlspin"
)

// With an API address, the API and UI are served over TLS only, with a
// certificate rackboot made and whose CA a client on the appliance finds
// in the data dir; the boot port serves boot files and points API and UI
// callers at the TLS port; the web UI's session cookie is Secure.
func TestAPIOverTLS(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	type addrs struct{ http, api net.Addr }
	got := make(chan addrs, 1)
	done := make(chan error, 1)
	cfg := Config{DataDir: dir, ServerIP: "127.0.0.1", HTTPAddr: "127.0.0.1:0", APIAddr: "127.0.0.1:0", TFTPAddr: "127.0.0.1:0", DHCP: DHCPConfig{Mode: DHCPOff}}
	apiAddr := make(chan net.Addr, 1)
	go func() {
		done <- run(ctx, cfg, nil, hooks{apiServing: func(a net.Addr) { apiAddr <- a }, serving: func(h net.Addr) { got <- addrs{h, <-apiAddr} }})
	}()
	var a addrs
	select {
	case a = <-got:
		t.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("appliance: %v", err)
			}
		})
	case err := <-done:
		cancel()
		t.Fatalf("appliance: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the appliance did not start in 30s")
	}
	if a.api == nil {
		t.Fatal("no API listener")
	}
	boot := "http://" + a.http.String()
	apiURL := "https://" + a.api.String()
	token, _ := os.ReadFile(filepath.Join(dir, TokenFile))
	caPEM, err := os.ReadFile(filepath.Join(dir, APICAFile))
	if err != nil {
		t.Fatal(err)
	}
	// The CA file is the anchor of the pin the agents get.
	b, err := tlspin.Generated(filepath.Join(dir, TLSDir), []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(caPEM), "BEGIN CERTIFICATE") {
		t.Fatalf("%s: %q", APICAFile, caPEM)
	}
	if u, _ := os.ReadFile(filepath.Join(dir, APIURLFile)); !strings.HasPrefix(string(u), "https://127.0.0.1:") {
		t.Errorf("%s: %q", APIURLFile, u)
	}
	pinned := &http.Client{Transport: &http.Transport{TLSClientConfig: tlspin.ClientConfig(b.Pins)},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	plain := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	do := func(c *http.Client, method, url, body string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest(method, url, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
		if body != "" {
			req.Header.Del("Authorization")
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, url, err)
		}
		defer resp.Body.Close()
		rb, _ := io.ReadAll(resp.Body)
		return resp, string(rb)
	}
	if resp, body := do(pinned, "GET", apiURL+"/api/v1/nodes", ""); resp.StatusCode != 200 {
		t.Errorf("API over TLS: %d %s", resp.StatusCode, body)
	}
	// The boot port: no API, no metrics; a browser is sent to the TLS port.
	for _, p := range []string{"/api/v1/nodes", "/metrics"} {
		if resp, body := do(plain, "GET", boot+p, ""); resp.StatusCode != http.StatusMisdirectedRequest || !strings.Contains(body, apiURL) {
			t.Errorf("boot port %s: %d %s", p, resp.StatusCode, body)
		}
	}
	if resp, _ := do(plain, "GET", boot+"/ui/", ""); resp.StatusCode != 302 || resp.Header.Get("Location") != apiURL+"/ui/" {
		t.Errorf("boot port /ui/: %d → %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	if resp, _ := do(plain, "GET", boot+"/images/x", ""); resp.StatusCode != 401 {
		t.Errorf("boot port image with the admin token: %d, want 401 (image tokens only)", resp.StatusCode)
	}
	// Plain HTTP to the TLS port is not served.
	if resp, err := http.Get("http://" + a.api.String() + "/api/v1/nodes"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Error("plain HTTP answered on the TLS port")
		}
	}
	// Session cookies are Secure over TLS.
	pw, _ := os.ReadFile(filepath.Join(dir, PasswordFile))
	resp, body := do(pinned, "POST", apiURL+"/api/v1/login", `{"username":"admin","password":"`+strings.TrimSpace(string(pw))+`"}`)
	if resp.StatusCode != 200 {
		t.Fatalf("login: %d %s", resp.StatusCode, body)
	}
	if cs := resp.Cookies(); len(cs) == 0 || !cs[0].Secure || !cs[0].HttpOnly {
		t.Errorf("session cookie over TLS: %+v", cs)
	}
	// A client that pins another appliance's certificate is refused.
	other, _ := tlspin.Generated(t.TempDir(), []string{"127.0.0.1"})
	c, err := tls.Dial("tcp", a.api.String(), tlspin.ClientConfig(other.Pins))
	if err == nil {
		c.Close()
		t.Error("a client pinning another certificate connected")
	}
}
