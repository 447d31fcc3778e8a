package models

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// The connection store: the reads of a pull, and the locks, markers and
// fenced writes of the refresh protocol (package vault runs the protocol;
// this file is its SQL, for both dialects).

// Errors of the connection store.
var (
	// ErrLockTimeout: another worker held the row past the lock timeout.
	ErrLockTimeout = errors.New("models: lock timeout")
	// ErrLostClaim: the row or its attempt marker changed since it was
	// read; another worker got there first.
	ErrLostClaim = errors.New("models: the connection or its attempt marker changed since it was read")
)

// FencedError: a write of a refresh result was refused because its attempt
// no longer owns the connection (its lease ran out, its marker is gone, or
// the row moved on). Retrying it cannot succeed.
type FencedError struct{ What string }

func (e *FencedError) Error() string { return "refresh result fenced off: " + e.What }

// IsFenced reports whether err is a FencedError.
func IsFenced(err error) bool {
	var f *FencedError
	return errors.As(err, &f)
}

// LocksRows reports whether LockForRefresh excludes other processes:
// Postgres row locks do; embedded SQLite is one process per data
// directory, and its callers add an in-process lock.
func (d *DB) LocksRows() bool { return d.Dialect == Postgres }

// Connection returns one connection. A read that meets a dropped database
// connection is repeated once on a fresh one.
func (d *DB) Connection(ctx context.Context, id string) (*Connection, error) {
	var c Connection
	err := d.RetryRead(ctx, func() error {
		c = Connection{}
		return d.gorm.WithContext(ctx).Where("id = ?", id).Take(&c).Error
	})
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	return &c, nil
}

// ConnectionsOf lists the connections of an owner, oldest first.
func (d *DB) ConnectionsOf(ctx context.Context, owner string) ([]Connection, error) {
	var cs []Connection
	err := d.RetryRead(ctx, func() error {
		cs = nil
		return d.gorm.WithContext(ctx).Where("owner = ?", owner).Order("created_at, id").Find(&cs).Error
	})
	return cs, err
}

// Attempt is the attempt marker found on a locked row.
type Attempt struct {
	RefreshAttempt
	// Live: the lease has not run out by the database's clock, so its
	// owner may still be presenting the token or storing the answer.
	Live bool
}

// RefreshLock is a connection row held against other refreshers, with the
// attempt marker found for it. On Postgres it is a transaction holding
// SELECT … FOR NO KEY UPDATE on the row; on embedded SQLite (one process)
// the caller holds its in-process lock and this is a plain read.
type RefreshLock struct {
	d     *DB
	tx    *gorm.DB
	Conn  Connection
	Prior *Attempt
	done  bool
}

// LockForRefresh takes the connection's row lock. The lock is FOR NO KEY
// UPDATE, the strength Postgres itself takes to update non-key columns: it
// excludes every other refresher like FOR UPDATE, but not the KEY SHARE
// lock that the attempt marker's foreign key takes from another connection
// while we hold the row (FOR UPDATE would deadlock us against ourselves).
// The transaction sets lock_timeout, idle_in_transaction_session_timeout
// and synchronous_commit = on itself: it may store a rotated token.
func (d *DB) LockForRefresh(ctx context.Context, id string, lockTimeout, idleTimeout time.Duration) (*RefreshLock, error) {
	if d.Dialect != Postgres {
		c, err := d.Connection(ctx, id)
		if err != nil {
			return nil, err
		}
		var prior RefreshAttempt
		if err := d.gorm.WithContext(ctx).Where("connection_id = ?", id).Limit(1).Find(&prior).Error; err != nil {
			return nil, err
		}
		l := &RefreshLock{d: d, Conn: *c}
		if prior.ConnectionID != "" {
			l.Prior = &Attempt{RefreshAttempt: prior, Live: prior.LeaseUntil.After(time.Now())}
		}
		return l, nil
	}
	return d.lockForRefreshPostgres(ctx, id, lockTimeout, idleTimeout)
}

// Release gives the row up (rolls back what was not committed). Safe to
// call more than once.
func (l *RefreshLock) Release() {
	if !l.done && l.tx != nil {
		l.tx.Rollback()
	}
	l.done = true
}

// dbNow is the database's clock plus d, as a statement value: Postgres's
// clock_timestamp(), shared by every replica; on embedded SQLite, the one
// process's wall clock, which is the only clock there is.
func (d *DB) dbNow(plus time.Duration) any {
	if d.Dialect == Postgres {
		return gorm.Expr("clock_timestamp() + make_interval(secs => ?)", plus.Seconds())
	}
	return time.Now().UTC().Add(plus)
}

