package clock

import (
	"errors"
	"testing"
	"time"
)

func TestOffsetJumpsForwardAndKeepsTicking(t *testing.T) {
	var o Offset
	before := time.Now()
	if d := o.Now().Sub(before); d < 0 || d > time.Minute {
		t.Fatalf("a fresh Offset is not the wall clock: %s away", d)
	}
	now, err := o.Advance(24 * time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if d := now.Sub(before); d < 24*time.Hour || d > 24*time.Hour+time.Minute {
		t.Fatalf("Advance(24h) answered %s after the start", d)
	}
	time.Sleep(5 * time.Millisecond)
	if later := o.Now(); !later.After(now) {
		t.Fatalf("the clock stopped: %s then %s", now, later)
	}
	for _, d := range []time.Duration{0, -time.Hour} {
		if _, err := o.Advance(d); !errors.Is(err, ErrBackwards) {
			t.Errorf("Advance(%s) = %v, want ErrBackwards", d, err)
		}
	}
	if d := o.Now().Sub(before); d > 24*time.Hour+time.Minute {
		t.Fatalf("a refused jump moved the clock: %s", d)
	}
}
