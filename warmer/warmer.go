// Package warmer keeps every active connection's refresh token alive
// (docs/ARCHITECTURE.md, invariant I6): Salesforce kills a refresh token that
// goes unused for 30 days, so each connection is refreshed once per warm
// interval even when nobody pulls it.
//
// Every replica runs a warmer. A pass claims due connections (status
// active, next_warm_at reached) in bounded batches, FOR UPDATE SKIP LOCKED
// on Postgres, and pushes their next_warm_at out by a lease so that other
// replicas leave them alone; then it refreshes them through the vault, the
// one refresh path, with bounded concurrency. The vault sets the next
// next_warm_at from the outcome. A configuration error (IP allowlist,
// client credentials) pauses warming for the whole app until a probe of one
// connection succeeds; connections drifting towards idle expiry raise one
// event each.
package warmer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/tokenwarm/tokenwarm/clock"
	"github.com/tokenwarm/tokenwarm/internal/cronlog"
	"github.com/tokenwarm/tokenwarm/vault"
)

// Config tunes the warmer. Zero values take the defaults.
type Config struct {
	// BatchSize is how many due connections one claim takes. Default 100.
	BatchSize int
	// Concurrency bounds refreshes in flight in this warmer. The vault has
	// its own bound (vault.Config.MaxConcurrentRefreshes) shared with
	// mobile pulls; keep this at or below it. Default 8.
	Concurrency int
	// Lease is how far a claim pushes next_warm_at out, so other replicas
	// do not claim the same connection while this one works on it. It must
	// exceed the longest a refresh can take (the vault bounds that by its
	// lock, upstream and commit budgets). Default 10m.
	Lease time.Duration
	// RetryDelay is the shortest wait before a connection whose warm did
	// not go through is tried again. Default 1m.
	RetryDelay time.Duration
	// RiskThreshold: a connection with less idle budget than this (IdleTTL
	// minus the time since its last refresh) raises an idle_expiry_risk
	// event. Default 7 days.
	RiskThreshold time.Duration
	// RefreshMaxAge is the org's "expire refresh token after N" policy
	// (SALESFORCE_REFRESH_MAX_AGE): Salesforce ends a grant that long after
	// the user authorized, however it is used. 0 (the default) is no policy.
	RefreshMaxAge time.Duration
	// ReauthSoon: with RefreshMaxAge set, a connection that reaches it in
	// less than this raises one reauth_soon event (and webhook) per
	// authorization. Default 7 days.
	ReauthSoon time.Duration
	// ProbeInterval is how often a paused warmer tries one connection to
	// learn whether the configuration error is gone. Default 1m.
	ProbeInterval time.Duration
	// Worker names this replica on events. Default the vault's worker name.
	Worker string
}

func (c *Config) defaults(v *vault.Vault) {
	def := func(d *time.Duration, val time.Duration) {
		if *d <= 0 {
			*d = val
		}
	}
	if c.BatchSize <= 0 {
		c.BatchSize = 100
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 8
	}
	def(&c.Lease, 10*time.Minute)
	def(&c.RetryDelay, time.Minute)
	def(&c.RiskThreshold, 7*24*time.Hour)
	def(&c.ReauthSoon, 7*24*time.Hour)
	def(&c.ProbeInterval, time.Minute)
	if c.Worker == "" {
		c.Worker = v.Config().Worker
	}
}

// ErrStopped is returned by RunOnce and Start after Stop.
var ErrStopped = errors.New("warmer: stopped")

// Warmer refreshes due connections. All methods are safe for concurrent use.
type Warmer struct {
	vault *vault.Vault
	store Store
	// idleTTL is the default refresh-token idle TTL (orgs may have their
	// own).
	idleTTL time.Duration
	clock   clock.Clock
	log     *slog.Logger
	cfg     Config

	// paused is the app-wide pause after a configuration error.
	paused atomic.Bool
	// pauseMu serialises pause transitions and guards lastProbe.
	pauseMu   sync.Mutex
	lastProbe time.Time

	statsMu sync.Mutex
	stats   Stats

	runMu    sync.Mutex
	stopped  bool
	cron     *cron.Cron
	stopping context.Context
	stop     context.CancelFunc
	passes   sync.WaitGroup
}

// Store is what the warmer keeps in the database; *models.DB is one.
type Store interface {
	Claims
	PauseLog
	Sweeps
	Gauges
}

