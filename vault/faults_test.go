package vault_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"github.com/tokenwarm/tokenwarm/internal/rawdb"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gorm.io/gorm/clause"

	"github.com/tokenwarm/tokenwarm/internal/testkit"
	"github.com/tokenwarm/tokenwarm/models"
	"github.com/tokenwarm/tokenwarm/salesforce"
	"github.com/tokenwarm/tokenwarm/vault"
)

// The tests in this file each pin down one way the refresh core could lose
// a chain under faults (the reliability issue's findings), and what it does
// instead.

// stub is a Salesforce client whose answers a test can replace one method
// at a time; the rest go to the emulator.
type stub struct {
	*salesforce.Client
	refresh func(ctx context.Context, loginURL, tok string) (*salesforce.Token, error)
	active  func(ctx context.Context, loginURL, tok string) (bool, error)
}

func (s *stub) Refresh(ctx context.Context, loginURL, tok string) (*salesforce.Token, error) {
	if s.refresh != nil {
		return s.refresh(ctx, loginURL, tok)
	}
	return s.Client.Refresh(ctx, loginURL, tok)
}

func (s *stub) RefreshTokenActive(ctx context.Context, loginURL, tok string) (bool, error) {
	if s.active != nil {
		return s.active(ctx, loginURL, tok)
	}
	return s.Client.RefreshTokenActive(ctx, loginURL, tok)
}

func sha(tok string) string {
	sum := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(sum[:])
}

func (e *env) marker(id string) *models.RefreshAttempt {
	e.T.Helper()
	var ms []models.RefreshAttempt
	if err := rawdb.Gorm(e.dbs[0]).Where("connection_id = ?", id).Find(&ms).Error; err != nil {
		e.T.Fatal(err)
	}
	if len(ms) == 0 {
		return nil
	}
	return &ms[0]
}

func (e *env) waitLeaseOver(id string) {
	e.T.Helper()
	waitFor(e.T.(*testing.T), "the attempt lease to run out", 30*time.Second, func() bool {
		m := e.marker(id)
		return m == nil || !m.LeaseUntil.After(time.Now())
	})
}

// Finding 1: a failed first commit followed by another event insert made
// every retry fail on SQLite (the retry reused the rolled-back event IDs,
// which SQLite hands out again), so the rotated token was dropped.
func TestCommitRetryWritesFreshEventRows(t *testing.T) {
	dialects(t, func(t *testing.T, dialect models.Dialect) {
		e := newEnv(t, dialect)
		v := e.vault(vault.Config{})
		other := e.openDB()
		id := e.connect(v, "fresh-rows@example.com")
		e.Clock.Advance(testkit.SessionTimeout)
		e.Emu.ResetStats()

		inserted := make(chan error, 1)
		v.SetBeforeCommit(func(attempt int, tx *models.Tx) error {
			if attempt > 0 {
				return nil
			}
			// Another writer inserts an event; on SQLite it waits for our
			// write lock and gets the row ID our rolled-back insert had.
			go func() {
				cid := id
				inserted <- rawdb.Gorm(other).Create(&models.Event{ConnectionID: &cid, Kind: "other_writer", CreatedAt: time.Now().UTC()}).Error
			}()
			return errors.New("injected commit failure")
		})
		var once sync.Once
		v.SetBeforeRetry(func(int) {
			once.Do(func() {
				if err := <-inserted; err != nil {
					t.Errorf("the other writer: %v", err)
				}
			})
		})
		at, err := v.GetAccessToken(context.Background(), id, time.Minute)
		if err != nil || !at.Refreshed {
			t.Fatalf("refresh with a failed first commit: %v", err)
		}
		if !e.Emu.ChainAlive(e.storedRefreshToken(id)) || e.storedRefreshToken(id) == "" {
			t.Fatal("the stored refresh token is not the live one")
		}
		kinds := eventKinds(e.events(id))
		if !contains(kinds, models.EventCommitRetried) || !contains(kinds, "other_writer") {
			t.Fatalf("events %v", kinds)
		}
	})
}

