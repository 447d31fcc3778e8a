package vault_test

import (
	"context"
	"errors"
	"fmt"
	"github.com/tokenwarm/tokenwarm/internal/rawdb"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/tokenwarm/tokenwarm/internal/testkit"
	"github.com/tokenwarm/tokenwarm/models"
	"github.com/tokenwarm/tokenwarm/salesforce"
	"github.com/tokenwarm/tokenwarm/vault"
)

// Acceptance a (Postgres: 3 independent pools × 100 callers) and h (SQLite:
// one process × 300 callers): a herd needing a refresh causes exactly one.
func TestHerdCollapsesToOneRefresh(t *testing.T) {
	backends(t, func(t *testing.T, b testkit.Backend) {
		e := newEnvOn(t, b)
		pools := 1
		if e.Dialect == models.Postgres {
			pools = 3
		}
		var vaults []*vault.Vault
		for range pools {
			vaults = append(vaults, e.vault(vault.Config{}))
		}
		id := e.connect(vaults[0], "herd@example.com")
		before, err := vaults[0].GetAccessToken(context.Background(), id, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		e.Clock.Advance(testkit.SessionTimeout + time.Minute)
		e.Emu.ResetStats()

		const perPool = 300
		callers := perPool
		if pools > 1 {
			callers = 100
		}
		var wg sync.WaitGroup
		start := make(chan struct{})
		tokens := make(chan string, pools*callers)
		errs := make(chan error, pools*callers)
		for _, v := range vaults {
			for range callers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					at, err := v.GetAccessToken(context.Background(), id, 5*time.Minute)
					if err != nil {
						errs <- err
						return
					}
					tokens <- at.Token
				}()
			}
		}
		close(start)
		wg.Wait()
		close(tokens)
		close(errs)
		for err := range errs {
			t.Fatalf("caller failed: %v", err)
		}
		seen := map[string]int{}
		for tok := range tokens {
			seen[tok]++
		}
		if len(seen) != 1 {
			t.Fatalf("callers got %d different tokens, want 1", len(seen))
		}
		for tok, n := range seen {
			if tok == before.Token {
				t.Fatal("callers got the expired token")
			}
			if n != pools*callers {
				t.Fatalf("%d callers got the token, want %d", n, pools*callers)
			}
		}
		st := e.Emu.Stats()
		if st.Refreshes != 1 || st.StalePresentations != 0 || st.ChainsRevoked != 0 {
			t.Fatalf("emulator saw refreshes=%d stale=%d revoked=%d, want 1/0/0", st.Refreshes, st.StalePresentations, st.ChainsRevoked)
		}
		if got := e.storedRefreshToken(id); !e.Emu.ChainAlive(got) {
			t.Fatal("stored refresh token is not the live one")
		}
	})
}

