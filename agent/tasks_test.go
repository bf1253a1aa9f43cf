package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rackboot/rackboot/agent/deploy"
	"github.com/rackboot/rackboot/agent/protocol"
)

func TestWorkDeployAndWipe(t *testing.T) {
	raw := bytes.Repeat([]byte("rackboot image "), 300000)
	h := sha256.Sum256(raw)
	sum := hex.EncodeToString(h[:])
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/images/img" {
			http.NotFound(w, r)
			return
		}
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(raw))
	}))
	defer srv.Close()
	dir := t.TempDir()
	small, big := filepath.Join(dir, "small"), filepath.Join(dir, "big")
	os.WriteFile(small, make([]byte, 1<<20), 0o644)
	f, _ := os.Create(big)
	f.Truncate(8 << 20)
	f.Close()
	w := &Work{Base: srv.URL, Disks: func() ([]deploy.Disk, error) {
		return []deploy.Disk{{Name: small, Size: 1 << 20, Serial: "S-small"}, {Name: big, Size: 8 << 20, Serial: "S-big"}}, nil
	}}
	task := func(kind string, p any) protocol.Task {
		b, _ := json.Marshal(p)
		return protocol.Task{ID: "t", Kind: kind, Params: b}
	}
	params := map[string]any{"image": "img", "path": "/images/img", "format": "raw", "sha256": sum, "raw_sha256": sum, "raw_size": len(raw),
		"root_device": map[string]any{"serial": "S-big"}}
	res, err := w.Funcs()[protocol.TaskDeploy](context.Background(), task(protocol.TaskDeploy, params))
	if err != nil {
		t.Fatalf("deploy: %v", err)
	}
	if r := res.(deploy.Result); r.Device != big || !r.Verified {
		t.Fatalf("deploy result %+v", r)
	}
	got, _ := os.ReadFile(big)
	if !bytes.Equal(got[:len(raw)], raw) {
		t.Fatal("image not on the hinted disk")
	}
	// The image does not fit the disk the hints pick: refused before any write.
	params["root_device"] = map[string]any{"serial": "S-small"}
	if _, err := w.Funcs()[protocol.TaskDeploy](context.Background(), task(protocol.TaskDeploy, params)); err == nil || !strings.Contains(err.Error(), "does not fit") {
		t.Fatalf("deploy to a small disk: %v", err)
	}
	res, err = w.Funcs()[protocol.TaskWipe](context.Background(), task(protocol.TaskWipe, map[string]string{"method": "full"}))
	if err != nil {
		t.Fatalf("wipe: %v", err)
	}
	b, _ := json.Marshal(res)
	if !strings.Contains(string(b), `"serial":"S-big"`) || !strings.Contains(string(b), `"method":"overwrite"`) {
		t.Fatalf("wipe records: %s", b)
	}
	got, _ = os.ReadFile(big)
	if !bytes.Equal(got, make([]byte, len(got))) {
		t.Fatal("full wipe left data")
	}
	if _, err := w.Funcs()[protocol.TaskBurnin](context.Background(), task(protocol.TaskBurnin, map[string]string{"duration": "soon"})); err == nil {
		t.Fatal("burn-in with a bad duration: no error")
	}
	if _, err := w.Funcs()[protocol.TaskReboot](context.Background(), task(protocol.TaskReboot, nil)); err == nil {
		t.Fatal("reboot without a way to reboot: no error")
	}
}
