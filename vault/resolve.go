package vault

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tokenwarm/tokenwarm/models"
	"github.com/tokenwarm/tokenwarm/salesforce"
)

// resolve settles a prior attempt whose outcome is unknown (its marker is
// unresolved, or its lease ran out with its owner gone) before the token
// may be presented again. Presenting a token that was in fact rotated
// would turn an unavoidable loss into a theft signal, on which Salesforce
// may revoke every token of the user and app; so the token is introspected
// first, which is not a presentation.
//
// Active: the earlier presentation rotated nothing; it returns the events
// to store with this attempt's result, and the caller presents. Inactive
// (a well-formed answer, nothing else): the rotation happened and its
// result is lost; the connection needs re-authorization and the token is
// never presented. Anything else: the state is not known; the marker
// stays, the connection backs off, and the caller gets a retryable error.
func (v *Vault) resolve(ctx context.Context, row *models.RefreshLock, req Request, refreshToken string) ([]models.Event, error) {
	c, prior := &row.Conn, row.Prior
	callCtx, cancel := context.WithTimeout(ctx, v.cfg.UpstreamTimeout)
	active, err := v.sf.RefreshTokenActive(callCtx, c.LoginURL, refreshToken)
	cancel()
	attempt := fmt.Sprintf("attempt by %s started %s", prior.Worker, prior.StartedAt.UTC().Format(time.RFC3339))
	// A marker of the restore procedure is no attempt: the database was
	// restored from a backup, and the token it holds may have been rotated
	// since the backup was taken.
	restored := prior.Worker == models.RestoreWorker
	if restored {
		attempt = "the database was restored from a backup (token marked unverified " + prior.StartedAt.UTC().Format(time.RFC3339) + ")"
	}
	now := v.clock.Now().UTC()
	switch {
	case err == nil && active:
		if prior.State == models.AttemptUnresolved {
			// Its outcome was recorded when it came back (a 5xx, a lost
			// answer); that it rotated nothing needs no second event.
			return nil, nil
		}
		v.log.Warn("an earlier refresh attempt was interrupted; introspection shows the stored token is still live, presenting it",
			"connection_id", c.ID, "attempt_worker", prior.Worker, "attempt_started_at", prior.StartedAt)
		return []models.Event{v.event(c.ID, models.EventUnknownOutcome, req.Cause, 0, "attempt_interrupted",
			attempt+" never stored its outcome; introspection: the stored token is still active")}, nil

	case err == nil:
		reason := models.ReasonRotationLost + ": an earlier refresh was answered by Salesforce but the answer never reached storage; the token we hold was rotated"
		lost := "the stored refresh token was rotated by a lost presentation"
		if restored {
			reason = models.ReasonRotationLost + ": the database was restored from a backup and Salesforce rotated this refresh token after the backup was taken; it was never presented"
			lost = "the database was restored from a backup; the stored refresh token had been rotated since"
		}
		update := map[string]any{"status": models.StatusNeedsReauth, "reauth_reason": reason, "access_token_sealed": "",
			"next_attempt_at": nil, "last_error_code": models.ReasonRotationLost, "last_error_at": now, "updated_at": now}
		events := []models.Event{
			v.event(c.ID, models.EventRotationLost, req.Cause, 200, models.ReasonRotationLost, attempt+"; introspection: the stored token is inactive"),
			v.event(c.ID, models.EventNeedsReauth, req.Cause, 0, models.ReasonRotationLost, lost),
		}
		err := v.storeWrite(ctx, row, models.RefreshWrite{Marker: models.RemovePriorMarker, AttemptID: prior.AttemptID,
			Update: update, Events: events, Deadline: time.Now().Add(v.cfg.CommitRetryBudget)})
		if err != nil {
			return nil, v.storeError(err)
		}
		if restored {
			v.log.Warn("after the restore from a backup, the stored refresh token is no longer the live one; it was not presented and the connection needs re-authorization",
				"connection_id", c.ID)
		} else {
			v.log.Error("ALERT: a refresh token was rotated by a presentation whose answer was lost; it is never presented again and the connection needs re-authorization",
				"connection_id", c.ID, "attempt_worker", prior.Worker, "attempt_started_at", prior.StartedAt)
		}
		return nil, &Error{Code: CodeReauthRequired, Message: "the connection must be re-authorized", Reason: reason}
	}

	// The state could not be learned: hold the token back and ask again
	// after a backoff. Never a verdict.
	var se *salesforce.Error
	code, status, retryAfter := "introspection_error", 0, time.Duration(0)
	if errors.As(err, &se) {
		code, status, retryAfter = se.Code, se.HTTPStatus, se.RetryAfter
	}
	failures := c.ConsecutiveFailures + 1
	d := v.backoff(failures, retryAfter)
	next := now.Add(d)
	update := map[string]any{"consecutive_failures": failures, "next_attempt_at": next,
		"last_error_code": "introspection_failed", "last_error_at": now, "updated_at": now}
	if c.NextWarmAt.Before(next) {
		update["next_warm_at"] = next
	}
	events := []models.Event{v.event(c.ID, models.EventIntrospectionFailed, req.Cause, status, code,
		attempt+" has an unknown outcome and the token's state could not be learned; it is held back")}
	alert := prior.AlertedAt == nil && time.Since(prior.StartedAt) >= v.cfg.UnresolvedAlertAfter
	if alert {
		events = append(events, v.event(c.ID, models.EventAttemptUnresolved, req.Cause, status, code,
			"held back by an unresolved refresh attempt since "+prior.StartedAt.UTC().Format(time.RFC3339)))
	}
	// Nothing is lost if this bookkeeping fails: no retries.
	if serr := v.storeWrite(ctx, row, models.RefreshWrite{Marker: models.KeepPriorMarker, AttemptID: prior.AttemptID, AlertPrior: alert,
		Update: update, Events: events}); serr != nil {
		v.log.Warn("could not record a failed introspection", "connection_id", c.ID, "err", serr)
	}
	if alert {
		v.log.Error("ALERT: a connection is held back by a refresh attempt with an unknown outcome, and Salesforce's introspection keeps failing",
			"connection_id", c.ID, "since", prior.StartedAt, "error_code", code)
	}
	return nil, &Error{Code: CodeUpstreamUnavailable, RetryAfter: d, Err: err,
		Message: "an earlier refresh has an unknown outcome and Salesforce could not confirm the token's state; retrying later"}
}

// corroborate decides whether an "IP restricted or invalid login hours"
// answer is app-wide: only when RestrictedQuorum distinct connections got
// it within RestrictedWindow (across replicas: the events are shared).
// One user's login hours never pause the app.
func (v *Vault) corroborate(ctx context.Context, err error) error {
	var ve *Error
	if !errors.As(err, &ve) {
		return err
	}
	n, qerr := v.store.CountConnectionsWithEvent(ctx, models.EventRestricted, v.clock.Now().Add(-v.cfg.RestrictedWindow))
	if qerr != nil {
		v.log.Warn("could not count restricted answers; treating this one as one user's", "err", qerr)
		return err
	}
	if n < int64(v.cfg.RestrictedQuorum) {
		return err
	}
	wide := *ve
	wide.AppWide = true
	wide.Message = fmt.Sprintf("Salesforce refused refreshes of %d connections within %s as IP restricted: the egress address is not on the allowlist", n, v.cfg.RestrictedWindow)
	return &wide
}