// Acceptance b: 500 connections × 20 concurrent callers with access tokens
// expiring at random: upstream refreshes equal the refreshes needed.
func TestManyConnectionsRefreshExactlyWhatIsNeeded(t *testing.T) {
	backends(t, func(t *testing.T, b testkit.Backend) {
		e := newEnvOn(t, b)
		// Background revalidation off: this test counts exactly the
		// refreshes that expiry makes necessary.
		noSWR := vault.Config{RevalidateAfter: 1}
		vaults := []*vault.Vault{e.vault(noSWR)}
		if e.Dialect == models.Postgres {
			vaults = append(vaults, e.vault(noSWR))
		}
		const conns, callers = 500, 20
		rng := rand.New(rand.NewPCG(1, 2))
		ids := make([]string, conns)
		for i := range ids {
			// Issue times spread over the session timeout, so that at the
			// moment of the herd a random part of the tokens has expired.
			e.Clock.Advance(time.Duration(rng.Int64N(int64(testkit.SessionTimeout / conns * 2))))
			ids[i] = e.connect(vaults[0], "user"+itoa(i)+"@example.com")
		}
		e.Clock.Advance(testkit.SessionTimeout / 2)
		const minValidity = 5 * time.Minute
		needed := 0
		now := e.Clock.Now()
		for _, id := range ids {
			if c := e.conn(id); c.AccessTokenExpiresAt.Sub(now) < minValidity {
				needed++
			}
		}
		if needed == 0 || needed == conns {
			t.Fatalf("bad test setup: %d of %d need a refresh", needed, conns)
		}
		e.Emu.ResetStats()

		// Bounded so the race detector's goroutine limit holds: 200
		// connections at a time, each with 20 concurrent callers.
		sem := make(chan struct{}, 200)
		var wg sync.WaitGroup
		var mu sync.Mutex
		var failures []error
		for i, id := range ids {
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				var inner sync.WaitGroup
				for j := range callers {
					inner.Add(1)
					go func() {
						defer inner.Done()
						v := vaults[(i+j)%len(vaults)]
						at, err := v.GetAccessToken(context.Background(), id, minValidity)
						if err == nil && at.ExpiresAt.Sub(e.Clock.Now()) < minValidity {
							err = errors.New("token with too little validity")
						}
						if err != nil {
							mu.Lock()
							failures = append(failures, err)
							mu.Unlock()
						}
					}()
				}
				inner.Wait()
			}()
		}
		wg.Wait()
		if len(failures) > 0 {
			t.Fatalf("%d callers failed, first: %v", len(failures), failures[0])
		}
		st := e.Emu.Stats()
		if st.Refreshes != needed || st.StalePresentations != 0 || st.ChainsRevoked != 0 {
			t.Fatalf("refreshes=%d (needed %d) stale=%d revoked=%d", st.Refreshes, needed, st.StalePresentations, st.ChainsRevoked)
		}
	})
}

func itoa(i int) string {
	const digits = "0123456789"
	if i == 0 {
		return "0"
	}
	var b []byte
	for ; i > 0; i /= 10 {
		b = append([]byte{digits[i%10]}, b...)
	}
	return string(b)
}

func vaultCode(t *testing.T, err error) vault.Code {
	t.Helper()
	var ve *vault.Error
	if !errors.As(err, &ve) {
		t.Fatalf("error %v is not a *vault.Error", err)
	}
	return ve.Code
}

// Acceptance c: a dead token costs one upstream call, then nothing more.
func TestDeadTokenMovesToNeedsReauth(t *testing.T) {
	dialects(t, func(t *testing.T, dialect models.Dialect) {
		e := newEnv(t, dialect)
		v := e.vault(vault.Config{})
		id := e.connect(v, "dead@example.com")
		e.Emu.ExpireChainOf(e.storedRefreshToken(id))
		e.Clock.Advance(testkit.SessionTimeout)
		e.Emu.ResetStats()

		_, err := v.GetAccessToken(context.Background(), id, time.Minute)
		var ve *vault.Error
		if !errors.As(err, &ve) || ve.Code != vault.CodeReauthRequired || ve.Reason == "" {
			t.Fatalf("err = %v, want reauth_required with a reason", err)
		}
		if calls := e.Emu.Stats().TokenCalls; calls != 1 {
			t.Fatalf("upstream calls = %d, want 1", calls)
		}
		c := e.conn(id)
		if c.Status != models.StatusNeedsReauth || c.ReauthReason == "" {
			t.Fatalf("status %q reason %q", c.Status, c.ReauthReason)
		}
		for _, force := range []bool{false, true} {
			_, err := v.Access(context.Background(), id, vault.Request{Force: force, Cause: vault.CauseWarm})
			if vaultCode(t, err) != vault.CodeReauthRequired {
				t.Fatalf("later call: %v", err)
			}
		}
		// A second process knows too, from the row alone.
		if _, err := e.vault(vault.Config{}).GetAccessToken(context.Background(), id, 0); vaultCode(t, err) != vault.CodeReauthRequired {
			t.Fatalf("other vault: %v", err)
		}
		st := e.Emu.Stats()
		if st.TokenCalls != 1 || st.CallsAfterDead != 0 {
			t.Fatalf("calls=%d callsAfterDead=%d, want 1/0", st.TokenCalls, st.CallsAfterDead)
		}
		kinds := eventKinds(e.events(id))
		if kinds[len(kinds)-1] != models.EventNeedsReauth {
			t.Fatalf("events %v", kinds)
		}
	})
}

