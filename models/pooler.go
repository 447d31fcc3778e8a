package models

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Pooler says what stands between tokenwarm and Postgres (docs/POOLERS.md).
type Pooler string

// Supported poolers. Statement pooling is not supported: a refresh holds a
// multi-statement transaction (the row lock) while it calls Salesforce.
const (
	// PoolerNone: tokenwarm talks to Postgres itself (or through a pooler
	// that keeps a server connection per client connection and forwards
	// start-up parameters). Every connection asks for synchronous_commit=on
	// at start-up and caches prepared statements.
	PoolerNone Pooler = "none"
	// PoolerSession: PgBouncer (or alike) in session mode. No start-up
	// parameter is sent (PgBouncer refuses unknown ones); the statement
	// cache stays, since a client connection keeps its server connection.
	PoolerSession Pooler = "session"
	// PoolerTransaction: PgBouncer (or alike) in transaction mode. No
	// start-up parameter, and no named prepared statements: queries use
	// pgx's exec mode (one round trip, unnamed statement) unless the URL
	// asks for simple_protocol.
	PoolerTransaction Pooler = "transaction"
)

// ParsePooler reads a pooler name; "" is PoolerNone.
func ParsePooler(s string) (Pooler, error) {
	switch p := Pooler(strings.ToLower(strings.TrimSpace(s))); p {
	case "", PoolerNone:
		return PoolerNone, nil
	case PoolerSession, PoolerTransaction:
		return p, nil
	case "statement":
		return "", errors.New("statement pooling is not supported: a refresh holds a multi-statement transaction; use transaction or session pooling")
	default:
		return "", fmt.Errorf("unknown pooler %q: want none, session or transaction", s)
	}
}

// ExecModeError: a DATABASE_URL asks for a pgx query exec mode that needs
// named prepared statements or two round trips on one server connection,
// which a transaction pooler does not give.
type ExecModeError struct{ Mode string }

func (e *ExecModeError) Error() string {
	return "default_query_exec_mode " + e.Mode + " does not work behind a transaction pooler: use exec or simple_protocol (or leave it out: tokenwarm then uses exec)"
}

// AsyncCommitError: behind a pooler tokenwarm cannot ask each connection for
// synchronous_commit=on, and the database's own default is off, so a
// commit could return before it is on disk.
type AsyncCommitError struct{ Setting string }

func (e *AsyncCommitError) Error() string {
	return "the database's default synchronous_commit is " + e.Setting + ", and behind a pooler tokenwarm cannot set it per connection: " +
		"run ALTER DATABASE <name> SET synchronous_commit = on (or ALTER ROLE, or set it in postgresql.conf), see docs/POOLERS.md"
}

// postgresDSN is the connection string Open uses for databaseURL behind
// pooler.
func postgresDSN(databaseURL string, pooler Pooler) (string, error) {
	switch pooler {
	case PoolerSession:
		return databaseURL, nil
	case PoolerTransaction:
		cfg, err := pgx.ParseConfig(databaseURL)
		if err != nil {
			return "", scrub(err, databaseURL)
		}
		switch cfg.DefaultQueryExecMode {
		case pgx.QueryExecModeExec, pgx.QueryExecModeSimpleProtocol:
			return databaseURL, nil
		}
		if strings.Contains(databaseURL, "default_query_exec_mode") {
			return "", &ExecModeError{Mode: cfg.DefaultQueryExecMode.String()}
		}
		return withParam(databaseURL, "default_query_exec_mode", "exec"), nil
	default:
		return withSynchronousCommit(databaseURL), nil
	}
}

// checkCommitDurability refuses a pool behind a pooler whose server default
// of synchronous_commit is off (the start-up parameter that would override
// it cannot pass a pooler).
func (d *DB) checkCommitDurability(ctx context.Context) error {
	var setting string
	if err := d.gorm.WithContext(ctx).Raw("SELECT current_setting('synchronous_commit')").Scan(&setting).Error; err != nil {
		return err
	}
	if setting == "off" {
		return &AsyncCommitError{Setting: setting}
	}
	return nil
}

// poolerHint explains an error of a pooler that refuses tokenwarm's start-up
// parameter (PgBouncer: "unsupported startup parameter").
// It also explains the statement cache meeting a transaction pooler (a
// prepared statement another client left on the server connection, or
// one missing from it).
func poolerHint(err error) error {
	switch {
	case err == nil:
		return nil
	case strings.Contains(err.Error(), "unsupported startup parameter"):
		return fmt.Errorf("%w (a pooler such as PgBouncer refuses start-up parameters: set TOKENWARM_DB_POOLER to session or transaction, see docs/POOLERS.md)", err)
	case strings.Contains(err.Error(), `prepared statement "stmtcache_`):
		return fmt.Errorf("%w (the statement cache meets a transaction pooler: set TOKENWARM_DB_POOLER=transaction, see docs/POOLERS.md)", err)
	}
	return err
}
