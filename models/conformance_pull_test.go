package models_test

import (
	"context"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tokenwarm/tokenwarm/internal/rawdb"
	"github.com/tokenwarm/tokenwarm/models"
	"gorm.io/gorm/schema"
)

func init() {
	register(storageCase{"a pull reads its device session and connection in one statement", func(t *testing.T, db *models.DB) {
		ctx := context.Background()
		now := time.Now().UTC()
		sid, cid := "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa", "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb"
		if err := db.CreateDeviceSession(ctx, models.DeviceSession{ID: sid, Owner: "00D/005", CreatedAt: now, LastUsedAt: now, IdleExpiresAt: now.Add(time.Hour)}, "hash-of-a-refresh-token"); err != nil {
			t.Fatal(err)
		}
		c := models.Connection{ID: cid, Owner: "00D/005", OrgID: "00D", UserID: "005", LoginURL: "https://login.salesforce.com",
			Status: models.StatusActive, LastRefreshedAt: now, NextWarmAt: now, CreatedAt: now, UpdatedAt: now}
		if err := rawdb.Gorm(db).Create(&c).Error; err != nil {
			t.Fatal(err)
		}
		sess, conn, err := db.ConnectionForSession(ctx, sid, cid)
		if err != nil || sess == nil || sess.Owner != "00D/005" || sess.RevokedAt != nil || conn == nil || conn.ID != cid || conn.Owner != "00D/005" {
			t.Fatalf("both: %+v %+v %v", sess, conn, err)
		}
		sess, conn, err = db.ConnectionForSession(ctx, sid, "cccccccc-cccc-4ccc-8ccc-cccccccccccc")
		if err != nil || sess == nil || conn != nil {
			t.Fatalf("unknown connection: %+v %+v %v", sess, conn, err)
		}
		sess, conn, err = db.ConnectionForSession(ctx, "dddddddd-dddd-4ddd-8ddd-dddddddddddd", cid)
		if err != nil || sess != nil || conn != nil {
			t.Fatalf("unknown session: %+v %+v %v", sess, conn, err)
		}
		if err := db.RevokeDeviceSession(ctx, sid, "lost phone", now); err != nil {
			t.Fatal(err)
		}
		if sess, _, err = db.ConnectionForSession(ctx, sid, cid); err != nil || sess == nil || sess.RevokedAt == nil {
			t.Fatalf("revoked session: %+v %v", sess, err)
		}
	}})
	register(storageCase{"a pull reads every column but the person's, as gorm would", func(t *testing.T, db *models.DB) {
		// On Postgres the pull runs on pgx with a column list of its own:
		// every field must come back as gorm reads it, so each gets a
		// distinct value (a swapped or missing column shows).
		ctx := context.Background()
		at := func(min int) time.Time {
			return time.Date(2026, 3, 4, 5, 6, 7, 123456000, time.UTC).Add(time.Duration(min) * time.Minute)
		}
		ptr := func(t time.Time) *time.Time { return &t }
		sid, cid := "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaa1", "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbb1"
		if err := db.CreateDeviceSession(ctx, models.DeviceSession{ID: sid, Owner: "00Dx/005x", CreatedAt: at(0), LastUsedAt: at(0), IdleExpiresAt: at(60)}, "hash-2"); err != nil {
			t.Fatal(err)
		}
		c := models.Connection{ID: cid, Owner: "00Dx/005x", OrgID: "00Dx", UserID: "005x", LoginURL: "https://login.example",
			InstanceURL: "https://na1.example", IdentityURL: "https://login.example/id/00Dx/005x", Scopes: "api refresh_token",
			Status: models.StatusActive, RefreshTokenSealed: "v1.k1.refresh", AccessTokenSealed: "v1.k1.access",
			AccessTokenIssuedAt: ptr(at(1)), AccessTokenExpiresAt: ptr(at(2)), LastRefreshedAt: at(3), NextWarmAt: at(4),
			RotationCount: 7, ConsecutiveFailures: 2, NextAttemptAt: ptr(at(5)), LastErrorCode: "server_error", LastErrorAt: ptr(at(6)),
			ReauthReason: "why", UserName: "Ada", UserUsername: "ada@example", UserEmail: "ada@example.com", OrgName: "Acme",
			AuthorizedAt: ptr(at(7)), CreatedAt: at(8), UpdatedAt: at(9)}
		if err := rawdb.Gorm(db).Create(&c).Error; err != nil {
			t.Fatal(err)
		}
		_, got, err := db.ConnectionForSession(ctx, sid, cid)
		if err != nil || got == nil {
			t.Fatal(got, err)
		}
		_, want, err := db.ConnectionForSessionGorm(ctx, sid, cid)
		if err != nil || want == nil {
			t.Fatal(want, err)
		}
		// What gorm reads is what was written, but for the columns a pull
		// skips.
		if want.UserName != "" || want.AuthorizedAt != nil {
			t.Fatalf("the gorm path reads the person's columns: %+v", want)
		}
		gv, wv := reflect.ValueOf(*got), reflect.ValueOf(*want)
		for i := range gv.NumField() {
			name := gv.Type().Field(i).Name
			g, w := gv.Field(i).Interface(), wv.Field(i).Interface()
			if !sameValue(g, w) {
				t.Errorf("%s: pull read %v, gorm %v", name, g, w)
			}
			if src := reflect.ValueOf(c).Field(i).Interface(); !slices.Contains(models.PullSkips, gormColumn(name)) && !sameValue(g, src) {
				t.Errorf("%s: pull read %v, written %v", name, g, src)
			}
		}
	}})
}

// sameValue compares two field values, times by instant.
func sameValue(a, b any) bool {
	switch x := a.(type) {
	case time.Time:
		return x.Equal(b.(time.Time))
	case *time.Time:
		y := b.(*time.Time)
		return (x == nil) == (y == nil) && (x == nil || x.Equal(*y))
	}
	return reflect.DeepEqual(a, b)
}

// gormColumn is the column name gorm gives a Connection field.
func gormColumn(field string) string {
	return schema.NamingStrategy{}.ColumnName("", field)
}

// The Postgres pull's column list is every column of the model but the
// ones it skips: a new column is read by pulls unless it is listed there.
func TestPullColumns(t *testing.T) {
	sch, err := schema.Parse(&models.Connection{}, &sync.Map{}, schema.NamingStrategy{})
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, f := range sch.Fields {
		if f.DBName != "" && !slices.Contains(models.PullSkips, f.DBName) {
			want = append(want, f.DBName)
		}
	}
	if !slices.Equal(models.PullColumns, want) {
		t.Fatalf("pull columns %v, the model's but the skipped %v", models.PullColumns, want)
	}
}
