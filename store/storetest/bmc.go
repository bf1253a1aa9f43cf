package storetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/store"
)

func testBMC(t *testing.T, open Opener) {
	ctx := context.Background()
	s, reopen := open(t)
	a := enroll(t, s, 1, boot.ClientX64UEFI)
	b := enroll(t, s, 2, boot.ClientARM64UEFI)
	if _, err := s.BMC(ctx, a.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("BMC of a node without one: %v", err)
	}
	if err := s.SetBMC(ctx, store.BMC{NodeID: "no-such-node", URL: "ipmi://10.0.0.1"}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("SetBMC of a missing node: %v", err)
	}
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 5, time.UTC)
	want := store.BMC{NodeID: a.ID, URL: "ipmi://10.0.0.1:623", User: "admin", Password: []byte{0, 1, 2, 0xff}, Updated: t0}
	if err := s.SetBMC(ctx, want); err != nil {
		t.Fatal(err)
	}
	wantB := store.BMC{NodeID: b.ID, URL: "redfish://10.0.0.2/redfish/v1/Systems/1", User: "root", Fingerprint: "ab01", Updated: t0}
	if err := s.SetBMC(ctx, wantB); err != nil {
		t.Fatal(err)
	}
	if reopen != nil {
		s = reopen()
	}
	got, err := s.BMC(ctx, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Fatalf("BMC read back (-want +got):\n%s", d)
	}
	// Replacing keeps one row per node.
	want.URL, want.Password, want.Updated = "ipmi://10.0.0.9", []byte("sealed-2"), t0.Add(time.Second)
	if err := s.SetBMC(ctx, want); err != nil {
		t.Fatal(err)
	}
	all, err := s.BMCs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wantAll := []store.BMC{want, wantB}
	if a.ID > b.ID {
		wantAll = []store.BMC{wantB, want}
	}
	if d := cmp.Diff(wantAll, all); d != "" {
		t.Fatalf("BMCs (-want +got):\n%s", d)
	}
	// A reseal applies only to the password it was computed from.
	if err := s.ResealBMC(ctx, a.ID, []byte("sealed-1"), []byte("sealed-3")); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("ResealBMC from a stale password: %v", err)
	}
	if err := s.ResealBMC(ctx, a.ID, []byte("sealed-2"), []byte("sealed-3")); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.BMC(ctx, a.ID); string(got.Password) != "sealed-3" || got.URL != want.URL {
		t.Fatalf("after ResealBMC: %+v", got)
	}
	if err := s.ResealBMC(ctx, "no-such-node", nil, nil); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("ResealBMC of a missing node: %v", err)
	}
	if err := s.DeleteBMC(ctx, b.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteBMC(ctx, b.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second DeleteBMC: %v", err)
	}
	// A node's BMC goes with the node.
	if err := s.DeleteNode(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	if all, err := s.BMCs(ctx); err != nil || len(all) != 0 {
		t.Fatalf("BMCs after deleting their nodes: %v, %v", all, err)
	}
}

func testPowerState(t *testing.T, open Opener) {
	ctx := context.Background()
	s, reopen := open(t)
	a := enroll(t, s, 1, boot.ClientX64UEFI)
	b := enroll(t, s, 2, boot.ClientARM64UEFI)
	if _, err := s.PowerState(ctx, a.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("PowerState never recorded: %v", err)
	}
	ev := func(msg string) store.Event {
		return store.Event{Actor: "system", Kind: "power", Reason: "power state", Message: msg}
	}
	if _, err := s.RecordPower(ctx, store.PowerState{NodeID: "no-such-node", State: "on"}, ev("x")); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("RecordPower of a missing node: %v", err)
	}
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 7, time.UTC)
	record := func(id, state, why string, at time.Time, wantChanged bool) {
		t.Helper()
		changed, err := s.RecordPower(ctx, store.PowerState{NodeID: id, State: state, Error: why, Checked: at}, ev(state))
		if err != nil {
			t.Fatal(err)
		}
		if changed != wantChanged {
			t.Fatalf("RecordPower(%s, %s) changed = %v, want %v", id, state, changed, wantChanged)
		}
	}
	record(a.ID, "on", "", t0, true)
	record(a.ID, "on", "", t0.Add(time.Minute), false)
	record(b.ID, "unknown", "bmc x: power state: the BMC does not answer", t0, true)
	record(b.ID, "unknown", "bmc x: power state: the BMC refused", t0.Add(time.Minute), false)
	record(a.ID, "off", "", t0.Add(2*time.Minute), true)
	if reopen != nil {
		s = reopen()
	}
	got, err := s.PowerState(ctx, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	wantA := store.PowerState{NodeID: a.ID, State: "off", Checked: t0.Add(2 * time.Minute), Changed: t0.Add(2 * time.Minute)}
	if d := cmp.Diff(wantA, got); d != "" {
		t.Fatalf("PowerState (-want +got):\n%s", d)
	}
	wantB := store.PowerState{NodeID: b.ID, State: "unknown", Error: "bmc x: power state: the BMC refused", Checked: t0.Add(time.Minute), Changed: t0}
	all, err := s.PowerStates(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wantAll := []store.PowerState{wantA, wantB}
	if a.ID > b.ID {
		wantAll = []store.PowerState{wantB, wantA}
	}
	if d := cmp.Diff(wantAll, all); d != "" {
		t.Fatalf("PowerStates (-want +got):\n%s", d)
	}
	// One event per change, not per poll.
	for _, n := range []struct {
		id   string
		want []string
	}{{a.ID, []string{"on", "off"}}, {b.ID, []string{"unknown"}}} {
		es, err := s.Events(ctx, store.EventFilter{NodeID: n.id})
		if err != nil {
			t.Fatal(err)
		}
		var msgs []string
		for _, e := range es {
			if e.Kind == "power" {
				msgs = append(msgs, e.Message)
				if e.Actor != "system" || e.NodeID != n.id {
					t.Errorf("power event %+v", e)
				}
			}
		}
		if d := cmp.Diff(n.want, msgs); d != "" {
			t.Errorf("power events of %s (-want +got):\n%s", n.id, d)
		}
	}
	// A node's power state goes with the node.
	if err := s.DeleteNode(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PowerState(ctx, a.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("PowerState of a deleted node: %v", err)
	}
}
