package models

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"
	"time"

	"gorm.io/gorm"
)

//go:embed migrations
var migrationFS embed.FS

// Migration is one versioned SQL file.
type Migration struct {
	Version int
	Name    string
	SQL     string
}

// Migrations lists the dialect's migrations in order.
func Migrations(d Dialect) ([]Migration, error) {
	dir := "migrations/" + string(d)
	entries, err := fs.ReadDir(migrationFS, dir)
	if err != nil {
		return nil, err
	}
	var out []Migration
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, ".sql") {
			continue
		}
		num, _, ok := strings.Cut(name, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil {
			return nil, fmt.Errorf("migration %s: name must start with a version number", name)
		}
		b, err := fs.ReadFile(migrationFS, dir+"/"+name)
		if err != nil {
			return nil, err
		}
		out = append(out, Migration{Version: v, Name: name, SQL: string(b)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	for i := range out {
		if out[i].Version != i+1 {
			return nil, fmt.Errorf("migrations of %s: version %d is missing", d, i+1)
		}
	}
	return out, nil
}

// migrationLockKey serialises migrations of replicas starting together.
const migrationLockKey = 7216000001

// Migrate applies every migration not yet applied and returns the versions
// it applied. It runs in one transaction (DDL is transactional on both
// engines), so a failed migration leaves nothing half done; on Postgres an
// advisory lock makes replicas starting together migrate once.
func (d *DB) Migrate(ctx context.Context) ([]int, error) {
	all, err := Migrations(d.Dialect)
	if err != nil {
		return nil, err
	}
	var applied []int
	err = d.gorm.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if d.Dialect == Postgres {
			if err := tx.Exec(`SELECT pg_advisory_xact_lock(?)`, migrationLockKey).Error; err != nil {
				return err
			}
		}
		if err := tx.Exec(`CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at ` + d.timeType() + ` NOT NULL)`).Error; err != nil {
			return fmt.Errorf("create schema_migrations: %w", err)
		}
		var done []int
		if err := tx.Raw(`SELECT version FROM schema_migrations`).Scan(&done).Error; err != nil {
			return err
		}
		have := map[int]bool{}
		for _, v := range done {
			have[v] = true
		}
		for _, m := range all {
			if have[m.Version] {
				continue
			}
			if err := tx.Exec(m.SQL).Error; err != nil {
				return fmt.Errorf("migration %s: %w", m.Name, err)
			}
			if err := tx.Exec(`INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`, m.Version, m.Name, time.Now().UTC()).Error; err != nil {
				return err
			}
			applied = append(applied, m.Version)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return applied, nil
}

// Pending reports how many migrations are not applied yet; readiness needs 0.
func (d *DB) Pending(ctx context.Context) (int, error) {
	all, err := Migrations(d.Dialect)
	if err != nil {
		return 0, err
	}
	var n int64
	if err := d.gorm.WithContext(ctx).Raw(`SELECT count(*) FROM schema_migrations`).Scan(&n).Error; err != nil {
		return len(all), err
	}
	return len(all) - int(n), nil
}

func (d *DB) timeType() string {
	if d.Dialect == Postgres {
		return "timestamptz"
	}
	return "datetime"
}