// Finding 2: embedded commits must be on disk when they return.
func TestSQLiteCommitsAreDurable(t *testing.T) {
	e := newEnv(t, models.SQLite)
	var mode int
	if err := rawdb.Gorm(e.DB).Raw("PRAGMA synchronous").Scan(&mode).Error; err != nil {
		t.Fatal(err)
	}
	if mode != 2 { // FULL
		t.Fatalf("PRAGMA synchronous = %d, want 2 (FULL)", mode)
	}
}

// Finding 3: a refresh whose caller gave up runs on detached; shutdown
// must wait for it to store its outcome, and must start no new one.
func TestShutdownWaitsForEveryPresentedRefresh(t *testing.T) {
	dialects(t, func(t *testing.T, dialect models.Dialect) {
		e := newEnv(t, dialect)
		v := e.vault(vault.Config{})
		id := e.connect(v, "detached@example.com")
		idle := e.connect(v, "idle@example.com")
		e.Clock.Advance(testkit.SessionTimeout)
		e.Emu.ResetStats()

		release := e.Emu.HoldRefreshes()
		defer release()
		ctx, cancel := context.WithCancel(context.Background())
		gaveUp := make(chan error, 1)
		go func() {
			_, err := v.GetAccessToken(ctx, id, time.Minute)
			gaveUp <- err
		}()
		waitFor(t, "the refresh to be presented and held", 10*time.Second, func() bool { return e.Emu.Stats().Held == 1 })
		cancel()
		if err := <-gaveUp; vaultCode(t, err) != vault.CodeUpstreamUnavailable {
			t.Fatalf("caller that gave up: %v", err)
		}

		v.Drain()
		if _, err := v.GetAccessToken(context.Background(), idle, time.Minute); vaultCode(t, err) != vault.CodeUpstreamUnavailable {
			t.Fatalf("a new refresh while draining: %v", err)
		}
		if calls := e.Emu.Stats().TokenCalls; calls != 1 {
			t.Fatalf("token calls = %d while draining, want only the held one", calls)
		}
		short, cancelShort := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancelShort()
		if err := v.Wait(short); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Wait returned %v while a presented refresh was unsettled", err)
		}
		release()
		if err := v.Wait(context.Background()); err != nil {
			t.Fatal(err)
		}
		if !e.Emu.ChainAlive(e.storedRefreshToken(id)) {
			t.Fatal("the detached refresh's rotation was not stored")
		}
		if cur, ok := e.Emu.CurrentRefreshToken(e.conn(id).OrgID, e.conn(id).UserID); !ok || cur != e.storedRefreshToken(id) {
			t.Fatal("stored token is not the current one")
		}
	})
}

// Finding 4: an owner whose store outlives its lease must not write its
// result into a row another worker has moved on; the other worker, for
// its part, never presents the token blind.
func TestLateOwnerIsFencedOff(t *testing.T) {
	e := newEnvAt(t, models.Postgres, time.Now().UTC())
	late := e.vault(vault.Config{Worker: "late", AttemptLease: 3 * time.Second})
	next := e.vault(vault.Config{Worker: "next"})
	id := e.connect(late, "late@example.com")
	e.Clock.Advance(testkit.SessionTimeout)
	original := e.storedRefreshToken(id)
	e.Emu.ResetStats()

	failed, moveOn := make(chan struct{}), make(chan struct{})
	late.SetBeforeCommit(func(attempt int, tx *models.Tx) error {
		if attempt == 0 {
			return errors.New("injected commit failure")
		}
		return nil
	})
	late.SetBeforeRetry(func(attempt int) {
		if attempt == 1 {
			close(failed)
			<-moveOn
		}
	})
	lateErr := make(chan error, 1)
	go func() {
		_, err := late.Access(context.Background(), id, vault.Request{Cause: vault.CauseWarm, Force: true})
		lateErr <- err
	}()
	<-failed
	e.waitLeaseOver(id)
	_, err := next.Access(context.Background(), id, vault.Request{Cause: vault.CauseWarm, Force: true})
	if vaultCode(t, err) != vault.CodeReauthRequired {
		t.Fatalf("next worker after the lease: %v", err)
	}
	close(moveOn)
	if err := <-lateErr; vaultCode(t, err) != vault.CodeUpstreamUnavailable {
		t.Fatalf("late owner: %v", err)
	}
	c := e.conn(id)
	if c.Status != models.StatusNeedsReauth || !strings.HasPrefix(c.ReauthReason, models.ReasonRotationLost) {
		t.Fatalf("status %s reason %q", c.Status, c.ReauthReason)
	}
	if e.storedRefreshToken(id) != original {
		t.Fatal("the late owner wrote its token into a row that had moved on")
	}
	if st := e.Emu.Stats(); st.StalePresentations != 0 || st.TokenCalls != 1 {
		t.Fatalf("stale=%d token calls=%d", st.StalePresentations, st.TokenCalls)
	}
}