// Acceptance d: 503 and timeouts leave the connection active, record the
// failure, respect the backoff, and the next success clears it.
func TestTransientFailuresBackOff(t *testing.T) {
	dialects(t, func(t *testing.T, dialect models.Dialect) {
		e := newEnv(t, dialect)
		v := e.vault(vault.Config{BackoffBase: time.Minute, UpstreamTimeout: 2 * time.Second})
		id := e.connect(v, "flaky@example.com")
		e.Clock.Advance(testkit.SessionTimeout)
		e.Emu.ResetStats()

		e.Emu.FailNext(1, 503)
		_, err := v.GetAccessToken(context.Background(), id, time.Minute)
		var ve *vault.Error
		if !errors.As(err, &ve) || ve.Code != vault.CodeUpstreamUnavailable || ve.RetryAfter <= 0 {
			t.Fatalf("err = %v, want upstream_unavailable with Retry-After", err)
		}
		c := e.conn(id)
		if c.Status != models.StatusActive || c.ConsecutiveFailures != 1 || c.LastErrorCode == "" || c.NextAttemptAt == nil {
			t.Fatalf("after 503: status=%s failures=%d code=%q next=%v", c.Status, c.ConsecutiveFailures, c.LastErrorCode, c.NextAttemptAt)
		}
		// Inside the backoff: no upstream call.
		_, err = v.GetAccessToken(context.Background(), id, time.Minute)
		if vaultCode(t, err) != vault.CodeUpstreamUnavailable || e.Emu.Stats().TokenCalls != 1 {
			t.Fatalf("backoff not respected: err=%v calls=%d", err, e.Emu.Stats().TokenCalls)
		}

		// A timeout: the emulator holds the request longer than our client
		// waits, then the client gives up.
		e.Clock.Set(c.NextAttemptAt.Add(time.Second))
		e.Emu.SetLatency(func() time.Duration { return 3 * time.Second })
		_, err = v.GetAccessToken(context.Background(), id, time.Minute)
		if vaultCode(t, err) != vault.CodeUpstreamUnavailable {
			t.Fatalf("timeout: %v", err)
		}
		e.Emu.SetLatency(nil)
		c = e.conn(id)
		if c.Status != models.StatusActive || c.ConsecutiveFailures != 2 {
			t.Fatalf("after timeout: status=%s failures=%d", c.Status, c.ConsecutiveFailures)
		}
		if c.NextAttemptAt.Sub(e.Clock.Now()) < time.Minute {
			t.Fatalf("second backoff %v is not longer than the first", c.NextAttemptAt.Sub(e.Clock.Now()))
		}

		e.Clock.Set(c.NextAttemptAt.Add(time.Second))
		at, err := v.GetAccessToken(context.Background(), id, time.Minute)
		if err != nil || !at.Refreshed {
			t.Fatalf("recovery: %v", err)
		}
		c = e.conn(id)
		if c.ConsecutiveFailures != 0 || c.NextAttemptAt != nil || c.LastErrorCode != "" {
			t.Fatalf("success did not clear the failure: %+v", c)
		}
		st := e.Emu.Stats()
		if st.StalePresentations != 0 || st.ChainsRevoked != 0 {
			t.Fatalf("stale=%d revoked=%d", st.StalePresentations, st.ChainsRevoked)
		}
	})
}

