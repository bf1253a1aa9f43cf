// Package loadstat is what the benchmark clients share to report: the
// latencies of one kind of request and the key=value result line the
// bench/ scripts read.
package loadstat

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Latencies collects request times; one per goroutine, merged at the end.
type Latencies []time.Duration

// Quantile is the q-quantile (nearest rank) of l, which it sorts.
func (l Latencies) Quantile(q float64) time.Duration {
	if len(l) == 0 {
		return 0
	}
	slices.Sort(l)
	i := int(q*float64(len(l))+0.5) - 1
	return l[max(0, min(i, len(l)-1))]
}

// MS is d in milliseconds, as the result lines give times.
func MS(d time.Duration) string { return fmt.Sprintf("%.2f", float64(d)/float64(time.Millisecond)) }

// KV joins key=value pairs into a result line.
func KV(pairs ...any) string {
	var b strings.Builder
	for i := 0; i+1 < len(pairs); i += 2 {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%v=%v", pairs[i], pairs[i+1])
	}
	return b.String()
}