// Finding 5: revocation must not slip in while an attempt that may have
// rotated the token is still storing its result; once it is stored, the
// revocation moves the rotation count so no later write can land.
func TestRevokeWaitsForAnUnsettledAttempt(t *testing.T) {
	e := newEnvAt(t, models.Postgres, time.Now().UTC())
	v := e.vault(vault.Config{})
	admin := e.vault(vault.Config{Worker: "admin"})
	id := e.connect(v, "revoke-race@example.com")
	e.Clock.Advance(testkit.SessionTimeout)
	e.Emu.ResetStats()

	failed, tried := make(chan struct{}), make(chan struct{})
	v.SetBeforeCommit(func(attempt int, tx *models.Tx) error {
		if attempt == 0 {
			return errors.New("injected commit failure")
		}
		return nil
	})
	v.SetBeforeRetry(func(attempt int) {
		if attempt == 1 {
			close(failed)
			<-tried
		}
	})
	refreshed := make(chan error, 1)
	go func() {
		_, err := v.Access(context.Background(), id, vault.Request{Cause: vault.CauseWarm, Force: true})
		refreshed <- err
	}()
	<-failed
	sf := e.SFClient()
	_, err := admin.Revoke(context.Background(), id, vault.CauseAdmin, "test", sf.Revoke)
	if vaultCode(t, err) != vault.CodeUpstreamUnavailable || e.Emu.Stats().Revocations != 0 {
		t.Fatalf("revoke during an unsettled attempt: %v", err)
	}
	close(tried)
	if err := <-refreshed; err != nil {
		t.Fatalf("the refresh: %v", err)
	}
	before := e.conn(id).RotationCount
	c, err := admin.Revoke(context.Background(), id, vault.CauseAdmin, "test", sf.Revoke)
	if err != nil || c.Status != models.StatusRevoked {
		t.Fatalf("revoke: %v", err)
	}
	after := e.conn(id)
	if after.Status != models.StatusRevoked || after.RefreshTokenSealed != "" || after.RotationCount != before+1 {
		t.Fatalf("after revoke: status %s, token kept %v, rotation %d (was %d)", after.Status, after.RefreshTokenSealed != "", after.RotationCount, before)
	}
	if st := e.Emu.Stats(); st.Revocations != 1 || st.StalePresentations != 0 {
		t.Fatalf("revocations=%d stale=%d", st.Revocations, st.StalePresentations)
	}
}

// Finding 6: two vaults on one SQLite file (two processes, or two pools)
// each hold only their own in-process lock; the attempt marker's
// compare-and-swap keeps them from presenting one token twice.
func TestTwoVaultsOnOneSQLiteFilePresentOnce(t *testing.T) {
	e := newEnv(t, models.SQLite)
	a, b := e.vault(vault.Config{Worker: "a"}), e.vault(vault.Config{Worker: "b"})
	id := e.connect(a, "two-vaults@example.com")
	for round := range 5 {
		e.Clock.Advance(testkit.SessionTimeout)
		e.Emu.SetLatency(func() time.Duration { return 100 * time.Millisecond })
		var wg sync.WaitGroup
		var ok atomic.Int32
		for _, v := range []*vault.Vault{a, b} {
			wg.Go(func() {
				_, err := v.Access(context.Background(), id, vault.Request{Cause: vault.CauseAdmin, Force: true})
				if err == nil {
					ok.Add(1)
				} else if vaultCode(t, err) != vault.CodeUpstreamUnavailable {
					t.Errorf("round %d: %v", round, err)
				}
			})
		}
		wg.Wait()
		if ok.Load() == 0 {
			t.Fatalf("round %d: no refresh succeeded", round)
		}
	}
	st := e.Emu.Stats()
	if st.StalePresentations != 0 || st.ChainsRevoked != 0 || st.MaxConcurrentPresentations > 1 {
		t.Fatalf("stale=%d revoked=%d max concurrent=%d", st.StalePresentations, st.ChainsRevoked, st.MaxConcurrentPresentations)
	}
	if !e.Emu.ChainAlive(e.storedRefreshToken(id)) {
		t.Fatal("chain dead")
	}
}

