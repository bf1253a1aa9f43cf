package appliance

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/store"
)

// TestRetention: the running appliance prunes boot events older than
// retention.boot_events and audit events older than retention.events
// (defaults 90 and 365 days), keeps the event that put a node into
// maintenance, and keeps everything when both are negative.
func TestRetention(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	now := time.Date(2027, 6, 1, 0, 0, 0, 0, time.UTC)
	st, err := OpenStore(ctx, "", dir)
	if err != nil {
		t.Fatal(err)
	}
	n, _, err := st.EnrollClient(ctx, boot.Client{MAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, Arch: boot.ClientX64UEFI}, now)
	if err != nil {
		t.Fatal(err)
	}
	for _, age := range []time.Duration{200, 100, 89, 1} { // days
		when := now.Add(-age * 24 * time.Hour)
		if err := st.AddTrace(ctx, n.ID, boot.Event{Time: when, Proto: "dhcp", Kind: "discover"}); err != nil {
			t.Fatal(err)
		}
	}
	for _, age := range []time.Duration{800, 400, 364, 1} {
		e := store.Event{Time: now.Add(-age * 24 * time.Hour), NodeID: n.ID, Actor: "test", Kind: "audit"}
		if age == 800 {
			e.Kind, e.From, e.To = "action", store.StateAvailable, store.StateMaintenance
		}
		if _, err := st.AddEvent(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	st.Close()

	serve := func(rc RetentionConfig) {
		ctx, cancel := context.WithCancel(ctx)
		addr, done := make(chan net.Addr, 1), make(chan error, 1)
		cfg := Config{DataDir: dir, ServerIP: "127.0.0.1", HTTPAddr: "127.0.0.1:0", TFTPAddr: "127.0.0.1:0", DHCP: DHCPConfig{Mode: DHCPOff}, Retention: rc}
		go func() {
			done <- run(ctx, cfg, nil, hooks{serving: func(a net.Addr) { addr <- a }, now: func() time.Time { return now }, pruneEvery: 20 * time.Millisecond})
		}()
		select {
		case <-addr:
		case err := <-done:
			t.Fatalf("appliance: %v", err)
		}
		time.Sleep(300 * time.Millisecond) // many prunes
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	count := func() (int, []store.Event) {
		st, err := OpenStore(ctx, "", dir)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		tr, err := st.Trace(ctx, n.ID, 1000)
		if err != nil {
			t.Fatal(err)
		}
		evs, err := st.Events(ctx, store.EventFilter{NodeID: n.ID})
		if err != nil {
			t.Fatal(err)
		}
		return len(tr), evs
	}

	serve(RetentionConfig{BootEvents: -1, Events: -1})
	if tr, evs := count(); tr != 4 || len(evs) != 4 {
		t.Fatalf("kept forever: %d boot events and %d events, want 4 and 4", tr, len(evs))
	}
	serve(RetentionConfig{})
	tr, evs := count()
	if tr != 2 {
		t.Errorf("after the default retention: %d boot events, want 2 (89 and 1 days old)", tr)
	}
	if len(evs) != 3 || evs[0].To != store.StateMaintenance {
		t.Errorf("after the default retention: events %+v, want the maintenance entry and the two under 365 days", evs)
	}
	serve(RetentionConfig{BootEvents: 48 * time.Hour, Events: 48 * time.Hour})
	if tr, evs := count(); tr != 1 || len(evs) != 2 {
		t.Errorf("after 48h retention: %d boot events and %d events, want 1 and 2", tr, len(evs))
	}
}
