package adminkeys_test

import (
	"context"
	"github.com/tokenwarm/tokenwarm/internal/rawdb"
	"strings"
	"testing"
	"time"

	"github.com/tokenwarm/tokenwarm/adminkeys"
	"github.com/tokenwarm/tokenwarm/clock"
	"github.com/tokenwarm/tokenwarm/internal/testkit"
	"github.com/tokenwarm/tokenwarm/models"
)

func open(t *testing.T, dialect models.Dialect) *models.DB { return testkit.MigratedDB(t, dialect) }

func TestKeyLifecycle(t *testing.T) {
	for _, dialect := range []models.Dialect{models.SQLite, models.Postgres} {
		t.Run(string(dialect), func(t *testing.T) {
			ctx := context.Background()
			db := open(t, dialect)
			clk := clock.NewFake(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
			s := adminkeys.New(db, clk.Now)

			key, err := s.Create(ctx, "ops-alice")
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(key, "twa_") || len(key) != 4+43 {
				t.Fatalf("key %q", key)
			}
			var stored []map[string]any
			rawdb.Gorm(db).Raw("SELECT key_hash, prefix FROM admin_keys").Scan(&stored)
			for _, row := range stored {
				for _, v := range row {
					if s, _ := v.(string); strings.Contains(s, key[4:]) {
						t.Fatal("the key is stored in the clear")
					}
				}
			}
			if _, err := s.Create(ctx, "ops-alice"); adminkeys.ErrorCode(err) != adminkeys.CodeNameTaken {
				t.Fatalf("duplicate name: %v", err)
			}
			if _, err := s.Create(ctx, "bad name!"); adminkeys.ErrorCode(err) != adminkeys.CodeBadName {
				t.Fatalf("bad name: %v", err)
			}

			k, err := s.Authenticate(ctx, key)
			if err != nil || k.Name != "ops-alice" || k.Prefix != key[:8] {
				t.Fatalf("authenticate: %+v %v", k, err)
			}
			// A different last character (a 32-byte key's last character is
			// one of 16, so a fixed replacement would sometimes be the key).
			last := "A"
			if strings.HasSuffix(key, last) {
				last = "Q"
			}
			for _, wrong := range []string{"", "twa_", key + "x", key[:len(key)-1] + last, strings.TrimPrefix(key, "twa_")} {
				if _, err := s.Authenticate(ctx, wrong); adminkeys.ErrorCode(err) != adminkeys.CodeInvalidKey {
					t.Fatalf("wrong key %q: %v", wrong, err)
				}
			}

			// last_used_at moves at most once a minute.
			lastUsed := func() time.Time {
				keys, err := s.List(ctx)
				if err != nil || len(keys) != 1 || keys[0].LastUsedAt == nil {
					t.Fatalf("list: %+v %v", keys, err)
				}
				return keys[0].LastUsedAt.UTC()
			}
			first := lastUsed()
			clk.Advance(30 * time.Second)
			_, _ = s.Authenticate(ctx, key)
			if !lastUsed().Equal(first) {
				t.Fatal("last_used_at written twice within a minute")
			}
			clk.Advance(31 * time.Second)
			_, _ = s.Authenticate(ctx, key)
			if !lastUsed().After(first) {
				t.Fatal("last_used_at not updated after a minute")
			}

			id := func() string { keys, _ := s.List(ctx); return keys[0].ID }()
			if k, err := s.Live(ctx, id); err != nil || k.Name != "ops-alice" {
				t.Fatalf("live key: %+v %v", k, err)
			}
			if err := s.Revoke(ctx, "ops-alice"); err != nil {
				t.Fatal(err)
			}
			if err := s.Revoke(ctx, "ops-alice"); err != nil {
				t.Fatalf("second revoke: %v", err)
			}
			if _, err := s.Live(ctx, id); adminkeys.ErrorCode(err) != adminkeys.CodeNotFound {
				t.Fatalf("revoked key is live: %v", err)
			}
			if err := s.Revoke(ctx, "nobody"); adminkeys.ErrorCode(err) != adminkeys.CodeNotFound {
				t.Fatalf("revoke unknown: %v", err)
			}
			if _, err := s.Authenticate(ctx, key); adminkeys.ErrorCode(err) != adminkeys.CodeInvalidKey {
				t.Fatalf("revoked key: %v", err)
			}
			if keys, _ := s.List(ctx); len(keys) != 1 || keys[0].RevokedAt == nil {
				t.Fatalf("list after revoke: %+v", keys)
			}
		})
	}
}
