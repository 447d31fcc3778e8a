package models

import (
	"context"
	"errors"
	"strings"

	"github.com/jackc/pgx/v5/stdlib"
	"gorm.io/gorm"
)

// The pull's one statement on Postgres runs on pgx directly, under gorm and
// database/sql: it is the hot path of every app, and gorm's statement
// building, its reflective row scanning and database/sql's row conversion
// were about half of a pull's CPU in tokenwarm (CPU profile of
// ./scripts/bench -profile). It still borrows a connection of the one pool,
// so the pool's size, the exec mode (prepared statements by default; exec
// or simple protocol behind a pooler, from DATABASE_URL) and the handling
// of broken connections are those of every other statement. SQLite keeps
// the gorm path.

// pullColumns are the connection columns a pull reads, in pullTargets'
// order: what the vault's fast path uses (owner and status, the access
// token and its times, the instance URL, the last refresh for the
// background revalidation), nothing else. Fewer columns are a cheaper
// statement (the other fourteen cost about a sixth of a pull's CPU, in
// tokenwarm and in Postgres alike), and the sealed refresh token never
// travels on a pull. TestPullColumns keeps the list and the targets in
// step.
var pullColumns = []string{
	"id", "owner", "status", "reauth_reason", "instance_url",
	"access_token_sealed", "access_token_issued_at", "access_token_expires_at", "last_refreshed_at",
}

// pullTargets returns pointers to c's fields in pullColumns' order.
func pullTargets(c *Connection) []any {
	return []any{
		&c.ID, &c.Owner, &c.Status, &c.ReauthReason, &c.InstanceURL,
		&c.AccessTokenSealed, &c.AccessTokenIssuedAt, &c.AccessTokenExpiresAt, &c.LastRefreshedAt,
	}
}

// connectionForSessionPGSQL: the session and the connection, each by
// primary key, in one round trip. No row: no such session; a false third
// column: no such connection (its columns are then NULL).
var connectionForSessionPGSQL = func() string {
	cols := make([]string, len(pullColumns))
	for i, c := range pullColumns {
		cols[i] = "c." + c
	}
	return `SELECT s.owner, s.revoked_at, c.id IS NOT NULL, ` + strings.Join(cols, ", ") + `
		FROM device_sessions s LEFT JOIN connections c ON c.id = $1 WHERE s.id = $2`
}()

// connectionForSessionPG is ConnectionForSession on Postgres.
func (d *DB) connectionForSessionPG(ctx context.Context, sessionID, connectionID string) (sess *DeviceSession, conn *Connection, err error) {
	sqlConn, err := d.SQL().Conn(ctx)
	if err != nil {
		return nil, nil, err
	}
	defer sqlConn.Close()
	err = sqlConn.Raw(func(driverConn any) error {
		pc := driverConn.(*stdlib.Conn).Conn()
		d.observed(connectionForSessionPGSQL)
		rows, err := pc.Query(ctx, connectionForSessionPGSQL, connectionID, sessionID)
		if err != nil {
			return err
		}
		defer rows.Close()
		if !rows.Next() {
			return rows.Err() // no such session
		}
		fds, raw := rows.FieldDescriptions(), rows.RawValues()
		s := &DeviceSession{ID: sessionID}
		var known bool
		slow, err := scanPull(pc.TypeMap(), fds[:3], raw[:3], &s.Owner, &s.RevokedAt, &known)
		if slow {
			d.pullSlowScans.Add(1)
		}
		if err != nil {
			return err
		}
		sess = s
		if !known {
			return rows.Err()
		}
		c := &Connection{}
		slow, err = scanPull(pc.TypeMap(), fds[3:], raw[3:], pullTargets(c)...)
		if slow {
			d.pullSlowScans.Add(1)
		}
		if err != nil {
			return err
		}
		conn = c
		rows.Close()
		return rows.Err()
	})
	if err != nil {
		return nil, nil, err
	}
	return sess, conn, nil
}

// ObserveReads calls fn with the SQL of every statement the pool runs from
// now on through gorm's query, raw and row paths (reads, and statements run
// as raw rows such as the refresh's store), and of the pull's direct path:
// for tests that count a request's round trips. One observer at a time;
// nil removes it. Register it before the traffic it observes.
func (d *DB) ObserveReads(fn func(sql string)) error {
	if fn == nil {
		d.observe.Store(nil)
		return nil
	}
	d.observe.Store(&fn)
	var err error
	d.observing.Do(func() {
		call := func(db *gorm.DB) {
			if f := d.observe.Load(); f != nil {
				(*f)(db.Statement.SQL.String())
			}
		}
		g := d.gorm.Callback()
		err = errors.Join(g.Query().After("gorm:query").Register("tokenwarm:observe_query", call),
			g.Raw().After("gorm:raw").Register("tokenwarm:observe_raw", call),
			g.Row().After("gorm:row").Register("tokenwarm:observe_row", call))
	})
	return err
}

// observed reports a query of the direct path to the observer, if any.
func (d *DB) observed(sql string) {
	if f := d.observe.Load(); f != nil {
		(*f)(sql)
	}
}
