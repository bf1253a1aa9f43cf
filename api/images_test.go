package api

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rackboot/rackboot/agent/protocol"
	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/images/catalog"
	"github.com/rackboot/rackboot/store"
)

func TestImages(t *testing.T) {
	f := newFixture(t)
	dir := t.TempDir()
	f.api.Catalog = &catalog.Catalog{Dir: dir}
	files := httptest.NewServer(f.api.ImageFiles(false))
	defer files.Close()
	// The boot port of a server whose API has a TLS port of its own.
	bootPort := httptest.NewServer(f.api.ImageFiles(true))
	defer bootPort.Close()
	raw := bytes.Repeat([]byte("a disk image "), 100000)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(raw)
	zw.Close()
	h := sha256.Sum256(gz.Bytes())
	sum := hex.EncodeToString(h[:])
	tech, ro := f.tokens[store.RoleTech], f.tokens[store.RoleReadonly]

	upload := func(token, query string, body []byte, ct string) (int, string) {
		req, _ := http.NewRequest("POST", f.srv.URL+"/api/v1/images?"+query, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", ct)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, b := upload(ro, "name=x&arch=x86_64&filename=x.raw.gz", gz.Bytes(), "application/octet-stream"); code != 403 {
		t.Fatalf("readonly upload: %d %s", code, b)
	}
	if code, b := upload(tech, "name=bad&arch=x86_64&filename=x.raw.gz&sha256="+strings.Repeat("0", 64), gz.Bytes(), "application/octet-stream"); code != 400 || !strings.Contains(b, "sha256") {
		t.Fatalf("checksum mismatch: %d %s", code, b)
	}
	if code, b := upload(tech, "name=qc&arch=x86_64&filename=x.raw", []byte("QFI\xfb...."), "application/octet-stream"); code != 400 || !strings.Contains(b, "qcow2") {
		t.Fatalf("qcow2 named raw: %d %s", code, b)
	}
	if code, b := upload(tech, "name=x&arch=x86_64&filename=x.iso", gz.Bytes(), "application/octet-stream"); code != 400 {
		t.Fatalf("unknown extension: %d %s", code, b)
	}
	if code, b := upload(tech, "", gz.Bytes(), "text/plain"); code != 415 {
		t.Fatalf("text/plain: %d %s", code, b)
	}
	code, b := upload(tech, "name=deb-13&arch=aarch64&filename=deb.raw.gz&sha256="+sum, gz.Bytes(), "application/octet-stream")
	var im Image
	if json.Unmarshal([]byte(b), &im); code != 201 || im.SHA256 != sum || im.Format != "raw.gz" || im.RawSize != int64(len(raw)) || im.Source != "upload:deb.raw.gz" {
		t.Fatalf("upload: %d %s", code, b)
	}
	if code, b := upload(tech, "name=deb-13&arch=aarch64&filename=deb.raw.gz", gz.Bytes(), "application/octet-stream"); code != 409 {
		t.Fatalf("same name again: %d %s", code, b)
	}
	// From a URL on the appliance itself (its own files, its API): a
	// request forgery, refused by rule before any connection.
	body, _ := json.Marshal(NewImage{Name: "copy", Arch: "aarch64", URL: files.URL + "/images/deb-13", Format: "raw.gz", SHA256: sum})
	if code, b := upload(tech, "", body, "application/json"); code != 400 || !strings.Contains(b, "is a loopback address") {
		t.Fatalf("URL import from the appliance's loopback: %d %s", code, b)
	}
	if _, err := f.st.Image(context.Background(), "copy"); err == nil {
		t.Fatal("a refused URL import left an image")
	}
	body, _ = json.Marshal(NewImage{Name: "local", Arch: "x86_64", URL: "file:///etc/shadow.raw"})
	if code, b := upload(tech, "", body, "application/json"); code != 400 || !strings.Contains(b, "only http") {
		t.Fatalf("file:// import: %d %s", code, b)
	}

	// Served with Range and the sha256 as ETag, to an API credential.
	get := func(path, token string, hdr ...string) (*http.Response, []byte) {
		t.Helper()
		req, _ := http.NewRequest("GET", files.URL+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, b
	}
	readonly := f.tokens[store.RoleReadonly]
	req, _ := http.NewRequest("GET", files.URL+"/images/deb-13", nil)
	req.Header.Set("Range", "bytes=10-19")
	req.Header.Set("Authorization", "Bearer "+readonly)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	part, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 206 || !bytes.Equal(part, gz.Bytes()[10:20]) || resp.Header.Get("ETag") != `"`+sum+`"` {
		t.Fatalf("ranged GET: %d %q %s", resp.StatusCode, part, resp.Header.Get("ETag"))
	}
	for _, p := range []string{"/images/nope", "/images/..%2fdb", "/images/.upload-1"} {
		if resp, _ := get(p, readonly); resp.StatusCode != 404 {
			t.Errorf("GET %s: %v", p, resp.StatusCode)
		}
	}
	// Not to anyone on the network, nor to a bad token, nor to an agent
	// whose node is not deploying it; to the agent of a node deploying it.
	if resp, _ := get("/images/deb-13", ""); resp.StatusCode != 401 {
		t.Errorf("image without credentials: %d", resp.StatusCode)
	}
	if resp, _ := get("/images/deb-13", "rbt_nope"); resp.StatusCode != 401 {
		t.Errorf("image with a bad token: %d", resp.StatusCode)
	}
	ctx := context.Background()
	armMAC := net.HardwareAddr{0x52, 0x54, 0, 0, 0x0a, 1}
	arm, _, _ := f.st.EnrollClient(ctx, boot.Client{MAC: armMAC, Arch: boot.ClientARM64UEFI}, time.Now())
	f.st.SetState(ctx, arm.ID, store.StateAvailable)
	agentToken := func(node string, mac net.HardwareAddr) string {
		code, b := f.call(t, nil, "POST", "/api/v1/agent/lookup", "", fmt.Sprintf(`{"macs":[%q],"boot_secret":%q}`, mac, f.bootSecret(t, node)))
		var res protocol.LookupResult
		if json.Unmarshal(b, &res); code != 200 {
			t.Fatalf("lookup: %d %s", code, b)
		}
		return res.Token
	}
	hvSecret, hvHash := NewSecret()
	if _, err := f.st.CreateToken(ctx, store.Token{Hash: hvHash, Kind: store.TokenHypervisor, NodeID: f.node.ID}); err != nil {
		t.Fatal(err)
	}
	if resp, _ := get("/images/deb-13", hvSecret); resp.StatusCode != 403 {
		t.Errorf("image to a hypervisor's agent: %d", resp.StatusCode)
	}
	idle := agentToken(f.node.ID, mustMAC("52:54:00:12:34:56"))
	if resp, _ := get("/images/deb-13", idle); resp.StatusCode != 403 {
		t.Errorf("image to the agent of a node not deploying it: %d", resp.StatusCode)
	}
	if code, b := f.call(t, nil, "POST", "/api/v1/nodes/"+arm.ID+"/actions/deploy", tech, `{"image":"deb-13"}`); code != 200 {
		t.Fatalf("deploy: %d %s", code, b)
	}
	deployer := agentToken(arm.ID, armMAC)
	code, hbb := f.call(t, nil, "POST", "/api/v1/agent/nodes/"+arm.ID+"/heartbeat", deployer, `{}`)
	var hb protocol.HeartbeatResult
	if json.Unmarshal(hbb, &hb); code != 200 || hb.Task == nil || hb.Task.Kind != "deploy" {
		t.Fatalf("deploy task: %d %s", code, hbb)
	}
	var params struct {
		ImageToken string `json:"image_token"`
	}
	json.Unmarshal(hb.Task.Params, &params)
	if !strings.HasPrefix(params.ImageToken, "rbi_") || len(params.ImageToken) < 40 {
		t.Fatalf("the agent's deploy task has no image token: %s", hb.Task.Params)
	}
	// The image token reads the image, on either port; on the boot port
	// nothing else does, so no credential has a reason to cross it in clear.
	bootGet := func(token string) (int, []byte) {
		req, _ := http.NewRequest("GET", bootPort.URL+"/images/deb-13", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	if code, b := bootGet(params.ImageToken); code != 200 || !bytes.Equal(b, gz.Bytes()) {
		t.Errorf("boot port, image token: %d, %d bytes", code, len(b))
	}
	if resp, b := get("/images/deb-13", params.ImageToken); resp.StatusCode != 200 || !bytes.Equal(b, gz.Bytes()) {
		t.Errorf("image token: %d, %d bytes", resp.StatusCode, len(b))
	}
	for name, tok := range map[string]string{"agent token": deployer, "readonly token": readonly, "admin token": f.tokens[store.RoleAdmin]} {
		if code, _ := bootGet(tok); code != 401 {
			t.Errorf("boot port, %s: %d, want 401", name, code)
		}
	}
	if code, _ := bootGet("rbi_" + strings.Repeat("0", 48)); code != 403 {
		t.Errorf("boot port, a forged image token: %d, want 403", code)
	}
	// People other than admins see that the deploy has one, not what it is.
	code, tb := f.call(t, nil, "GET", "/api/v1/tasks?node="+arm.ID, tech, "")
	if code != 200 || strings.Contains(string(tb), params.ImageToken) || !strings.Contains(string(tb), Withheld) {
		t.Errorf("a tech's view of the deploy task: %d %s", code, tb)
	}
	if resp, b := get("/images/deb-13", deployer); resp.StatusCode != 200 || !bytes.Equal(b, gz.Bytes()) {
		t.Errorf("image to the agent deploying it: %d, %d bytes", resp.StatusCode, len(b))
	}
	if resp, _ := get("/images/deb-13", idle); resp.StatusCode != 403 {
		t.Errorf("image to another node's agent while one deploys it: %d", resp.StatusCode)
	}

	// A deploy of the aarch64 image to the x86_64 node is refused; the
	// deploy task of a matching one says where to fetch and what to check.
	if code, b := f.call(t, nil, "POST", "/api/v1/nodes/"+f.node.ID+"/actions/deploy", tech, `{"image":"deb-13"}`); code != 409 {
		t.Fatalf("wrong-arch deploy: %d %s", code, b)
	}

	if code, _ := f.call(t, nil, "DELETE", "/api/v1/images/deb-13", f.tokens[store.RoleAdmin], ""); code != 204 {
		t.Fatalf("delete: %d", code)
	}
	if _, err := os.Stat(filepath.Join(dir, "deb-13.raw.gz")); !os.IsNotExist(err) {
		t.Fatalf("image file after delete: %v", err)
	}
	if resp, _ := get("/images/deb-13", readonly); resp.StatusCode != 404 {
		t.Fatalf("deleted image still served: %d", resp.StatusCode)
	}
}

func mustMAC(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}
