package boot

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Queue is a Recorder that never waits: Record queues the event (up to
// Size, default 4096) and Run hands the queued events to Next, one after
// another, off the protocol servers' serving path. Recording a boot event
// costs the store a write (on SQLite, its fsync); done on the path, it
// would be the exchange's wait. An event that finds the queue full is
// dropped and counted: the trace is a diagnosis, the reply is the service.
type Queue struct {
	Next Recorder
	Size int

	once    sync.Once
	ch      chan Event
	dropped atomic.Uint64
}

func (q *Queue) init() {
	q.once.Do(func() {
		n := q.Size
		if n <= 0 {
			n = 4096
		}
		q.ch = make(chan Event, n)
	})
}

// Record implements Recorder. The event is stamped now, if it has no
// time, not when Run gets to it.
func (q *Queue) Record(_ context.Context, e Event) {
	q.init()
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	select {
	case q.ch <- e:
	default:
		q.dropped.Add(1)
	}
}

// Dropped is how many events found the queue full.
func (q *Queue) Dropped() uint64 { return q.dropped.Load() }

// drainWait bounds how long Run, once ctx ends, spends on the events
// still queued.
const drainWait = 2 * time.Second

// Run records queued events until ctx ends, then what is still queued,
// for at most drainWait, and returns nil.
func (q *Queue) Run(ctx context.Context) error {
	q.init()
	batch := make([]Event, 0, batchMax)
	for {
		select {
		case e := <-q.ch:
			batch = q.hand(ctx, append(batch[:0], e))
		case <-ctx.Done():
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), drainWait)
			defer cancel()
			for {
				select {
				case e := <-q.ch:
					if dctx.Err() != nil {
						q.dropped.Add(1)
						continue
					}
					batch = q.hand(dctx, append(batch[:0], e))
				default:
					return nil
				}
			}
		}
	}
}

// batchMax bounds the events handed on in one batch.
const batchMax = 256

// hand gives Next batch and whatever else is queued already, up to
// batchMax: to a BatchRecorder in one call, so that a burst of events
// costs one write; to a plain Recorder one by one. It returns batch for
// reuse.
func (q *Queue) hand(ctx context.Context, batch []Event) []Event {
	br, ok := q.Next.(BatchRecorder)
	if !ok {
		q.Next.Record(ctx, batch[0])
		return batch
	}
more:
	for len(batch) < batchMax {
		select {
		case e := <-q.ch:
			batch = append(batch, e)
		default:
			break more
		}
	}
	br.RecordBatch(ctx, batch)
	clear(batch) // no event's options kept alive by the reused array
	return batch
}
