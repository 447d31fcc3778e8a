package vault

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tokenwarm/tokenwarm/internal/text"
	"github.com/tokenwarm/tokenwarm/models"
	"github.com/tokenwarm/tokenwarm/salesforce"
)

// lock takes the connection's row lock on Postgres (callers in other
// processes queue), or on embedded SQLite (one process per data directory)
// the in-process stripe and then a plain read; the attempt marker's
// compare-and-swap covers the rest.
func (v *Vault) lock(ctx context.Context, id string) (*models.RefreshLock, func(), error) {
	unlock := func() {}
	if !v.store.LocksRows() {
		mu := v.stripe(id)
		mu.Lock()
		unlock = mu.Unlock
	}
	row, err := v.store.LockForRefresh(ctx, id, v.cfg.LockTimeout, v.cfg.IdleInTransactionTimeout)
	if err != nil {
		unlock()
		switch {
		case errors.Is(err, models.ErrNotFound):
			return nil, nil, newErr(CodeNotFound, "no such connection")
		case errors.Is(err, models.ErrLockTimeout):
			return nil, nil, &Error{Code: CodeUpstreamUnavailable, Message: "another worker is still refreshing this connection", RetryAfter: time.Second, Err: err}
		}
		return nil, nil, v.dbError(err)
	}
	return row, func() { row.Release(); unlock() }, nil
}

// dbError wraps a database failure: unavailable (retry soon, our fault) or
// internal.
func (v *Vault) dbError(err error) *Error {
	if models.IsUnavailable(err) {
		return &Error{Code: CodeUnavailable, Message: "the database is not answering", RetryAfter: time.Second, Err: err}
	}
	return &Error{Code: CodeInternal, Message: "database error", Err: err}
}

// storeError maps a failed store: fenced off (retry later) or a database
// failure.
func (v *Vault) storeError(err error) *Error {
	if models.IsFenced(err) {
		return &Error{Code: CodeUpstreamUnavailable, Message: "the connection changed meanwhile; retry", RetryAfter: time.Second, Err: err}
	}
	return v.dbError(err)
}