// ClaimAttempt commits an attempt marker, durably and on its own, before the
// token is presented, so that it survives the presenter dying mid-call. It
// is a compare-and-swap: it replaces exactly prior (if any) and only while
// the row is active at the rotation count that was read, so two workers
// that both passed the lock (two processes on one SQLite file) cannot both
// present. The lease is set with the database's clock. ErrLostClaim when
// someone else got there first.
func (d *DB) ClaimAttempt(ctx context.Context, c *Connection, prior *Attempt, attemptID, worker string, lease time.Duration) error {
	if d.Dialect == Postgres {
		return d.claimAttemptPostgres(ctx, c, prior, attemptID, worker, lease)
	}
	err := d.inTx(ctx, func(tx *gorm.DB) error {
		if prior != nil {
			res := tx.Where("connection_id = ? AND attempt_id = ?", c.ID, prior.AttemptID).Delete(&RefreshAttempt{})
			if res.Error != nil {
				return res.Error
			}
			if res.RowsAffected != 1 {
				return ErrLostClaim
			}
		}
		res := tx.Exec(`INSERT INTO refresh_attempts (connection_id, attempt_id, worker, rotation_count, started_at, lease_until, protocol, state)
			SELECT ?, ?, ?, ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM connections WHERE id = ? AND rotation_count = ? AND status = ?)`,
			c.ID, attemptID, worker, c.RotationCount, d.dbNow(0), d.dbNow(lease), RefreshProtocol, AttemptPresenting,
			c.ID, c.RotationCount, StatusActive)
		if res.Error != nil {
			if IsUniqueViolation(res.Error) {
				return ErrLostClaim
			}
			return res.Error
		}
		if res.RowsAffected != 1 {
			return ErrLostClaim
		}
		return tx.Commit().Error
	})
	return err
}

// claimAttemptPostgres is the claim in one statement, its own implicit
// transaction: one round trip and one durable commit between the row lock
// and the presentation. The compare-and-swap is the upsert's condition:
// with no prior marker the insert must not meet one (DO NOTHING); with a
// prior marker it replaces exactly that one. The row condition holds it to
// the rotation count that was read, as on SQLite. The settings CTE is
// referenced, so it runs, and synchronous_commit = on is in force when the
// statement commits (also behind a pooler that drops start-up parameters).
func (d *DB) claimAttemptPostgres(ctx context.Context, c *Connection, prior *Attempt, attemptID, worker string, lease time.Duration) error {
	conflict, priorHeld := "DO NOTHING", ""
	args := []any{c.ID, attemptID, worker, c.RotationCount, lease.Seconds(), RefreshProtocol, AttemptPresenting, c.ID, c.RotationCount, StatusActive}
	if prior != nil {
		// The prior marker must still be there (then the insert meets it
		// and replaces it only if it is still that one).
		priorHeld = " AND EXISTS (SELECT 1 FROM refresh_attempts WHERE connection_id = ? AND attempt_id = ?)"
		args = append(args, c.ID, prior.AttemptID)
		conflict = `DO UPDATE SET attempt_id = excluded.attempt_id, worker = excluded.worker, rotation_count = excluded.rotation_count,
				started_at = excluded.started_at, lease_until = excluded.lease_until, protocol = excluded.protocol,
				state = excluded.state, alerted_at = NULL
			WHERE refresh_attempts.attempt_id = ?`
		args = append(args, prior.AttemptID)
	}
	res := d.gorm.WithContext(ctx).Exec(`WITH settings AS (SELECT set_config('synchronous_commit', 'on', true) AS sc)
		INSERT INTO refresh_attempts (connection_id, attempt_id, worker, rotation_count, started_at, lease_until, protocol, state)
		SELECT ?, ?, ?, ?, clock_timestamp(), clock_timestamp() + make_interval(secs => ?), ?, ?
		FROM settings WHERE settings.sc = 'on' AND EXISTS (SELECT 1 FROM connections WHERE id = ? AND rotation_count = ? AND status = ?)`+priorHeld+`
		ON CONFLICT (connection_id) `+conflict, args...)
	if res.Error != nil {
		return res.Error
	}
	if res.RowsAffected != 1 {
		return ErrLostClaim
	}
	return nil
}