// Acceptance e: IP rejection and bad client credentials are configuration
// errors, never dead tokens.
func TestConfigurationErrorsKeepConnectionActive(t *testing.T) {
	dialects(t, func(t *testing.T, dialect models.Dialect) {
		e := newEnv(t, dialect)
		v := e.vault(vault.Config{})
		id := e.connect(v, "config@example.com")
		e.Clock.Advance(testkit.SessionTimeout)

		e.Emu.SetAllowedIPs([]string{"203.0.113.7/32"})
		_, err := v.Access(context.Background(), id, vault.Request{Cause: vault.CauseWarm, Force: true, IgnoreBackoff: true})
		if vaultCode(t, err) != vault.CodeUpstreamConfig {
			t.Fatalf("IP rejection: %v", err)
		}
		e.Emu.SetAllowedIPs(nil)
		if c := e.conn(id); c.Status != models.StatusActive || c.LastErrorCode != "invalid_grant" {
			t.Fatalf("after IP rejection: status=%s code=%s", c.Status, c.LastErrorCode)
		}

		bad := e.SFClient()
		bad.ClientSecret = "wrong"
		badVault := vault.New(e.dbs[0], e.Ring, bad, e.Clock, e.Log, vault.Config{})
		_, err = badVault.Access(context.Background(), id, vault.Request{Cause: vault.CauseWarm, Force: true, IgnoreBackoff: true})
		if vaultCode(t, err) != vault.CodeUpstreamConfig {
			t.Fatalf("bad credentials: %v", err)
		}
		c := e.conn(id)
		if c.Status != models.StatusActive {
			t.Fatalf("status %s after configuration errors", c.Status)
		}
		if !e.Emu.ChainAlive(e.storedRefreshToken(id)) {
			t.Fatal("configuration errors damaged the chain")
		}
		at, err := v.Access(context.Background(), id, vault.Request{Cause: vault.CauseAdmin, Force: true, IgnoreBackoff: true})
		if err != nil || !at.Refreshed {
			t.Fatalf("refresh after fixing the configuration: %v", err)
		}
		kinds := eventKinds(e.events(id))
		if n, r := count(kinds, models.EventConfigError), count(kinds, models.EventRestricted); n != 1 || r != 1 {
			t.Fatalf("%d config_error and %d restricted events, want 1 each: %v", n, r, kinds)
		}
	})
}

// Acceptance f: the commit after a successful rotation fails; the result is
// stored on retry and no stale token is ever presented.
func TestCommitFailureAfterRotationIsRetried(t *testing.T) {
	dialects(t, func(t *testing.T, dialect models.Dialect) {
		e := newEnv(t, dialect)
		v := e.vault(vault.Config{})
		other := v
		if dialect == models.Postgres {
			other = e.vault(vault.Config{LockTimeout: 2 * time.Second})
		}
		id := e.connect(v, "commit@example.com")
		e.Clock.Advance(testkit.SessionTimeout)
		e.Emu.ResetStats()
		claimed := e.conn(id).LastRefreshedAt

		otherDone := make(chan error, 1)
		v.SetBeforeCommit(func(attempt int, tx *models.Tx) error {
			switch attempt {
			case 0:
				if dialect == models.Postgres {
					// A real failure: our own connection dies under the
					// transaction that holds the row lock.
					_ = tx.Exec("SELECT pg_terminate_backend(pg_backend_pid())")
				}
				// Another worker wants the connection while the result is
				// unsaved; it must not present the old token.
				go func() {
					// As the warmer asks: refresh unless someone refreshed
					// since it claimed the connection.
					_, err := other.Access(context.Background(), id, vault.Request{Cause: vault.CauseWarm, Force: true, UnlessRefreshedAfter: claimed})
					otherDone <- err
				}()
				return errors.New("injected commit failure")
			case 1:
				if dialect == models.Postgres {
					// Let the other worker find the row or time out first.
					if err := <-otherDone; vaultCode(t, err) != vault.CodeUpstreamUnavailable {
						t.Errorf("other worker during the failure: %v", err)
					}
				}
			}
			return nil
		})
		at, err := v.GetAccessToken(context.Background(), id, time.Minute)
		if err != nil || !at.Refreshed {
			t.Fatalf("refresh with a failed first commit: %v", err)
		}
		if dialect == models.SQLite {
			if err := <-otherDone; err != nil {
				// On SQLite the other caller queues on the in-process lock
				// and finds the stored result afterwards.
				t.Fatalf("other caller: %v", err)
			}
		}
		v.SetBeforeCommit(nil)
		stored := e.storedRefreshToken(id)
		if !e.Emu.ChainAlive(stored) {
			t.Fatal("the stored refresh token is not the live one")
		}
		kinds := eventKinds(e.events(id))
		if !contains(kinds, models.EventCommitRetried) {
			t.Fatalf("no commit_retried event: %v", kinds)
		}
		// And it keeps working afterwards.
		e.Clock.Advance(testkit.SessionTimeout)
		if _, err := v.Access(context.Background(), id, vault.Request{Cause: vault.CauseWarm, Force: true}); err != nil {
			t.Fatal(err)
		}
		st := e.Emu.Stats()
		if st.Refreshes != 2 || st.StalePresentations != 0 || st.ChainsRevoked != 0 {
			t.Fatalf("refreshes=%d stale=%d revoked=%d", st.Refreshes, st.StalePresentations, st.ChainsRevoked)
		}
	})
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Herds of rejected-token reports collapse too, and a report of a token that
// is no longer the stored one costs nothing.
func TestRejectedTokenReportsCollapse(t *testing.T) {
	e := newEnv(t, models.SQLite)
	v := e.vault(vault.Config{})
	id := e.connect(v, "rejected@example.com")
	cur, err := v.GetAccessToken(context.Background(), id, 0)
	if err != nil {
		t.Fatal(err)
	}
	e.Emu.ResetStats()
	var wg sync.WaitGroup
	got := make(chan string, 100)
	for range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			at, err := v.Access(context.Background(), id, vault.Request{RejectedToken: cur.Token})
			if err != nil {
				t.Error(err)
				return
			}
			got <- at.Token
		}()
	}
	wg.Wait()
	close(got)
	for tok := range got {
		if tok == cur.Token {
			t.Fatal("a caller got the rejected token back")
		}
	}
	if n := e.Emu.Stats().Refreshes; n != 1 {
		t.Fatalf("refreshes = %d, want 1", n)
	}
}

