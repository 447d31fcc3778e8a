package models_test

import (
	"context"
	"reflect"
	"slices"
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
	register(storageCase{"a pull reads its columns, as gorm would, and leaves the others zero", func(t *testing.T, db *models.DB) {
		// On Postgres the pull runs on pgx with a column list of its own:
		// every column it reads must come back as written, so each field
		// gets a distinct value (a swapped column shows), and every other
		// field stays zero (the sealed refresh token above all).
		ctx := context.Background()
		at := distinctTime
		sid, cid := "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaa1", "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbb1"
		if err := db.CreateDeviceSession(ctx, models.DeviceSession{ID: sid, Owner: "00Dx/005x", CreatedAt: at(0), LastUsedAt: at(0), IdleExpiresAt: at(60)}, "hash-2"); err != nil {
			t.Fatal(err)
		}
		c := distinctConnection(cid, "00Dx", "005x")
		if err := rawdb.Gorm(db).Create(&c).Error; err != nil {
			t.Fatal(err)
		}
		slow := db.PullSlowScans()
		_, got, err := db.ConnectionForSession(ctx, sid, cid)
		if err != nil || got == nil {
			t.Fatal(got, err)
		}
		if n := db.PullSlowScans() - slow; db.Dialect == models.Postgres && n != 0 {
			// A direct connection's prepared statement gets text columns
			// in text and the others in binary: all decoded by hand.
			t.Errorf("%d parts of the pull went through pgx's generic scanning, want none", n)
		}
		_, viaGorm, err := db.ConnectionForSessionGorm(ctx, sid, cid)
		if err != nil || viaGorm == nil {
			t.Fatal(viaGorm, err)
		}
		gv, gormV, src := reflect.ValueOf(*got), reflect.ValueOf(*viaGorm), reflect.ValueOf(c)
		for i := range gv.NumField() {
			name := gv.Type().Field(i).Name
			g := gv.Field(i).Interface()
			if !sameValue(g, gormV.Field(i).Interface()) {
				t.Errorf("%s: pull read %v, gorm %v", name, g, gormV.Field(i).Interface())
			}
			want := src.Field(i).Interface()
			if !slices.Contains(models.PullColumns, gormColumn(name)) {
				want = reflect.Zero(gv.Field(i).Type()).Interface()
			}
			if !sameValue(g, want) {
				t.Errorf("%s: pull read %v, want %v", name, g, want)
			}
		}
	}})
}

// distinctTime is a time with microseconds, min minutes on.
func distinctTime(min int) time.Time {
	return time.Date(2026, 3, 4, 5, 6, 7, 123456000, time.UTC).Add(time.Duration(min) * time.Minute)
}

// distinctConnection is an active connection with a distinct value in
// every field (a swapped column shows) and every time set.
func distinctConnection(id, org, user string) models.Connection {
	at := distinctTime
	ptr := func(t time.Time) *time.Time { return &t }
	owner := org + "/" + user
	return models.Connection{ID: id, Owner: owner, OrgID: org, UserID: user, LoginURL: "https://login.example",
		InstanceURL: "https://na1.example", IdentityURL: "https://login.example/id/" + owner, Scopes: "api refresh_token",
		Status: models.StatusActive, RefreshTokenSealed: "v1.k1.refresh", AccessTokenSealed: "v1.k1.access",
		AccessTokenIssuedAt: ptr(at(1)), AccessTokenExpiresAt: ptr(at(2)), LastRefreshedAt: at(3), NextWarmAt: at(4),
		RotationCount: 7, ConsecutiveFailures: 2, NextAttemptAt: ptr(at(5)), LastErrorCode: "server_error", LastErrorAt: ptr(at(6)),
		ReauthReason: "why", UserName: "Ada", UserUsername: "ada@example", UserEmail: "ada@example.com", OrgName: "Acme",
		AuthorizedAt: ptr(at(7)), CreatedAt: at(8), UpdatedAt: at(9)}
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