// MarkerOp says what storing an outcome does with the attempt marker.
type MarkerOp int

// Marker operations.
const (
	// RemoveOwnMarker: the outcome is settled; the write is fenced by the
	// attempt's own marker and its running lease.
	RemoveOwnMarker MarkerOp = iota
	// UnresolveOwnMarker: the presentation may have rotated the token
	// without us seeing the answer; the marker stays, unowned and
	// unresolved, so the next attempt introspects first. Fenced like
	// RemoveOwnMarker.
	UnresolveOwnMarker
	// RemovePriorMarker: an earlier attempt's unknown outcome is settled
	// (rotation lost); its marker, found under the row lock, goes.
	RemovePriorMarker
	// KeepPriorMarker: nothing is settled; AlertPrior marks it alerted.
	KeepPriorMarker
)

// Tx is a transaction handed to test hooks.
type Tx struct{ g *gorm.DB }

// Exec runs one statement in the transaction.
func (t *Tx) Exec(sql string, args ...any) error { return t.g.Exec(sql, args...).Error }

// RefreshWrite is one stored outcome of a refresh attempt.
type RefreshWrite struct {
	Marker MarkerOp
	// AttemptID is the marker the write concerns (own or prior).
	AttemptID string
	// AlertPrior, with KeepPriorMarker, records that an operator was
	// alerted about the prior marker.
	AlertPrior bool
	// Update is written to the row, only while it is active at the
	// rotation count that was read.
	Update map[string]any
	Events []Event
	// RetryEvent, when set, adds an event to a write that succeeded on
	// retry n.
	RetryEvent func(n int) Event
	// Deadline bounds the retries of a failed commit; none when zero or
	// past.
	Deadline time.Time
	// OnRetry is told of each failed try before the next.
	OnRetry func(n int, err error)
	// Test hooks.
	BeforeCommit func(n int, tx *Tx) error
	BeforeRetry  func(n int)
}

// Store writes an outcome in one transaction: the row, its events (with
// their webhook deliveries) and the marker operation. It is fenced: a
// marker operation on the own marker succeeds only while its lease runs
// (database clock), and the row update only while the row is active at the
// rotation count that was read; otherwise a FencedError, which is never
// retried. The first try commits the row-locking transaction; a failed
// commit is retried in new transactions (each relocking the row) until
// w.Deadline.
func (l *RefreshLock) Store(ctx context.Context, w RefreshWrite) error {
	d, id, rotation := l.d, l.Conn.ID, l.Conn.RotationCount
	write := func(tx *gorm.DB, n int) error {
		evs := w.Events
		if n > 0 && w.RetryEvent != nil {
			evs = append(append([]Event{}, evs...), w.RetryEvent(n))
		}
		if d.Dialect == Postgres {
			// The marker, the row and the events in one statement.
			rows, err := d.fencedUpdatePostgres(tx, id, rotation, w, evs)
			if err != nil {
				return err
			}
			if err := d.announceEvents(tx, rows); err != nil {
				return err
			}
		} else {
			if err := d.fencedUpdate(tx, id, rotation, w); err != nil {
				return err
			}
			if _, err := d.insertEvents(tx, evs); err != nil {
				return err
			}
		}
		if w.BeforeCommit != nil {
			if err := w.BeforeCommit(n, &Tx{tx}); err != nil {
				return err
			}
		}
		return tx.Commit().Error
	}
	var err error
	if l.tx != nil {
		err = write(l.tx, 0)
		l.Release()
	} else {
		err = d.inTx(ctx, func(tx *gorm.DB) error { return write(tx, 0) })
	}
	// Retries get their own context, whatever the first try used up.
	retryCtx, cancel := context.WithDeadline(context.WithoutCancel(ctx), w.Deadline.Add(5*time.Second))
	defer cancel()
	delay := 50 * time.Millisecond
	for n := 1; err != nil && !IsFenced(err) && time.Now().Add(delay).Before(w.Deadline); n++ {
		if w.OnRetry != nil {
			w.OnRetry(n, err)
		}
		if IsUnavailable(err) {
			// The database restarted: let the retry take a fresh
			// connection, not the next dead one.
			d.DiscardIdle()
		}
		select {
		case <-time.After(delay):
		case <-retryCtx.Done():
			return errors.Join(err, retryCtx.Err())
		}
		delay = min(delay*2, time.Second)
		if w.BeforeRetry != nil {
			w.BeforeRetry(n)
		}
		err = d.inTx(retryCtx, func(tx *gorm.DB) error {
			if d.Dialect == Postgres {
				if err := tx.Exec("SELECT set_config('synchronous_commit', 'on', true)").Error; err != nil {
					return err
				}
				if err := tx.Exec("SELECT 1 FROM connections WHERE id = ? FOR NO KEY UPDATE", id).Error; err != nil {
					return err
				}
			}
			return write(tx, n)
		})
	}
	return err
}

