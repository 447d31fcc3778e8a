package metrics

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/tokenwarm/tokenwarm/models"
)

// slowFleet counts like a table scan of a million connections: slowly.
type slowFleet struct {
	mu     sync.Mutex
	calls  int
	active int64
	delay  time.Duration
}

func (f *slowFleet) ConnectionCountsByStatus(context.Context) (map[string]int64, error) {
	time.Sleep(f.delay)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	return map[string]int64{models.StatusActive: f.active}, nil
}
func (f *slowFleet) IdleTTLs(context.Context, time.Duration) (models.IdleTTLs, error) {
	return models.IdleTTLs{}, nil
}
func (f *slowFleet) OldestRefresh(context.Context, models.OrgScope) (time.Time, error) {
	return time.Time{}, models.ErrNotFound
}
func (f *slowFleet) WarmBacklog(context.Context, time.Time) (int64, error) { return 0, nil }

// After the first scrape, no scrape waits for the count scan: fresh counts
// are served as kept, stale ones while a renewal runs in the background.
func TestStatusCountsAreRenewedInTheBackground(t *testing.T) {
	defer func(d time.Duration) { statusCountsMaxAge = d }(statusCountsMaxAge)
	statusCountsMaxAge = 200 * time.Millisecond
	f := &slowFleet{active: 1, delay: 300 * time.Millisecond}
	c := &dbCollector{db: f, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	ctx := context.Background()

	if got, _ := c.statusCounts(ctx); got[models.StatusActive] != 1 || f.calls != 1 {
		t.Fatalf("first scrape: %v after %d scans", got, f.calls)
	}
	f.mu.Lock()
	f.active = 2
	f.mu.Unlock()
	// Fresh: served as kept, no scan.
	if got, _ := c.statusCounts(ctx); got[models.StatusActive] != 1 || f.calls != 1 {
		t.Fatalf("fresh counts: %v after %d scans", got, f.calls)
	}
	time.Sleep(statusCountsMaxAge)
	// Stale: served at once while one renewal runs.
	for range 3 {
		t0 := time.Now()
		got, _ := c.statusCounts(ctx)
		if d := time.Since(t0); d > 100*time.Millisecond || got[models.StatusActive] != 1 {
			t.Fatalf("stale counts: %v in %v", got, d)
		}
	}
	f.mu.Lock()
	if f.calls != 1 { // the one renewal is still scanning
		t.Fatalf("%d scans while stale counts were served", f.calls)
	}
	f.mu.Unlock()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, _ := c.statusCounts(ctx)
		if got[models.StatusActive] == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the counts were never renewed")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
