package appliance

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rackboot/rackboot/internal/sealbox"
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
	want := map[string]os.FileMode{dir: 0o700, filepath.Join(dir, DBFile): 0o600, filepath.Join(dir, TokenFile): 0o600, filepath.Join(dir, PasswordFile): 0o600,
		filepath.Join(dir, SecretKeyFile): 0o600}
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

func call(t *testing.T, method, url, token, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// rackboot secrets rotate re-seals every BMC password with a new key that
// a running appliance picks up from the file, and --drop-old then leaves
// the new key alone in the file.
func TestRotateSecrets(t *testing.T) {
	dir := t.TempDir()
	base := startAppliance(t, dir)
	tok, _ := os.ReadFile(filepath.Join(dir, TokenFile))
	token := strings.TrimSpace(string(tok))
	if code, body := call(t, "POST", base+"/api/v1/nodes", token, `{"mac":"52:54:00:00:00:42","name":"n42"}`); code != 201 {
		t.Fatalf("add node: %d %s", code, body)
	}
	// A BMC port nothing listens on: a power call that got as far as the
	// BMC says bmc_no_answer (502); one whose password did not decrypt
	// says secret_key (503).
	c, _ := net.ListenPacket("udp4", "127.0.0.1:0")
	closed := c.LocalAddr().String()
	c.Close()
	if code, body := call(t, "PUT", base+"/api/v1/nodes/n42/bmc", token, `{"url":"ipmi://`+closed+`","user":"admin","password":"pw-42"}`); code != 200 {
		t.Fatalf("set bmc: %d %s", code, body)
	}
	reachesBMC := func(when string) {
		t.Helper()
		code, body := call(t, "GET", base+"/api/v1/nodes/n42/power", token, "")
		if code != 502 || !strings.Contains(body, "bmc_no_answer") {
			t.Fatalf("power status %s: %d %s; want 502 bmc_no_answer", when, code, body)
		}
	}
	reachesBMC("before the rotation")
	keyOf := func() string {
		st, err := OpenStore(context.Background(), "", dir)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		bs, err := st.BMCs(context.Background())
		if err != nil || len(bs) != 1 {
			t.Fatalf("BMCs: %v, %v", bs, err)
		}
		id, _ := sealbox.KeyOf(bs[0].Password)
		return id
	}
	before := keyOf()
	res, err := RotateSecrets(context.Background(), "", dir, "", false)
	if err != nil {
		t.Fatal(err)
	}
	if res.Resealed != 1 || res.NewKey == before || keyOf() != res.NewKey {
		t.Fatalf("rotation %+v: the password is sealed with %s (was %s)", res, keyOf(), before)
	}
	reachesBMC("after the rotation")
	res, err = RotateSecrets(context.Background(), "", dir, "", true)
	if err != nil {
		t.Fatal(err)
	}
	box, _, err := sealbox.Load(filepath.Join(dir, SecretKeyFile), false)
	if err != nil || len(box.KeyIDs()) != 1 || box.Current() != res.NewKey || len(res.Dropped) != 2 {
		t.Fatalf("after --drop-old: keys %v (want only %s), dropped %v, %v", box.KeyIDs(), res.NewKey, res.Dropped, err)
	}
	reachesBMC("after dropping the old keys")
	if fi, _ := os.Stat(filepath.Join(dir, SecretKeyFile)); fi.Mode().Perm() != 0o600 {
		t.Errorf("key file is %v after rotation", fi.Mode().Perm())
	}
	// A key file named explicitly must exist: a fresh key on one server
	// would seal passwords the others cannot open.
	if _, err := LoadSecrets(dir, filepath.Join(dir, "missing.key"), nil); err == nil {
		t.Error("a missing --secret-key-file was created")
	}
}
