package restore_test

import (
	"context"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokenwarm/tokenwarm/internal/rawdb"
	"github.com/tokenwarm/tokenwarm/internal/testkit"
	"github.com/tokenwarm/tokenwarm/models"
	"github.com/tokenwarm/tokenwarm/restore"
	"github.com/tokenwarm/tokenwarm/vault"
)

type env struct {
	*testkit.World
	v *vault.Vault
}

func newEnv(t *testing.T, dialect models.Dialect) *env {
	w := testkit.NewWorld(t, dialect, time.Now(), slog.LevelDebug)
	return &env{World: w, v: vault.New(w.DB, w.Ring, w.SFClient(), w.Clock, w.Log, vault.Config{Worker: "w1"})}
}

func (e *env) connect(username string) string {
	e.T.Helper()
	id, err := testkit.Connect(e.EmuURL, e.SFClient(), e.v, username)
	if err != nil {
		e.T.Fatal(err)
	}
	return id
}

func (e *env) incarnation() models.Incarnation {
	e.T.Helper()
	var row models.Incarnation
	if err := rawdb.Gorm(e.DB).Where("id = 1").Take(&row).Error; err != nil {
		e.T.Fatal(err)
	}
	return row
}

// setIncarnation puts the row back where a backup had it: a restore.
func (e *env) setIncarnation(row models.Incarnation) {
	e.T.Helper()
	if err := rawdb.Gorm(e.DB).Exec("UPDATE incarnation SET incarnation_id = ?, epoch = ?, generation = ?, restore_state = ? WHERE id = 1",
		row.IncarnationID, row.Epoch, row.Generation, row.RestoreState).Error; err != nil {
		e.T.Fatal(err)
	}
}

func (e *env) count(sql string, args ...any) int64 {
	e.T.Helper()
	var n int64
	if err := rawdb.Gorm(e.DB).Raw(sql, args...).Scan(&n).Error; err != nil {
		e.T.Fatal(err)
	}
	return n
}

func (e *env) guard(dir, worker string) *restore.Guard {
	return restore.NewGuard(e.DB, dir, e.Clock, e.Log, worker)
}