// fencedUpdate is the marker operation and the row update of a Store, one
// statement each.
func (d *DB) fencedUpdate(tx *gorm.DB, id string, rotation int64, w RefreshWrite) error {
	mark := tx.Model(&RefreshAttempt{}).Where("connection_id = ? AND attempt_id = ?", id, w.AttemptID)
	var m *gorm.DB
	switch w.Marker {
	case RemoveOwnMarker:
		m = mark.Where("lease_until > ?", d.dbNow(0)).Delete(&RefreshAttempt{})
	case UnresolveOwnMarker:
		m = mark.Where("lease_until > ?", d.dbNow(0)).Updates(map[string]any{"state": AttemptUnresolved, "lease_until": d.dbNow(0)})
	case RemovePriorMarker:
		m = mark.Delete(&RefreshAttempt{})
	case KeepPriorMarker:
		if w.AlertPrior {
			if err := mark.Update("alerted_at", time.Now().UTC()).Error; err != nil {
				return err
			}
		}
	}
	if m != nil {
		if m.Error != nil {
			return m.Error
		}
		if m.RowsAffected != 1 {
			return &FencedError{"the attempt's lease ran out or its marker is gone"}
		}
	}
	u := tx.Model(&Connection{}).Where("id = ? AND rotation_count = ? AND status = ?", id, rotation, StatusActive).Updates(w.Update)
	if u.Error != nil {
		return u.Error
	}
	if u.RowsAffected != 1 {
		return &FencedError{fmt.Sprintf("connection %s changed while its refresh result was unsaved (rotation %d)", id, rotation)}
	}
	return nil
}

// fencedUpdatePostgres is fencedUpdate and the insertion of events in one
// statement: the marker operation is a data-modifying CTE, the row update
// happens only if it touched the marker, and the events are inserted only
// if the row was updated, so a refresh's store is one round trip. The two
// fences are not told apart in the error; either means the attempt no
// longer owns the connection. It returns the events as stored (IDs set),
// for their announcement.
func (d *DB) fencedUpdatePostgres(tx *gorm.DB, id string, rotation int64, w RefreshWrite, events []Event) ([]Event, error) {
	var cte string
	var args []any
	required := true
	switch w.Marker {
	case RemoveOwnMarker:
		cte = "DELETE FROM refresh_attempts WHERE connection_id = ? AND attempt_id = ? AND lease_until > clock_timestamp() RETURNING 1"
	case UnresolveOwnMarker:
		cte = "UPDATE refresh_attempts SET state = ?, lease_until = clock_timestamp() WHERE connection_id = ? AND attempt_id = ? AND lease_until > clock_timestamp() RETURNING 1"
		args = append(args, AttemptUnresolved)
	case RemovePriorMarker:
		cte = "DELETE FROM refresh_attempts WHERE connection_id = ? AND attempt_id = ? RETURNING 1"
	case KeepPriorMarker:
		required = false
		if w.AlertPrior {
			cte = "UPDATE refresh_attempts SET alerted_at = ? WHERE connection_id = ? AND attempt_id = ? RETURNING 1"
			args = append(args, time.Now().UTC())
		}
	}
	set, setArgs, err := setClause(w.Update)
	if err != nil {
		return nil, err
	}
	var sql strings.Builder
	sql.WriteString("WITH ")
	if cte != "" {
		args = append(args, id, w.AttemptID)
		sql.WriteString("marker AS (" + cte + "), ")
	}
	args = append(append(args, setArgs...), id, rotation, StatusActive)
	sql.WriteString("upd AS (UPDATE connections SET " + set + " WHERE id = ? AND rotation_count = ? AND status = ?")
	if required {
		sql.WriteString(" AND EXISTS (SELECT 1 FROM marker)")
	}
	sql.WriteString(" RETURNING 1)")
	rows := make([]Event, len(events))
	if len(events) > 0 {
		// Fresh rows: IDs a rolled-back try filled in are never reused.
		// created_at as gorm would fill it in.
		sql.WriteString(", ev AS (INSERT INTO events (connection_id, kind, cause, worker, http_status, error_code, detail, created_at) SELECT v.* FROM (VALUES ")
		for i, ev := range events {
			ev.ID = 0
			if ev.CreatedAt.IsZero() {
				ev.CreatedAt = time.Now().UTC()
			}
			rows[i] = ev
			if i > 0 {
				sql.WriteString(", ")
			}
			sql.WriteString("(?::uuid, ?::text, ?::text, ?::text, ?::integer, ?::text, ?::text, ?::timestamptz)")
			args = append(args, ev.ConnectionID, ev.Kind, ev.Cause, ev.Worker, ev.HTTPStatus, ev.ErrorCode, ev.Detail, ev.CreatedAt)
		}
		sql.WriteString(") AS v WHERE EXISTS (SELECT 1 FROM upd) RETURNING id)")
		sql.WriteString(" SELECT (SELECT count(*) FROM upd), (SELECT string_agg(id::text, ',' ORDER BY id) FROM ev)")
	} else {
		sql.WriteString(" SELECT (SELECT count(*) FROM upd), NULL::text")
	}
	var updated int64
	var ids *string
	if err := tx.Raw(sql.String(), args...).Row().Scan(&updated, &ids); err != nil {
		return nil, err
	}
	if updated != 1 {
		return nil, &FencedError{fmt.Sprintf("connection %s: the attempt's lease ran out, its marker is gone, or the row changed while the refresh result was unsaved (rotation %d)", id, rotation)}
	}
	if len(events) == 0 {
		return nil, nil
	}
	// Serial IDs are drawn in the order of the VALUES rows.
	got := strings.Split(deref(ids), ",")
	if len(got) != len(rows) {
		return nil, fmt.Errorf("models: stored %d of %d events", len(got), len(rows))
	}
	for i, s := range got {
		if rows[i].ID, err = strconv.ParseInt(s, 10, 64); err != nil {
			return nil, fmt.Errorf("models: event id %q: %w", s, err)
		}
	}
	return rows, nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

var columnName = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)

