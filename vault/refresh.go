package vault

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"gorm.io/gorm"

	"github.com/tokenwarm/tokenwarm/models"
	"github.com/tokenwarm/tokenwarm/salesforce"
)

// marker is the attempt marker found on a locked row.
type marker struct {
	models.RefreshAttempt
	// live: the lease has not run out by the database's clock, so its
	// owner may still be presenting the token or storing the answer.
	live bool
}

// lockedRow is a connection row held against other workers, with the
// attempt marker found for it, if any.
type lockedRow struct {
	conn    models.Connection
	prior   *marker
	tx      *gorm.DB // Postgres: the transaction holding the row lock
	release func()
}

// lock takes the connection's row lock on Postgres (callers in other
// processes queue), the in-process stripe on SQLite (one process per data
// directory; the attempt marker's compare-and-swap covers the rest). The
// lock is FOR NO KEY UPDATE, the strength Postgres itself takes to update
// non-key columns: it excludes every other refresher like FOR UPDATE, but
// not the KEY SHARE lock that the attempt marker's foreign key takes from
// its own connection while we hold the row (FOR UPDATE would deadlock us
// against ourselves).
func (v *Vault) lock(ctx context.Context, id string) (*lockedRow, error) {
	if v.db.Dialect != models.Postgres {
		mu := v.stripe(id)
		mu.Lock()
		c, err := v.load(ctx, id)
		if err != nil {
			mu.Unlock()
			return nil, err
		}
		var prior models.RefreshAttempt
		err = v.db.Gorm.WithContext(ctx).Where("connection_id = ?", id).Limit(1).Find(&prior).Error
		if err != nil {
			mu.Unlock()
			return nil, v.dbError(err)
		}
		row := &lockedRow{conn: *c, release: mu.Unlock}
		if prior.ConnectionID != "" {
			row.prior = &marker{RefreshAttempt: prior, live: prior.LeaseUntil.After(time.Now())}
		}
		return row, nil
	}
	tx := v.db.Gorm.WithContext(ctx).Begin()
	if tx.Error != nil {
		return nil, v.dbError(tx.Error)
	}
	fail := func(err error) (*lockedRow, error) {
		tx.Rollback()
		if isLockTimeout(err) {
			return nil, &Error{Code: CodeUpstreamUnavailable, Message: "another worker is still refreshing this connection", RetryAfter: time.Second, cause: err}
		}
		return nil, v.dbError(err)
	}
	// One round trip for the transaction's settings. synchronous_commit is
	// set here, not left to the server's default: this transaction may
	// store a rotated refresh token.
	if err := tx.Exec("SELECT set_config('lock_timeout', ?, true), set_config('idle_in_transaction_session_timeout', ?, true), set_config('synchronous_commit', 'on', true)",
		fmt.Sprint(v.cfg.LockTimeout.Milliseconds()), fmt.Sprint(v.cfg.IdleInTransactionTimeout.Milliseconds())).Error; err != nil {
		return fail(err)
	}
	// The row and its attempt marker in one round trip; only the row is
	// locked. The marker's liveness is judged by the database's clock, the
	// one clock every replica shares.
	var rows []struct {
		models.Connection `gorm:"embedded"`
		AttemptID         *string
		AttemptWorker     *string
		AttemptRotation   *int64
		AttemptStartedAt  *time.Time
		AttemptLeaseUntil *time.Time
		AttemptState      *string
		AttemptAlertedAt  *time.Time
		AttemptLive       *bool
	}
	err := tx.Raw(`SELECT c.*, a.attempt_id AS attempt_id, a.worker AS attempt_worker, a.rotation_count AS attempt_rotation,
			a.started_at AS attempt_started_at, a.lease_until AS attempt_lease_until, a.state AS attempt_state,
			a.alerted_at AS attempt_alerted_at, a.lease_until > clock_timestamp() AS attempt_live
		FROM connections c LEFT JOIN refresh_attempts a ON a.connection_id = c.id
		WHERE c.id = ? FOR NO KEY UPDATE OF c`, id).Scan(&rows).Error
	if err != nil {
		return fail(err)
	}
	if len(rows) == 0 {
		tx.Rollback()
		return nil, newErr(CodeNotFound, "no such connection")
	}
	r := rows[0]
	row := &lockedRow{conn: r.Connection, tx: tx}
	if r.AttemptID != nil {
		row.prior = &marker{RefreshAttempt: models.RefreshAttempt{ConnectionID: id, AttemptID: *r.AttemptID, Worker: *r.AttemptWorker,
			RotationCount: *r.AttemptRotation, StartedAt: *r.AttemptStartedAt, LeaseUntil: *r.AttemptLeaseUntil,
			State: *r.AttemptState, AlertedAt: r.AttemptAlertedAt}, live: *r.AttemptLive}
	}
	done := false
	row.release = func() {
		if !done {
			done = true
			tx.Rollback()
		}
	}
	return row, nil
}

