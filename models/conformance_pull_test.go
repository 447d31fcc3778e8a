package models_test

import (
	"context"
	"testing"
	"time"

	"github.com/tokenwarm/tokenwarm/internal/rawdb"
	"github.com/tokenwarm/tokenwarm/models"
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
}
