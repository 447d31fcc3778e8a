package models_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenwarm/tokenwarm/internal/pgtest"
	"github.com/tokenwarm/tokenwarm/internal/rawdb"
	"github.com/tokenwarm/tokenwarm/models"
)

func TestParsePooler(t *testing.T) {
	for in, want := range map[string]models.Pooler{"": models.PoolerNone, "none": models.PoolerNone,
		"session": models.PoolerSession, " Transaction ": models.PoolerTransaction} {
		if got, err := models.ParsePooler(in); err != nil || got != want {
			t.Errorf("ParsePooler(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := models.ParsePooler("statement"); err == nil || !strings.Contains(err.Error(), "not supported") {
		t.Errorf("statement pooling: %v, want refused as not supported", err)
	}
	if _, err := models.ParsePooler("pgbouncer"); err == nil {
		t.Error("an unknown pooler was accepted")
	}
}

// What docs/POOLERS.md promises about PgBouncer in transaction mode.
func TestOpenBehindPgBouncerInTransactionMode(t *testing.T) {
	ctx := context.Background()

	// Checked before anything else uses the database: PgBouncer keeps its
	// server connections, which keep the default they started with.
	t.Run("a database whose default synchronous_commit is off is refused", func(t *testing.T) {
		pooled, direct := pgtest.NewDatabaseBehind(t, pgtest.EnvPgBouncerURL)
		u, err := url.Parse(direct)
		if err != nil {
			t.Fatal(err)
		}
		name := strings.TrimPrefix(u.Path, "/")
		d, err := models.Open(direct, "", models.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		// The test server runs with synchronous_commit = off.
		if _, err := d.SQL().ExecContext(ctx, `ALTER DATABASE "`+name+`" RESET synchronous_commit`); err != nil {
			t.Fatal(err)
		}
		_, err = models.Open(pooled, "", models.Options{Pooler: models.PoolerTransaction})
		var ae *models.AsyncCommitError
		if !errors.As(err, &ae) || !strings.Contains(err.Error(), "ALTER DATABASE") {
			t.Fatalf("open with synchronous_commit off by default: %v, want an AsyncCommitError naming the fix", err)
		}
	})

	pooled, _ := pgtest.NewDatabaseBehind(t, pgtest.EnvPgBouncerURL)
	t.Run("without the setting the start-up parameter is refused, with a hint", func(t *testing.T) {
		_, err := models.Open(pooled, "", models.Options{})
		if err == nil || !strings.Contains(err.Error(), "unsupported startup parameter") || !strings.Contains(err.Error(), "TOKENWARM_DB_POOLER") {
			t.Fatalf("open without TOKENWARM_DB_POOLER: %v, want PgBouncer's refusal and the hint", err)
		}
	})
	t.Run("session mode on a transaction pooler is explained", func(t *testing.T) {
		// Two clients' statement caches prepare the start-up check on one
		// server connection (PgBouncer reuses the last one used): the
		// second meets the first one's statement.
		var err error
		for range 5 {
			var d *models.DB
			if d, err = models.Open(pooled, "", models.Options{Pooler: models.PoolerSession}); err != nil {
				break
			}
			defer d.Close()
		}
		if err == nil || !strings.Contains(err.Error(), "TOKENWARM_DB_POOLER=transaction") {
			t.Fatalf("two session-mode pools on a transaction pooler: %v, want the statement cache's failure and the hint", err)
		}
	})
	t.Run("exec modes that need a server connection of their own are refused", func(t *testing.T) {
		for _, mode := range []string{"cache_statement", "cache_describe", "describe_exec"} {
			_, err := models.Open(pooled+"&default_query_exec_mode="+mode, "", models.Options{Pooler: models.PoolerTransaction})
			var me *models.ExecModeError
			if !errors.As(err, &me) {
				t.Errorf("%s: %v, want an ExecModeError", mode, err)
			}
		}
	})
	t.Run("concurrent queries of two pools work in exec and simple_protocol modes", func(t *testing.T) {
		for _, suffix := range []string{"", "&default_query_exec_mode=simple_protocol"} {
			var pools []*models.DB
			for range 2 {
				d, err := models.Open(pooled+suffix, "", models.Options{MaxOpenConns: 8, Pooler: models.PoolerTransaction})
				if err != nil {
					t.Fatalf("open %q: %v", suffix, err)
				}
				defer d.Close()
				pools = append(pools, d)
			}
			if _, err := pools[0].Migrate(ctx); err != nil {
				t.Fatalf("migrate through PgBouncer: %v", err)
			}
			var wg sync.WaitGroup
			errs := make(chan error, 32)
			for i := range 32 {
				wg.Go(func() {
					for range 20 {
						// Parameters, so that the statement cache would
						// be used if it were on.
						if _, err := pools[i%2].Connection(ctx, "00000000-0000-0000-0000-00000000000"+strconv.Itoa(i%10)); !errors.Is(err, models.ErrNotFound) {
							errs <- err
							return
						}
						// The pull's statement, which runs on pgx itself.
						id := "00000000-0000-0000-0000-00000000000" + strconv.Itoa(i%10)
						if s, c, err := pools[i%2].ConnectionForSession(ctx, id, id); s != nil || c != nil || err != nil {
							errs <- fmt.Errorf("pull of an unknown session: %v %v %v", s, c, err)
							return
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatalf("query through PgBouncer (%q): %v", suffix, err)
			}

			// A pull that finds its row: results come in text here, not
			// in the binary of prepared statements, and read the same
			// (the pull's columns only: the rotation count is not one).
			now := time.Now()
			sid, cid := uuidN(suffix, 1), uuidN(suffix, 2)
			if err := pools[0].CreateDeviceSession(ctx, models.DeviceSession{ID: sid, Owner: "o/u", CreatedAt: now, LastUsedAt: now, IdleExpiresAt: now.Add(time.Hour)}, "h"+suffix); err != nil {
				t.Fatal(err)
			}
			issued := now.Add(-time.Minute)
			conn := models.Connection{ID: cid, Owner: "o/u", OrgID: "o" + suffix, UserID: "u", LoginURL: "https://login.example", Status: models.StatusActive,
				AccessTokenIssuedAt: &issued, RotationCount: 3, ConsecutiveFailures: 1, LastRefreshedAt: now, NextWarmAt: now, CreatedAt: now, UpdatedAt: now}
			if err := rawdb.Gorm(pools[0]).Create(&conn).Error; err != nil {
				t.Fatal(err)
			}
			slow := pools[1].PullSlowScans()
			s, c, err := pools[1].ConnectionForSession(ctx, sid, cid)
			if n := pools[1].PullSlowScans() - slow; n != 2 {
				// Text results of times, booleans and UUIDs are pgx's.
				t.Errorf("pull through PgBouncer (%q): %d of its two parts went through pgx's scanning, want both", suffix, n)
			}
			_, want, werr := pools[1].ConnectionForSessionGorm(ctx, sid, cid)
			if err != nil || werr != nil || s == nil || s.Owner != "o/u" || c == nil || want == nil {
				t.Fatalf("pull through PgBouncer (%q): %+v %+v %v / %v", suffix, s, c, err, werr)
			}
			if c.ID != cid || c.Status != models.StatusActive || c.RotationCount != 0 || c.AccessTokenIssuedAt == nil ||
				!c.AccessTokenIssuedAt.Equal(*want.AccessTokenIssuedAt) || !c.LastRefreshedAt.Equal(want.LastRefreshedAt) || c.AccessTokenExpiresAt != nil {
				t.Fatalf("pull through PgBouncer (%q) read %+v, gorm %+v", suffix, c, want)
			}
		}
	})
}

// uuidN is a UUID made of a label's length and n, distinct per call site.
func uuidN(label string, n int) string {
	return fmt.Sprintf("%08d-0000-4000-8000-%012d", len(label), n)
}
