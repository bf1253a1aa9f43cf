package api

import (
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"context"

	"github.com/rackboot/rackboot/store"
)

// markFails is a store whose first write that marks a boot secret used
// fails, as a database hiccup would.
type markFails struct {
	Store
	failed atomic.Bool
}

var errHiccup = errors.New("database hiccup")

func (s *markFails) SetTokenKind(ctx context.Context, id, hash, from, to string) error {
	if to == store.TokenBootUsed && s.failed.CompareAndSwap(false, true) {
		return errHiccup
	}
	return s.Store.SetTokenKind(ctx, id, hash, from, to)
}

func (s *markFails) CreateToken(ctx context.Context, t store.Token) (store.Token, error) {
	if t.Kind == store.TokenBootUsed && s.failed.CompareAndSwap(false, true) {
		return t, errHiccup
	}
	return s.Store.CreateToken(ctx, t)
}

// TestLookupSurvivesAFailedWrite: when marking the boot secret used fails,
// the lookup answers 500 and the agent's retry, with the same secret, gets
// its token; the node never loses its boot secret half-way.
func TestLookupSurvivesAFailedWrite(t *testing.T) {
	f := newFixture(t)
	ms := &markFails{Store: f.api.Store}
	f.api.Store = ms
	secret := f.bootSecret(t, f.node.ID)
	body := fmt.Sprintf(`{"macs":["52:54:00:12:34:56"],"boot_secret":%q}`, secret)
	code, b := f.call(t, nil, "POST", "/api/v1/agent/lookup", "", body)
	if code != 500 || !ms.failed.Load() {
		t.Fatalf("lookup with the write failing: %d %s, want 500", code, b)
	}
	code, b = f.call(t, nil, "POST", "/api/v1/agent/lookup", "", body)
	if code != 200 || !strings.Contains(string(b), `"token"`) {
		t.Fatalf("the agent's retry: %d %s, want 200 and a token", code, b)
	}
	tok, err := f.st.TokenByHash(context.Background(), HashSecret(secret))
	if err != nil || tok.Kind != store.TokenBootUsed {
		t.Errorf("boot secret after the retry: %+v %v, want it used", tok, err)
	}
}