// Stale-while-revalidate: pulls of a token past 80% of its life that still
// has the requested validity are answered at once with it, and exactly one
// background refresh follows.
func TestStaleWhileRevalidate(t *testing.T) {
	dialects(t, func(t *testing.T, dialect models.Dialect) {
		e := newEnv(t, dialect)
		v := e.vault(vault.Config{})
		id := e.connect(v, "swr@example.com")
		cur, err := v.GetAccessToken(context.Background(), id, 0)
		if err != nil {
			t.Fatal(err)
		}
		e.Clock.Advance(testkit.SessionTimeout * 85 / 100)
		e.Emu.ResetStats()
		// The emulator is slow: answers that waited for it would show.
		e.Emu.SetLatency(func() time.Duration { return 300 * time.Millisecond })
		var wg sync.WaitGroup
		got := make(chan *vault.AccessToken, 50)
		for range 50 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				at, err := v.GetAccessToken(context.Background(), id, 10*time.Minute)
				if err != nil {
					t.Error(err)
					return
				}
				got <- at
			}()
		}
		wg.Wait()
		close(got)
		for at := range got {
			if at.Token != cur.Token || at.Refreshed {
				t.Fatal("a pull waited for a refresh instead of getting the current token")
			}
		}
		if err := v.Wait(context.Background()); err != nil {
			t.Fatal(err)
		}
		if n := e.Emu.Stats().Refreshes; n != 1 {
			t.Fatalf("background refreshes = %d, want 1", n)
		}
		at, err := v.GetAccessToken(context.Background(), id, 10*time.Minute)
		if err != nil || at.Token == cur.Token {
			t.Fatalf("after revalidation: %v, same token %v", err, at != nil && at.Token == cur.Token)
		}
	})
}

