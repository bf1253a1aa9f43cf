// Package secret makes the random secrets rackboot hands out (API and
// agent tokens, sessions, per-boot secrets) and the one way they are
// stored: their hex SHA-256. The secrets are long and random, so a fast
// hash is enough (unlike passwords); whoever writes a secret's hash and
// whoever checks it must agree, which is why both call this package.
package secret

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
)

// New returns prefix followed by n random bytes in hex, and its hash.
func New(prefix string, n int) (secret, hash string) {
	b := make([]byte, n)
	rand.Read(b)
	secret = prefix + hex.EncodeToString(b)
	return secret, Hash(secret)
}

// Hash is what is stored for a secret.
func Hash(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}
