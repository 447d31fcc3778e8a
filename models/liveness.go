package models

import (
	"context"
	"crypto/tls"
	"net"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/stdlib"
)

// pingAfterIdle is how long a pooled Postgres connection may sit idle and
// still be handed out without a round trip to prove it alive.
const pingAfterIdle = time.Minute

// shouldPing decides whether database/sql's session reset pings a pooled
// connection before handing it out. pgx pings every connection idle for
// more than a second; on a quiet replica that is every pull, and the
// pull's one round trip becomes two. Instead a connection is pinged only
// when its socket shows that the server spoke or hung up while it was idle
// (a restart, pg_terminate_backend, an idle timeout: a FATAL message or
// EOF is waiting), which a non-blocking peek at the socket sees without a
// round trip, or when it has been idle for longer than pingAfterIdle (a
// peer that vanished without a word). The ping then fails, and database/sql
// discards the connection and takes another, so no caller sees the
// restart.
func shouldPing(_ context.Context, p stdlib.ShouldPingParams) bool {
	if p.IdleDuration > pingAfterIdle {
		return true
	}
	quiet, known := quietSocket(p.Conn.PgConn().Conn())
	if !known {
		// No socket to peek at (a custom dialer's connection, a
		// platform without the peek): pgx's own rule.
		return p.IdleDuration > time.Second
	}
	return !quiet
}

// quietSocket reports whether nothing is waiting to be read on c and the
// peer has not closed it; known is false when c cannot be peeked at.
func quietSocket(c net.Conn) (quiet, known bool) {
	if !canPeek {
		return false, false
	}
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn() // TLS records (an alert, close_notify) are bytes too
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false, false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false, false
	}
	// Control, not Read: Read would wait for the descriptor's read lock,
	// which a read of pgx's background reader may hold while the
	// connection is idle. The peek itself never blocks.
	err = raw.Control(func(fd uintptr) { quiet = peekQuiet(fd) })
	return quiet, err == nil
}
