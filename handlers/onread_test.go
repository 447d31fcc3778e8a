package handlers_test

import (
	"strings"
	"sync/atomic"
	"testing"

	"gorm.io/gorm"

	"github.com/tokenwarm/tokenwarm/internal/rawdb"
	"github.com/tokenwarm/tokenwarm/internal/testkit"
	"github.com/tokenwarm/tokenwarm/models"
)

// A pull that finds a valid token reads the connection row once: the
// ownership check is part of the vault's read, not a read of its own.
func TestPullOfAValidTokenReadsTheConnectionOnce(t *testing.T) {
	testkit.Dialects(t, func(t *testing.T, dialect models.Dialect) {
		w := newWorld(t, dialect)
		code, verifier := w.connectApp("once@example.com", nil)
		sess := w.session(code, verifier)
		if resp, body := w.pull(sess.ConnectionIDs[0], sess.AccessToken, ""); resp.StatusCode != 200 {
			t.Fatalf("first pull: %d %s", resp.StatusCode, body)
		}
		var reads atomic.Int32
		err := rawdb.Gorm(w.db).Callback().Query().After("gorm:query").Register("count_connection_reads", func(db *gorm.DB) {
			if strings.Contains(db.Statement.SQL.String(), "connections") {
				reads.Add(1)
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		for range 3 {
			if resp, body := w.pull(sess.ConnectionIDs[0], sess.AccessToken, ""); resp.StatusCode != 200 {
				t.Fatalf("pull: %d %s", resp.StatusCode, body)
			}
		}
		if n := reads.Load(); n != 3 {
			t.Fatalf("%d reads of the connections table for 3 pulls, want 3", n)
		}
	})
}
