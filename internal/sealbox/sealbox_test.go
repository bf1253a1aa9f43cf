package sealbox

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func mustBox(t *testing.T, raw ...[]byte) *Box {
	t.Helper()
	b, err := New(raw...)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSealOpen(t *testing.T) {
	k1, k2 := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	box1 := mustBox(t, k1)
	box2 := mustBox(t, k2)
	rotated := mustBox(t, k2, k1)
	sealed := box1.Seal([]byte("hunter2"), []byte("bmc:n1"))
	tamper := func(i int) []byte {
		b := bytes.Clone(sealed)
		b[i] ^= 1
		return b
	}
	for _, tc := range []struct {
		name   string
		box    *Box
		sealed []byte
		ad     string
		want   error // nil: opens to hunter2
	}{
		{"same key", box1, sealed, "bmc:n1", nil},
		{"old key kept after a rotation", rotated, sealed, "bmc:n1", nil},
		{"unknown key id", box2, sealed, "bmc:n1", ErrUnknownKey},
		{"wrong additional data", box1, sealed, "bmc:n2", ErrOpen},
		{"tampered ciphertext", box1, tamper(len(sealed) - 1), "bmc:n1", ErrOpen},
		{"tampered nonce", box1, tamper(header - 1), "bmc:n1", ErrOpen},
		{"tampered key id", box1, tamper(len(magic)), "bmc:n1", ErrUnknownKey},
		{"truncated", box1, sealed[:header-1], "bmc:n1", ErrMalformed},
		{"not sealed at all", box1, []byte("hunter2-in-clear-text-long-enough"), "bmc:n1", ErrMalformed},
		{"empty", box1, nil, "bmc:n1", ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pt, err := tc.box.Open(tc.sealed, []byte(tc.ad))
			if tc.want == nil {
				if err != nil || string(pt) != "hunter2" {
					t.Fatalf("Open = %q, %v; want hunter2", pt, err)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("Open error = %v; want %v", err, tc.want)
			}
			if pt != nil {
				t.Fatalf("Open returned plaintext %q with an error", pt)
			}
		})
	}
	if again := box1.Seal([]byte("hunter2"), []byte("bmc:n1")); bytes.Equal(again, sealed) {
		t.Error("two seals of one value are equal: the nonce is not random")
	}
	if bytes.Contains(sealed, []byte("hunter2")) {
		t.Error("the sealed value holds the plaintext")
	}
	if id, _ := KeyOf(sealed); id != box1.Current() || id != KeyID(k1) {
		t.Errorf("KeyOf = %s, want %s", id, box1.Current())
	}
	_, err := box2.Open(sealed, []byte("bmc:n1"))
	if !strings.Contains(err.Error(), KeyID(k1)) || !strings.Contains(err.Error(), KeyID(k2)) {
		t.Errorf("unknown-key error %q names neither the key asked for nor the keys held", err)
	}
}

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name, text, err string
	}{
		{"one key", "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\n", ""},
		{"comments and two keys", "# c\n\nAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\nAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=\n", ""},
		{"empty", "# nothing\n", "no key"},
		{"short key", "AQEB\n", "line 1: key is 3 bytes"},
		{"not base64", "%%%\n", "line 1: not base64"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.text))
			if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Fatalf("Parse error = %v; want %q", err, tc.err)
			}
		})
	}
}

func TestLoadCreateRotate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "secret.key")
	if _, _, err := Load(path, false); err == nil {
		t.Fatal("Load of a missing file without create succeeded")
	}
	b, created, err := Load(path, true)
	if err != nil || !created {
		t.Fatalf("Load create = %v, %v", created, err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	sealed := b.Seal([]byte("pw"), nil)
	again, created, err := Load(path, true)
	if err != nil || created || again.Current() != b.Current() {
		t.Fatalf("second Load: created %v, key %s (want %s), %v", created, again.Current(), b.Current(), err)
	}
	rot := again.WithNewKey()
	if err := rot.Save(path); err != nil {
		t.Fatal(err)
	}
	loaded, _, err := Load(path, false)
	if err != nil || len(loaded.KeyIDs()) != 2 || loaded.Current() != rot.Current() || loaded.Current() == b.Current() {
		t.Fatalf("rotated file: keys %v, %v", loaded.KeyIDs(), err)
	}
	if pt, err := loaded.Open(sealed, nil); err != nil || string(pt) != "pw" {
		t.Fatalf("old value after rotation: %q, %v", pt, err)
	}
	if _, err := loaded.OnlyCurrent().Open(sealed, nil); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("old value with the old key dropped: %v", err)
	}
	os.Chmod(path, 0o644)
	if _, _, err := Load(path, false); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("Load of a world-readable key file: %v", err)
	}
}

func TestFileFollowsRotation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "secret.key")
	f, created, err := OpenFile(path, true)
	if err != nil || !created {
		t.Fatalf("OpenFile: %v, %v", created, err)
	}
	first := f.Box().Current()
	sealed := f.Seal([]byte("pw"), nil)
	// Another process rotates the file.
	b, _, _ := Load(path, false)
	rot := b.WithNewKey()
	time.Sleep(10 * time.Millisecond) // a modification time of its own
	if err := rot.OnlyCurrent().Save(path); err != nil {
		t.Fatal(err)
	}
	if got := f.Box().Current(); got == first || got != rot.Current() {
		t.Fatalf("after the file changed, the sealing key is %s (was %s, want %s)", got, first, rot.Current())
	}
	if _, err := f.Open(sealed, nil); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("a value of a dropped key: %v", err)
	}
	// A broken file keeps the keys last read.
	time.Sleep(10 * time.Millisecond)
	os.WriteFile(path, []byte("garbage"), 0o600)
	if got := f.Box().Current(); got != rot.Current() {
		t.Fatalf("a broken file changed the keys to %s", got)
	}
}

// TestLoadCreatesWhole: a new key file appears whole, 0600, with no
// temporary file left beside it, and a second creator finds it there.
func TestLoadCreatesWhole(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "secret.key")
	b, created, err := Load(path, true)
	if err != nil || !created {
		t.Fatalf("create: %v %v", created, err)
	}
	again, created, err := Load(path, true)
	if err != nil || created || !bytes.Equal(again.Format(), b.Format()) {
		t.Fatalf("load again: created %v, %v", created, err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("files beside the key: %v", ents)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", fi.Mode().Perm())
	}
	if err := writeNew(path, []byte("other\n")); err == nil {
		t.Error("writeNew replaced an existing key file")
	}
}
