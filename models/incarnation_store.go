package models

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"time"

	"gorm.io/gorm"
)

// The incarnation store: where the database stands in its own history, the
// app-wide hold after a restore from a backup, and the bulk marking of
// every active connection's token as unverified (package restore runs the
// procedure; this file is its SQL, for both dialects).

// Restore states of the incarnation row.
const (
	// RestoreNone: refreshes run.
	RestoreNone = ""
	// RestoreRequired: the database went back in its history (a restore
	// from a backup); refreshes are held until `tokenwarm restore` ran.
	RestoreRequired = "required"
	// RestoreRunning: `tokenwarm restore` is checking every token.
	RestoreRunning = "running"
)

// RestoreWorker is the worker name on the attempt markers that the restore
// procedure puts on every active connection: "this token is unverified".
const RestoreWorker = "restore"

// App-level events of the restore procedure (no connection).
const (
	// EventRestoreDetected: a replica saw the database behind the
	// generation it had seen before; refreshes are held app-wide.
	EventRestoreDetected = "restore_detected"
	// EventRestoreStarted / EventRestoreCompleted: `tokenwarm restore`.
	EventRestoreStarted   = "restore_started"
	EventRestoreCompleted = "restore_completed"
	// EventRestoreVerified (per connection): after a restore, introspection
	// showed the stored refresh token is still the live one.
	EventRestoreVerified = "restore_verified"
)

// Incarnation is the one row of the incarnation table.
type Incarnation struct {
	ID            int
	IncarnationID string
	Epoch         int64
	Generation    int64
	RestoreState  string
	RestoreDetail string
	UpdatedAt     time.Time
}

// TableName pins the table name.
func (Incarnation) TableName() string { return "incarnation" }

// Mark is a point of a database's history: (Epoch, Generation) only grows
// while the database lives, within one incarnation.
type Mark struct {
	Incarnation string `json:"-"`
	Epoch       int64  `json:"epoch"`
	Generation  int64  `json:"generation"`
}

// Mark returns the row's point in its history.
func (i *Incarnation) Mark() Mark {
	return Mark{Incarnation: i.IncarnationID, Epoch: i.Epoch, Generation: i.Generation}
}

// Before reports whether m is earlier than o (same incarnation assumed).
func (m Mark) Before(o Mark) bool {
	return m.Epoch < o.Epoch || (m.Epoch == o.Epoch && m.Generation < o.Generation)
}

// ErrNoIncarnation: the incarnation row is missing (migration 0013 not
// applied, or the row deleted).
var ErrNoIncarnation = errors.New("models: the incarnation row is missing")

// ReadIncarnation reads the incarnation row.
func (d *DB) ReadIncarnation(ctx context.Context) (*Incarnation, error) {
	var rows []Incarnation
	if err := d.gorm.WithContext(ctx).Where("id = 1").Limit(1).Find(&rows).Error; err != nil {
		return nil, err
	}
	if len(rows) == 0 {
		return nil, ErrNoIncarnation
	}
	return &rows[0], nil
}

// nextGeneration is the statement value of the next generation: the
// database's clock in microseconds, or one more than now if that is not
// more (a clock that went back never moves the generation back).
func (d *DB) nextGeneration() any {
	if d.Dialect == Postgres {
		return gorm.Expr("GREATEST(generation + 1, (extract(epoch from clock_timestamp()) * 1000000)::bigint)")
	}
	return gorm.Expr("MAX(generation + 1, ?)", time.Now().UnixMicro())
}

// durably is a transaction whose commit is durable whatever the server's
// default (synchronous_commit = on, as for a stored rotation): a replica
// remembers the generation it wrote once it is acknowledged, so a crash of
// a server with asynchronous commits must not lose it, or the database
// would look restored.
func (d *DB) durably(ctx context.Context, fn func(tx *gorm.DB) error) error {
	return d.gorm.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if d.Dialect == Postgres {
			if err := tx.Exec("SELECT set_config('synchronous_commit', 'on', true)").Error; err != nil {
				return err
			}
		}
		return fn(tx)
	})
}

// notBehind is the condition "the row is at or past seen".
func notBehind(q *gorm.DB, seen Mark) *gorm.DB {
	return q.Where("incarnation_id = ? AND (epoch > ? OR (epoch = ? AND generation >= ?))", seen.Incarnation, seen.Epoch, seen.Epoch, seen.Generation)
}

// AdvanceGeneration moves the generation on, but only while no restore is
// pending and the database is at or past seen (compare-and-advance: a
// replica never advances a database that went back, which would hide the
// restore from every other replica). ok false: nothing moved; read the row
// again. It returns the row as it is now.
func (d *DB) AdvanceGeneration(ctx context.Context, seen Mark) (*Incarnation, bool, error) {
	var out *Incarnation
	ok := false
	err := d.durably(ctx, func(tx *gorm.DB) error {
		u := notBehind(tx.Model(&Incarnation{}).Where("id = 1 AND restore_state = ?", RestoreNone), seen).
			Updates(map[string]any{"generation": d.nextGeneration(), "updated_at": time.Now().UTC()})
		if u.Error != nil {
			return u.Error
		}
		ok = u.RowsAffected == 1
		var rows []Incarnation
		if err := tx.Where("id = 1").Limit(1).Find(&rows).Error; err != nil {
			return err
		}
		if len(rows) == 0 {
			return ErrNoIncarnation
		}
		out = &rows[0]
		return nil
	})
	if err != nil {
		return nil, false, err
	}
	return out, ok, nil
}