func check(t *testing.T, g *restore.Guard) {
	t.Helper()
	if err := g.Check(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// A replica remembers the database's history in its data directory; a
// database behind it (a restore) holds refreshes for every replica, marks
// every active token unverified and raises one event; the procedure lifts
// the hold; a second restore of the same old backup is caught again; a
// different database is not mistaken for a restore.
func TestGuardTellsARestoredDatabase(t *testing.T) {
	testkit.Dialects(t, func(t *testing.T, dialect models.Dialect) {
		e := newEnv(t, dialect)
		ids := []string{e.connect("a@example.com"), e.connect("b@example.com")}
		dir := t.TempDir()

		g := e.guard(dir, "r1")
		if g.HoldReason() == "" {
			t.Fatal("a guard that never checked does not hold")
		}
		check(t, g) // first sight: learns, does not advance
		if g.HoldReason() != "" || e.incarnation().Generation != 0 {
			t.Fatalf("first sight: hold %q, generation %d", g.HoldReason(), e.incarnation().Generation)
		}
		check(t, g)
		backup := e.incarnation()
		if backup.Generation == 0 {
			t.Fatal("the second check did not advance the generation")
		}
		time.Sleep(2 * time.Millisecond)
		check(t, g) // the fleet goes on after the backup
		if b, err := os.ReadFile(filepath.Join(dir, restore.StateFile)); err != nil || !strings.Contains(string(b), backup.IncarnationID) {
			t.Fatalf("state file: %v %s", err, b)
		}

		// Restored. A new process on the same data directory knows.
		e.setIncarnation(backup)
		g2 := e.guard(dir, "r2")
		check(t, g2)
		if !strings.Contains(g2.HoldReason(), "restored from a backup") {
			t.Fatalf("not held after a restore: %q", g2.HoldReason())
		}
		if got := e.incarnation(); got.RestoreState != models.RestoreRequired || got.Generation != backup.Generation {
			t.Fatalf("row after detection: %+v", got)
		}
		if n := e.count("SELECT count(*) FROM events WHERE kind = ? AND connection_id IS NULL", models.EventRestoreDetected); n != 1 {
			t.Fatalf("%d restore_detected events", n)
		}
		if n := e.count("SELECT count(*) FROM refresh_attempts WHERE worker = ? AND state = ?", models.RestoreWorker, models.AttemptUnresolved); n != 2 {
			t.Fatalf("%d connections marked unverified, want 2", n)
		}
		// A replica with no memory at all holds too: the hold is in the
		// database. Checking again records nothing twice.
		fresh := e.guard("", "r3")
		check(t, fresh)
		check(t, g2)
		if fresh.HoldReason() == "" || e.count("SELECT count(*) FROM events WHERE kind = ?", models.EventRestoreDetected) != 1 {
			t.Fatal("a replica without memory refreshes while a restore is pending, or the event was recorded twice")
		}

		// Held: nothing is presented, whatever the cause.
		e.v.SetHold(g2)
		e.Emu.ResetStats()
		for _, id := range ids {
			_, err := e.v.Access(context.Background(), id, vault.Request{Cause: vault.CauseAdmin, Force: true})
			if vault.ErrorCode(err) != vault.CodeUpstreamUnavailable || !strings.Contains(err.Error(), "restored from a backup") {
				t.Fatalf("a refresh while held: %v", err)
			}
		}
		if st := e.Emu.Stats(); st.TokenCalls != 0 {
			t.Fatalf("%d token calls while held", st.TokenCalls)
		}

		rep, err := restore.Run(context.Background(), e.DB, e.v, restore.Options{Log: e.Log})
		if err != nil || rep.Active != 2 || rep.Checked != 2 {
			t.Fatalf("restore: %+v %v", rep, err)
		}
		check(t, g2)
		check(t, fresh)
		if g2.HoldReason() != "" || fresh.HoldReason() != "" {
			t.Fatalf("still held after the restore procedure: %q %q", g2.HoldReason(), fresh.HoldReason())
		}
		after := e.incarnation()
		if after.Epoch != backup.Epoch+1 || after.RestoreState != models.RestoreNone {
			t.Fatalf("row after the procedure: %+v", after)
		}
		for _, id := range ids {
			if _, err := e.v.Access(context.Background(), id, vault.Request{Cause: vault.CauseAdmin, Force: true}); err != nil {
				t.Fatalf("refresh after the restore: %v", err)
			}
		}

		// The same old backup restored again: its epoch is behind.
		e.setIncarnation(backup)
		check(t, g2)
		if g2.HoldReason() == "" {
			t.Fatal("a second restore of the same backup went unnoticed")
		}
		if _, err := restore.Run(context.Background(), e.DB, e.v, restore.Options{}); err != nil {
			t.Fatal(err)
		}
		check(t, g2)

		// Another database altogether is no restore.
		other := e.incarnation()
		other.IncarnationID, other.Epoch, other.Generation = "another-database", 0, 1
		e.setIncarnation(other)
		check(t, g2)
		if g2.HoldReason() != "" {
			t.Fatalf("another database taken for a restore: %q", g2.HoldReason())
		}
		if st := e.Emu.Stats(); st.StalePresentations != 0 {
			t.Fatalf("%d stale presentations", st.StalePresentations)
		}
	})
}

// The procedure never presents a token: a token rotated after the backup
// is found inactive and its connection needs re-authorization (event and
// webhook outbox row); one whose introspection fails stays marked, and its
// next refresh introspects it before presenting anything.
func TestRunMarksStaleTokensAndHoldsBackUnverifiedOnes(t *testing.T) {
	testkit.Dialects(t, func(t *testing.T, dialect models.Dialect) {
		e := newEnv(t, dialect)
		e.DB.SetAnnouncer(func(evs []models.Event) ([]models.WebhookDelivery, error) {
			var out []models.WebhookDelivery
			for _, ev := range evs {
				if ev.Kind == models.EventNeedsReauth {
					out = append(out, models.WebhookDelivery{EventID: "evt_" + *ev.ConnectionID, EventType: "connection.needs_reauth",
						EndpointURL: "http://127.0.0.1/hook", Payload: "{}", CreatedAt: time.Now().UTC(), NextAttemptAt: time.Now().UTC()})
				}
			}
			return out, nil
		})
		stale := e.connect("stale@example.com")
		live := []string{e.connect("live1@example.com"), e.connect("live2@example.com")}

		// The backup of the stale connection's row, then a refresh.
		var backup models.Connection
		if err := rawdb.Gorm(e.DB).Where("id = ?", stale).Take(&backup).Error; err != nil {
			t.Fatal(err)
		}
		if _, err := e.v.Access(context.Background(), stale, vault.Request{Cause: vault.CauseAdmin, Force: true}); err != nil {
			t.Fatal(err)
		}
		// The restore brings the old row back.
		if err := rawdb.Gorm(e.DB).Exec("UPDATE connections SET refresh_token_sealed = ?, access_token_sealed = ?, rotation_count = ? WHERE id = ?",
			backup.RefreshTokenSealed, backup.AccessTokenSealed, backup.RotationCount, stale).Error; err != nil {
			t.Fatal(err)
		}

		e.Emu.ResetStats()
		e.Emu.SetIntrospectionFailure(http.StatusServiceUnavailable, 1)
		rep, err := restore.Run(context.Background(), e.DB, e.v, restore.Options{Concurrency: 1, Log: e.Log})
		if err != nil {
			t.Fatal(err)
		}
		if rep.Checked != 3 || rep.Unverified != 1 || rep.Active+rep.RotationLost != 2 || rep.Marked != 3 {
			t.Fatalf("report %+v", rep)
		}
		if st := e.Emu.Stats(); st.TokenCalls != 0 {
			t.Fatalf("the procedure made %d token calls", st.TokenCalls)
		}
		if n := e.count("SELECT count(*) FROM refresh_attempts"); n != 1 {
			t.Fatalf("%d markers left, want the unverified one", n)
		}

		// Every connection refreshes once the unverified one's backoff
		// is over (not even an admin skips it): it is introspected first.
		e.Clock.Advance(2 * time.Minute)
		for _, id := range append([]string{stale}, live...) {
			_, err := e.v.Access(context.Background(), id, vault.Request{Cause: vault.CauseAdmin, Force: true, IgnoreBackoff: true})
			switch {
			case id == stale && vault.ErrorCode(err) != vault.CodeReauthRequired:
				t.Fatalf("the stale connection: %v", err)
			case id != stale && err != nil:
				t.Fatalf("a live connection: %v", err)
			}
		}
		c, err := e.DB.Connection(context.Background(), stale)
		if err != nil || c.Status != models.StatusNeedsReauth || !strings.HasPrefix(c.ReauthReason, models.ReasonRotationLost+": the database was restored") {
			t.Fatalf("stale connection: %+v %v", c, err)
		}
		if n := e.count("SELECT count(*) FROM events WHERE connection_id = ? AND kind = ?", stale, models.EventRotationLost); n != 1 {
			t.Fatalf("%d rotation_lost events", n)
		}
		if n := e.count("SELECT count(*) FROM webhook_outbox WHERE event_type = 'connection.needs_reauth'"); n != 1 {
			t.Fatalf("%d needs_reauth webhooks", n)
		}
		st := e.Emu.Stats()
		if st.StalePresentations != 0 || st.ChainsRevoked != 0 || st.Refreshes != 2 || st.RefreshIntrospections != 3 || st.InjectedIntrospectionFailures != 1 {
			t.Fatalf("emulator: %+v", st)
		}
	})
}
