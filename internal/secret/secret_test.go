package secret

import (
	"strings"
	"testing"
)

func TestNew(t *testing.T) {
	a, ha := New("rbt_", 32)
	b, _ := New("rbt_", 32)
	if a == b || !strings.HasPrefix(a, "rbt_") || len(a) != 4+64 {
		t.Errorf("secrets %q %q", a, b)
	}
	if ha != Hash(a) || len(ha) != 64 || ha == Hash(b) {
		t.Errorf("hash %q of %q", ha, a)
	}
	if Hash("x") != "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881" {
		t.Errorf("Hash is not hex SHA-256: %s", Hash("x"))
	}
}
