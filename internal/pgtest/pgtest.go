// Package pgtest gives tests a PostgreSQL server and empty databases on
// it: the server RACKBOOT_TEST_POSTGRES names, or a throwaway cluster that
// scripts/postgres.sh installs and starts. Only tests import it.
package pgtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5"
)

// Dir is where the throwaway cluster lives, shared by every package's
// tests: a cluster already running there is used, not started again.
func Dir() string { return filepath.Join(os.TempDir(), "rackboot-postgres-test") }

// Server returns the DSN of a PostgreSQL server to test against:
// RACKBOOT_TEST_POSTGRES, or else the cluster that script (the path of
// scripts/postgres.sh) starts in Dir. stop stops that cluster if tests
// started it and no other test binary still uses it, and does nothing
// otherwise, so a developer's running cluster stays up. The error says
// how to give the tests a server.
func Server(script string) (dsn string, stop func(), err error) {
	stop = func() {}
	if dsn := os.Getenv("RACKBOOT_TEST_POSTGRES"); dsn != "" {
		return dsn, stop, nil
	}
	script, err = filepath.Abs(script)
	if err != nil {
		return "", stop, err
	}
	dir := Dir()
	// Each test binary using the cluster holds a shared lock on users
	// (go test runs several packages' at once): the last one out stops
	// a cluster that tests started, while the others still use it.
	users, err := os.OpenFile(dir+".users", os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return "", stop, fmt.Errorf("postgres test cluster: %w", err)
	}
	if err := syscall.Flock(int(users.Fd()), syscall.LOCK_SH); err != nil {
		users.Close()
		return "", stop, fmt.Errorf("postgres test cluster: lock %s: %w", users.Name(), err)
	}
	started := filepath.Join(dir, "started-by-tests")
	running := exec.Command(script, "dsn", dir).Run() == nil
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(script, "start", dir)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		users.Close()
		return "", stop, fmt.Errorf("%s: %v\n%s\nThese tests need PostgreSQL: run them as root (the script installs Debian's postgresql), "+
			"or set RACKBOOT_TEST_POSTGRES to the postgres:// URL of a server where the user may create databases", script, err, stderr.String())
	}
	if !running {
		// A developer's own cluster has no such mark and stays up.
		os.WriteFile(started, nil, 0o644)
	}
	stop = func() {
		defer users.Close()
		syscall.Flock(int(users.Fd()), syscall.LOCK_UN)
		if _, err := os.Stat(started); err != nil {
			return
		}
		if syscall.Flock(int(users.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
			return // another package's tests still use it
		}
		exec.Command(script, "stop", dir).Run()
		os.Remove(started)
	}
	return strings.TrimSpace(stdout.String()), stop, nil
}

// Database creates an empty database on the server base names, dropped
// when the test ends, and returns its DSN.
func Database(t testing.TB, base string) string {
	t.Helper()
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("connect to the test server: %v", err)
	}
	defer admin.Close(ctx)
	b := make([]byte, 6)
	rand.Read(b)
	name := "rbtest_" + hex.EncodeToString(b)
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create database: %v", err)
	}
	t.Cleanup(func() {
		c, err := pgx.Connect(ctx, base)
		if err != nil {
			t.Errorf("drop database %s: %v", name, err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	return u.String()
}