// Finding 7: no mix of request parameters from any number of devices
// causes more than one refresh of a connection per round, and a hostile
// herd on one connection holds one refresh slot, not all of them.
func TestHostileParametersRefreshOncePerRound(t *testing.T) {
	dialects(t, func(t *testing.T, dialect models.Dialect) {
		e := newEnv(t, dialect)
		v := e.vault(vault.Config{MaxConcurrentRefreshes: 2, LockTimeout: time.Second})
		id := e.connect(v, "hostile@example.com")
		bystander := e.connect(v, "bystander@example.com")
		cur, err := v.GetAccessToken(context.Background(), id, 0)
		if err != nil {
			t.Fatal(err)
		}
		other, err := v.GetAccessToken(context.Background(), bystander, 0)
		if err != nil {
			t.Fatal(err)
		}
		e.Emu.SetLatency(func() time.Duration { return 300 * time.Millisecond })
		life := testkit.SessionTimeout
		for round := 1; round <= 2; round++ {
			e.Emu.ResetStats()
			h := sha(cur.Token)
			requests := []vault.Request{
				{MinValidity: life},
				{MinValidity: 2 * life},
				{RejectedTokenSHA256: strings.ToUpper(h)},
				{RejectedTokenSHA256: " " + h + "\t"},
				{RejectedToken: cur.Token},
				{RejectedTokenSHA256: h},
				{RejectedTokenSHA256: sha("garbage")},
				{},
			}
			var wg sync.WaitGroup
			for i := range 80 {
				req := requests[i%len(requests)]
				wg.Go(func() {
					at, err := v.Access(context.Background(), id, req)
					if err != nil {
						t.Errorf("round %d, %+v: %v", round, req, err)
						return
					}
					if (req.RejectedToken != "" || strings.EqualFold(strings.TrimSpace(req.RejectedTokenSHA256), h)) && at.Token == cur.Token {
						t.Errorf("round %d: a caller got its rejected token back", round)
					}
				})
			}
			// Meanwhile another connection needs a refresh: one slot is
			// enough for the herd, so it gets the other at once.
			wg.Go(func() {
				at, err := v.Access(context.Background(), bystander, vault.Request{RejectedToken: other.Token})
				if err != nil {
					t.Errorf("round %d: the bystander was starved: %v", round, err)
					return
				}
				other = at
			})
			wg.Wait()
			if n := e.Emu.Stats().Refreshes; n != 2 {
				t.Fatalf("round %d: refreshes = %d, want one for the herd and one for the bystander", round, n)
			}
			if cur, err = v.GetAccessToken(context.Background(), id, 0); err != nil {
				t.Fatal(err)
			}
		}
		// A fresh token satisfies any min_validity: asking for more than a
		// token can ever have does not refresh on every pull.
		e.Emu.ResetStats()
		for range 5 {
			if _, err := v.Access(context.Background(), id, vault.Request{MinValidity: 2 * life}); err != nil {
				t.Fatal(err)
			}
		}
		if n := e.Emu.Stats().Refreshes; n != 0 {
			t.Fatalf("refreshes = %d for repeated greedy min_validity pulls of a fresh token", n)
		}
	})
}

// recordingPause is an AppPause that counts the pauses raised.
type recordingPause struct{ raised atomic.Int32 }

func (p *recordingPause) Paused() bool                             { return false }
func (p *recordingPause) ConfigError(ctx context.Context, _ error) { p.raised.Add(1) }

