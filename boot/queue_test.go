package boot

import (
	"context"
	"fmt"
	"net"
	"strings"
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

type batches struct{ sizes, files []string }

func (b *batches) Record(_ context.Context, e Event) { b.RecordBatch(nil, []Event{e}) }
func (b *batches) RecordBatch(_ context.Context, es []Event) {
	b.sizes = append(b.sizes, fmt.Sprint(len(es)))
	for _, e := range es {
		b.files = append(b.files, e.File)
	}
}

// TestQueueBatches checks that a BatchRecorder gets what is queued in
// batches of at most batchMax, every event once, in order.
func TestQueueBatches(t *testing.T) {
	b := &batches{}
	q := &Queue{Size: 600, Next: b}
	var want []string
	for i := range 600 {
		want = append(want, fmt.Sprint(i))
		q.Record(context.Background(), Event{File: want[i]})
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := q.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(b.sizes, " "); got != "256 256 88" {
		t.Errorf("batches of %s, want 256 256 88", got)
	}
	if strings.Join(b.files, ",") != strings.Join(want, ",") {
		t.Errorf("events out of order or lost: %d of 600", len(b.files))
	}
	if q.Dropped() != 0 {
		t.Errorf("dropped %d", q.Dropped())
	}
}