// The announcer (the webhook outbox) sees the events of connects and
// refresh results, with their row IDs, from inside the transactions that
// store them: a delivery it adds commits or rolls back with its event.
func TestEventsAreAnnouncedInTheStoringTransaction(t *testing.T) {
	e := newEnv(t, models.SQLite)
	db := e.openDB()
	var seen []string
	db.SetAnnouncer(func(evs []models.Event) ([]models.WebhookDelivery, error) {
		var out []models.WebhookDelivery
		for _, ev := range evs {
			if ev.ID == 0 {
				t.Errorf("event %s announced without its row ID", ev.Kind)
			}
			seen = append(seen, ev.Kind)
			out = append(out, models.WebhookDelivery{EventID: fmt.Sprintf("evt_%d", ev.ID), EventType: ev.Kind,
				EndpointURL: "https://example.com/hook", Payload: "{}", CreatedAt: ev.CreatedAt, NextAttemptAt: ev.CreatedAt})
		}
		return out, nil
	})
	v := e.vaultOn(db, vault.Config{})
	id := e.connect(v, "hooks@example.com")
	e.Emu.ExpireChainOf(e.storedRefreshToken(id))
	e.Clock.Advance(testkit.SessionTimeout)
	if _, err := v.GetAccessToken(context.Background(), id, time.Minute); vaultCode(t, err) != vault.CodeReauthRequired {
		t.Fatal(err)
	}
	if !contains(seen, models.EventConnected) || !contains(seen, models.EventNeedsReauth) {
		t.Fatalf("the announcer saw %v", seen)
	}
	var deliveries, events int64
	rawdb.Gorm(db).Model(&models.WebhookDelivery{}).Count(&deliveries)
	rawdb.Gorm(db).Model(&models.Event{}).Count(&events)
	if deliveries != events {
		t.Fatalf("%d deliveries for %d events", deliveries, events)
	}
}

// Two first-time connects of one Salesforce user that race (two devices
// finishing sign-in at once, on different replicas): both succeed, on one
// connection, the later ones as re-authorizations that hand back the token
// they replaced so it can be revoked.
func TestConcurrentFirstConnectsShareOneConnection(t *testing.T) {
	backends(t, func(t *testing.T, b testkit.Backend) {
		e := newEnvOn(t, b)
		const racers = 4
		vaults := make([]*vault.Vault, racers)
		for i := range vaults {
			vaults[i] = e.vault(vault.Config{})
		}
		for round := range 5 {
			user := fmt.Sprintf("racer%d@example.com", round)
			toks := make([]*salesforce.Token, racers)
			for i := range toks {
				tok, err := testkit.Authorize(e.EmuURL, e.SFClient(), user)
				if err != nil {
					t.Fatal(err)
				}
				toks[i] = tok
			}
			results := make([]*vault.Connected, racers)
			errs := make([]error, racers)
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i := range racers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					results[i], errs[i] = vaults[i].Connect(context.Background(), e.EmuURL, toks[i].OrgID+"/"+toks[i].UserID, toks[i], "")
				}()
			}
			close(start)
			wg.Wait()
			for i := range racers {
				if errs[i] != nil {
					t.Fatalf("round %d: connect %d: %v", round, i, errs[i])
				}
				if results[i].Connection.ID != results[0].Connection.ID {
					t.Fatalf("round %d: two connections for one user: %s and %s", round, results[0].Connection.ID, results[i].Connection.ID)
				}
			}
			id := results[0].Connection.ID
			stored := e.storedRefreshToken(id)
			// Every token but the stored one was replaced by a later
			// connect, and the vault revoked it (five approvals per user).
			for _, tok := range toks {
				if alive := e.Emu.ChainAlive(tok.RefreshToken); alive != (tok.RefreshToken == stored) {
					t.Fatalf("round %d: a refresh token is alive=%v, stored=%v", round, alive, tok.RefreshToken == stored)
				}
			}
			kinds := eventKinds(e.events(id))
			if n := countKind(kinds, models.EventConnected); n != 1 || countKind(kinds, models.EventReauthorized) != racers-1 {
				t.Fatalf("round %d: events %v, want 1 connected and %d reauthorized", round, kinds, racers-1)
			}
		}
	})
}

func countKind(kinds []string, kind string) int {
	n := 0
	for _, k := range kinds {
		if k == kind {
			n++
		}
	}
	return n
}

func count(kinds []string, kind string) int {
	n := 0
	for _, k := range kinds {
		if k == kind {
			n++
		}
	}
	return n
}
