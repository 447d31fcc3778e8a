package models

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
	"gorm.io/gorm"
	"gorm.io/gorm/schema"
)

// The row lock of a refresh on Postgres runs its transaction by hand on one
// pooled connection: BEGIN and the locking read go to the server in one
// round trip (a pgx batch), which database/sql's transactions cannot do,
// and the read decodes its row by hand, as the pull does. The rest of the
// transaction (the store, its events, COMMIT or ROLLBACK) runs through gorm
// on that connection (connTx). A refresh is still six statements; it is one
// round trip (once the connection has prepared both statements) and the cost
// of gorm's reflective scan of every column cheaper.

// lockColumns are connections' columns in gorm's order, each with the index
// of the Connection field it is scanned into, and the locking read of them.
var lockColumns = sync.OnceValues(func() (lockRead, error) {
	sch, err := schema.Parse(&Connection{}, &sync.Map{}, schema.NamingStrategy{})
	if err != nil {
		return lockRead{}, err
	}
	var r lockRead
	for _, f := range sch.Fields {
		if f.DBName != "" {
			r.cols = append(r.cols, lockColumn{name: f.DBName, index: f.StructField.Index})
		}
	}
	r.sql = lockForRefreshSQL(r.cols)
	return r, nil
})

type lockRead struct {
	cols []lockColumn
	sql  string
}

type lockColumn struct {
	name  string
	index []int
}

// lockForRefreshSQL: the row, locked, and its attempt marker (not locked),
// in one statement. The marker's columns are never NULL (hasAttempt says
// whether there is one), so they decode by hand. The transaction's settings
// come in the same statement: a filter without columns that calls a
// volatile function is evaluated above the join, on the row the scan found
// and before LockRows asks for its lock, so the lock wait already runs
// under lock_timeout (TestLockForRefreshSettings).
func lockForRefreshSQL(cols []lockColumn) string {
	names := make([]string, len(cols))
	for i, c := range cols {
		names[i] = "c." + c.name
	}
	return `SELECT ` + strings.Join(names, ", ") + `,
		a.connection_id IS NOT NULL, coalesce(a.attempt_id, ''), coalesce(a.worker, ''), coalesce(a.rotation_count, 0),
		coalesce(a.started_at, 'epoch'), coalesce(a.lease_until, 'epoch'), coalesce(a.state, ''), a.alerted_at,
		coalesce(a.lease_until > clock_timestamp(), false)
	FROM connections c LEFT JOIN refresh_attempts a ON a.connection_id = c.id
	WHERE c.id = $1
	  AND concat(set_config('lock_timeout', $2, true), set_config('idle_in_transaction_session_timeout', $3, true),
	             set_config('synchronous_commit', 'on', true)) IS NOT NULL
	FOR NO KEY UPDATE OF c`
}

// lockForRefreshPostgres is LockForRefresh on Postgres.
func (d *DB) lockForRefreshPostgres(ctx context.Context, id string, lockTimeout, idleTimeout time.Duration) (*RefreshLock, error) {
	read, err := lockColumns()
	if err != nil {
		return nil, err
	}
	conn, err := d.SQL().Conn(ctx)
	if err != nil {
		return nil, err
	}
	ct := &connTx{conn: conn, ctx: ctx}
	var (
		c     Connection
		prior *Attempt
		found bool
	)
	err = conn.Raw(func(driverConn any) error {
		pc := driverConn.(*stdlib.Conn).Conn()
		cols, q := read.cols, read.sql
		d.observed("BEGIN")
		d.observed(q)
		b := &pgx.Batch{}
		b.Queue("BEGIN")
		b.Queue(q, id, fmt.Sprint(lockTimeout.Milliseconds()), fmt.Sprint(idleTimeout.Milliseconds()))
		br := pc.SendBatch(ctx, b)
		err := func() error {
			if _, err := br.Exec(); err != nil {
				return err
			}
			rows, err := br.Query()
			if err != nil {
				return err
			}
			defer rows.Close()
			if !rows.Next() {
				rows.Close()
				return rows.Err()
			}
			found = true
			cv := reflect.ValueOf(&c).Elem()
			dests := make([]any, 0, len(cols)+9)
			for _, col := range cols {
				dests = append(dests, cv.FieldByIndex(col.index).Addr().Interface())
			}
			var (
				has  bool
				a    RefreshAttempt
				live bool
			)
			dests = append(dests, &has, &a.AttemptID, &a.Worker, &a.RotationCount, &a.StartedAt, &a.LeaseUntil, &a.State, &a.AlertedAt, &live)
			if _, err := scanPull(pc.TypeMap(), rows.FieldDescriptions(), rows.RawValues(), dests...); err != nil {
				return err
			}
			if has {
				a.ConnectionID = id
				prior = &Attempt{RefreshAttempt: a, Live: live}
			}
			rows.Close()
			return rows.Err()
		}()
		// Closing the batch reads the end of the round trip: a failure
		// there (the connection lost) means the lock may not be held.
		if cerr := br.Close(); err == nil {
			err = cerr
		}
		return err
	})
	if err != nil {
		_ = ct.Rollback()
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "55P03" {
			return nil, fmt.Errorf("%w: %w", ErrLockTimeout, err)
		}
		return nil, err
	}
	if !found {
		_ = ct.Rollback()
		return nil, ErrNotFound
	}
	tx := d.gorm.Session(&gorm.Session{Context: ctx, NewDB: true})
	tx.Statement.ConnPool = ct
	return &RefreshLock{d: d, tx: tx, Conn: c, Prior: prior}, nil
}

// connTx is a transaction begun by hand on one pooled connection, as gorm
// sees a transaction (a ConnPool that commits and rolls back). Commit and
// Rollback end it and give the connection back to the pool; statements
// after that fail with sql.ErrConnDone. When COMMIT or ROLLBACK fails and
// the transaction may still be open, the connection is closed instead, so
// the server rolls back and no row lock outlives the RefreshLock.
type connTx struct {
	conn *sql.Conn
	ctx  context.Context
	done bool
}

func (t *connTx) PrepareContext(ctx context.Context, query string) (*sql.Stmt, error) {
	return t.conn.PrepareContext(ctx, query)
}

func (t *connTx) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return t.conn.ExecContext(ctx, query, args...)
}

func (t *connTx) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return t.conn.QueryContext(ctx, query, args...)
}

func (t *connTx) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	return t.conn.QueryRowContext(ctx, query, args...)
}

// Commit commits. A COMMIT that the server turned into a rollback (the
// transaction had failed) is an error, as pgx's own transactions make it.
func (t *connTx) Commit() error { return t.end(t.ctx, "COMMIT") }

// Rollback rolls back, even when the transaction's context is done.
func (t *connTx) Rollback() error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(t.ctx), 5*time.Second)
	defer cancel()
	return t.end(ctx, "ROLLBACK")
}

func (t *connTx) end(ctx context.Context, stmt string) error {
	if t.done {
		return sql.ErrTxDone
	}
	t.done = true
	defer t.conn.Close()
	return t.conn.Raw(func(driverConn any) error {
		pc := driverConn.(*stdlib.Conn).Conn()
		tag, err := pc.Exec(ctx, stmt)
		if err == nil && stmt == "COMMIT" && tag.String() == "ROLLBACK" {
			err = pgx.ErrTxCommitRollback
		}
		if err != nil && pc.PgConn().TxStatus() != 'I' {
			// The transaction may still be open (the statement was never
			// sent: a done context, a busy connection), and with it the
			// row lock: the connection is closed now, not given back to
			// the pool, and the server rolls back.
			return errors.Join(err, driver.ErrBadConn)
		}
		return err
	})
}
