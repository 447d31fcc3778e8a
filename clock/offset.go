package clock

import (
	"errors"
	"sync"
	"time"
)

// Offset is the wall clock moved forward by a jump that only grows. Unlike
// Fake it keeps ticking, so a whole running server (leases, timeouts, cron
// passes) behaves as usual while a test skips days. It is safe for
// concurrent use.
type Offset struct {
	mu  sync.Mutex
	off time.Duration
}

// ErrBackwards refuses a jump that would move time back or stand still.
var ErrBackwards = errors.New("clock: time only moves forward")

// Now returns the wall-clock time plus every jump so far.
func (o *Offset) Now() time.Time {
	o.mu.Lock()
	defer o.mu.Unlock()
	return time.Now().Add(o.off)
}

// Advance jumps forward by d (positive) and returns the new time.
func (o *Offset) Advance(d time.Duration) (time.Time, error) {
	if d <= 0 {
		return time.Time{}, ErrBackwards
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.off += d
	return time.Now().Add(o.off), nil
}
