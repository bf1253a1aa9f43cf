package appliance

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// traversals are the ways a request may try to name a file outside the
// directory it is served from: dots plain, encoded once or twice,
// backslashes, absolute paths, NUL, and mixtures, at several depths.
func traversals(target string) []string {
	ups := []string{"../", "..%2f", "..%2F", "%2e%2e/", "%2e%2e%2f", "%252e%252e%252f", "..%252f", "..\\", "..%5c",
		"....//", "..;/", ".%2e/", "%2e./", "..%c0%af", "../%00", "./../"}
	var out []string
	for _, up := range ups {
		for depth := 1; depth <= 8; depth++ {
			out = append(out, strings.Repeat(up, depth)+target)
		}
	}
	abs := []string{"/" + target, "//" + target, "%2f" + target, "file:///" + target, target + "%00.efi", target + "\x00.efi",
		"\\" + strings.ReplaceAll(target, "/", "\\")}
	return append(out, abs...)
}

// readTFTP asks for name and returns the first data block (the canary
// fits in one), or nil for an error or no answer.
func readTFTP(t *testing.T, addr net.Addr, name string) []byte {
	t.Helper()
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := append([]byte{0, 1}, append([]byte(name), 0)...)
	req = append(req, "octet\x00"...)
	if _, err := c.WriteTo(req, addr); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 1024)
	n, from, err := c.ReadFrom(buf)
	if err != nil || n < 4 || binary.BigEndian.Uint16(buf) != 3 {
		return nil
	}
	// Acknowledged, so the transfer ends: a block the server sent again
	// could reach a later request's socket on the same port.
	c.WriteTo([]byte{0, 4, buf[2], buf[3]}, from)
	return append([]byte(nil), buf[4:n]...)
}