// setClause renders an update of connections as "col = ?, ..." in a stable
// order, with updated_at added as gorm's Updates would.
func setClause(update map[string]any) (string, []any, error) {
	cols := make([]string, 0, len(update)+1)
	for col := range update {
		if !columnName.MatchString(col) {
			return "", nil, fmt.Errorf("models: not a column name: %q", col)
		}
		cols = append(cols, col)
	}
	if _, ok := update["updated_at"]; !ok {
		cols = append(cols, "updated_at")
	}
	sort.Strings(cols)
	parts := make([]string, len(cols))
	args := make([]any, len(cols))
	for i, col := range cols {
		parts[i] = col + " = ?"
		if v, ok := update[col]; ok {
			args[i] = v
		} else {
			args[i] = time.Now().UTC()
		}
	}
	return strings.Join(parts, ", "), args, nil
}

// StoreRevocation marks the locked connection revoked: tokens cleared, the
// rotation count moved (so no earlier attempt's late write can land), every
// marker removed, the events stored. Refused (FencedError) while a live
// attempt holds the token or if the row changed.
func (l *RefreshLock) StoreRevocation(ctx context.Context, now time.Time, events []Event) error {
	d, c := l.d, l.Conn
	write := func(tx *gorm.DB) error {
		if l.tx == nil { // SQLite: no row lock to have kept a new attempt out
			var live int64
			if err := tx.Model(&RefreshAttempt{}).Where("connection_id = ? AND lease_until > ?", c.ID, d.dbNow(0)).Count(&live).Error; err != nil {
				return err
			}
			if live > 0 {
				return &FencedError{"a refresh attempt started meanwhile"}
			}
		}
		u := tx.Model(&Connection{}).Where("id = ? AND rotation_count = ?", c.ID, c.RotationCount).Updates(map[string]any{
			"status": StatusRevoked, "refresh_token_sealed": "", "access_token_sealed": "",
			"access_token_issued_at": nil, "access_token_expires_at": nil, "next_attempt_at": nil, "updated_at": now.UTC(),
			"rotation_count": c.RotationCount + 1,
		})
		if u.Error != nil {
			return u.Error
		}
		if u.RowsAffected != 1 {
			return &FencedError{"the connection changed while it was being revoked"}
		}
		if err := tx.Where("connection_id = ?", c.ID).Delete(&RefreshAttempt{}).Error; err != nil {
			return err
		}
		if _, err := d.insertEvents(tx, events); err != nil {
			return err
		}
		return tx.Commit().Error
	}
	if l.tx != nil {
		defer l.Release()
		return write(l.tx)
	}
	return d.inTx(ctx, write)
}