// Finding 8: "IP restricted or invalid login hours" may be one user's
// login hours; it pauses the app only when several connections hit it, and
// one connection cannot re-raise it in a loop. An unrecognised answer is
// that connection's, never the app's.
func TestOnlyWhatIsReallyAppWidePausesTheApp(t *testing.T) {
	e := newEnv(t, models.SQLite)
	v := e.vault(vault.Config{})
	pause := &recordingPause{}
	v.SetPause(pause)
	var ids []string
	for _, u := range []string{"r1@example.com", "r2@example.com", "r3@example.com", "r4@example.com"} {
		ids = append(ids, e.connect(v, u))
	}
	e.Clock.Advance(testkit.SessionTimeout)
	if err := e.Emu.SetAllowedIPs([]string{"203.0.113.7/32"}); err != nil {
		t.Fatal(err)
	}
	e.Emu.ResetStats()
	if _, err := v.GetAccessToken(context.Background(), ids[0], time.Minute); vaultCode(t, err) != vault.CodeUpstreamConfig || vault.IsAppWide(err) {
		t.Fatalf("first restricted answer: %v (app-wide %v)", err, vault.IsAppWide(err))
	}
	for range 5 {
		if _, err := v.GetAccessToken(context.Background(), ids[0], time.Minute); vaultCode(t, err) != vault.CodeUpstreamUnavailable {
			t.Fatalf("the same connection again: %v", err)
		}
	}
	if calls, raised := e.Emu.Stats().TokenCalls, pause.raised.Load(); calls != 1 || raised != 0 {
		t.Fatalf("one connection: token calls %d, pauses raised %d", calls, raised)
	}
	if c := e.conn(ids[0]); c.Status != models.StatusActive || c.NextAttemptAt == nil {
		t.Fatalf("restricted connection: status %s, backoff %v", c.Status, c.NextAttemptAt)
	}
	if _, err := v.GetAccessToken(context.Background(), ids[1], time.Minute); vault.IsAppWide(err) || pause.raised.Load() != 0 {
		t.Fatalf("two connections already pause: %v", err)
	}
	_, err := v.GetAccessToken(context.Background(), ids[2], time.Minute)
	if !vault.IsAppWide(err) || pause.raised.Load() != 1 {
		t.Fatalf("three connections: %v, pauses raised %d", err, pause.raised.Load())
	}
	if err := e.Emu.SetAllowedIPs(nil); err != nil {
		t.Fatal(err)
	}

	weird := &stub{Client: e.SFClient(), refresh: func(context.Context, string, string) (*salesforce.Token, error) {
		return nil, &salesforce.Error{Class: salesforce.Classify(400, "weird_new_error", ""), Op: "refresh", HTTPStatus: 400, Code: "weird_new_error"}
	}}
	wv := vault.New(e.dbs[0], e.Ring, weird, e.Clock, e.Log, vault.Config{})
	wv.SetPause(pause)
	_, err = wv.GetAccessToken(context.Background(), ids[3], time.Minute)
	if vaultCode(t, err) != vault.CodeUpstreamUnavailable || vault.IsAppWide(err) || pause.raised.Load() != 1 {
		t.Fatalf("unrecognised answer: %v", err)
	}
	c := e.conn(ids[3])
	if c.Status != models.StatusActive || c.NextAttemptAt == nil || c.LastErrorCode != "weird_new_error" {
		t.Fatalf("unrecognised answer: status %s backoff %v code %q", c.Status, c.NextAttemptAt, c.LastErrorCode)
	}
	if !contains(eventKinds(e.events(ids[3])), models.EventUnrecognized) {
		t.Fatal("no event for the unrecognised answer")
	}
}

