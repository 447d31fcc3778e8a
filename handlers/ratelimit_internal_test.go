package handlers

import (
	"fmt"
	"testing"
	"time"
)

// A limit's memory is bounded: buckets that have refilled are dropped, and
// a flood of new keys never tracks more than the cap.
func TestRateLimiterMemoryIsBounded(t *testing.T) {
	now := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	l := newLimiter(1, 2, RateLimits{MaxKeys: 100, Now: func() time.Time { return now }})
	for i := range 1000 {
		if ok, _ := l.allow(fmt.Sprint("flood", i)); !ok {
			t.Fatalf("a new key is refused")
		}
		if n := l.size(); n > 100 {
			t.Fatalf("%d keys tracked, cap 100", n)
		}
	}
	// Two seconds refill a bucket of burst 2 at 1/s: every bucket is idle
	// and dropped by the next sweep, except the one just used.
	now = now.Add(2 * time.Second)
	l.allow("busy")
	if n := l.size(); n != 1 {
		t.Fatalf("%d keys after they all refilled, want 1", n)
	}
	// A half-empty bucket is kept: forgetting it would hand out a burst.
	l.allow("busy")
	now = now.Add(time.Second)
	l.sweep(now)
	if n := l.size(); n != 1 {
		t.Fatalf("%d keys, want the busy one kept", n)
	}
	if ok, wait := l.allow("busy"); !ok {
		t.Fatalf("busy refused after refilling a token (wait %s)", wait)
	}
	if ok, wait := l.allow("busy"); ok || wait != time.Second {
		t.Fatalf("busy allowed past its burst: %v, wait %s", ok, wait)
	}
	if newLimiter(0, 10, RateLimits{}) != nil {
		t.Fatal("a zero rate limits")
	}
}
