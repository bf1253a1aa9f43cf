package appliance

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/rackboot/rackboot/api"
	"github.com/rackboot/rackboot/internal/secret"
	"github.com/rackboot/rackboot/store"
)

// privateDataDir makes the data dir 0700 and the database files in it
// 0600: they hold bcrypt hashes and task secrets (cloud-init data), and
// the API token file is readable as it is. SQLite creates its -wal and
// -shm files with the mode of the database file.
func privateDataDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	db := filepath.Join(dir, DBFile)
	f, err := os.OpenFile(db, os.O_RDONLY|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	f.Close()
	for _, p := range []string{db, db + "-wal", db + "-shm", filepath.Join(dir, TokenFile), filepath.Join(dir, PasswordFile)} {
		if err := os.Chmod(p, 0o600); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("data dir: %w", err)
		}
	}
	return nil
}

// bootstrapTokenID names the bootstrap token of one data dir: servers
// sharing a database each have their own.
func bootstrapTokenID(dataDir string) string {
	abs, err := filepath.Abs(dataDir)
	if err != nil {
		abs = dataDir
	}
	h := sha256.Sum256([]byte(abs))
	return "bootstrap-" + hex.EncodeToString(h[:6])
}

// SetBootstrapToken makes the secret in DATA_DIR/admin.token the data
// dir's bootstrap admin token, an API token like any other: checked
// against the database on every request, so replacing it (rackboot token
// rotate-bootstrap) takes effect on a running server.
func SetBootstrapToken(ctx context.Context, st interface {
	CreateToken(ctx context.Context, t store.Token) (store.Token, error)
	DeleteToken(ctx context.Context, id string) error
}, dataDir, tok string) error {
	id := bootstrapTokenID(dataDir)
	if err := st.DeleteToken(ctx, id); err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("bootstrap token: %w", err)
	}
	_, err := st.CreateToken(ctx, store.Token{ID: id, Hash: secret.Hash(tok), Kind: "api", Role: store.RoleAdmin,
		Name: "bootstrap (" + filepath.Join(dataDir, TokenFile) + ")"})
	if err != nil {
		return fmt.Errorf("bootstrap token: %w", err)
	}
	return nil
}

// RotateBootstrapToken writes a new admin.token and makes it the data
// dir's bootstrap token; the old secret stops working at once, on every
// server sharing the database.
func RotateBootstrapToken(ctx context.Context, dsn, dataDir string) (path string, err error) {
	st, err := OpenStore(ctx, dsn, dataDir)
	if err != nil {
		return "", err
	}
	defer st.Close()
	tok, _ := api.NewSecret()
	path = filepath.Join(dataDir, TokenFile)
	// The new secret reaches the file (mode 0600 from its first byte)
	// before the database: a rotation cut short leaves the old token
	// working, never a token nobody has.
	tmp, err := os.CreateTemp(dataDir, ".tmp-"+TokenFile+"-*")
	if err != nil {
		return "", fmt.Errorf("bootstrap token: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.WriteString(tok + "\n")
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("bootstrap token: %w", err)
	}
	old := filepath.Join(dataDir, "."+TokenFile+".old")
	os.Remove(old)
	os.Link(path, old)
	if err := os.Rename(tmp.Name(), path); err != nil {
		return "", fmt.Errorf("bootstrap token: %w", err)
	}
	if err := SetBootstrapToken(ctx, st, dataDir, tok); err != nil {
		// Put the old file back: its token is the one that still works.
		os.Rename(old, path)
		return "", err
	}
	os.Remove(old)
	return path, nil
}
