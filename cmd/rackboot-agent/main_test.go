package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"os/exec"
	"strings"
	"testing"
)

// TestDeps keeps the ramdisk small and the boundary real: the agent
// shares types with the server but none of its router, drivers or store.
func TestDeps(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	banned := []string{"github.com/go-chi/", "modernc.org/sqlite", "github.com/jackc/pgx", "github.com/mattn/go-sqlite3",
		"github.com/rackboot/rackboot/store", "github.com/rackboot/rackboot/api"}
	for _, pkg := range strings.Fields(string(out)) {
		for _, b := range banned {
			if strings.HasPrefix(pkg, b) {
				t.Errorf("the agent depends on %s", pkg)
			}
		}
	}
}

func TestRun(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"--help"}, &stdout, &stderr); !errors.Is(err, flag.ErrHelp) || !strings.Contains(stdout.String(), "inventory") {
		t.Errorf("--help: %v, %q", err, stdout.String())
	}
	if err := run(context.Background(), []string{"bogus"}, &stdout, &stderr); !errors.Is(err, errUsage) {
		t.Errorf("unknown command: %v", err)
	}
	stdout.Reset()
	err := run(context.Background(), []string{"inventory", "--root", "../../agent/inventory/testdata/t4", "--pci-ids", "../../agent/inventory/testdata/pci.ids"}, &stdout, &stderr)
	if err != nil {
		t.Fatal(err, stderr.String())
	}
	var inv struct {
		Version int `json:"version"`
		GPUs    []struct {
			Model string `json:"model"`
		} `json:"gpus"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &inv); err != nil || inv.Version != 1 || len(inv.GPUs) != 1 || inv.GPUs[0].Model != "Tesla T4" {
		t.Errorf("inventory: %v %+v", err, inv)
	}
}
