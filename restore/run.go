package restore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/tokenwarm/tokenwarm/clock"
	"github.com/tokenwarm/tokenwarm/internal/text"
	"github.com/tokenwarm/tokenwarm/models"
	"github.com/tokenwarm/tokenwarm/vault"
)

// Store is what the procedure reads and writes; *models.DB is one.
type Store interface {
	BeginRestore(ctx context.Context, detail string, ev models.Event) (int64, error)
	FinishRestore(ctx context.Context, ev models.Event) (bool, error)
	ActiveConnectionIDsAfter(ctx context.Context, after string, n int) ([]string, error)
}

// Verifier settles one connection's unverified token; *vault.Vault is one.
type Verifier interface {
	Verify(ctx context.Context, id string) (vault.Verdict, error)
}

// Options tune Run.
type Options struct {
	// Concurrency bounds introspection calls in flight. Default 4.
	Concurrency int
	// Worker names the run on events. Default "restore".
	Worker string
	Clock  clock.Clock
	Log    *slog.Logger
}

// Report is what Run did.
type Report struct {
	// Marked counts active connections whose token was marked unverified
	// by this run (those already marked keep their marker).
	Marked int64
	// Checked counts active connections looked at.
	Checked int
	// Active: the stored token is still the live one.
	Active int
	// RotationLost: Salesforce rotated the token after the backup; the
	// connection needs re-authorization. None was presented.
	RotationLost int
	// Unverified: introspection gave no verdict; the marker stays, and the
	// token is introspected again before its next refresh.
	Unverified int
	// Skipped: nothing to verify (refreshed, re-authorized or revoked
	// meanwhile).
	Skipped  int
	Duration time.Duration
}

func (r Report) String() string {
	return fmt.Sprintf("checked %d active connection(s): %d still active, %d rotation_lost (need re-authorization), %d unverified (held; introspected again before their next refresh), %d skipped",
		r.Checked, r.Active, r.RotationLost, r.Unverified, r.Skipped)
}

// Run is the restore procedure (see the package comment). Refreshes stay
// held app-wide while it runs; it lifts the hold only once every active
// connection was looked at. If ctx ends or the database fails, it returns
// the error with the hold still in place: run it again.
func Run(ctx context.Context, store Store, v Verifier, opt Options) (Report, error) {
	if opt.Concurrency <= 0 {
		opt.Concurrency = 4
	}
	if opt.Worker == "" {
		opt.Worker = "restore"
	}
	if opt.Clock == nil {
		opt.Clock = clock.System{}
	}
	log := opt.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	start := time.Now()
	var rep Report
	event := func(kind, detail string) models.Event {
		return models.Event{Kind: kind, Cause: vault.CauseRestore, Worker: opt.Worker, Detail: text.Truncate(detail, 300), CreatedAt: opt.Clock.Now().UTC()}
	}
	marked, err := store.BeginRestore(ctx, "started by "+opt.Worker+" at "+opt.Clock.Now().UTC().Format(time.RFC3339),
		event(models.EventRestoreStarted, "refreshes held app-wide; every active connection's refresh token is introspected before any is presented"))
	if err != nil {
		return rep, fmt.Errorf("begin the restore: %w", err)
	}
	rep.Marked = marked
	log.Info("restore: refreshes are held; verifying every active connection's refresh token by introspection (none is presented)", "marked", marked)

	var mu sync.Mutex
	ids := make(chan string)
	var workers sync.WaitGroup
	for range opt.Concurrency {
		workers.Go(func() {
			for id := range ids {
				verdict, err := v.Verify(ctx, id)
				mu.Lock()
				rep.Checked++
				switch verdict {
				case vault.VerdictActive:
					rep.Active++
				case vault.VerdictRotationLost:
					rep.RotationLost++
				case vault.VerdictSkipped:
					rep.Skipped++
				default:
					rep.Unverified++
				}
				mu.Unlock()
				if err != nil {
					log.Warn("restore: could not verify a connection's token; it stays marked and is introspected again before its next refresh",
						"connection_id", id, "code", vault.ErrorCode(err), "err", err)
				}
			}
		})
	}
	var walkErr error
	after := ""
walk:
	for ctx.Err() == nil {
		page, err := store.ActiveConnectionIDsAfter(ctx, after, 500)
		if err != nil {
			walkErr = fmt.Errorf("list active connections: %w", err)
			break
		}
		if len(page) == 0 {
			break
		}
		for _, id := range page {
			select {
			case ids <- id:
			case <-ctx.Done():
				break walk
			}
		}
		after = page[len(page)-1]
	}
	close(ids)
	workers.Wait()
	rep.Duration = time.Since(start)
	if walkErr == nil {
		walkErr = ctx.Err()
	}
	if walkErr != nil {
		return rep, errors.Join(walkErr, errors.New("the restore did not finish: refreshes stay held; run `tokenwarm restore` again"))
	}
	done, err := store.FinishRestore(ctx, event(models.EventRestoreCompleted, rep.String()))
	if err != nil {
		return rep, fmt.Errorf("lift the hold: %w", err)
	}
	if !done {
		log.Warn("restore: another run had already lifted the hold")
	}
	log.Info("restore: finished; refreshes resume", "checked", rep.Checked, "active", rep.Active, "rotation_lost", rep.RotationLost,
		"unverified", rep.Unverified, "skipped", rep.Skipped, "duration", rep.Duration.Round(time.Millisecond))
	return rep, nil
}