// CountConnectionsWithEvent counts the distinct connections that got an
// event of kind since a time.
func (d *DB) CountConnectionsWithEvent(ctx context.Context, kind string, since time.Time) (int64, error) {
	var n int64
	err := d.gorm.WithContext(ctx).Model(&Event{}).Where("kind = ? AND created_at >= ?", kind, since.UTC()).
		Distinct("connection_id").Count(&n).Error
	return n, err
}

// Grant is a completed authorization to store.
type Grant struct {
	OrgID, UserID string
	// Build makes the row to store from the existing connection of the
	// same (org, user), nil for a first connect, and the event to record.
	Build func(existing *Connection) (Connection, Event, error)
}

// UpsertGrant stores a grant by (org, user) in one transaction: a
// re-authorization keeps the connection's ID, moves its rotation count
// (fencing any earlier attempt's late write) and removes its attempt
// marker. It returns the connection it replaced (nil for a first connect).
// Two first connects racing: the loser sees a unique violation (IsUniqueViolation).
func (d *DB) UpsertGrant(ctx context.Context, g Grant) (stored *Connection, replaced *Connection, err error) {
	err = d.gorm.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if d.Dialect == Postgres {
			// It stores a new refresh token: durable whatever the server's
			// default.
			if err := tx.Exec("SELECT set_config('synchronous_commit', 'on', true)").Error; err != nil {
				return err
			}
		}
		var existing Connection
		q := tx.Where("org_id = ? AND user_id = ?", g.OrgID, g.UserID)
		if d.Dialect == Postgres {
			q = q.Clauses(clause.Locking{Strength: "NO KEY UPDATE"})
		}
		err := q.Take(&existing).Error
		found := err == nil
		if err != nil && !errors.Is(err, gorm.ErrRecordNotFound) {
			return err
		}
		var prev *Connection
		if found {
			prev = &existing
		}
		c, ev, err := g.Build(prev)
		if err != nil {
			return err
		}
		if found {
			// Select("*") writes zero values too: failures, errors and the
			// re-auth reason are cleared.
			if err := tx.Model(&Connection{}).Where("id = ?", c.ID).Select("*").Updates(&c).Error; err != nil {
				return err
			}
			if err := tx.Where("connection_id = ?", c.ID).Delete(&RefreshAttempt{}).Error; err != nil {
				return err
			}
		} else if err := tx.Create(&c).Error; err != nil {
			return err
		}
		if _, err := d.insertEvents(tx, []Event{ev}); err != nil {
			return err
		}
		stored, replaced = &c, prev
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return stored, replaced, nil
}

// ConnectionIDsAfter pages through connection IDs in ID order.
func (d *DB) ConnectionIDsAfter(ctx context.Context, after string, n int) ([]string, error) {
	var ids []string
	q := d.gorm.WithContext(ctx).Model(&Connection{}).Order("id").Limit(n)
	if after != "" {
		q = q.Where("id > ?", after)
	}
	return ids, q.Pluck("id", &ids).Error
}

// RewriteSealed rewrites a connection's sealed columns under its row lock:
// update returns the columns to write (none: nothing changes).
func (d *DB) RewriteSealed(ctx context.Context, id string, update func(c *Connection) (map[string]any, error)) (bool, error) {
	changed := false
	err := d.gorm.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		q := tx.Where("id = ?", id)
		if d.Dialect == Postgres {
			q = q.Clauses(clause.Locking{Strength: "NO KEY UPDATE"})
		}
		var c Connection
		if err := q.Take(&c).Error; err != nil {
			return err
		}
		cols, err := update(&c)
		if err != nil || len(cols) == 0 {
			return err
		}
		changed = true
		return tx.Model(&Connection{}).Where("id = ?", id).Updates(cols).Error
	})
	return changed, err
}

// inTx runs fn in a transaction that fn commits; it is rolled back if fn
// returns an error or does not commit.
func (d *DB) inTx(ctx context.Context, fn func(tx *gorm.DB) error) error {
	tx := d.gorm.WithContext(ctx).Begin()
	if tx.Error != nil {
		return tx.Error
	}
	defer tx.Rollback()
	return fn(tx)
}