func isLockTimeout(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "55P03"
}

// dbError wraps a database failure: unavailable (retry soon, our fault) or
// internal.
func (v *Vault) dbError(err error) *Error {
	if models.IsUnavailable(err) {
		return &Error{Code: CodeUnavailable, Message: "the database is not answering", RetryAfter: time.Second, cause: err}
	}
	return &Error{Code: CodeInternal, Message: "database error", cause: err}
}

// now returns the database's clock as a value for a statement: Postgres's
// clock_timestamp(), shared by every replica; on embedded SQLite, one
// process's wall clock, which is the only clock there is.
func (v *Vault) now(plus time.Duration) any {
	if v.db.Dialect == models.Postgres {
		return gorm.Expr("clock_timestamp() + make_interval(secs => ?)", plus.Seconds())
	}
	return time.Now().UTC().Add(plus)
}

// refresh is the one refresh path. It runs as the one flight of its
// connection in this process.
func (v *Vault) refresh(ctx context.Context, id string, req Request) (*AccessToken, error) {
	if !v.work.enter() {
		return nil, errShuttingDown()
	}
	defer v.work.leave()
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
		return nil, &Error{Code: CodeUpstreamUnavailable, Message: "gave up waiting for a refresh slot", RetryAfter: time.Second, cause: ctx.Err()}
	}
	// The work budget starts once we may work: time spent queueing must not
	// eat the time needed to store a rotation.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), v.cfg.LockTimeout+2*v.cfg.UpstreamTimeout+v.cfg.CommitRetryBudget+10*time.Second)
	defer cancel()
	row, err := v.lock(ctx, id)
	if err != nil {
		return nil, err
	}
	defer row.release()
	if v.afterLock != nil {
		v.afterLock(id)
	}
	c := &row.conn
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
	settling := row.prior != nil && row.prior.State == models.AttemptUnresolved
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
		return nil, &Error{Code: CodeInternal, Message: "stored refresh token cannot be opened (wrong key ring?)", cause: err}
	}

	// An attempt marker means a worker may have presented this token and
	// never stored the outcome. While its lease runs, its owner may still be
	// storing it. After that, or once the outcome is known to be unknown,
	// the token is never presented blind: introspection tells whether it is
	// still the live one.
	var events []models.Event
	if prior := row.prior; prior != nil {
		if prior.live {
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
	if err := v.claim(ctx, c, row.prior, attemptID); err != nil {
		return nil, err
	}
	claimed := time.Now()

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
		var fenced *fencedError
		if errors.As(err, &fenced) {
			return nil, &Error{Code: CodeUpstreamUnavailable, Message: "the refresh result could not be stored", RetryAfter: time.Second, cause: err}
		}
		return nil, v.dbError(err)
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

// claim commits this attempt's marker, durably and on its own, before the
// token is presented, so that it survives this process dying mid-call. It
// is a compare-and-swap: it replaces exactly the prior marker that was
// read (if any) and only while the row is as it was read, so two workers
// that somehow both passed the lock (two processes on one SQLite file)
// cannot both present.
func (v *Vault) claim(ctx context.Context, c *models.Connection, prior *marker, attemptID string) error {
	err := v.inTx(ctx, func(tx *gorm.DB) error {
		if v.db.Dialect == models.Postgres {
			if err := tx.Exec("SELECT set_config('synchronous_commit', 'on', true)").Error; err != nil {
				return err
			}
		}
		if prior != nil {
			res := tx.Where("connection_id = ? AND attempt_id = ?", c.ID, prior.AttemptID).Delete(&models.RefreshAttempt{})
			if res.Error != nil {
				return res.Error
			}
			if res.RowsAffected != 1 {
				return errLostClaim
			}
		}
		res := tx.Exec(`INSERT INTO refresh_attempts (connection_id, attempt_id, worker, rotation_count, started_at, lease_until, protocol, state)
			SELECT ?, ?, ?, ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM connections WHERE id = ? AND rotation_count = ? AND status = ?)`,
			c.ID, attemptID, v.cfg.Worker, c.RotationCount, v.now(0), v.now(v.cfg.AttemptLease), models.RefreshProtocol, models.AttemptPresenting,
			c.ID, c.RotationCount, models.StatusActive)
		if res.Error != nil {
			if models.IsUniqueViolation(res.Error) {
				return errLostClaim
			}
			return res.Error
		}
		if res.RowsAffected != 1 {
			return errLostClaim
		}
		return tx.Commit().Error
	})
	switch {
	case errors.Is(err, errLostClaim):
		return &Error{Code: CodeUpstreamUnavailable, Message: "another worker is refreshing this connection", RetryAfter: time.Second}
	case err != nil:
		return v.dbError(err)
	}
	return nil
}

var errLostClaim = errors.New("the connection or its attempt marker changed since it was read")

// fencedError: the attempt no longer owns the connection (its lease ran
// out, or the row moved on), so its result must not be written.
type fencedError struct{ what string }

func (e *fencedError) Error() string { return "refresh result fenced off: " + e.what }

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
		res.err = &Error{Code: CodeReauthRequired, Message: "the connection must be re-authorized", Reason: reason, cause: se}
	case salesforce.Config:
		if v.appPause() == nil {
			backoffUntil(max(v.cfg.ConfigErrorBackoff, se.RetryAfter))
		} // else the app-wide pause holds every connection back, and its end frees them all
		res.events = append(res.events, v.event(id, models.EventConfigError, req.Cause, se.HTTPStatus, se.Code, se.Description))
		res.err = &Error{Code: CodeUpstreamConfig, Message: "Salesforce refused tokenwarm's configuration: " + se.Code,
			RetryAfter: v.cfg.ConfigErrorBackoff, AppWide: true, cause: se}
	case salesforce.Restricted:
		// Ambiguous: the egress address (everyone) or this user's login
		// hours (one user). This connection backs off like any other
		// failure, so it alone can never hold the app paused.
		d := max(v.backoff(failures, se.RetryAfter), v.cfg.ConfigErrorBackoff)
		backoffUntil(d)
		res.restricted = true
		res.events = append(res.events, v.event(id, models.EventRestricted, req.Cause, se.HTTPStatus, se.Code, se.Description))
		res.err = &Error{Code: CodeUpstreamConfig, Message: "Salesforce refused the refresh: IP restricted or invalid login hours", RetryAfter: d, cause: se}
	case salesforce.Unknown:
		d := v.backoff(failures, se.RetryAfter)
		backoffUntil(d)
		res.events = append(res.events, v.event(id, models.EventUnknownOutcome, req.Cause, se.HTTPStatus, se.Code, "request sent, no usable answer: "+se.Description))
		res.err = &Error{Code: CodeUpstreamUnavailable, Message: "Salesforce did not answer", RetryAfter: d, cause: se}
	case salesforce.Unrecognized:
		d := v.backoff(failures, se.RetryAfter)
		backoffUntil(d)
		res.events = append(res.events, v.event(id, models.EventUnrecognized, req.Cause, se.HTTPStatus, se.Code, se.Description))
		res.err = &Error{Code: CodeUpstreamUnavailable, Message: "Salesforce gave an answer tokenwarm does not recognise: " + se.Code, RetryAfter: d, cause: se}
	default:
		d := v.backoff(failures, se.RetryAfter)
		backoffUntil(d)
		res.events = append(res.events, v.event(id, models.EventTransientFailure, req.Cause, se.HTTPStatus, se.Code, se.Description))
		res.err = &Error{Code: CodeUpstreamUnavailable, Message: "Salesforce is unavailable", RetryAfter: d, cause: se}
	}
	return res
}

