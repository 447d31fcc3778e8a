package models

import (
	"context"
	"time"

	"gorm.io/gorm"
)

// Statement is one SQL statement as the driver receives it: placeholders
// $1, $2… on Postgres, and their values.
type Statement struct {
	SQL  string
	Vars []any
}

func (d *DB) dryRun() *gorm.DB { return d.gorm.Session(&gorm.Session{DryRun: true}) }

// PullStatement is the statement ConnectionForSession runs.
func (d *DB) PullStatement(sessionID, connectionID string) Statement {
	if d.Dialect == Postgres {
		return Statement{SQL: connectionForSessionPGSQL, Vars: []any{connectionID, sessionID}}
	}
	st := d.dryRun().Raw(connectionForSessionSQL, connectionID, sessionID).Statement
	return Statement{SQL: st.SQL.String(), Vars: st.Vars}
}

// ClaimStatement is the select ClaimDue runs for a batch of n due
// connections at now.
func (d *DB) ClaimStatement(n int, now time.Time) Statement {
	var rows []Connection
	st := d.claimQuery(d.dryRun(), n, true, now.UTC()).Find(&rows).Statement
	return Statement{SQL: st.SQL.String(), Vars: st.Vars}
}

// ClaimLeaseStatement is the update by which ClaimDue leases the claimed
// connections ids until until.
func (d *DB) ClaimLeaseStatement(until time.Time, ids []string) Statement {
	st := d.dryRun().Exec(claimLeaseSQL, until, ids).Statement
	return Statement{SQL: st.SQL.String(), Vars: st.Vars}
}

// ConnectionForSessionGorm is ConnectionForSession through gorm, on either
// dialect: what the Postgres path must agree with.
func (d *DB) ConnectionForSessionGorm(ctx context.Context, sessionID, connectionID string) (*DeviceSession, *Connection, error) {
	return d.connectionForSessionGorm(ctx, sessionID, connectionID)
}

// PullColumns are the connection columns a pull reads.
var PullColumns = pullColumns

// Setting reads a setting inside the lock's transaction (Postgres).
func (l *RefreshLock) Setting(name string) (string, error) {
	var v string
	err := l.tx.Raw("SELECT current_setting(?)", name).Row().Scan(&v)
	return v, err
}

// PullSlowScans is how many pull rows went through pgx's generic scanning.
func (d *DB) PullSlowScans() int64 { return d.pullSlowScans.Load() }

// ShouldPing is the pool's decision to ping a connection before reuse.
var ShouldPing = shouldPing