// refresh is the one refresh path. It runs as the one flight of its
// connection in this process.
func (v *Vault) refresh(ctx context.Context, id string, req Request) (*AccessToken, error) {
	if !v.work.enter() {
		return nil, errShuttingDown()
	}
	defer v.work.leave()
	// The database was restored from a backup and its tokens are not
	// verified yet: nothing is presented, whoever asks.
	if reason := v.holdReason(); reason != "" {
		return nil, errHeld(reason)
	}
	// Waiting for a slot is bounded like waiting for a lock; nothing has
	// been presented yet, so giving up here is safe.
	slotWait := time.NewTimer(v.cfg.LockTimeout)
	select {
	case v.slots <- struct{}{}:
		slotWait.Stop()
		defer func() { <-v.slots }()
	case <-slotWait.C:
		return nil, &Error{Code: CodeUpstreamUnavailable, Message: "too many refreshes in flight", RetryAfter: time.Second}
	case <-ctx.Done():
		slotWait.Stop()
		return nil, &Error{Code: CodeUpstreamUnavailable, Message: "gave up waiting for a refresh slot", RetryAfter: time.Second, Err: ctx.Err()}
	}
	// The work budget starts once we may work: time spent queueing must not
	// eat the time needed to store a rotation.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), v.cfg.LockTimeout+2*v.cfg.UpstreamTimeout+v.cfg.CommitRetryBudget+10*time.Second)
	defer cancel()
	row, release, err := v.lock(ctx, id)
	if err != nil {
		return nil, err
	}
	defer release()
	if v.afterLock != nil {
		v.afterLock(id)
	}
	c := &row.Conn
	now := v.clock.Now().UTC()

	// Second look, now that nobody else can refresh this connection.
	if err := statusError(c); err != nil {
		return nil, err
	}
	if req.Force {
		if !req.UnlessRefreshedAfter.IsZero() && c.LastRefreshedAt.After(req.UnlessRefreshedAfter) {
			// Someone refreshed since the caller looked: the refresh token
			// is warm, which is all such a caller wants. The access token
			// comes along only if it is still usable.
			if at, ok := v.usable(c, Request{}); ok {
				return at, nil
			}
			return &AccessToken{ConnectionID: c.ID, InstanceURL: c.InstanceURL, LastRefreshedAt: c.LastRefreshedAt}, nil
		}
	} else if at, ok := v.usable(c, req); ok {
		return at, nil
	}
	// An admin may skip a backoff, but not the settling time after a
	// presentation whose outcome is unknown.
	settling := row.Prior != nil && row.Prior.State == models.AttemptUnresolved
	if (!req.IgnoreBackoff || settling) && c.NextAttemptAt != nil && c.NextAttemptAt.After(now) {
		return nil, &Error{Code: CodeUpstreamUnavailable, Message: "Salesforce failed recently; retrying later", RetryAfter: c.NextAttemptAt.Sub(now)}
	}
	pause := v.appPause()
	if req.Cause == CausePull && pause != nil && pause.Paused() {
		return nil, &Error{Code: CodeUpstreamConfig, Message: "refreshes are paused for the app: Salesforce refused tokenwarm's configuration (IP allowlist or client credentials)",
			RetryAfter: time.Minute}
	}
	refreshToken, err := v.OpenRefresh(c)
	if err != nil || refreshToken == "" {
		return nil, &Error{Code: CodeInternal, Message: "stored refresh token cannot be opened (wrong key ring?)", Err: err}
	}

	// An attempt marker means a worker may have presented this token and
	// never stored the outcome. While its lease runs, its owner may still be
	// storing it. After that, or once the outcome is known to be unknown,
	// the token is never presented blind: introspection tells whether it is
	// still the live one.
	var events []models.Event
	if prior := row.Prior; prior != nil {
		if prior.Live {
			return nil, &Error{Code: CodeUpstreamUnavailable, Message: "an earlier refresh of this connection is still settling", RetryAfter: time.Second}
		}
		evs, err := v.resolve(ctx, row, req, refreshToken)
		if err != nil {
			return nil, err
		}
		events = evs
	}
	if v.work.draining() {
		// Shutting down: start no new presentation.
		return nil, errShuttingDown()
	}

	attemptID := newAttemptID()
	// The marker is claimed on a second connection while the row lock holds
	// the first. Behind a pooler whose pool is smaller than the replicas'
	// combined demand, every server connection may be held by a row lock
	// waiting for its marker: the wait is bounded like a lock wait, and
	// giving up (releasing the row) is safe, since nothing was presented. A
	// marker that did commit unseen is settled by the next attempt, which
	// introspects instead of presenting blind.
	//
	// The lease is counted from before the claim (its row is built after
	// this moment, by the database's clock). A claim that took so long that
	// what is left of the lease might not cover the call and the store is
	// not followed by a presentation: a lease that ends under a
	// presentation lets the next worker introspect while Salesforce may
	// still be rotating. The marker then stays until its lease ends, and
	// the next attempt introspects (the token is live: it was never
	// presented).
	claimed := time.Now()
	budget := v.cfg.claimBudget()
	claimCtx, cancelClaim := context.WithTimeout(ctx, budget)
	err = v.store.ClaimAttempt(claimCtx, c, row.Prior, attemptID, v.cfg.Worker, v.cfg.AttemptLease)
	cancelClaim()
	switch {
	case errors.Is(err, models.ErrLostClaim):
		return nil, &Error{Code: CodeUpstreamUnavailable, Message: "another worker is refreshing this connection", RetryAfter: time.Second}
	case err != nil:
		return nil, v.dbError(err)
	case time.Since(claimed) > v.cfg.claimSafe():
		v.log.Warn("the attempt marker's claim took so long that its lease may not cover the presentation; not presenting the token (the next attempt introspects it)",
			"connection_id", id, "claim_ms", time.Since(claimed).Milliseconds(), "safe_ms", v.cfg.claimSafe().Milliseconds())
		return nil, &Error{Code: CodeUpstreamUnavailable, Message: "the database was too slow to claim this refresh; retry shortly", RetryAfter: time.Second}
	}

	start := time.Now()
	callCtx, cancelCall := context.WithTimeout(ctx, v.cfg.UpstreamTimeout)
	tok, sfErr := v.sf.Refresh(callCtx, c.LoginURL, refreshToken)
	cancelCall()
	elapsed := time.Since(start)
	if v.cfg.Observe != nil {
		v.cfg.Observe(req.Cause, outcomeClass(sfErr).String(), elapsed)
	}

	res := v.outcome(c, req, tok, sfErr)
	res.events = append(events, res.events...)
	// The owner stops retrying before its lease ends (counted from the claim,
	// less a margin for clock drift); the fence in the database is what makes
	// a late write impossible anyway.
	deadline := time.Now().Add(v.cfg.CommitRetryBudget)
	if leaseEnd := claimed.Add(v.cfg.AttemptLease - 2*time.Second); leaseEnd.Before(deadline) {
		deadline = leaseEnd
	}
	if err := v.persist(ctx, row, attemptID, res, deadline); err != nil {
		if tok != nil && tok.Rotated {
			// I2: the new refresh token is not saved, so nothing may use the
			// new access token. The marker stays: the next worker asks
			// Salesforce whether the token we hold is still live.
			v.log.Error("refresh rotated the token but the result could not be stored; the next attempt will introspect the stored token",
				"connection_id", id, "err", err)
		}
		return nil, v.storeError(err)
	}
	v.log.Info("refresh", "connection_id", id, "cause", req.Cause, "outcome", outcomeClass(sfErr).String(),
		"error_code", errorCode(sfErr), "upstream_ms", elapsed.Milliseconds())
	resErr := res.err
	if res.restricted {
		resErr = v.corroborate(ctx, resErr)
	}
	if pause != nil && req.Cause != CauseWarm && IsAppWide(resErr) {
		// The warmer reports its own; the rest pause the app (one alert).
		pause.ConfigError(ctx, resErr)
	}
	return res.token, resErr
}

