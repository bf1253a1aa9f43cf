//go:build integration

package firmware

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// countingTransport counts the requests and response bytes that pass.
type countingTransport struct {
	requests, bytes atomic.Int64
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.requests.Add(1)
	resp, err := http.DefaultTransport.RoundTrip(r)
	if err == nil {
		resp.Body = &countingBody{resp.Body, &c.bytes}
	}
	return resp, err
}

type countingBody struct {
	body interface {
		Read([]byte) (int, error)
		Close() error
	}
	n *atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.body.Read(p)
	b.n.Add(int64(n))
	return n, err
}

func (b *countingBody) Close() error { return b.body.Close() }

// TestFetchFromArchive fetches the real loaders from the host's Debian
// mirror (its apt configuration), checks each is what its name says, and
// that a second fetch goes nowhere.
func TestFetchFromArchive(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	dir := t.TempDir()
	ct := &countingTransport{}
	o := Options{Dest: dir, Client: &http.Client{Transport: ct}}
	start := time.Now()
	m, err := Fetch(ctx, o)
	if err != nil {
		t.Fatalf("%v (is the host's apt configuration pointing at a reachable Debian mirror?)", err)
	}
	t.Logf("fetched %d files from %s %s: %d requests, %d bytes in %s",
		len(m.Files), m.Mirror, m.Suite, ct.requests.Load(), ct.bytes.Load(), time.Since(start).Round(time.Millisecond))
	for _, w := range Loaders() {
		b, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(w.Dest)))
		if err != nil {
			t.Fatal(err)
		}
		e := m.Files[w.Dest]
		t.Logf("%-26s %8d bytes  %s %s (%s)", w.Dest, len(b), e.Package, e.Version, e.Arch)
		switch filepath.Ext(w.Dest) {
		case ".efi":
			if !bytes.HasPrefix(b, []byte("MZ")) {
				t.Errorf("%s is not a PE/COFF image: starts %q", w.Dest, b[:min(len(b), 8)])
			}
			if len(b) < 64<<10 {
				t.Errorf("%s is only %d bytes", w.Dest, len(b))
			}
		case ".kpxe":
			// A PXE NBP is loaded at 0x7c00 below 640 KiB: a real one is
			// tens of KiB, and iPXE's starts with a jump.
			if len(b) < 32<<10 || len(b) > 512<<10 {
				t.Errorf("%s is %d bytes, not the size of a PXE loader", w.Dest, len(b))
			}
		}
	}
	if err := Verify(dir); err != nil {
		t.Fatal(err)
	}

	// A second fetch downloads nothing: a mirror that cannot be reached
	// would fail it if it tried.
	ct2 := &countingTransport{}
	o2 := Options{Mirror: "http://127.0.0.1:1/debian", Suite: m.Suite, Dest: dir, Client: &http.Client{Transport: ct2}}
	if _, err := Fetch(ctx, o2); err != nil {
		t.Fatalf("second fetch went to the network: %v", err)
	}
	if n := ct2.requests.Load(); n != 0 {
		t.Errorf("second fetch made %d requests", n)
	}
}

// TestFetchKernelFromArchive resolves a cloud kernel metapackage to its
// real package and takes the kernel out of it.
func TestFetchKernelFromArchive(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	ct := &countingTransport{}
	o := Options{Client: &http.Client{Transport: ct}}
	kernel := filepath.Join(t.TempDir(), "vmlinuz")
	start := time.Now()
	pkg, err := FetchKernel(ctx, o, "linux-image-cloud-arm64", "arm64", kernel)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(kernel)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: %d bytes; %d requests, %d bytes in %s", pkg, len(b), ct.requests.Load(), ct.bytes.Load(), time.Since(start).Round(time.Millisecond))
	// An arm64 Image has "ARM\x64" at offset 56.
	if len(b) < 64 || string(b[56:60]) != "ARM\x64" {
		t.Errorf("%s is not an arm64 kernel Image", kernel)
	}
	if err := Verify(filepath.Dir(kernel)); err != nil {
		t.Fatal(err)
	}
}
