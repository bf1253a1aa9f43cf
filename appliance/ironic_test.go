package appliance

import (
	"context"
	"log/slog"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/store"
	"github.com/rackboot/rackboot/store/sqlite"
)

// TestEnrollIronic: Ironic's MACs become nodes owned by Ironic; a node
// rackboot drives is handed over only when the config claims it.
func TestEnrollIronic(t *testing.T) {
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	mine, _ := net.ParseMAC("52:54:00:00:00:01")
	newMAC, _ := net.ParseMAC("52:54:00:00:00:02")
	if _, _, err := st.EnrollClient(ctx, boot.Client{MAC: mine, Arch: boot.ClientX64UEFI}, time.Now()); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	owner := func(mac net.HardwareAddr) string {
		n, err := st.NodeByMAC(ctx, mac)
		if err != nil {
			return err.Error()
		}
		return n.Owner
	}
	// From Ironic's hosts files: the new MAC is Ironic's, rackboot's node
	// stays rackboot's.
	seen := map[string]bool{}
	enrollIronic(ctx, st, []net.HardwareAddr{mine, newMAC}, false, seen, log)
	if owner(newMAC) != store.OwnerIronic || owner(mine) != store.OwnerRackboot {
		t.Errorf("from hosts files: new %s, rackboot's %s", owner(newMAC), owner(mine))
	}
	n, _ := st.NodeByMAC(ctx, newMAC)
	if n.Arch != boot.ArchUnknown {
		t.Errorf("a node enrolled from a MAC alone has arch %q, want unknown", n.Arch)
	}
	if !seen[mine.String()] || !seen[newMAC.String()] {
		t.Errorf("seen %v", seen)
	}
	// Claimed by the config: handed over.
	enrollIronic(ctx, st, []net.HardwareAddr{mine}, true, map[string]bool{}, log)
	if owner(mine) != store.OwnerIronic {
		t.Errorf("claimed: %s", owner(mine))
	}
	nodes, _ := st.Nodes(ctx)
	if len(nodes) != 2 {
		t.Errorf("%d nodes, want 2", len(nodes))
	}
}