// sealFailure: a rotated token that cannot be sealed cannot be stored. The
// marker stays unresolved, so the next attempt introspects.
func (v *Vault) sealFailure(c *models.Connection, err error) result {
	return result{update: map[string]any{"updated_at": v.clock.Now().UTC()}, unresolved: true,
		err: &Error{Code: CodeInternal, Message: "could not seal the refreshed token", cause: err}}
}

// persist writes an attempt's outcome, its events and the marker's removal
// (or, for an unresolved outcome, the marker's change to unresolved) in one
// transaction, fenced: it succeeds only while this attempt's marker is
// there with its lease running (database clock) and the row is still
// active at the rotation count that was read. The first try commits the
// row-locking transaction; if that fails, the write is retried in new
// transactions until the deadline. Meanwhile the marker keeps everyone
// else from presenting the token.
func (v *Vault) persist(ctx context.Context, row *lockedRow, attemptID string, res result, deadline time.Time) error {
	id, rotation := row.conn.ID, row.conn.RotationCount
	write := func(tx *gorm.DB, attempt int) error {
		mark := tx.Model(&models.RefreshAttempt{}).Where("connection_id = ? AND attempt_id = ? AND lease_until > ?", id, attemptID, v.now(0))
		var m *gorm.DB
		if res.unresolved {
			// Nobody owns it any more; the next worker introspects first.
			m = mark.Updates(map[string]any{"state": models.AttemptUnresolved, "lease_until": v.now(0)})
		} else {
			m = mark.Delete(&models.RefreshAttempt{})
		}
		if m.Error != nil {
			return m.Error
		}
		if m.RowsAffected != 1 {
			return &fencedError{"the attempt's lease ran out or its marker is gone"}
		}
		return v.writeRow(tx, id, rotation, res.update, res.events, attempt)
	}
	return v.store(ctx, row, write, deadline)
}