func errShuttingDown() *Error {
	return &Error{Code: CodeUpstreamUnavailable, Message: "this replica is shutting down", RetryAfter: time.Second}
}

// result is what one attempt writes and returns.
type result struct {
	update map[string]any
	events []models.Event
	token  *AccessToken
	err    error
	// unresolved: the presentation may have rotated the token without us
	// seeing the answer; the marker stays, marked unresolved.
	unresolved bool
	// restricted: Salesforce answered "IP restricted or invalid login
	// hours"; whether that is app-wide is decided after the commit.
	restricted bool
	// marker: which marker the write removes (default: this attempt's).
	marker string
}

// outcome turns Salesforce's answer into the row update, the events and what
// the caller gets.
func (v *Vault) outcome(c *models.Connection, req Request, tok *salesforce.Token, sfErr error) result {
	now := v.clock.Now().UTC()
	id := c.ID
	if sfErr == nil {
		sealedRefresh, err := v.SealRefresh(id, tok.RefreshToken)
		if err != nil {
			return v.sealFailure(c, err)
		}
		sealedAccess, err := v.SealAccess(id, tok.AccessToken)
		if err != nil {
			return v.sealFailure(c, err)
		}
		issued, expires := tok.IssuedAt.UTC(), tok.ExpiresAt.UTC()
		update := map[string]any{
			"refresh_token_sealed":    sealedRefresh,
			"access_token_sealed":     sealedAccess,
			"access_token_issued_at":  issued,
			"access_token_expires_at": expires,
			"last_refreshed_at":       now,
			"next_warm_at":            v.NextWarm(now),
			"rotation_count":          c.RotationCount + 1,
			"consecutive_failures":    0,
			"next_attempt_at":         nil,
			"last_error_code":         "",
			"updated_at":              now,
		}
		if tok.InstanceURL != "" {
			update["instance_url"] = tok.InstanceURL
			c.InstanceURL = tok.InstanceURL
		}
		if tok.Scope != "" {
			update["scopes"] = tok.Scope
		}
		detail := "rotated"
		if !tok.Rotated {
			detail = "not rotated"
		}
		ev := v.event(id, models.EventRefreshed, req.Cause, 200, "", detail)
		c.AccessTokenIssuedAt, c.AccessTokenExpiresAt, c.LastRefreshedAt = &issued, &expires, now
		return result{update: update, events: []models.Event{ev}, token: v.accessToken(c, tok.AccessToken, true)}
	}

	var se *salesforce.Error
	if !errors.As(sfErr, &se) {
		se = &salesforce.Error{Class: salesforce.Unknown, Op: "refresh", Code: "client_error", Description: "unexpected error"}
	}
	update := map[string]any{"last_error_code": se.Code, "last_error_at": now, "updated_at": now}
	failures := c.ConsecutiveFailures + 1
	unresolved := se.MayHaveRotated()
	backoffUntil := func(d time.Duration) {
		if unresolved {
			// Salesforce may still be working on the request we gave up
			// on: introspecting before it is done could find the token
			// active and lead to a second, concurrent presentation.
			d = max(d, v.cfg.UpstreamTimeout)
		}
		next := now.Add(d)
		update["consecutive_failures"] = failures
		update["next_attempt_at"] = next
		if c.NextWarmAt.Before(next) {
			update["next_warm_at"] = next
		}
	}
	res := result{update: update, unresolved: unresolved}
	switch se.Class {
	case salesforce.Dead, salesforce.Concurrent:
		reason := se.Code
		if se.Description != "" {
			reason += ": " + se.Description
		}
		if se.Class == salesforce.Concurrent {
			// Our own code never presents a token twice, so someone else
			// holds this refresh token. Nothing newer is in our row (we hold
			// its lock): only a re-authorization recovers.
			reason = "refresh token used elsewhere (" + se.Description + ")"
			res.events = append(res.events, v.event(id, models.EventConcurrentPresentation, req.Cause, se.HTTPStatus, se.Code, se.Description))
			v.log.Error("ALERT: Salesforce saw this refresh token presented concurrently by someone else", "connection_id", id)
		}
		update["status"] = models.StatusNeedsReauth
		update["reauth_reason"] = reason
		update["access_token_sealed"] = ""
		update["next_attempt_at"] = nil
		res.events = append(res.events, v.event(id, models.EventNeedsReauth, req.Cause, se.HTTPStatus, se.Code, se.Description))
		res.err = &Error{Code: CodeReauthRequired, Message: "the connection must be re-authorized", Reason: reason, Err: se}
	case salesforce.Config:
		if v.appPause() == nil {
			backoffUntil(max(v.cfg.ConfigErrorBackoff, se.RetryAfter))
		} // else the app-wide pause holds every connection back, and its end frees them all
		res.events = append(res.events, v.event(id, models.EventConfigError, req.Cause, se.HTTPStatus, se.Code, se.Description))
		res.err = &Error{Code: CodeUpstreamConfig, Message: "Salesforce refused tokenwarm's configuration: " + se.Code,
			RetryAfter: v.cfg.ConfigErrorBackoff, AppWide: true, Err: se}
	case salesforce.Restricted:
		// Ambiguous: the egress address (everyone) or this user's login
		// hours (one user). This connection backs off like any other
		// failure, so it alone can never hold the app paused.
		d := max(v.backoff(failures, se.RetryAfter), v.cfg.ConfigErrorBackoff)
		backoffUntil(d)
		res.restricted = true
		res.events = append(res.events, v.event(id, models.EventRestricted, req.Cause, se.HTTPStatus, se.Code, se.Description))
		res.err = &Error{Code: CodeUpstreamConfig, Message: "Salesforce refused the refresh: IP restricted or invalid login hours", RetryAfter: d, Err: se}
	case salesforce.Unknown:
		d := v.backoff(failures, se.RetryAfter)
		backoffUntil(d)
		res.events = append(res.events, v.event(id, models.EventUnknownOutcome, req.Cause, se.HTTPStatus, se.Code, "request sent, no usable answer: "+se.Description))
		res.err = &Error{Code: CodeUpstreamUnavailable, Message: "Salesforce did not answer", RetryAfter: d, Err: se}
	case salesforce.Unrecognized:
		d := v.backoff(failures, se.RetryAfter)
		backoffUntil(d)
		res.events = append(res.events, v.event(id, models.EventUnrecognized, req.Cause, se.HTTPStatus, se.Code, se.Description))
		res.err = &Error{Code: CodeUpstreamUnavailable, Message: "Salesforce gave an answer tokenwarm does not recognise: " + se.Code, RetryAfter: d, Err: se}
	default:
		d := v.backoff(failures, se.RetryAfter)
		backoffUntil(d)
		res.events = append(res.events, v.event(id, models.EventTransientFailure, req.Cause, se.HTTPStatus, se.Code, se.Description))
		res.err = &Error{Code: CodeUpstreamUnavailable, Message: "Salesforce is unavailable", RetryAfter: d, Err: se}
	}
	return res
}

