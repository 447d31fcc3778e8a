package models

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/glebarez/sqlite"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

// Dialect names the database engine behind a DB.
type Dialect string

// Supported dialects.
const (
	Postgres Dialect = "postgres"
	SQLite   Dialect = "sqlite"
)

// DB is an open database with its dialect.
type DB struct {
	gorm    *gorm.DB
	Dialect Dialect
	// Where tells where the data lives without credentials, for logs.
	Where string

	announce Announcer
	// announcePeople: events of these kinds handed to announce carry their
	// Person.
	announcePeople func(kind string) bool
	maxIdle        int

	// observe is ObserveReads' observer; observing registers its gorm
	// callbacks once.
	observe   atomic.Pointer[func(sql string)]
	observing sync.Once
	// pullSlowScans counts pull rows (or their session part) handed to
	// pgx's generic scanning instead of the hand decoder: none on a
	// direct connection (the storage conformance case "a pull reads its
	// columns…"), every one behind a pooler.
	pullSlowScans atomic.Int64
}

// Options tunes Open.
type Options struct {
	// MaxOpenConns bounds the Postgres pool (default 20). SQLite uses
	// sqliteConns: readers run beside the single writer (WAL), and every
	// transaction starts IMMEDIATE, so writers queue on SQLite's lock
	// (busy_timeout) instead of failing on a read-to-write upgrade.
	MaxOpenConns int
	// Pooler is what stands between tokenwarm and Postgres (default
	// PoolerNone): it decides the start-up parameters and the pgx query
	// exec mode. See docs/POOLERS.md.
	Pooler Pooler
}

const sqliteConns = 4

