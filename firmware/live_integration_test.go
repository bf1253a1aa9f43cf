//go:build integration

package firmware

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestFetchFromArchive fetches the real loaders from the host's Debian
// mirror, then checks each is what its name says.
func TestFetchFromArchive(t *testing.T) {
	dir := t.TempDir()
	start := time.Now()
	m, err := Fetch(context.Background(), Options{}, dir, Loaders())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("fetched %d files from %s %s in %s", len(m.Files), m.Mirror, m.Suite, time.Since(start).Round(time.Millisecond))
	for _, w := range Loaders() {
		b, err := os.ReadFile(filepath.Join(dir, w.Dest))
		if err != nil {
			t.Fatal(err)
		}
		if filepath.Ext(w.Dest) == ".efi" && !bytes.HasPrefix(b, []byte("MZ")) {
			t.Errorf("%s is not a PE/COFF image", w.Dest)
		}
		if len(b) < 32<<10 {
			t.Errorf("%s is only %d bytes", w.Dest, len(b))
		}
	}
	if err := Verify(dir, Loaders()); err != nil {
		t.Fatal(err)
	}
	// A second fetch downloads nothing: the client would fail if it tried.
	if _, err := Fetch(context.Background(), Options{Mirror: "http://127.0.0.1:1", Suite: m.Suite}, dir, Loaders()); err != nil {
		t.Fatalf("second fetch went to the network: %v", err)
	}
}