// sealFailure: a rotated token that cannot be sealed cannot be stored. The
// marker stays unresolved, so the next attempt introspects.
func (v *Vault) sealFailure(c *models.Connection, err error) result {
	return result{update: map[string]any{"updated_at": v.clock.Now().UTC()}, unresolved: true,
		err: &Error{Code: CodeInternal, Message: "could not seal the refreshed token", Err: err}}
}

// persist writes an attempt's outcome, its events and the marker's removal
// (or, for an unresolved outcome, the marker's change to unresolved) in one
// fenced transaction (models.RefreshLock.Store), retried until deadline.
// Meanwhile the marker keeps everyone else from presenting the token.
func (v *Vault) persist(ctx context.Context, row *models.RefreshLock, attemptID string, res result, deadline time.Time) error {
	op := models.RemoveOwnMarker
	if res.unresolved {
		op = models.UnresolveOwnMarker
	}
	return v.storeWrite(ctx, row, models.RefreshWrite{Marker: op, AttemptID: attemptID, Update: res.update, Events: res.events, Deadline: deadline})
}

// storeWrite stores w through row (models.RefreshLock.Store, completed by
// write) and, once it committed, tells Config.Stored of its events.
func (v *Vault) storeWrite(ctx context.Context, row *models.RefreshLock, w models.RefreshWrite) error {
	if err := row.Store(ctx, v.write(row, w)); err != nil {
		return err
	}
	if v.cfg.Stored != nil {
		for _, ev := range w.Events {
			v.cfg.Stored(ev.Kind)
		}
	}
	return nil
}