// TestNoPathLeavesItsRoot sends thousands of traversal payloads at TFTP,
// boot HTTP, the image files and the API's image routes (with an admin
// token), and symlinks out of the served trees,
// with a canary file outside the data dir: no answer holds a byte of it.
func TestNoPathLeavesItsRoot(t *testing.T) {
	top := t.TempDir()
	dir := filepath.Join(top, "data")
	canary := []byte("CANARY-" + strings.Repeat("7", 20))
	if err := os.WriteFile(filepath.Join(top, "canary.txt"), canary, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"artifacts/x86_64", "firmware/ipxe", "images"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// Links in the served trees that point out of them.
	for _, l := range []string{"artifacts/x86_64/evil", "firmware/ipxe/evil.efi", "artifacts/evil", "firmware/evil"} {
		if err := os.Symlink(filepath.Join(top, "canary.txt"), filepath.Join(dir, l)); err != nil {
			t.Fatal(err)
		}
	}
	os.Symlink(top, filepath.Join(dir, "artifacts", "up"))
	// An Ironic conductor's trees, outside the data dir, with links out of
	// them too.
	ironicTFTP, ironicHTTP := filepath.Join(top, "tftpboot"), filepath.Join(top, "httpboot")
	for _, d := range []string{ironicTFTP, ironicHTTP} {
		if err := os.MkdirAll(filepath.Join(d, "pxelinux.cfg"), 0o755); err != nil {
			t.Fatal(err)
		}
		os.Symlink(filepath.Join(top, "canary.txt"), filepath.Join(d, "evil"))
		os.Symlink("../../canary.txt", filepath.Join(d, "pxelinux.cfg", "evil"))
		os.Symlink(top, filepath.Join(d, "up"))
	}

	ctx, cancel := context.WithCancel(context.Background())
	httpAddr, tftpAddr := make(chan net.Addr, 1), make(chan net.Addr, 1)
	done := make(chan error, 1)
	cfg := Config{DataDir: dir, ServerIP: "127.0.0.1", HTTPAddr: "127.0.0.1:0", TFTPAddr: "127.0.0.1:0", DHCP: DHCPConfig{Mode: DHCPOff},
		Ironic: IronicConfig{Roots: []IronicRootConfig{{Name: "c1", TFTPRoot: ironicTFTP, HTTPRoot: ironicHTTP}}}}
	go func() {
		done <- run(ctx, cfg, nil, hooks{serving: func(a net.Addr) { httpAddr <- a }, tftpServing: func(a net.Addr) { tftpAddr <- a }})
	}()
	var base string
	select {
	case a := <-httpAddr:
		base = "http://" + a.String()
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
		cancel()
		t.Fatal("the appliance did not start in 30s")
	}
	tftp := <-tftpAddr
	token, _ := os.ReadFile(filepath.Join(dir, TokenFile))

	target := "canary.txt"
	rel, _ := filepath.Rel("/", filepath.Join(top, "canary.txt"))
	var payloads []string
	for _, p := range append(traversals(target), traversals(rel)...) {
		payloads = append(payloads, p)
	}
	payloads = append(payloads, "evil", "x86_64/evil", "ipxe/evil.efi", "up/canary.txt", "artifacts/up/canary.txt",
		"artifacts/x86_64/evil", "artifacts/evil", "firmware/evil", "pxelinux.cfg/evil", "ironic/c1/evil", "ironic/c1/up/canary.txt")

	client := &http.Client{Timeout: 5 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	// The control: the same bytes inside a served tree do come back, over
	// both protocols, so a leak would be seen.
	if err := os.WriteFile(filepath.Join(dir, "artifacts", "x86_64", "inside.txt"), canary, 0o644); err != nil {
		t.Fatal(err)
	}
	if resp, err := client.Get(base + "/artifacts/x86_64/inside.txt"); err != nil {
		t.Fatal(err)
	} else {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !bytes.Equal(b, canary) {
			t.Fatalf("control: a file inside the tree over HTTP: %d %q", resp.StatusCode, b)
		}
	}
	if b := readTFTP(t, tftp, "artifacts/x86_64/inside.txt"); !bytes.Equal(b, canary) {
		t.Fatalf("control: a file inside the tree over TFTP: %q", b)
	}
	os.Remove(filepath.Join(dir, "artifacts", "x86_64", "inside.txt"))
	// The same for Ironic's trees, through a relative link as Ironic makes
	// them (pxelinux.cfg/MAC -> ../UUID/config).
	for _, d := range []string{ironicTFTP, ironicHTTP} {
		os.WriteFile(filepath.Join(d, "inside.txt"), canary, 0o644)
		os.Symlink("../inside.txt", filepath.Join(d, "pxelinux.cfg", "aa-bb"))
	}
	if resp, err := client.Get(base + "/ironic/c1/pxelinux.cfg/aa-bb"); err != nil {
		t.Fatal(err)
	} else {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !bytes.Equal(b, canary) || resp.Header.Get("Cache-Control") != "no-store" || resp.Header.Get("ETag") != "" {
			t.Fatalf("control: a file inside Ironic's http_root, uncached: %d %q %v", resp.StatusCode, b, resp.Header)
		}
	}
	for _, name := range []string{"ironic/c1/pxelinux.cfg/aa-bb", "/tftpboot/pxelinux.cfg/aa-bb"} {
		if b := readTFTP(t, tftp, name); !bytes.Equal(b, canary) {
			t.Fatalf("control: %s in Ironic's tftp_root over TFTP: %q", name, b)
		}
	}
	for _, d := range []string{ironicTFTP, ironicHTTP} {
		os.Remove(filepath.Join(d, "inside.txt"))
	}
	tried, leaked := 0, 0
	check := func(where string, body []byte) {
		tried++
		if bytes.Contains(body, canary[:12]) {
			leaked++
			t.Errorf("%s answered the canary", where)
		}
	}
	for _, p := range payloads {
		for _, prefix := range []string{"/firmware/", "/artifacts/", "/images/", "/api/v1/images/", "/ipxe/", "/grub/", "/ironic/c1/", "/ironic/", "/"} {
			// Sent as written: the request line carries the encodings.
			req, err := http.NewRequest("GET", base+"/", nil)
			if err != nil {
				t.Fatal(err)
			}
			req.URL.Opaque = "//" + req.URL.Host + prefix + strings.ReplaceAll(p, "\x00", "%00")
			if strings.ContainsAny(req.URL.Opaque, " \x00") {
				continue
			}
			req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
			resp, err := client.Do(req)
			if err != nil {
				continue // refused before an answer: nothing leaked
			}
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
			resp.Body.Close()
			check("GET "+prefix+url.PathEscape(p), b)
		}
		for _, name := range []string{p, "artifacts/" + p, "ipxe/" + p, "ironic/c1/" + p, "tftpboot/" + p, "/tftpboot/" + p} {
			check("TFTP "+name, readTFTP(t, tftp, name))
		}
	}
	t.Logf("%d traversal requests over HTTP and TFTP, %d answered a canary byte", tried, leaked)
	if tried < 500 {
		t.Errorf("only %d requests tried: the test proves little", tried)
	}
}
