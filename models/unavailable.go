package models

import (
	"context"
	"database/sql/driver"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"
)

// IsUnavailable reports whether err means the database could not be
// reached or dropped the connection (a restart, a failover, a full pool),
// as opposed to refusing the statement. Such a failure is ours, never the
// client's, and a read that met it may be retried on a fresh connection.
func IsUnavailable(err error) bool {
	if err == nil {
		return false
	}
	var pg *pgconn.PgError
	if errors.As(err, &pg) {
		switch {
		case strings.HasPrefix(pg.Code, "08"): // connection exception
			return true
		case pg.Code == "57P01", pg.Code == "57P02", pg.Code == "57P03": // admin/crash shutdown, cannot connect now
			return true
		case pg.Code == "53300": // too many connections
			return true
		}
		return false
	}
	if errors.Is(err, driver.ErrBadConn) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) {
		return true
	}
	if pgconn.SafeToRetry(err) || pgconn.Timeout(err) {
		return true
	}
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	msg := err.Error()
	// pgx reports a connection it already knows is dead in words only.
	return strings.Contains(msg, "conn closed") || strings.Contains(msg, "database is locked") ||
		strings.Contains(msg, "sql: database is closed")
}

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
