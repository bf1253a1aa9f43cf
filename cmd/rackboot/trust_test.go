package main

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rackboot/rackboot/appliance"
	"github.com/rackboot/rackboot/internal/tlspin"
)

// tlsAPI answers GET /api/v1/version over TLS with b, on addr ("" for a
// free port), and returns its URL and a stop function.
func tlsAPI(t *testing.T, b tlspin.Bundle, addr string) (string, func()) {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var ln net.Listener
	var err error
	for range 50 { // the port of a server just closed may linger a moment
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"items":[]}`))
	}))
	srv.Listener.Close()
	srv.Listener = ln
	srv.TLS = b.ServerConfig()
	srv.StartTLS()
	return srv.URL, srv.Close
}

// The CLI trusts an https server only by a CA file, a fingerprint it was
// given or saved after asking, or the appliance's own CA file; a server
// that later shows another certificate is refused with a clear reason.
func TestCLITrust(t *testing.T) {
	ctx := context.Background()
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("RACKBOOT_CONFIG", "")
	t.Setenv("RACKBOOT_SERVER", "")
	t.Setenv("RACKBOOT_TOKEN", "tok")
	known := filepath.Join(home, "known_hosts")
	t.Setenv("RACKBOOT_KNOWN_HOSTS", known)
	tlsDir := t.TempDir()
	real, err := tlspin.Generated(tlsDir, []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	url, stop := tlsAPI(t, real, "")
	cli := func(args ...string) (string, error) {
		var out, errb bytes.Buffer
		err := run(ctx, append(args, "--server", url, "--data-dir", t.TempDir(), "--output", "json"), &out, &errb)
		return out.String() + errb.String(), err
	}

	// Unknown and nobody to ask: refused, naming the fingerprint to check.
	if out, err := cli("node", "list"); err == nil || !strings.Contains(err.Error(), real.Pins[0]) || !strings.Contains(err.Error(), "--accept-fingerprint") {
		t.Fatalf("an unknown server: %v %s", err, out)
	}
	if _, err := os.Stat(known); err == nil {
		t.Fatal("an unknown server was remembered without anyone accepting it")
	}
	// A wrong fingerprint given: refused, nothing saved.
	other, _ := tlspin.Generated(t.TempDir(), []string{"127.0.0.1"})
	if _, err := cli("node", "list", "--accept-fingerprint", other.Pins[0]); err == nil {
		t.Fatal("a server whose fingerprint is not the one accepted was trusted")
	}
	if _, err := os.Stat(known); err == nil {
		t.Fatal("a refused fingerprint was remembered")
	}
	// The right one: trusted, and remembered for the next call.
	if out, err := cli("node", "list", "--accept-fingerprint", real.Pins[0]); err != nil {
		t.Fatalf("--accept-fingerprint: %v %s", err, out)
	}
	if out, err := cli("node", "list"); err != nil {
		t.Fatalf("a remembered server: %v %s", err, out)
	}
	// The same address with another certificate: an impostor, or a
	// rotation the operator must confirm.
	addr := strings.TrimPrefix(url, "https://")
	stop()
	_, stop = tlsAPI(t, other, addr)
	if out, err := cli("node", "list"); err == nil || !strings.Contains(err.Error(), "does not match the fingerprint saved") {
		t.Fatalf("another certificate at a remembered address: %v %s", err, out)
	}
	stop()
	url, stop = tlsAPI(t, real, "")
	defer stop()

	// A CA file, checked as a browser would.
	if out, err := cli("node", "list", "--ca-file", filepath.Join(tlsDir, tlspin.CAFile)); err != nil {
		t.Fatalf("--ca-file: %v %s", err, out)
	}
	if out, err := cli("node", "list", "--ca-file", filepath.Join(t.TempDir(), "none.pem")); err == nil {
		t.Fatalf("a missing --ca-file: %s", out)
	}

	// On the appliance: DATA_DIR names the API and its CA.
	data := t.TempDir()
	if err := tlspin.WriteCA(filepath.Join(data, appliance.APICAFile), real); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(data, appliance.APIURLFile), []byte(url+"\n"), 0o644)
	var out, errb bytes.Buffer
	if err := run(ctx, []string{"node", "list", "--data-dir", data}, &out, &errb); err != nil {
		t.Fatalf("on the appliance: %v %s", err, errb.String())
	}

	// Asked at the terminal: yes remembers, no refuses.
	for _, yes := range []bool{false, true} {
		os.Remove(known)
		c := &client{server: url, dataDir: t.TempDir(), http: &http.Client{}, ask: func(q string) bool {
			if !strings.Contains(q, real.Pins[0]) {
				t.Errorf("the question does not show the fingerprint: %s", q)
			}
			return yes
		}}
		err := c.trust(ctx)
		if yes != (err == nil) {
			t.Fatalf("answered %v: %v", yes, err)
		}
		b, _ := os.ReadFile(known)
		if yes != strings.Contains(string(b), real.Pins[0]) {
			t.Errorf("answered %v: known hosts %q", yes, b)
		}
	}
}
