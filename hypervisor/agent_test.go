package hypervisor

import (
	"slices"
	"testing"

	"github.com/rackboot/rackboot/store"
)

// TestErrorStreak follows an agent's reports one by one: an error said
// again keeps the round it began in, one said anew begins its own, and
// the streak a waiter counts starts no earlier than its own baseline,
// whichever of the reports it happened to read.
func TestErrorStreak(t *testing.T) {
	const full = "create mdev a1: 0000:3b:00.0 has no room for another nvidia-230"
	reports := [][]string{
		{},
		{full},
		{"GPU 1: pending reset", full},
		{full},
		{},
		{full},
	}
	wantSince := [][]int64{{}, {2}, {3, 2}, {2}, {}, {6}}
	var a store.HypervisorAgent
	for i, errs := range reports {
		a = store.HypervisorAgent{Round: a.Round + 1, Errors: errs, ErrorSince: errorSince(a, errs)}
		if !slices.Equal(a.ErrorSince, wantSince[i]) {
			t.Errorf("round %d: error since %v, want %v", a.Round, a.ErrorSince, wantSince[i])
		}
		if i == 3 {
			for after, want := range map[int64]int64{0: 3, 1: 3, 2: 2, 3: 1} {
				if got := streak(a, 0, after); got != want {
					t.Errorf("round 4, streak after round %d: %d, want %d", after, got, want)
				}
			}
		}
	}
	// A row kept before rounds were counted has none: its error counts
	// once.
	old := store.HypervisorAgent{Round: 5, Errors: []string{full}}
	if got := streak(old, 0, 0); got != 1 {
		t.Errorf("streak without error_since: %d", got)
	}
}
