package models

import (
	"context"

	"github.com/tokenwarm/tokenwarm/errs"
)

// IsUnavailable reports whether err means the database could not be
// reached or dropped the connection (see errs.IsUnavailable).
func IsUnavailable(err error) bool { return errs.IsUnavailable(err) }

// RetryRead runs read, an idempotent read, and runs it once more when it
// failed because the database was unavailable (IsUnavailable): after a
// restart or failover every pooled connection is dead, and without a retry
// the first request on each of them fails. Before the second try the pool
// is pinged: database/sql discards the dead idle connections the ping meets
// (two at most) and then opens a fresh one, which goes back to the pool
// last and so serves the second try. Returns the error of the last try.
func (d *DB) RetryRead(ctx context.Context, read func() error) error {
	err := read()
	if !IsUnavailable(err) || ctx.Err() != nil {
		return err
	}
	d.DiscardIdle()
	if perr := d.SQL().PingContext(ctx); perr != nil {
		return err // still unreachable: report the read's own failure
	}
	return read()
}

// DiscardIdle closes every idle pooled connection. After the database
// restarted they are all dead, and database/sql would otherwise hand them
// out one by one, each failing its caller; the next callers get fresh ones.
// Connections in use are discarded as they fail.
func (d *DB) DiscardIdle() {
	sqlDB := d.SQL()
	if sqlDB == nil || d.maxIdle <= 0 {
		return
	}
	sqlDB.SetMaxIdleConns(-1)
	sqlDB.SetMaxIdleConns(d.maxIdle)
}
