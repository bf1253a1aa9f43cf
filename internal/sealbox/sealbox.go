// Package sealbox encrypts the secrets rackboot must read back (BMC
// passwords), unlike the ones it only checks (package secret hashes
// those). A Box holds a key ring read from a key file: the first key seals,
// every key opens. Each sealed value records the id of its key, so a
// rotation can add a key, re-seal everything with it and later drop the
// old one, and a server with the wrong file says which key it lacks.
//
// Sealed form: "rbs1" (4 bytes), the key id (8 bytes), a 12-byte random
// nonce, then AES-256-GCM ciphertext and tag. The caller's additional data
// (for a BMC password, its node's id) is authenticated with it, so a
// sealed value copied to another row does not open there.
//
// Key file: one key per line, base64 of 32 random bytes; blank lines and
// lines starting with # are ignored; the first key is the sealing key.
package sealbox

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

const (
	magic    = "rbs1"
	idLen    = 8
	keyLen   = 32
	nonceLen = 12
	header   = len(magic) + idLen + nonceLen
)

// ErrUnknownKey is returned when a sealed value names a key the ring
// does not hold.
var ErrUnknownKey = errors.New("sealed with a key this server does not have")

// ErrOpen is returned when a sealed value does not authenticate: a wrong
// key of the same id (impossible unless the file was edited), tampered
// bytes, or the wrong additional data.
var ErrOpen = errors.New("sealed value does not authenticate (tampered, or sealed for something else)")

// ErrMalformed is returned for bytes that are no sealed value at all.
var ErrMalformed = errors.New("not a sealed value")

// Key is one AES-256 key and its id.
type Key struct {
	ID   string // hex, derived from the key
	aead cipher.AEAD
	raw  []byte
}

// KeyID is the id of a raw key: the first 8 bytes of a SHA-256 over it,
// in hex. Deriving it means an id can never name the wrong key.
func KeyID(raw []byte) string {
	h := sha256.Sum256(append([]byte("rackboot sealbox key id\x00"), raw...))
	return hex.EncodeToString(h[:idLen])
}

func newKey(raw []byte) (Key, error) {
	if len(raw) != keyLen {
		return Key{}, fmt.Errorf("key is %d bytes, want %d", len(raw), keyLen)
	}
	b, err := aes.NewCipher(raw)
	if err != nil {
		return Key{}, err
	}
	g, err := cipher.NewGCM(b)
	if err != nil {
		return Key{}, err
	}
	return Key{ID: KeyID(raw), aead: g, raw: bytes.Clone(raw)}, nil
}

// Box seals with its first key and opens with any. Safe for concurrent use.
type Box struct {
	keys []Key
}

// New returns a Box on raw keys, the first the sealing key.
func New(raw ...[]byte) (*Box, error) {
	if len(raw) == 0 {
		return nil, errors.New("sealbox: no key")
	}
	b := &Box{}
	for i, r := range raw {
		k, err := newKey(r)
		if err != nil {
			return nil, fmt.Errorf("sealbox: key %d: %w", i+1, err)
		}
		b.keys = append(b.keys, k)
	}
	return b, nil
}

// NewKey returns 32 random bytes.
func NewKey() []byte {
	k := make([]byte, keyLen)
	rand.Read(k)
	return k
}

// Parse reads a key file's text.
func Parse(text []byte) (*Box, error) {
	var raw [][]byte
	for i, line := range strings.Split(string(text), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, err := base64.StdEncoding.DecodeString(line)
		if err != nil {
			return nil, fmt.Errorf("line %d: not base64: %w", i+1, err)
		}
		if len(k) != keyLen {
			return nil, fmt.Errorf("line %d: key is %d bytes, want %d", i+1, len(k), keyLen)
		}
		raw = append(raw, k)
	}
	if len(raw) == 0 {
		return nil, errors.New("no key in the file")
	}
	return New(raw...)
}

// Format is the key file text of a Box.
func (b *Box) Format() []byte {
	var s strings.Builder
	s.WriteString("# rackboot secret keys: the first seals, every one opens. Keep this file private (0600)\n# and the same on every server sharing the database.\n")
	for _, k := range b.keys {
		fmt.Fprintf(&s, "%s\n", base64.StdEncoding.EncodeToString(k.raw))
	}
	return []byte(s.String())
}

// Load reads a key file. With create set, a missing file is written with
// one new key, mode 0600, and created reports it.
func Load(path string, create bool) (b *Box, created bool, err error) {
	text, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) && create {
		b, _ = New(NewKey())
		if err := writeNew(path, b.Format()); err != nil {
			return nil, false, fmt.Errorf("secret key file: %w", err)
		}
		return b, true, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("secret key file: %w", err)
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		return nil, false, fmt.Errorf("secret key file %s: mode %v lets others read it; chmod 600 it", path, fi.Mode().Perm())
	}
	b, err = Parse(text)
	if err != nil {
		return nil, false, fmt.Errorf("secret key file %s: %w", path, err)
	}
	return b, false, nil
}

