package loadstat

import (
	"testing"
	"time"
)

func TestQuantile(t *testing.T) {
	ms := func(v ...int) Latencies {
		var l Latencies
		for _, x := range v {
			l = append(l, time.Duration(x)*time.Millisecond)
		}
		return l
	}
	for _, tc := range []struct {
		l    Latencies
		q    float64
		want time.Duration
	}{
		{ms(), 0.5, 0},
		{ms(7), 0.99, 7 * time.Millisecond},
		{ms(5, 1, 4, 2, 3), 0.5, 3 * time.Millisecond},
		{ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 0.99, 10 * time.Millisecond},
		{ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 0.5, 5 * time.Millisecond},
	} {
		if got := tc.l.Quantile(tc.q); got != tc.want {
			t.Errorf("quantile(%v, %v) = %v, want %v", tc.l, tc.q, got, tc.want)
		}
	}
}

func TestKV(t *testing.T) {
	if got := KV("a", 1, "b", "x", "dangling"); got != "a=1 b=x" {
		t.Errorf("KV = %q", got)
	}
}