// write completes a RefreshWrite with the vault's retry event, logging and
// test hooks.
func (v *Vault) write(row *models.RefreshLock, w models.RefreshWrite) models.RefreshWrite {
	id := row.Conn.ID
	w.RetryEvent = func(n int) models.Event {
		return v.event(id, models.EventCommitRetried, "", 0, "", fmt.Sprintf("result stored on retry %d", n))
	}
	w.OnRetry = func(n int, err error) {
		v.log.Warn("storing a refresh result failed; retrying", "connection_id", id, "attempt", n, "err", err)
	}
	w.BeforeCommit, w.BeforeRetry = v.beforeCommit, v.beforeRetry
	return w
}

func (v *Vault) event(id, kind, cause string, status int, code, detail string) models.Event {
	cid := id
	return models.Event{ConnectionID: &cid, Kind: kind, Cause: cause, Worker: v.cfg.Worker,
		HTTPStatus: status, ErrorCode: code, Detail: text.Truncate(detail, 300), CreatedAt: v.clock.Now().UTC()}
}

func outcomeClass(err error) salesforce.Class {
	var se *salesforce.Error
	if err == nil {
		return salesforce.OK
	}
	if errors.As(err, &se) {
		return se.Class
	}
	return salesforce.Unknown
}

func errorCode(err error) string {
	var se *salesforce.Error
	if errors.As(err, &se) {
		return se.Code
	}
	return ""
}