// writeNew writes a file that must not exist yet, 0600 from its first
// byte, whole or not at all: the key goes to a synced temporary file that
// is then linked into place, which fails if the file exists. A crash
// between creating the file and writing the key would otherwise leave an
// empty key file that every later start refuses.
func writeNew(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Link(tmp.Name(), path)
}

// Save replaces the key file at path with b's keys, atomically, 0600.
func (b *Box) Save(path string) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return fmt.Errorf("secret key file: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(b.Format())
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("secret key file: %w", err)
	}
	return nil
}

// WithNewKey returns a Box whose sealing key is a new one, keeping b's
// keys to open what they sealed.
func (b *Box) WithNewKey() *Box {
	k, _ := newKey(NewKey())
	return &Box{keys: append([]Key{k}, b.keys...)}
}

// OnlyCurrent returns a Box with b's sealing key alone: what remains
// after every value was re-sealed.
func (b *Box) OnlyCurrent() *Box { return &Box{keys: b.keys[:1:1]} }

// KeyIDs lists the ids of the ring's keys, the sealing key first.
func (b *Box) KeyIDs() []string {
	var ids []string
	for _, k := range b.keys {
		ids = append(ids, k.ID)
	}
	return ids
}

// Current is the id of the sealing key.
func (b *Box) Current() string { return b.keys[0].ID }

// Seal encrypts plaintext, authenticating ad with it.
func (b *Box) Seal(plaintext, ad []byte) []byte {
	k := b.keys[0]
	out := make([]byte, header, header+len(plaintext)+k.aead.Overhead())
	copy(out, magic)
	id, _ := hex.DecodeString(k.ID)
	copy(out[len(magic):], id)
	rand.Read(out[len(magic)+idLen : header])
	return k.aead.Seal(out, out[len(magic)+idLen:header], plaintext, append(out[:len(magic)+idLen:len(magic)+idLen], ad...))
}

// KeyOf returns the id of the key a sealed value names.
func KeyOf(sealed []byte) (string, error) {
	if len(sealed) < header || string(sealed[:len(magic)]) != magic {
		return "", ErrMalformed
	}
	return hex.EncodeToString(sealed[len(magic) : len(magic)+idLen]), nil
}

// Open decrypts a sealed value, checking ad.
func (b *Box) Open(sealed, ad []byte) ([]byte, error) {
	id, err := KeyOf(sealed)
	if err != nil {
		return nil, err
	}
	for _, k := range b.keys {
		if k.ID != id {
			continue
		}
		hdr := sealed[:len(magic)+idLen]
		pt, err := k.aead.Open(nil, sealed[len(magic)+idLen:header], sealed[header:], append(bytes.Clone(hdr), ad...))
		if err != nil {
			return nil, ErrOpen
		}
		return pt, nil
	}
	return nil, fmt.Errorf("key %s: %w (this server's keys: %s)", id, ErrUnknownKey, strings.Join(b.KeyIDs(), ", "))
}

// File is a Box kept in a key file, read again whenever the file changes
// (its size or modification time), so a rotation on this host, or a new
// file copied from another, takes effect on a running server. Safe for
// concurrent use.
type File struct {
	path string
	mu   sync.Mutex
	box  *Box
	seen os.FileInfo
}

// OpenFile loads a key file as Load does (create: write a new one when
// missing) and keeps watching it.
func OpenFile(path string, create bool) (f *File, created bool, err error) {
	box, created, err := Load(path, create)
	if err != nil {
		return nil, false, err
	}
	fi, _ := os.Stat(path)
	return &File{path: path, box: box, seen: fi}, created, nil
}

// Path is the key file's path.
func (f *File) Path() string { return f.path }

// Box returns the keys as the file holds them now. A file that became
// unreadable or invalid keeps the keys last read.
func (f *File) Box() *Box {
	f.mu.Lock()
	defer f.mu.Unlock()
	fi, err := os.Stat(f.path)
	if err == nil && (f.seen == nil || fi.Size() != f.seen.Size() || !fi.ModTime().Equal(f.seen.ModTime())) {
		if box, _, err := Load(f.path, false); err == nil {
			f.box, f.seen = box, fi
		}
	}
	return f.box
}

// Seal seals with the file's current sealing key.
func (f *File) Seal(plaintext, ad []byte) []byte { return f.Box().Seal(plaintext, ad) }

// Open opens with the file's keys.
func (f *File) Open(sealed, ad []byte) ([]byte, error) { return f.Box().Open(sealed, ad) }
