package sqlite

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/rackboot/rackboot/dhcp/dhcptest"
)

// BenchmarkDORA measures one DISCOVER and one REQUEST through the DHCP
// server on the SQLite lease store: the cost of a new client on a
// rackboot with an embedded database.
func BenchmarkDORA(b *testing.B) {
	st, err := Open(context.Background(), filepath.Join(b.TempDir(), "db"))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	dhcptest.DORA(b, st)
}
