package boot

import (
	"context"
	"net"
	"testing"
)

// TestQueue checks that Record never waits for the recorder behind it,
// that a full queue drops and counts, and that Run records every queued
// event in order, the last ones after its context ended.
func TestQueue(t *testing.T) {
	release := make(chan struct{})
	var got []string
	q := &Queue{Size: 3, Next: RecorderFunc(func(_ context.Context, e Event) {
		<-release
		got = append(got, e.File)
	})}
	for _, f := range []string{"a", "b", "c", "d", "e"} {
		q.Record(context.Background(), Event{MAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, File: f})
	}
	if q.Dropped() != 2 {
		t.Errorf("dropped %d, want 2 (the queue holds 3, nothing runs it)", q.Dropped())
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	close(release)
	if err := q.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0] != "a" || got[1] != "b" || got[2] != "c" {
		t.Errorf("recorded %q, want [a b c]", got)
	}
}