// A presentation whose answer is lost is resolved by introspection before
// the token is presented again: a lost rotation is recorded as such and the
// stale token never goes to the token endpoint; a 503 that rotated nothing
// is followed by a normal refresh.
func TestLostAnswersAreIntrospectedNotPresentedBlind(t *testing.T) {
	dialects(t, func(t *testing.T, dialect models.Dialect) {
		e := newEnv(t, dialect)
		v := e.vault(vault.Config{})
		lost := e.connect(v, "lost@example.com")
		kept := e.connect(v, "kept@example.com")
		e.Clock.Advance(testkit.SessionTimeout)
		e.Emu.ResetStats()

		e.Emu.DropAfterRotateNext(1)
		if _, err := v.GetAccessToken(context.Background(), lost, time.Minute); vaultCode(t, err) != vault.CodeUpstreamUnavailable {
			t.Fatalf("dropped answer: %v", err)
		}
		if m := e.marker(lost); m == nil || m.State != models.AttemptUnresolved {
			t.Fatalf("marker after a dropped answer: %+v", m)
		}
		// Salesforce may still be working on it: not even an admin may make
		// anyone introspect or present before the settling time is over.
		e.Clock.Advance(time.Second)
		if _, err := v.Access(context.Background(), lost, vault.Request{Cause: vault.CauseAdmin, Force: true, IgnoreBackoff: true}); vaultCode(t, err) != vault.CodeUpstreamUnavailable {
			t.Fatalf("admin refresh while settling: %v", err)
		}
		if st := e.Emu.Stats(); st.TokenCalls != 1 || st.Introspections != 0 {
			t.Fatalf("while settling: token calls %d introspections %d", st.TokenCalls, st.Introspections)
		}
		e.Clock.Advance(2 * time.Hour) // past the backoff
		_, err := v.GetAccessToken(context.Background(), lost, time.Minute)
		if vaultCode(t, err) != vault.CodeReauthRequired {
			t.Fatalf("after the dropped rotation: %v", err)
		}
		if st := e.Emu.Stats(); st.TokenCalls != 1 || st.StalePresentations != 0 || st.Introspections != 1 {
			t.Fatalf("token calls %d stale %d introspections %d", st.TokenCalls, st.StalePresentations, st.Introspections)
		}
		if c := e.conn(lost); !strings.HasPrefix(c.ReauthReason, models.ReasonRotationLost) || e.marker(lost) != nil {
			t.Fatalf("reason %q, marker %+v", c.ReauthReason, e.marker(lost))
		}

		e.Emu.ResetStats()
		e.Emu.FailNext(1, http.StatusServiceUnavailable)
		if _, err := v.GetAccessToken(context.Background(), kept, time.Minute); vaultCode(t, err) != vault.CodeUpstreamUnavailable {
			t.Fatalf("503: %v", err)
		}
		e.Clock.Advance(2 * time.Hour)
		at, err := v.GetAccessToken(context.Background(), kept, time.Minute)
		if err != nil || !at.Refreshed {
			t.Fatalf("after a 503: %v", err)
		}
		if st := e.Emu.Stats(); st.Refreshes != 1 || st.Introspections != 1 || st.StalePresentations != 0 {
			t.Fatalf("refreshes %d introspections %d stale %d", st.Refreshes, st.Introspections, st.StalePresentations)
		}
	})
}

// Only a verdict settles an unknown outcome: while introspection fails,
// the token is held back (never presented), the failure is recorded, and
// a long hold raises one alert.
func TestFailedIntrospectionHoldsTheTokenBack(t *testing.T) {
	e := newEnv(t, models.SQLite)
	failures := atomic.Int32{}
	failures.Store(2)
	sf := &stub{Client: e.SFClient()}
	sf.active = func(ctx context.Context, loginURL, tok string) (bool, error) {
		if failures.Add(-1) >= 0 {
			return false, &salesforce.Error{Class: salesforce.Transient, Op: "introspect", HTTPStatus: 503, Code: "service_unavailable"}
		}
		return sf.Client.RefreshTokenActive(ctx, loginURL, tok)
	}
	v := vault.New(e.openDB(), e.Ring, sf, e.Clock, e.Log, vault.Config{UnresolvedAlertAfter: time.Nanosecond})
	id := e.connect(v, "held@example.com")
	e.Clock.Advance(testkit.SessionTimeout)
	e.Emu.ResetStats()
	e.Emu.FailNext(1, http.StatusBadGateway)
	if _, err := v.GetAccessToken(context.Background(), id, time.Minute); vaultCode(t, err) != vault.CodeUpstreamUnavailable {
		t.Fatalf("502: %v", err)
	}
	for i := range 2 {
		e.Clock.Advance(3 * time.Hour)
		if _, err := v.GetAccessToken(context.Background(), id, time.Minute); vaultCode(t, err) != vault.CodeUpstreamUnavailable {
			t.Fatalf("introspection failure %d: %v", i+1, err)
		}
		if calls := e.Emu.Stats().TokenCalls; calls != 1 {
			t.Fatalf("the token was presented while its state was unknown (%d token calls)", calls)
		}
		if m := e.marker(id); m == nil {
			t.Fatal("the marker was dropped without a verdict")
		}
	}
	kinds := eventKinds(e.events(id))
	if count(kinds, models.EventIntrospectionFailed) != 2 || count(kinds, models.EventAttemptUnresolved) != 1 {
		t.Fatalf("events %v", kinds)
	}
	e.Clock.Advance(3 * time.Hour)
	if at, err := v.GetAccessToken(context.Background(), id, time.Minute); err != nil || !at.Refreshed {
		t.Fatalf("once introspection answers: %v", err)
	}
	if st := e.Emu.Stats(); st.StalePresentations != 0 || st.Refreshes != 1 {
		t.Fatalf("stale %d refreshes %d", st.StalePresentations, st.Refreshes)
	}
}

