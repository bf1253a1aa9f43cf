package nodepower

import (
	"context"
	"errors"
	"testing"

	"github.com/rackboot/rackboot/internal/sealbox"
	"github.com/rackboot/rackboot/power"
	"github.com/rackboot/rackboot/store"
)

type bmcs map[string]store.BMC

func (b bmcs) BMC(_ context.Context, id string) (store.BMC, error) {
	if x, ok := b[id]; ok {
		return x, nil
	}
	return store.BMC{}, store.ErrNotFound
}

// TestOpen: the password is opened for the node it was sealed for and
// handed to the driver; each way it can fail has its own error.
func TestOpen(t *testing.T) {
	box, err := sealbox.New(sealbox.NewKey())
	if err != nil {
		t.Fatal(err)
	}
	other, _ := sealbox.New(sealbox.NewKey())
	st := bmcs{
		"a": {NodeID: "a", URL: "ipmi://10.0.0.1", User: "root", Password: box.Seal([]byte("pw-a"), PasswordAD("a"))},
		// b's row carries a's sealed password: it must not open for b.
		"b":   {NodeID: "b", URL: "ipmi://10.0.0.2", Password: box.Seal([]byte("pw-a"), PasswordAD("a"))},
		"bad": {NodeID: "bad", URL: "http://10.0.0.3"},
	}
	var got power.Config
	dial := func(c power.Config) (power.Driver, error) {
		got = c
		return power.Dial(c)
	}
	o := &Opener{Store: st, Secrets: box, Dial: dial, CAFile: "/ca.pem"}
	ctx := context.Background()
	d, b, err := o.Open(ctx, store.Node{ID: "a"})
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	if got.Password != "pw-a" || got.User != "root" || got.URL != b.URL || got.CAFile != "/ca.pem" {
		t.Errorf("dialled with %+v", got)
	}
	var se *SecretError
	if _, _, err := o.Open(ctx, store.Node{ID: "b"}); !errors.As(err, &se) || se.Node != "b" {
		t.Errorf("another node's password: %v, want a SecretError", err)
	}
	if _, _, err := o.Open(ctx, store.Node{ID: "none"}); !errors.Is(err, ErrNoBMC) || !errors.Is(err, store.ErrNotFound) {
		t.Errorf("no BMC: %v, want ErrNoBMC (store.ErrNotFound)", err)
	}
	if _, _, err := o.Open(ctx, store.Node{ID: "bad"}); !errors.As(err, new(*DialError)) {
		t.Errorf("bad URL: %v, want a DialError", err)
	}
	if _, _, err := (&Opener{Store: st}).Open(ctx, store.Node{ID: "a"}); !errors.Is(err, ErrNoSecretKey) {
		t.Errorf("no key: %v, want ErrNoSecretKey", err)
	}
	if _, _, err := (&Opener{Store: st, Secrets: other}).Open(ctx, store.Node{ID: "a"}); !errors.Is(err, sealbox.ErrUnknownKey) {
		t.Errorf("another server's key: %v, want sealbox.ErrUnknownKey", err)
	}
}