// New builds a warmer that refreshes through v and keeps its state in
// store. clk nil means the system clock, log nil discards logs.
func New(v *vault.Vault, store Store, clk clock.Clock, log *slog.Logger, cfg Config) *Warmer {
	cfg.defaults(v)
	if clk == nil {
		clk = clock.System{}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	w := &Warmer{vault: v, store: store, idleTTL: v.Config().IdleTTL, clock: clk, log: log.With("component", "warmer"), cfg: cfg}
	w.stopping, w.stop = context.WithCancel(context.Background())
	w.stats.MinIdleBudget = w.idleTTL
	return w
}

// Config returns the effective configuration.
func (w *Warmer) Config() Config { return w.cfg }

// Paused reports whether warming is paused by a configuration error.
func (w *Warmer) Paused() bool { return w.paused.Load() }

// Pass reports what one RunOnce did.
type Pass struct {
	// Claimed counts connections this pass claimed to warm (probe included).
	Claimed  int64
	Outcomes Outcomes
	// Probed reports that warming was paused and this pass tried one
	// connection to see whether the configuration error is gone.
	Probed bool
	// Paused reports whether warming is paused at the end of the pass.
	Paused         bool
	IdleRiskEvents int64
	Duration       time.Duration
}

// pass is a Pass being filled in by concurrent workers.
type pass struct {
	mu sync.Mutex
	Pass
}

// RunOnce runs one warm pass: it claims and refreshes due connections until
// none are left or ctx ends, then looks for connections near idle expiry
// and measures the backlog. If ctx ends (or Stop is called) it claims no
// more and starts no new refresh, but it returns only once the refreshes it
// started are stored, and then reports ctx's error.
func (w *Warmer) RunOnce(ctx context.Context) (Pass, error) {
	if !w.enter() {
		return Pass{}, ErrStopped
	}
	defer w.passes.Done()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(w.stopping, cancel)()

	start := time.Now()
	p := &pass{}
	err := w.run(ctx, p)
	p.Paused = w.paused.Load()
	p.Duration = time.Since(start)

	w.statsMu.Lock()
	w.stats.Passes++
	w.stats.LastPassDuration = p.Duration
	w.statsMu.Unlock()

	switch {
	case err != nil && ctx.Err() != nil:
		w.log.Info("warm pass interrupted; the refreshes it started are stored", "claimed", p.Claimed)
	case err != nil:
		w.log.Error("warm pass failed", "err", err, "claimed", p.Claimed)
	case p.Claimed > 0 || p.IdleRiskEvents > 0:
		w.log.Info("warm pass", "claimed", p.Claimed, "ok", p.Outcomes.OK, "skipped_already_fresh", p.Outcomes.SkippedAlreadyFresh,
			"transient", p.Outcomes.Transient, "dead", p.Outcomes.Dead, "config", p.Outcomes.Config, "failed", p.Outcomes.Failed,
			"idle_risk_events", p.IdleRiskEvents, "paused", p.Paused, "duration", p.Duration.Round(time.Millisecond))
	}
	return p.Pass, err
}

// enter registers a pass unless the warmer is stopped.
func (w *Warmer) enter() bool {
	w.runMu.Lock()
	defer w.runMu.Unlock()
	if w.stopped {
		return false
	}
	w.passes.Add(1)
	return true
}

func (w *Warmer) run(ctx context.Context, p *pass) error {
	if err := w.syncPause(ctx); err != nil {
		return err
	}
	// After a restore from a backup nothing is presented, not even a probe,
	// until every token was verified (package restore).
	held := w.vault.Held()
	warm := !w.paused.Load() && !held
	if !warm && !held {
		resumed, err := w.probe(ctx, p)
		if err != nil {
			return err
		}
		warm = resumed
	}
	if warm {
		if err := w.warmDue(ctx, p); err != nil {
			return err
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err := w.sweepIdleRisk(ctx, p); err != nil {
		return err
	}
	if err := w.sweepReauthSoon(ctx); err != nil {
		return err
	}
	return w.measure(ctx)
}

// warmDue claims due connections batch after batch and feeds them to
// Concurrency workers. Claiming the next batch while the last one is still
// being refreshed keeps the workers busy; at most BatchSize connections
// wait under a lease besides those being refreshed.
func (w *Warmer) warmDue(ctx context.Context, p *pass) error {
	work := make(chan claimed)
	var workers sync.WaitGroup
	for range w.cfg.Concurrency {
		workers.Go(func() {
			for c := range work {
				if ctx.Err() != nil || w.paused.Load() {
					w.release(ctx, c)
					continue
				}
				if o, err := w.refresh(ctx, c, p); o == outcomeConfig && vault.IsAppWide(err) {
					w.pause(ctx, err)
				}
			}
		})
	}
	var err error
claiming:
	for ctx.Err() == nil && !w.paused.Load() {
		batch, cerr := w.claim(ctx, w.cfg.BatchSize, true)
		if cerr != nil {
			if ctx.Err() == nil {
				err = cerr
			}
			break
		}
		if len(batch) == 0 {
			break
		}
		w.addClaimed(p, len(batch))
		for i, c := range batch {
			if ctx.Err() != nil || w.paused.Load() {
				w.release(ctx, batch[i:]...)
				break claiming
			}
			select {
			case work <- c:
			case <-ctx.Done():
				w.release(ctx, batch[i:]...)
				break claiming
			}
		}
	}
	close(work)
	workers.Wait()
	return err
}

// refresh warms one claimed connection through the vault and settles its
// next_warm_at when the vault did not.
func (w *Warmer) refresh(ctx context.Context, c claimed, p *pass) (outcome, error) {
	// The vault runs the refresh detached from its caller anyway; not
	// passing our cancellation also keeps this call from returning before
	// the refresh is stored, which Stop promises.
	at, err := w.vault.Access(context.WithoutCancel(ctx), c.ID, vault.Request{
		Cause: vault.CauseWarm, Force: true, UnlessRefreshedAfter: c.LastRefreshedAt,
	})
	o := classify(at, err)
	w.count(p, o)
	switch o {
	case outcomeTransient, outcomeConfig:
		var ve *vault.Error
		var retryAfter time.Duration
		if errors.As(err, &ve) {
			retryAfter = ve.RetryAfter
		}
		w.retryLater(ctx, c, max(w.cfg.RetryDelay, retryAfter))
	case outcomeFailed:
		// Database or key-ring trouble: the lease makes it wait Lease
		// before the next try, which keeps a persistent fault from
		// flooding the log.
		w.log.Error("warm refresh failed", "connection_id", c.ID, "err", err)
	}
	return o, err
}

// outcome is the class of one warm refresh.
type outcome int

const (
	outcomeOK outcome = iota
	outcomeSkipped
	outcomeTransient
	outcomeDead
	outcomeConfig
	outcomeFailed
)

func classify(at *vault.AccessToken, err error) outcome {
	if err == nil {
		if at.Refreshed {
			return outcomeOK
		}
		return outcomeSkipped
	}
	switch vault.ErrorCode(err) {
	case vault.CodeUpstreamUnavailable:
		return outcomeTransient
	case vault.CodeUpstreamConfig:
		return outcomeConfig
	case vault.CodeReauthRequired, vault.CodeRevoked, vault.CodeNotFound:
		return outcomeDead
	}
	return outcomeFailed
}

func (w *Warmer) count(p *pass, o outcome) {
	p.mu.Lock()
	p.Outcomes.add(o)
	p.mu.Unlock()
	w.statsMu.Lock()
	w.stats.Outcomes.add(o)
	w.statsMu.Unlock()
}

func (w *Warmer) addClaimed(p *pass, n int) {
	p.mu.Lock()
	p.Claimed += int64(n)
	p.mu.Unlock()
	w.statsMu.Lock()
	w.stats.Claimed += int64(n)
	w.statsMu.Unlock()
}

// Start runs a pass on schedule (robfig/cron syntax, e.g. "@every 1m" or
// "* * * * *"). A tick that comes while the last pass still runs is skipped.
func (w *Warmer) Start(schedule string) error {
	w.runMu.Lock()
	defer w.runMu.Unlock()
	if w.stopped {
		return ErrStopped
	}
	if w.cron != nil {
		return errors.New("warmer: already started")
	}
	logger := cronlog.New(w.log)
	c := cron.New(cron.WithLogger(logger), cron.WithChain(cron.Recover(logger), cron.SkipIfStillRunning(logger)))
	if _, err := c.AddFunc(schedule, w.tick); err != nil {
		return fmt.Errorf("warmer: schedule %q: %w", schedule, err)
	}
	c.Start()
	w.cron = c
	return nil
}

func (w *Warmer) tick() {
	// RunOnce logs its own failures.
	_, _ = w.RunOnce(context.Background())
}

// Stop schedules no more passes, makes running passes claim nothing more,
// and returns a context that is done once every refresh they started is
// stored. It never abandons a refresh mid-way.
func (w *Warmer) Stop() context.Context {
	w.runMu.Lock()
	w.stopped = true
	w.stop()
	c := w.cron
	w.runMu.Unlock()

	ctx, done := context.WithCancel(context.Background())
	go func() {
		if c != nil {
			<-c.Stop().Done()
		}
		w.passes.Wait()
		done()
	}()
	return ctx
}
