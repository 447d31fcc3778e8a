package handlers_test

import (
	"strings"
	"sync/atomic"
	"testing"

	"github.com/tokenwarm/tokenwarm/handlers"
	"github.com/tokenwarm/tokenwarm/internal/testkit"
	"github.com/tokenwarm/tokenwarm/models"
)

// A pull that finds a valid token is one SQL statement: the device session
// and the connection row (with its owner) are read together, in the read
// the vault's herd shares.
func TestPullOfAValidTokenIsOneStatement(t *testing.T) {
	testkit.Dialects(t, func(t *testing.T, dialect models.Dialect) {
		w := newWorld(t, dialect)
		code, verifier := w.connectApp("once@example.com", nil)
		sess := w.session(code, verifier)
		if resp, body := w.pull(sess.ConnectionIDs[0], sess.AccessToken, ""); resp.StatusCode != 200 {
			t.Fatalf("first pull: %d %s", resp.StatusCode, body)
		}
		var reads, joined atomic.Int32
		err := w.db.ObserveReads(func(sql string) {
			reads.Add(1)
			if strings.Contains(sql, "connections") && strings.Contains(sql, "device_sessions") {
				joined.Add(1)
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		// The rate limits (in memory) add none; a refused pull costs none.
		limited, _ := w.limited(handlers.DefaultRateLimits())
		exhausted, _ := w.limited(handlers.RateLimits{SessionRPS: 1, SessionBurst: 1})
		for _, base := range []string{w.srv.URL, limited, exhausted} {
			if resp, body := w.get(base+"/v1/connections/"+sess.ConnectionIDs[0]+"/access-token", sess.AccessToken); resp.StatusCode != 200 {
				t.Fatalf("pull: %d %s", resp.StatusCode, body)
			}
		}
		if resp, body := w.get(exhausted+"/v1/connections/"+sess.ConnectionIDs[0]+"/access-token", sess.AccessToken); resp.StatusCode != 429 {
			t.Fatalf("pull past the limit: %d %s", resp.StatusCode, body)
		}
		if n, j := reads.Load(), joined.Load(); n != 3 || j != 3 {
			t.Fatalf("%d statements (%d reading session and connection together) for 3 pulls and a refused one, want 3 and 3", n, j)
		}
	})
}
