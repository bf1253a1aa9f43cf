package appliance

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"log/slog"

	"github.com/rackboot/rackboot/api"
	"github.com/rackboot/rackboot/internal/sealbox"
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
	for _, p := range []string{db, db + "-wal", db + "-shm", filepath.Join(dir, TokenFile), filepath.Join(dir, PasswordFile), filepath.Join(dir, SecretKeyFile)} {
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

// secretKeyPath is the key file a server uses: file, or DATA_DIR/secret.key.
func secretKeyPath(dataDir, file string) (path string, isDefault bool) {
	if file == "" {
		return filepath.Join(dataDir, SecretKeyFile), true
	}
	return file, false
}

// LoadSecrets reads the key file BMC passwords are sealed with: file, or
// DATA_DIR/secret.key, which is written (0600, one new key) when missing.
// A file named explicitly must exist: servers sharing a database must
// share its keys, and a fresh key on one of them would seal passwords the
// others cannot open.
//
// The server reads the file again whenever it changes, so a rotation
// (rackboot secrets rotate) takes effect without a restart.
func LoadSecrets(dataDir, file string, log *slog.Logger) (*sealbox.File, error) {
	path, isDefault := secretKeyPath(dataDir, file)
	f, created, err := sealbox.OpenFile(path, isDefault)
	if err != nil {
		return nil, err
	}
	if created && log != nil {
		log.Info("wrote a new secret key for BMC passwords; servers sharing this database need the same file", "file", path, "key", f.Box().Current())
	}
	return f, nil
}

// RotateResult says what a key rotation did.
type RotateResult struct {
	Path     string
	NewKey   string
	Resealed int
	// Changed counts passwords set by someone else while the rotation
	// ran: they were sealed by a server, so with a key of the file.
	Changed int
	Dropped []string // keys removed from the file (dropOld)
}

// RotateSecrets adds a new key at the head of the key file, re-seals every
// BMC password in the database with it, and with dropOld then removes the
// old keys from the file. The file is written first, keeping the old keys,
// so a rotation cut short leaves every password readable. Other servers
// sharing the database need the new file before they can open what it
// re-sealed.
func RotateSecrets(ctx context.Context, dsn, dataDir, file string, dropOld bool) (RotateResult, error) {
	path, _ := secretKeyPath(dataDir, file)
	old, _, err := sealbox.Load(path, false)
	if err != nil {
		return RotateResult{}, err
	}
	st, err := OpenStore(ctx, dsn, dataDir)
	if err != nil {
		return RotateResult{}, err
	}
	defer st.Close()
	box := old.WithNewKey()
	if err := box.Save(path); err != nil {
		return RotateResult{}, err
	}
	res := RotateResult{Path: path, NewKey: box.Current()}
	bmcs, err := st.BMCs(ctx)
	if err != nil {
		return res, err
	}
	for _, b := range bmcs {
		if b.Password == nil {
			continue
		}
		pw, err := box.Open(b.Password, api.BMCPasswordAD(b.NodeID))
		if err != nil {
			return res, fmt.Errorf("rotate: the BMC password of node %s: %w", b.NodeID, err)
		}
		err = st.ResealBMC(ctx, b.NodeID, b.Password, box.Seal(pw, api.BMCPasswordAD(b.NodeID)))
		switch {
		case errors.Is(err, store.ErrConflict), errors.Is(err, store.ErrNotFound):
			res.Changed++
		case err != nil:
			return res, fmt.Errorf("rotate: %w", err)
		default:
			res.Resealed++
		}
	}
	if dropOld {
		// Only when nothing in the database names an old key any more.
		bmcs, err := st.BMCs(ctx)
		if err != nil {
			return res, err
		}
		for _, b := range bmcs {
			if b.Password == nil {
				continue
			}
			if id, _ := sealbox.KeyOf(b.Password); id != box.Current() {
				return res, fmt.Errorf("rotate: node %s's BMC password is still sealed with key %s: old keys kept; run rotate again", b.NodeID, id)
			}
		}
		res.Dropped = box.KeyIDs()[1:]
		if err := box.OnlyCurrent().Save(path); err != nil {
			return res, err
		}
	}
	return res, nil
}
