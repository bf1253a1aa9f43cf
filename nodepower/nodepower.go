// Package nodepower opens a node's power driver from its stored BMC and
// its sealed password: the one place that knows how a store.BMC becomes a
// power.Driver. The API (power calls a person asks for) and the lifecycle
// (power work an action needs) both open drivers through it.
package nodepower

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/rackboot/rackboot/power"
	"github.com/rackboot/rackboot/store"
)

// Errors of Open, besides the store's and power.Dial's.
var (
	// ErrNoBMC: the node has no BMC. It wraps store.ErrNotFound, so
	// callers that only know the store can tell it too.
	ErrNoBMC = fmt.Errorf("no BMC: %w", store.ErrNotFound)
	// ErrNoSecretKey: the BMC has a password but the server has no key
	// to open it with.
	ErrNoSecretKey = errors.New("no secret key to decrypt BMC passwords with (--secret-key-file)")
)

// SecretError is a BMC password that does not open with the server's keys.
type SecretError struct {
	Node string
	Err  error
}

func (e *SecretError) Error() string {
	return fmt.Sprintf("the BMC password of node %s does not decrypt: %v", e.Node, e.Err)
}
func (e *SecretError) Unwrap() error { return e.Err }

// DialError is a BMC the driver cannot be made for (a URL power.Dial
// refuses, a CA file that does not load).
type DialError struct{ Err error }

func (e *DialError) Error() string { return e.Err.Error() }
func (e *DialError) Unwrap() error { return e.Err }

// Store reads nodes' BMCs; store.Store implements it.
type Store interface {
	BMC(ctx context.Context, nodeID string) (store.BMC, error)
}

// Secrets opens sealed passwords; package sealbox implements it.
type Secrets interface {
	Open(sealed, ad []byte) ([]byte, error)
}

// PasswordAD is the additional data a node's BMC password is sealed with:
// the sealed bytes open only for that node.
func PasswordAD(nodeID string) []byte { return []byte("bmc-password:" + nodeID) }

// Opener opens nodes' drivers. Store must be set.
type Opener struct {
	Store Store
	// Secrets opens the sealed passwords; nil refuses a BMC that has one
	// (ErrNoSecretKey).
	Secrets Secrets
	// Dial opens a driver (default power.Dial); tests put fakes here.
	Dial func(power.Config) (power.Driver, error)
	// CAFile is the PEM CA bundle that verifies Redfish BMCs'
	// certificates where no fingerprint is pinned.
	CAFile string
	Logger *slog.Logger
}

// Open returns the driver of node n's BMC and the BMC. It does not
// contact the BMC: the driver's first call does. A node without a BMC is
// ErrNoBMC; a password that does not open, ErrNoSecretKey or a
// *SecretError; a driver power.Dial refuses, a *DialError; any other
// error is the store's.
func (o *Opener) Open(ctx context.Context, n store.Node) (power.Driver, store.BMC, error) {
	b, err := o.Store.BMC(ctx, n.ID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, b, fmt.Errorf("node %s: %w", n.ID, ErrNoBMC)
	}
	if err != nil {
		return nil, b, err // the store's own, as it said it
	}
	d, err := o.OpenBMC(b, power.Config{})
	return d, b, err
}

// OpenBMC is Open for a BMC already read, with c's timeouts and attempts
// (the poller asks for a single try); c's address and credentials are
// the BMC's.
func (o *Opener) OpenBMC(b store.BMC, c power.Config) (power.Driver, error) {
	var pw []byte
	if b.Password != nil {
		if o.Secrets == nil {
			return nil, ErrNoSecretKey
		}
		var err error
		if pw, err = o.Secrets.Open(b.Password, PasswordAD(b.NodeID)); err != nil {
			return nil, &SecretError{Node: b.NodeID, Err: err}
		}
	}
	dial := o.Dial
	if dial == nil {
		dial = power.Dial
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c.URL, c.User, c.Password, c.Fingerprint, c.CAFile = b.URL, b.User, string(pw), b.Fingerprint, o.CAFile
	if c.Logger == nil {
		c.Logger = log.With("node", b.NodeID)
	}
	d, err := dial(c)
	if err != nil {
		return nil, &DialError{Err: err}
	}
	return d, nil
}
