package appliance

import (
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// startAppliance runs the wired appliance on loopback with DHCP off and
// returns its base URL.
func startAppliance(t *testing.T, dir string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	addr := make(chan net.Addr, 1)
	done := make(chan error, 1)
	cfg := Config{DataDir: dir, ServerIP: "127.0.0.1", HTTPAddr: "127.0.0.1:0", TFTPAddr: "127.0.0.1:0", DHCP: DHCPConfig{Mode: DHCPOff}}
	go func() { done <- run(ctx, cfg, nil, hooks{serving: func(a net.Addr) { addr <- a }}) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("appliance: %v", err)
		}
	})
	select {
	case a := <-addr:
		return "http://" + a.String()
	case err := <-done:
		t.Fatalf("appliance: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the appliance did not start in 30s")
	}
	return ""
}

func status(t *testing.T, url, token string) int {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// The data dir holds password hashes, task secrets and the admin token:
// only its owner may read it, even when it was made 0755 before.
func TestDataDirPrivate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	os.MkdirAll(dir, 0o755)
	os.WriteFile(filepath.Join(dir, DBFile), nil, 0o644)
	startAppliance(t, dir)
	want := map[string]os.FileMode{dir: 0o700, filepath.Join(dir, DBFile): 0o600, filepath.Join(dir, TokenFile): 0o600, filepath.Join(dir, PasswordFile): 0o600}
	for _, wal := range []string{DBFile + "-wal", DBFile + "-shm"} {
		if _, err := os.Stat(filepath.Join(dir, wal)); err == nil {
			want[filepath.Join(dir, wal)] = 0o600
		}
	}
	for p, mode := range want {
		fi, err := os.Stat(p)
		if err != nil {
			t.Errorf("%s: %v", p, err)
			continue
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s is %v, want %v", p, fi.Mode().Perm(), mode)
		}
	}
}

// rackboot token rotate-bootstrap replaces the bootstrap admin token of a
// running appliance: the old secret is refused at once, the new one in
// the file works.
func TestRotateBootstrapToken(t *testing.T) {
	dir := t.TempDir()
	base := startAppliance(t, dir)
	read := func() string {
		b, err := os.ReadFile(filepath.Join(dir, TokenFile))
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	old := read()
	if code := status(t, base+"/api/v1/nodes", old); code != 200 {
		t.Fatalf("bootstrap token: %d", code)
	}
	path, err := RotateBootstrapToken(context.Background(), "", dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("rotated token file is %v", fi.Mode().Perm())
	}
	now := read()
	if now == old {
		t.Fatal("the token file did not change")
	}
	if code := status(t, base+"/api/v1/nodes", old); code != 401 {
		t.Errorf("the old bootstrap token after rotation: %d, want 401", code)
	}
	if code := status(t, base+"/api/v1/nodes", now); code != 200 {
		t.Errorf("the new bootstrap token: %d", code)
	}
}
