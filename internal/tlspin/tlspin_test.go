package tlspin

import (
	"crypto/x509"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// serve answers HTTPS on 127.0.0.1 with b.
func serve(t *testing.T, b Bundle) string {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	srv.TLS = b.ServerConfig()
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.URL
}

func get(url string, pins []string) error {
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: ClientConfig(pins)}}
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, err = io.ReadAll(resp.Body)
	return err
}

func TestGeneratedIsPinnedByItsCA(t *testing.T) {
	dir := t.TempDir()
	b, err := Generated(dir, []string{"127.0.0.1", "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	url := serve(t, b)
	if err := get(url, b.Pins); err != nil {
		t.Fatalf("the right pin: %v", err)
	}
	other, err := Generated(t.TempDir(), []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := get(url, other.Pins); !errors.Is(err, ErrPin) {
		t.Fatalf("another appliance's pin: got %v, want ErrPin", err)
	}
	for name, mode := range map[string]os.FileMode{caKey: 0o600, keyFile: 0o600, CAFile: 0o644} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil || st.Mode().Perm() != mode {
			t.Errorf("%s: %v %v, want mode %v", name, st.Mode(), err, mode)
		}
	}
}

func TestReissueKeepsThePin(t *testing.T) {
	dir := t.TempDir()
	first, err := Generated(dir, []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	again, err := Generated(dir, []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	if !first.Cert.Leaf.Equal(again.Cert.Leaf) {
		t.Error("a second start reissued a certificate that still fits")
	}
	// A new address: a new server certificate, the same CA and pin.
	moved, err := Generated(dir, []string{"127.0.0.1", "10.9.9.9"})
	if err != nil {
		t.Fatal(err)
	}
	if moved.Cert.Leaf.Equal(first.Cert.Leaf) || moved.Pins[0] != first.Pins[0] {
		t.Fatalf("reissue: same leaf %v, pins %v → %v", moved.Cert.Leaf.Equal(first.Cert.Leaf), first.Pins, moved.Pins)
	}
	if err := get(serve(t, moved), first.Pins); err != nil {
		t.Fatalf("an agent pinned before the reissue: %v", err)
	}
}

func TestVerify(t *testing.T) {
	b, err := Generated(t.TempDir(), []string{"127.0.0.1", "boot.example"})
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(b.Cert.Certificate[1])
	if err != nil {
		t.Fatal(err)
	}
	leaf := b.Cert.Leaf
	stranger, err := Generated(t.TempDir(), []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	strangerCA, _ := x509.ParseCertificate(stranger.Cert.Certificate[1])
	for _, tt := range []struct {
		name  string
		chain []*x509.Certificate
		pins  []string
		host  string
		want  string
	}{
		{"pinned CA", []*x509.Certificate{leaf, ca}, b.Pins, "127.0.0.1", ""},
		{"pinned CA, a name", []*x509.Certificate{leaf, ca}, b.Pins, "boot.example", ""},
		{"second pin", []*x509.Certificate{leaf, ca}, []string{stranger.Pins[0], b.Pins[0]}, "127.0.0.1", ""},
		{"pinned leaf", []*x509.Certificate{leaf}, []string{Fingerprint(leaf.Raw)}, "anything", ""},
		{"wrong host", []*x509.Certificate{leaf, ca}, b.Pins, "10.1.2.3", "not 10.1.2.3"},
		{"no pin matches", []*x509.Certificate{leaf, ca}, stranger.Pins, "127.0.0.1", "matches no pinned"},
		// A chain that claims the pinned CA but whose leaf it never signed.
		{"leaf of another CA", []*x509.Certificate{stranger.Cert.Leaf, ca}, b.Pins, "127.0.0.1", "unknown authority"},
		{"the pinned CA of another chain", []*x509.Certificate{leaf, strangerCA}, stranger.Pins, "127.0.0.1", "unknown authority"},
		{"nothing", nil, b.Pins, "127.0.0.1", "no certificate"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := Verify(tt.chain, tt.pins, tt.host)
			if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
				t.Errorf("Verify: %v, want %q", err, tt.want)
			}
		})
	}
}

func TestParsePins(t *testing.T) {
	fp := Fingerprint([]byte("x"))
	upper := "SHA256:" + strings.ToUpper(strings.TrimPrefix(fp, "sha256:"))
	got, err := ParsePins(upper + ", " + fp)
	if err != nil || len(got) != 2 || got[0] != fp || got[1] != fp {
		t.Errorf("ParsePins: %v %v", got, err)
	}
	for _, bad := range []string{"", "md5:abcd", "sha256:xyz", "sha256:" + strings.Repeat("a", 62)} {
		if _, err := ParsePins(bad); err == nil {
			t.Errorf("ParsePins(%q) took it", bad)
		}
	}
}

func TestFromFilesPinsTheChainsRoot(t *testing.T) {
	dir := t.TempDir()
	b, err := Generated(dir, []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	// An operator's file: the leaf and its CA, as a CA-signed certificate comes.
	leafPEM, _ := os.ReadFile(filepath.Join(dir, certFile))
	caPEM, _ := os.ReadFile(filepath.Join(dir, CAFile))
	chain := filepath.Join(t.TempDir(), "chain.pem")
	os.WriteFile(chain, append(leafPEM, caPEM...), 0o600)
	op, err := FromFiles(chain, filepath.Join(dir, keyFile))
	if err != nil {
		t.Fatal(err)
	}
	if op.Pins[0] != b.Pins[0] {
		t.Errorf("pin %s, want the CA's %s", op.Pins[0], b.Pins[0])
	}
	if err := get(serve(t, op), op.Pins); err != nil {
		t.Fatal(err)
	}
	if _, err := FromFiles(chain, filepath.Join(dir, caKey)); err == nil {
		t.Error("a key of another certificate was taken")
	}
}
