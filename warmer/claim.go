package warmer

import (
	"context"
	"time"

	"github.com/tokenwarm/tokenwarm/models"
)

// Claims is where due connections are claimed under a lease and given back.
type Claims interface {
	ClaimDue(ctx context.Context, n int, dueOnly bool, now time.Time, lease time.Duration) ([]models.Claimed, error)
	ReleaseClaim(ctx context.Context, c models.Claimed) error
	RetryWarmLater(ctx context.Context, c models.Claimed, retryAt time.Time) error
}

// claimed is a connection this warmer holds under a lease.
type claimed = models.Claimed

// claim takes up to n due connections (any active one not in backoff, for
// dueOnly false), earliest due first, under a lease.
func (w *Warmer) claim(ctx context.Context, n int, dueOnly bool) ([]claimed, error) {
	return w.store.ClaimDue(ctx, n, dueOnly, w.clock.Now(), w.cfg.Lease)
}

// release gives connections claimed but not warmed back their old
// next_warm_at, so any replica can take them at once.
func (w *Warmer) release(ctx context.Context, cs ...claimed) {
	if len(cs) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	for _, c := range cs {
		if err := w.store.ReleaseClaim(ctx, c); err != nil {
			// The lease runs out by itself; the connection is only late.
			w.log.Warn("could not release a claimed connection", "connection_id", c.ID, "err", err)
		}
	}
}

// retryLater sets a connection whose warm did not go through to come due
// again after its backoff (next_attempt_at, when the vault set one) or
// after wait, whichever is later.
//
// The vault writes next_warm_at on every outcome it records, but on a
// failure it only ever moves it later, and what it sees is our lease: a
// short backoff would leave the lease in place. When the vault did not
// write at all (lock timeout, an earlier attempt still settling) the lease
// is all there is.
func (w *Warmer) retryLater(ctx context.Context, c claimed, wait time.Duration) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := w.store.RetryWarmLater(ctx, c, w.clock.Now().Add(wait)); err != nil {
		w.log.Warn("could not schedule a warm retry; the claim lease stands", "connection_id", c.ID, "err", err)
	}
}
