package vault

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/tokenwarm/tokenwarm/models"
	"github.com/tokenwarm/tokenwarm/salesforce"
)

// lockedRow is a connection row held against other workers, with the
// attempt marker found for it, if any.
type lockedRow struct {
	conn    models.Connection
	prior   *models.RefreshAttempt
	tx      *gorm.DB // Postgres: the transaction holding the row lock
	release func()
}

// lock takes the connection's row lock on Postgres (callers in other
// processes queue), the in-process stripe on SQLite. The lock is FOR NO KEY
// UPDATE, the strength Postgres itself takes to update non-key columns: it
// excludes every other refresher like FOR UPDATE, but not the KEY SHARE lock
// that the attempt marker's foreign key takes from its own connection while
// we hold the row (FOR UPDATE would deadlock us against ourselves).
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
			return nil, &Error{Code: CodeInternal, Message: "database error", cause: err}
		}
		row := &lockedRow{conn: *c, release: mu.Unlock}
		if prior.ConnectionID != "" {
			row.prior = &prior
		}
		return row, nil
	}
	tx := v.db.Gorm.WithContext(ctx).Begin()
	if tx.Error != nil {
		return nil, &Error{Code: CodeInternal, Message: "database error", cause: tx.Error}
	}
	fail := func(err error) (*lockedRow, error) {
		tx.Rollback()
		if isLockTimeout(err) {
			return nil, &Error{Code: CodeUpstreamUnavailable, Message: "another worker is still refreshing this connection", RetryAfter: time.Second, cause: err}
		}
		return nil, &Error{Code: CodeInternal, Message: "database error", cause: err}
	}
	// One round trip for both transaction-local timeouts.
	if err := tx.Exec("SELECT set_config('lock_timeout', ?, true), set_config('idle_in_transaction_session_timeout', ?, true)",
		fmt.Sprint(v.cfg.LockTimeout.Milliseconds()), fmt.Sprint(v.cfg.IdleInTransactionTimeout.Milliseconds())).Error; err != nil {
		return fail(err)
	}
	// The row and its attempt marker in one round trip; only the row is
	// locked.
	var rows []struct {
		models.Connection `gorm:"embedded"`
		AttemptWorker     *string
		AttemptStartedAt  *time.Time
		AttemptLeaseUntil *time.Time
	}
	err := tx.Raw(`SELECT c.*, a.worker AS attempt_worker, a.started_at AS attempt_started_at, a.lease_until AS attempt_lease_until
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
	if r.AttemptWorker != nil {
		row.prior = &models.RefreshAttempt{ConnectionID: id, Worker: *r.AttemptWorker, StartedAt: *r.AttemptStartedAt, LeaseUntil: *r.AttemptLeaseUntil}
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

// refresh is the one refresh path. It runs inside a singleflight.
func (v *Vault) refresh(ctx context.Context, id string, req Request) (*AccessToken, error) {
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
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), v.cfg.LockTimeout+v.cfg.UpstreamTimeout+v.cfg.CommitRetryBudget+10*time.Second)
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
			return &AccessToken{ConnectionID: c.ID, InstanceURL: c.InstanceURL}, nil
		}
	} else if at, ok := v.usable(c, req); ok {
		return at, nil
	}
	if !req.IgnoreBackoff && c.NextAttemptAt != nil && c.NextAttemptAt.After(now) {
		return nil, &Error{Code: CodeUpstreamUnavailable, Message: "Salesforce failed recently; retrying later", RetryAfter: c.NextAttemptAt.Sub(now)}
	}
	pause := v.appPause()
	if req.Cause == CausePull && pause != nil && pause.Paused() {
		return nil, &Error{Code: CodeUpstreamConfig, Message: "refreshes are paused for the app: Salesforce refused tokenwarm's configuration (IP allowlist or client credentials)",
			RetryAfter: time.Minute}
	}

	// An attempt marker left by someone else means a worker presented this
	// token and never stored the outcome. While its lease runs, that worker
	// may still be retrying its commit; after, the outcome is unknown.
	var events []models.Event
	switch prior := row.prior; {
	case prior != nil && prior.LeaseUntil.After(now):
		return nil, &Error{Code: CodeUpstreamUnavailable, Message: "an earlier refresh of this connection is still settling", RetryAfter: prior.LeaseUntil.Sub(now)}
	case prior != nil:
		v.log.Warn("refresh attempt was interrupted: outcome unknown; presenting the only refresh token we have",
			"connection_id", id, "attempt_worker", prior.Worker, "attempt_started_at", prior.StartedAt)
		events = append(events, v.event(id, models.EventUnknownOutcome, req.Cause, 0, "attempt_interrupted",
			fmt.Sprintf("attempt by %s started %s never stored its outcome", prior.Worker, prior.StartedAt.Format(time.RFC3339))))
	}

	refreshToken, err := v.OpenRefresh(c)
	if err != nil || refreshToken == "" {
		return nil, &Error{Code: CodeInternal, Message: "stored refresh token cannot be opened (wrong key ring?)", cause: err}
	}

	attempt := models.RefreshAttempt{ConnectionID: id, AttemptID: newAttemptID(), Worker: v.cfg.Worker,
		RotationCount: c.RotationCount, StartedAt: now, LeaseUntil: now.Add(v.cfg.AttemptLease)}
	// Committed on its own, outside the row lock's transaction, so that it
	// survives this process dying mid-call.
	if err := v.db.Gorm.WithContext(ctx).Clauses(clause.OnConflict{UpdateAll: true}).Create(&attempt).Error; err != nil {
		return nil, &Error{Code: CodeInternal, Message: "database error", cause: err}
	}

	start := time.Now()
	callCtx, cancelCall := context.WithTimeout(ctx, v.cfg.UpstreamTimeout)
	tok, sfErr := v.sf.Refresh(callCtx, c.LoginURL, refreshToken)
	cancelCall()
	elapsed := time.Since(start)
	if v.cfg.Observe != nil {
		v.cfg.Observe(req.Cause, outcomeClass(sfErr).String(), elapsed)
	}

	update, evs, result, resErr := v.outcome(c, req, tok, sfErr)
	events = append(events, evs...)
	if err := v.persist(ctx, row, c.RotationCount, attempt.AttemptID, update, events); err != nil {
		if tok != nil && tok.Rotated {
			// I2: the new refresh token is not saved, so nothing may use the
			// new access token. The marker stays and flags the loss.
			v.log.Error("refresh rotated the token but the result could not be stored; the connection will likely need re-authorization",
				"connection_id", id, "err", err)
		}
		return nil, &Error{Code: CodeInternal, Message: "could not store the refresh result", cause: err}
	}
	v.log.Info("refresh", "connection_id", id, "cause", req.Cause, "outcome", outcomeClass(sfErr).String(),
		"error_code", errorCode(sfErr), "upstream_ms", elapsed.Milliseconds())
	if pause != nil && req.Cause != CauseWarm && ErrorCode(resErr) == CodeUpstreamConfig {
		// The warmer reports its own; the rest pause the app (one alert).
		pause.ConfigError(ctx, resErr)
	}
	return result, resErr
}

// outcome turns Salesforce's answer into the row update, the events and what
// the caller gets.
func (v *Vault) outcome(c *models.Connection, req Request, tok *salesforce.Token, sfErr error) (map[string]any, []models.Event, *AccessToken, error) {
	now := v.clock.Now().UTC()
	id := c.ID
	if sfErr == nil {
		sealedRefresh, err := v.SealRefresh(id, tok.RefreshToken)
		if err != nil {
			return nil, nil, nil, err
		}
		sealedAccess, err := v.SealAccess(id, tok.AccessToken)
		if err != nil {
			return nil, nil, nil, err
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
		c.AccessTokenIssuedAt, c.AccessTokenExpiresAt = &issued, &expires
		return update, []models.Event{ev}, v.accessToken(c, tok.AccessToken, true), nil
	}

	var se *salesforce.Error
	if !errors.As(sfErr, &se) {
		se = &salesforce.Error{Class: salesforce.Unknown, Op: "refresh", Code: "client_error", Description: "unexpected error"}
	}
	update := map[string]any{"last_error_code": se.Code, "last_error_at": now, "updated_at": now}
	failures := c.ConsecutiveFailures + 1
	backoffUntil := func(d time.Duration) {
		next := now.Add(d)
		update["consecutive_failures"] = failures
		update["next_attempt_at"] = next
		if c.NextWarmAt.Before(next) {
			update["next_warm_at"] = next
		}
	}
	switch se.Class {
	case salesforce.Dead, salesforce.Concurrent:
		reason := se.Code
		if se.Description != "" {
			reason += ": " + se.Description
		}
		evs := []models.Event{}
		if se.Class == salesforce.Concurrent {
			// Our own code never presents a token twice, so someone else
			// holds this refresh token. Nothing newer is in our row (we hold
			// its lock): only a re-authorization recovers.
			reason = "refresh token used elsewhere (" + se.Description + ")"
			evs = append(evs, v.event(id, models.EventConcurrentPresentation, req.Cause, se.HTTPStatus, se.Code, se.Description))
			v.log.Error("ALERT: Salesforce saw this refresh token presented concurrently by someone else", "connection_id", id)
		}
		update["status"] = models.StatusNeedsReauth
		update["reauth_reason"] = reason
		update["access_token_sealed"] = ""
		update["next_attempt_at"] = nil
		evs = append(evs, v.event(id, models.EventNeedsReauth, req.Cause, se.HTTPStatus, se.Code, se.Description))
		return update, evs, nil, &Error{Code: CodeReauthRequired, Message: "the connection must be re-authorized", Reason: reason, cause: se}
	case salesforce.Config:
		if v.appPause() == nil {
			backoffUntil(max(v.cfg.ConfigErrorBackoff, se.RetryAfter))
		} // else the app-wide pause holds every connection back, and its end frees them all
		ev := v.event(id, models.EventConfigError, req.Cause, se.HTTPStatus, se.Code, se.Description)
		return update, []models.Event{ev}, nil, &Error{Code: CodeUpstreamConfig, Message: "Salesforce refused tokenwarm's configuration: " + se.Code,
			RetryAfter: v.cfg.ConfigErrorBackoff, cause: se}
	case salesforce.Unknown:
		d := v.backoff(failures, se.RetryAfter)
		backoffUntil(d)
		ev := v.event(id, models.EventUnknownOutcome, req.Cause, se.HTTPStatus, se.Code, "request sent, no usable answer: "+se.Description)
		return update, []models.Event{ev}, nil, &Error{Code: CodeUpstreamUnavailable, Message: "Salesforce did not answer", RetryAfter: d, cause: se}
	default:
		d := v.backoff(failures, se.RetryAfter)
		backoffUntil(d)
		ev := v.event(id, models.EventTransientFailure, req.Cause, se.HTTPStatus, se.Code, se.Description)
		return update, []models.Event{ev}, nil, &Error{Code: CodeUpstreamUnavailable, Message: "Salesforce is unavailable", RetryAfter: d, cause: se}
	}
}

// persist writes the outcome, its events and the marker's removal in one
// transaction. The first try commits the row-locking transaction; if that
// fails, the write is retried in new transactions, each conditioned on the
// rotation count we read, until CommitRetryBudget runs out. Meanwhile the
// attempt marker keeps other workers from presenting the old token.
func (v *Vault) persist(ctx context.Context, row *lockedRow, rotation int64, attemptID string, update map[string]any, events []models.Event) error {
	id := row.conn.ID
	commit := func(tx *gorm.DB, attempt int, events []models.Event) error {
		res := tx.Model(&models.Connection{}).Where("id = ? AND rotation_count = ?", id, rotation).Updates(update)
		if res.Error != nil {
			return res.Error
		}
		if res.RowsAffected != 1 {
			return fmt.Errorf("connection %s changed while its refresh result was unsaved (rotation %d)", id, rotation)
		}
		if len(events) > 0 {
			if err := tx.Create(&events).Error; err != nil {
				return err
			}
			if v.cfg.OnEvents != nil {
				if err := v.cfg.OnEvents(tx, events); err != nil {
					return err
				}
			}
		}
		if err := tx.Where("connection_id = ? AND attempt_id = ?", id, attemptID).Delete(&models.RefreshAttempt{}).Error; err != nil {
			return err
		}
		if v.beforeCommit != nil {
			if err := v.beforeCommit(tx, attempt); err != nil {
				return err
			}
		}
		return tx.Commit().Error
	}

	var err error
	if row.tx != nil {
		err = commit(row.tx, 0, events)
		row.release()
	} else {
		err = v.inTx(ctx, func(tx *gorm.DB) error { return commit(tx, 0, events) })
	}
	// Retries get their own budget, whatever the first try used up.
	retryCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), v.cfg.CommitRetryBudget+5*time.Second)
	defer cancel()
	ctx = retryCtx
	deadline := time.Now().Add(v.cfg.CommitRetryBudget)
	delay := 50 * time.Millisecond
	for attempt := 1; err != nil && time.Now().Before(deadline); attempt++ {
		v.log.Warn("storing a refresh result failed; retrying", "connection_id", id, "attempt", attempt, "err", err)
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		}
		delay = min(delay*2, 2*time.Second)
		retried := append(append([]models.Event{}, events...),
			v.event(id, models.EventCommitRetried, "", 0, "", fmt.Sprintf("result stored on retry %d", attempt)))
		err = v.inTx(ctx, func(tx *gorm.DB) error {
			if v.db.Dialect == models.Postgres {
				if err := tx.Exec("SELECT 1 FROM connections WHERE id = ? FOR NO KEY UPDATE", id).Error; err != nil {
					return err
				}
			}
			return commit(tx, attempt, retried)
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