// oldAttempt is the attempt marker as binaries before refresh protocol 2
// wrote it (an upsert, no protocol): what an old replica does during a
// rolling upgrade right before it presents a token.
type oldAttempt struct {
	ConnectionID  string `gorm:"primaryKey"`
	AttemptID     string
	Worker        string
	RotationCount int64
	StartedAt     time.Time
	LeaseUntil    time.Time
}

func (oldAttempt) TableName() string { return "refresh_attempts" }

// Rolling upgrades: once the migration that introduced fenced markers and
// introspection has run, a binary that predates it cannot claim a marker,
// and so never presents a token (it would present blind after a lost
// answer); markers of an older protocol are refused too.
func TestOldBinariesCannotClaimAMarker(t *testing.T) {
	dialects(t, func(t *testing.T, dialect models.Dialect) {
		e := newEnv(t, dialect)
		v := e.vault(vault.Config{})
		id := e.connect(v, "upgrade@example.com")
		now := time.Now().UTC()
		old := oldAttempt{ConnectionID: id, AttemptID: "old", Worker: "old-replica", StartedAt: now, LeaseUntil: now.Add(time.Minute)}
		if err := rawdb.Gorm(e.DB).Clauses(clause.OnConflict{UpdateAll: true}).Create(&old).Error; err == nil {
			t.Fatal("an old binary's marker was accepted")
		}
		err := rawdb.Gorm(e.DB).Create(&models.RefreshAttempt{ConnectionID: id, AttemptID: "v1", Worker: "w", StartedAt: now,
			LeaseUntil: now.Add(time.Minute), Protocol: models.RefreshProtocol - 1, State: models.AttemptPresenting}).Error
		if err == nil {
			t.Fatal("a marker of an older protocol was accepted")
		}
		e.Clock.Advance(testkit.SessionTimeout)
		if at, err := v.Access(context.Background(), id, vault.Request{Cause: vault.CauseWarm, Force: true}); err != nil || !at.Refreshed {
			t.Fatalf("the current protocol: %v", err)
		}
	})
}

// Tokens never leave the vault: a re-authorization revokes the token it
// replaced once the new one is stored, and a re-authorization link
// completed by another Salesforce user is refused with its fresh grant
// revoked, the connection untouched.
func TestConnectRevokesWhatItDoesNotKeep(t *testing.T) {
	e := newEnv(t, models.SQLite)
	v := e.vault(vault.Config{})
	id := e.connect(v, "keeper@example.com")
	first := e.storedRefreshToken(id)

	tok, err := testkit.Authorize(e.EmuURL, e.SFClient(), "keeper@example.com")
	if err != nil {
		t.Fatal(err)
	}
	res, err := v.Connect(context.Background(), e.EmuURL, tok.OrgID+"/"+tok.UserID, tok, id)
	if err != nil || res.Connection.ID != id || !res.Reauthorized {
		t.Fatalf("re-authorization: %+v %v", res, err)
	}
	if e.Emu.ChainAlive(first) || !e.Emu.ChainAlive(tok.RefreshToken) {
		t.Fatal("the replaced token is alive or the new one is not")
	}

	other, err := testkit.Authorize(e.EmuURL, e.SFClient(), "intruder@example.com")
	if err != nil {
		t.Fatal(err)
	}
	_, err = v.Connect(context.Background(), e.EmuURL, other.OrgID+"/"+other.UserID, other, id)
	if vaultCode(t, err) != vault.CodeWrongUser {
		t.Fatalf("another user's re-authorization: %v", err)
	}
	if e.Emu.ChainAlive(other.RefreshToken) {
		t.Fatal("the refused grant was not revoked")
	}
	if e.storedRefreshToken(id) != tok.RefreshToken {
		t.Fatal("the refused grant touched the connection")
	}
}
