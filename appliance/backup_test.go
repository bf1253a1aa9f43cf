package appliance

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rackboot/rackboot/store/sqlite"
)

// TestServeRefusesForeignDatabase: the appliance does not start on a data
// dir whose rackboot.db is not a rackboot database; the error names the
// file and what to do, and the file is left as it was.
func TestServeRefusesForeignDatabase(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, DBFile)
	junk := []byte("PK\x03\x04 a zip file, say\n")
	if err := os.WriteFile(db, junk, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := Config{DataDir: dir, ServerIP: "127.0.0.1", HTTPAddr: "127.0.0.1:0", TFTPAddr: "127.0.0.1:0", DHCP: DHCPConfig{Mode: DHCPOff}}
	err := run(context.Background(), cfg, nil, hooks{})
	if !errors.Is(err, sqlite.ErrNotRackboot) || !strings.Contains(err.Error(), db) || !strings.Contains(err.Error(), "rackboot restore") {
		t.Fatalf("serve on a zip file: %v", err)
	}
	t.Log(err)
	if b, _ := os.ReadFile(db); string(b) != string(junk) {
		t.Error("the file changed")
	}
}