// HoldForRestore records that the database is behind seen (a restore from
// a backup): in one transaction, the restore state becomes required (only
// if no restore is pending and the row is still behind seen), every active
// connection's token is marked unverified (MarkUnverified) and ev is
// stored with its webhook deliveries. It reports whether it recorded the
// hold (false: another replica did, or the row moved meanwhile) and how
// many connections it marked.
func (d *DB) HoldForRestore(ctx context.Context, seen Mark, detail string, ev Event) (held bool, marked int64, err error) {
	err = d.durably(ctx, func(tx *gorm.DB) error {
		u := tx.Model(&Incarnation{}).
			Where("id = 1 AND restore_state = ? AND incarnation_id = ? AND (epoch < ? OR (epoch = ? AND generation < ?))",
				RestoreNone, seen.Incarnation, seen.Epoch, seen.Epoch, seen.Generation).
			Updates(map[string]any{"restore_state": RestoreRequired, "restore_detail": detail, "updated_at": time.Now().UTC()})
		if u.Error != nil || u.RowsAffected != 1 {
			return u.Error
		}
		held = true
		n, err := d.markUnverified(tx)
		if err != nil {
			return err
		}
		marked = n
		_, err = d.insertEvents(tx, []Event{ev})
		return err
	})
	if err != nil {
		return false, 0, err
	}
	return held, marked, nil
}

// BeginRestore starts the restore procedure: in one transaction, the
// restore state becomes running (refreshes stay held app-wide), every
// active connection's token is marked unverified, and ev is stored. It
// returns how many connections it marked.
func (d *DB) BeginRestore(ctx context.Context, detail string, ev Event) (int64, error) {
	var marked int64
	err := d.durably(ctx, func(tx *gorm.DB) error {
		u := tx.Model(&Incarnation{}).Where("id = 1").
			Updates(map[string]any{"restore_state": RestoreRunning, "restore_detail": detail, "updated_at": time.Now().UTC()})
		if u.Error != nil {
			return u.Error
		}
		if u.RowsAffected != 1 {
			return ErrNoIncarnation
		}
		n, err := d.markUnverified(tx)
		if err != nil {
			return err
		}
		marked = n
		_, err = d.insertEvents(tx, []Event{ev})
		return err
	})
	return marked, err
}

// FinishRestore ends the procedure: the hold is lifted, the database moves
// to the next epoch (past anything any replica remembers of the history
// before the restore, so none mistakes it for a restore again, and a
// second restore of the same old backup is behind it), and ev is stored.
// It reports false if no restore was running (another run finished it).
func (d *DB) FinishRestore(ctx context.Context, ev Event) (bool, error) {
	done := false
	err := d.durably(ctx, func(tx *gorm.DB) error {
		u := tx.Model(&Incarnation{}).Where("id = 1 AND restore_state = ?", RestoreRunning).
			Updates(map[string]any{"restore_state": RestoreNone, "restore_detail": "", "epoch": gorm.Expr("epoch + 1"),
				"generation": d.nextGeneration(), "updated_at": time.Now().UTC()})
		if u.Error != nil || u.RowsAffected != 1 {
			return u.Error
		}
		done = true
		_, err := d.insertEvents(tx, []Event{ev})
		return err
	})
	return done, err
}

// markUnverified puts an unresolved attempt marker on every active
// connection that has none, in one statement: from then on no worker
// presents its token before introspection shows it is still the live one
// (the refresh protocol's rule for an unknown outcome). A connection that
// already has a marker keeps it: it means the same, or a live attempt is
// storing a token Salesforce just issued.
func (d *DB) markUnverified(tx *gorm.DB) (int64, error) {
	res := tx.Exec(`INSERT INTO refresh_attempts (connection_id, attempt_id, worker, rotation_count, started_at, lease_until, protocol, state)
		SELECT id, ?, ?, rotation_count, ?, ?, ?, ? FROM connections WHERE status = ?
		ON CONFLICT (connection_id) DO NOTHING`,
		"restore-"+newHex(8), RestoreWorker, d.dbNow(0), d.dbNow(0), RefreshProtocol, AttemptUnresolved, StatusActive)
	return res.RowsAffected, res.Error
}

// ActiveConnectionIDsAfter pages through the IDs of active connections in
// ID order.
func (d *DB) ActiveConnectionIDsAfter(ctx context.Context, after string, n int) ([]string, error) {
	var ids []string
	q := d.gorm.WithContext(ctx).Model(&Connection{}).Where("status = ?", StatusActive).Order("id").Limit(n)
	if after != "" {
		q = q.Where("id > ?", after)
	}
	return ids, q.Pluck("id", &ids).Error
}

func newHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