// writeRow updates the connection row, conditioned on it being active at
// the rotation count that was read, and adds the events (fresh rows on
// every try: a rolled-back insert must not leave its IDs behind).
func (v *Vault) writeRow(tx *gorm.DB, id string, rotation int64, update map[string]any, events []models.Event, attempt int) error {
	u := tx.Model(&models.Connection{}).Where("id = ? AND rotation_count = ? AND status = ?", id, rotation, models.StatusActive).Updates(update)
	if u.Error != nil {
		return u.Error
	}
	if u.RowsAffected != 1 {
		return &fencedError{fmt.Sprintf("connection %s changed while its refresh result was unsaved (rotation %d)", id, rotation)}
	}
	evs := make([]models.Event, 0, len(events)+1)
	for _, ev := range events {
		ev.ID = 0
		evs = append(evs, ev)
	}
	if attempt > 0 {
		evs = append(evs, v.event(id, models.EventCommitRetried, "", 0, "", fmt.Sprintf("result stored on retry %d", attempt)))
	}
	if len(evs) > 0 {
		if err := tx.Create(&evs).Error; err != nil {
			return err
		}
		if v.cfg.OnEvents != nil {
			if err := v.cfg.OnEvents(tx, evs); err != nil {
				return err
			}
		}
	}
	if v.beforeCommit != nil {
		if err := v.beforeCommit(tx, attempt); err != nil {
			return err
		}
	}
	return tx.Commit().Error
}

// store runs write (which commits) on the row-locking transaction, then, if
// that failed for a reason other than the fence, in new transactions until
// deadline.
func (v *Vault) store(ctx context.Context, row *lockedRow, write func(tx *gorm.DB, attempt int) error, deadline time.Time) error {
	var err error
	if row.tx != nil {
		err = write(row.tx, 0)
		row.release()
	} else {
		err = v.inTx(ctx, func(tx *gorm.DB) error { return write(tx, 0) })
	}
	// Retries get their own budget, whatever the first try used up.
	retryCtx, cancel := context.WithDeadline(context.WithoutCancel(ctx), deadline.Add(5*time.Second))
	defer cancel()
	delay := 50 * time.Millisecond
	var fenced *fencedError
	for attempt := 1; err != nil && !errors.As(err, &fenced) && time.Now().Add(delay).Before(deadline); attempt++ {
		v.log.Warn("storing a refresh result failed; retrying", "connection_id", row.conn.ID, "attempt", attempt, "err", err)
		select {
		case <-time.After(delay):
		case <-retryCtx.Done():
			return errors.Join(err, retryCtx.Err())
		}
		delay = min(delay*2, time.Second)
		if v.beforeRetry != nil {
			v.beforeRetry(attempt)
		}
		err = v.inTx(retryCtx, func(tx *gorm.DB) error {
			if v.db.Dialect == models.Postgres {
				if err := tx.Exec("SELECT set_config('synchronous_commit', 'on', true)").Error; err != nil {
					return err
				}
				if err := tx.Exec("SELECT 1 FROM connections WHERE id = ? FOR NO KEY UPDATE", row.conn.ID).Error; err != nil {
					return err
				}
			}
			return write(tx, attempt)
		})
	}
	return err
}

// inTx runs fn in a transaction that fn commits; it is rolled back if fn
// returns an error or does not commit.
func (v *Vault) inTx(ctx context.Context, fn func(tx *gorm.DB) error) error {
	tx := v.db.Gorm.WithContext(ctx).Begin()
	if tx.Error != nil {
		return tx.Error
	}
	defer tx.Rollback()
	return fn(tx)
}

func (v *Vault) event(id, kind, cause string, status int, code, detail string) models.Event {
	cid := id
	return models.Event{ConnectionID: &cid, Kind: kind, Cause: cause, Worker: v.cfg.Worker,
		HTTPStatus: status, ErrorCode: code, Detail: truncate(detail, 300), CreatedAt: v.clock.Now().UTC()}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
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
