package warmer

import (
	"context"
	"errors"
	"fmt"

	"github.com/tokenwarm/tokenwarm/internal/text"
	"github.com/tokenwarm/tokenwarm/models"
	"github.com/tokenwarm/tokenwarm/salesforce"
	"github.com/tokenwarm/tokenwarm/vault"
)

// Event kinds the warmer records. App-level events have no connection.
const (
	// EventIdleExpiryRisk: a connection's idle budget fell under
	// Config.RiskThreshold without a successful refresh. One per crossing.
	EventIdleExpiryRisk = "idle_expiry_risk"
	// EventAppPaused: Salesforce refused tokenwarm's configuration (IP
	// allowlist, client credentials); warming is paused for the whole app.
	EventAppPaused = "config_error_app_paused"
	// EventAppResumed: a probe succeeded after a pause.
	EventAppResumed = "config_error_app_resumed"
)

// PauseLog is where the app-wide pause state lives: the newest pause or
// resume event, shared by every replica.
type PauseLog interface {
	LatestAppEvent(ctx context.Context, kinds []string) (string, error)
	RecordAppEvent(ctx context.Context, ev models.Event, kinds []string, want func(latest string) bool) (bool, error)
}

// pauseKinds are the app events the pause state is read from.
var pauseKinds = []string{EventAppPaused, EventAppResumed}

// The pause is app-wide, so it lives in the database as the latest app
// event: a replica that sees the configuration error records the pause,
// the others adopt it at their next pass instead of finding out with a
// batch of failed refreshes each, and a probe that succeeds anywhere
// resumes everyone.

// syncPause adopts the app's pause state recorded by any replica.
func (w *Warmer) syncPause(ctx context.Context) error {
	// Read under the lock, so a pause or resume of this process being
	// recorded right now is not undone by a state read just before it.
	w.pauseMu.Lock()
	defer w.pauseMu.Unlock()
	latest, err := w.store.LatestAppEvent(ctx, pauseKinds)
	if err != nil {
		return fmt.Errorf("read pause state: %w", err)
	}
	paused := latest == EventAppPaused
	if paused == w.paused.Load() {
		return nil
	}
	if paused {
		w.log.Warn("warming is paused: another replica saw Salesforce refuse tokenwarm's configuration; probing one connection per interval",
			"probe_interval", w.cfg.ProbeInterval)
		w.lastProbe = w.clock.Now()
	} else {
		w.log.Info("warming resumed: another replica's probe succeeded")
	}
	w.paused.Store(paused)
	return nil
}

// pause stops warming for the whole app after a configuration error. Only
// the first replica to see it records the event and raises the alert.
func (w *Warmer) pause(ctx context.Context, cause error) {
	w.pauseMu.Lock()
	defer w.pauseMu.Unlock()
	if w.paused.Load() {
		return
	}
	w.paused.Store(true)
	w.lastProbe = w.clock.Now()

	status, code, desc := upstreamDetail(cause)
	ev := w.event(nil, EventAppPaused, status, code, text.Truncate("warming paused for the app: "+desc, 300))
	recorded, err := w.recordAppEvent(ctx, ev, func(latest string) bool { return latest != EventAppPaused })
	switch {
	case err != nil:
		w.log.Error("ALERT: Salesforce refused tokenwarm's configuration; warming is paused (the pause event could not be stored)",
			"error_code", code, "detail", desc, "err", err)
	case recorded:
		w.log.Error("ALERT: Salesforce refused tokenwarm's configuration (IP allowlist or client credentials); warming is paused for the whole app, connections stay active, one connection is probed per interval until it works again",
			"error_code", code, "http_status", status, "detail", desc, "probe_interval", w.cfg.ProbeInterval)
	default:
		w.log.Warn("warming is paused: Salesforce refused tokenwarm's configuration (already reported)", "error_code", code)
	}
}

// ConfigError pauses the app after a configuration error that a refresh
// outside the warmer met (a mobile pull, an admin refresh), with the same
// single alert. It makes the warmer a vault.AppPause.
func (w *Warmer) ConfigError(ctx context.Context, err error) { w.pause(ctx, err) }

// resume restarts warming after a successful probe.
func (w *Warmer) resume(ctx context.Context) {
	w.pauseMu.Lock()
	defer w.pauseMu.Unlock()
	if !w.paused.Load() {
		return
	}
	w.paused.Store(false)
	ev := w.event(nil, EventAppResumed, 0, "", "a probe refresh succeeded; warming resumed")
	if _, err := w.recordAppEvent(ctx, ev, func(latest string) bool { return latest == EventAppPaused }); err != nil {
		w.log.Error("could not store the resume event", "err", err)
	}
	w.log.Info("warming resumed: a probe refresh succeeded")
}

// probe refreshes the earliest due connection, at most once per
// ProbeInterval, and resumes warming if Salesforce took it.
func (w *Warmer) probe(ctx context.Context, p *pass) (resumed bool, err error) {
	now := w.clock.Now()
	w.pauseMu.Lock()
	if now.Before(w.lastProbe.Add(w.cfg.ProbeInterval)) {
		w.pauseMu.Unlock()
		return false, nil
	}
	w.lastProbe = now
	w.pauseMu.Unlock()

	batch, err := w.claim(ctx, 1, true)
	if err == nil && len(batch) == 0 {
		// Nothing is due (a pull, not a warm, met the error): any active
		// connection proves the configuration; warming it early is harmless.
		batch, err = w.claim(ctx, 1, false)
	}
	if err != nil || len(batch) == 0 {
		return false, err
	}
	w.addClaimed(p, 1)
	p.Probed = true
	w.statsMu.Lock()
	w.stats.Probes++
	w.statsMu.Unlock()
	if o, _ := w.refresh(ctx, batch[0], p); o != outcomeOK {
		return false, nil
	}
	w.resume(ctx)
	return true, nil
}

// recordAppEvent stores ev if want(kind of the latest app event) holds,
// atomically across replicas, and reports whether it did.
func (w *Warmer) recordAppEvent(ctx context.Context, ev models.Event, want func(latest string) bool) (bool, error) {
	return w.store.RecordAppEvent(context.WithoutCancel(ctx), ev, pauseKinds, want)
}

func (w *Warmer) event(connectionID *string, kind string, status int, code, detail string) models.Event {
	return models.Event{ConnectionID: connectionID, Kind: kind, Cause: vault.CauseWarm, Worker: w.cfg.Worker,
		HTTPStatus: status, ErrorCode: code, Detail: detail, CreatedAt: w.clock.Now().UTC()}
}

// upstreamDetail digs Salesforce's answer out of a vault error. Codes and
// descriptions never hold tokens.
func upstreamDetail(err error) (status int, code, desc string) {
	var se *salesforce.Error
	if errors.As(err, &se) {
		desc = se.Code
		if se.Description != "" {
			desc += ": " + se.Description
		}
		return se.HTTPStatus, se.Code, desc
	}
	if err != nil {
		return 0, string(vault.ErrorCode(err)), err.Error()
	}
	return 0, "", ""
}