// Open connects to Postgres when databaseURL is set, else to the embedded
// SQLite file tokenwarm.db under dataDir. It does not migrate.
func Open(databaseURL, dataDir string, opt Options) (*DB, error) {
	cfg := &gorm.Config{
		Logger:                 logger.Discard,
		SkipDefaultTransaction: true,
		NowFunc:                func() time.Time { return time.Now().UTC() },
	}
	if databaseURL != "" {
		dsn, err := postgresDSN(databaseURL, opt.Pooler)
		if err != nil {
			return nil, fmt.Errorf("open postgres at %s: %w", RedactURL(databaseURL), err)
		}
		g, err := gorm.Open(postgres.New(postgres.Config{DSN: dsn, OptionOpenDB: []stdlib.OptionOpenDB{stdlib.OptionShouldPing(shouldPing)}}), cfg)
		if err != nil {
			return nil, fmt.Errorf("open postgres at %s: %w", RedactURL(databaseURL), poolerHint(scrub(scrub(err, dsn), databaseURL)))
		}
		sqlDB, err := g.DB()
		if err != nil {
			return nil, err
		}
		n := opt.MaxOpenConns
		if n <= 0 {
			n = 20
		}
		sqlDB.SetMaxOpenConns(n)
		sqlDB.SetMaxIdleConns(n)
		sqlDB.SetConnMaxIdleTime(5 * time.Minute)
		d := &DB{gorm: g, Dialect: Postgres, Where: RedactURL(databaseURL), maxIdle: n}
		if opt.Pooler == PoolerSession || opt.Pooler == PoolerTransaction {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			err := d.checkCommitDurability(ctx)
			cancel()
			if err != nil {
				sqlDB.Close()
				return nil, fmt.Errorf("open postgres at %s: %w", RedactURL(databaseURL), poolerHint(err))
			}
		}
		return d, nil
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	path := filepath.Join(dataDir, "tokenwarm.db")
	// synchronous=FULL: a commit is on disk when it returns. Each commit
	// may store a rotated refresh token; losing one to a power cut kills the
	// chain at the next refresh.
	dsn := "file:" + path + "?_pragma=busy_timeout(30000)&_pragma=journal_mode(WAL)&_pragma=foreign_keys(1)&_pragma=synchronous(FULL)&_txlock=immediate"
	g, err := gorm.Open(sqlite.Open(dsn), cfg)
	if err != nil {
		return nil, fmt.Errorf("open sqlite at %s: %w", path, err)
	}
	sqlDB, err := g.DB()
	if err != nil {
		return nil, err
	}
	sqlDB.SetMaxOpenConns(sqliteConns)
	sqlDB.SetMaxIdleConns(sqliteConns)
	return &DB{gorm: g, Dialect: SQLite, Where: path, maxIdle: sqliteConns}, nil
}

// withSynchronousCommit asks the server, at connection start-up, to make
// every commit of this pool wait for its WAL flush, whatever the server's
// default: a commit may store a rotated refresh token, a device session or
// a handoff code, and losing one to a crash breaks a promise already made.
// (The transactions that store refresh tokens also set it themselves, for
// poolers that drop start-up parameters; behind a pooler Open sends none
// and checks the server's default instead.) A URL that sets it keeps its
// own.
func withSynchronousCommit(databaseURL string) string {
	if strings.Contains(databaseURL, "synchronous_commit") {
		return databaseURL
	}
	return withParam(databaseURL, "synchronous_commit", "on")
}

// withParam adds key=value to a connection string, URL or key=value form.
func withParam(databaseURL, key, value string) string {
	if strings.HasPrefix(databaseURL, "postgres://") || strings.HasPrefix(databaseURL, "postgresql://") {
		sep := "?"
		if strings.Contains(databaseURL, "?") {
			sep = "&"
		}
		return databaseURL + sep + key + "=" + value
	}
	return databaseURL + " " + key + "=" + value
}

// Close closes the pool.
func (d *DB) Close() error {
	sqlDB, err := d.gorm.DB()
	if err != nil {
		return err
	}
	return sqlDB.Close()
}

// SQL returns the underlying pool.
func (d *DB) SQL() *sql.DB {
	sqlDB, _ := d.gorm.DB()
	return sqlDB
}

// Ping checks that the database answers.
func (d *DB) Ping(ctx context.Context) error {
	return d.SQL().PingContext(ctx)
}

// RedactURL hides the password of a database URL.
func RedactURL(u string) string {
	scheme, rest, ok := strings.Cut(u, "://")
	if !ok {
		return "(database url)"
	}
	at := strings.LastIndex(rest, "@")
	if at < 0 {
		return u
	}
	user, _, _ := strings.Cut(rest[:at], ":")
	return scheme + "://" + user + ":xxxxx@" + rest[at+1:]
}

// scrub keeps a driver error from echoing the connection string.
func scrub(err error, databaseURL string) error {
	msg := err.Error()
	if strings.Contains(msg, databaseURL) {
		return errors.New(strings.ReplaceAll(msg, databaseURL, RedactURL(databaseURL)))
	}
	return err
}

// IsUniqueViolation reports whether err is a unique-constraint violation,
// on either dialect.
func IsUniqueViolation(err error) bool {
	var pg *pgconn.PgError
	if errors.As(err, &pg) {
		return pg.Code == "23505"
	}
	return err != nil && strings.Contains(err.Error(), "UNIQUE constraint failed")
}

// PurgeEvents deletes events older than cutoff, in batches so a large
// backlog does not hold one long transaction, except the kinds in keep
// (state that is read back from the log, such as the app-wide pause).
func PurgeEvents(ctx context.Context, db *DB, cutoff time.Time, keep []string) (int64, error) {
	const batch = 5000
	var total int64
	for {
		old := db.gorm.Model(&Event{}).Select("id").Where("created_at < ?", cutoff.UTC()).Limit(batch)
		if len(keep) > 0 {
			old = old.Where("kind NOT IN ?", keep)
		}
		res := db.gorm.WithContext(ctx).Where("id IN (?)", old).Delete(&Event{})
		total += res.RowsAffected
		if res.Error != nil || res.RowsAffected < batch {
			return total, res.Error
		}
	}
}
