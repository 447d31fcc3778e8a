package emulator

import (
	"context"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"
	"time"
)

// waitLost polls until n lost rotations are recorded.
func waitLost(t *testing.T, h *harness, n int) []LostRotation {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		lost := h.emu.LostRotations()
		if len(lost) >= n {
			return lost
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d lost rotations recorded, want %d", len(lost), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// postGivingUp presents rt with a client that gives up after d.
func postGivingUp(t *testing.T, h *harness, rt string, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, h.base+"/services/oauth2/token", strings.NewReader(refreshForm(rt).Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if resp, err := h.client.Do(req); err == nil {
		resp.Body.Close()
		t.Fatal("got a response, want the client to give up")
	}
}

func checkLost(t *testing.T, got LostRotation, user, presented, issued, why string) {
	t.Helper()
	if got.Presented != presented || got.Issued != issued || got.Why != why || got.UserID != user ||
		got.Username != defaultUsername || got.At.IsZero() || got.Delivered {
		t.Fatalf("lost rotation %+v, want user %s why %s presented/issued matching", got, user, why)
	}
}

func TestDeliveredRotationIsNotLost(t *testing.T) {
	h := newHarness(t)
	rt1 := h.login().str("refresh_token")
	rt2 := h.mustRefresh(rt1).str("refresh_token")
	deadline := time.Now().Add(5 * time.Second)
	for {
		rots := h.emu.Rotations()
		if len(rots) == 1 && rots[0].Delivered {
			if rots[0].Presented != rt1 || rots[0].Issued != rt2 || rots[0].Local == "" || rots[0].AnsweredAt.IsZero() {
				t.Fatalf("rotation %+v", rots[0])
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("rotations %+v", rots)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if lost, st := h.emu.LostRotations(), h.emu.Stats(); len(lost) != 0 || st.LostRotations != 0 {
		t.Fatalf("lost %+v, stats %+v", lost, st)
	}
}

func TestDropsAreRecordedAsLost(t *testing.T) {
	h := newHarness(t)
	login := h.login()
	org, user := userOf(t, login.str("id"))
	rt1 := login.str("refresh_token")

	h.emu.DropAfterRotateNext(1)
	if resp, err := h.client.PostForm(h.base+"/services/oauth2/token", refreshForm(rt1)); err == nil {
		resp.Body.Close()
		t.Fatal("got a response, want a dropped connection")
	}
	rt2, _ := h.emu.CurrentRefreshToken(org, user)
	checkLost(t, waitLost(t, h, 1)[0], user, rt1, rt2, LostDropped)

	h.emu.SetRand(rand.New(rand.NewPCG(1, 2)))
	h.emu.SetDropRate(1)
	if resp, err := h.client.PostForm(h.base+"/services/oauth2/token", refreshForm(rt2)); err == nil {
		resp.Body.Close()
		t.Fatal("got a response at drop rate 1")
	}
	rt3, _ := h.emu.CurrentRefreshToken(org, user)
	lost := waitLost(t, h, 2)
	checkLost(t, lost[1], user, rt2, rt3, LostDropped)
	if !h.emu.ChainAlive(rt3) {
		t.Fatal("a drop killed the chain")
	}

	h.emu.SetDropRate(0)
	h.mustRefresh(rt3)
	st := h.emu.Stats()
	if st.LostRotations != 2 || st.Refreshes != 3 || st.StalePresentations != 0 {
		t.Fatalf("stats %+v", st)
	}
	if n := len(h.emu.LostRotations()); n != 2 {
		t.Fatalf("%d lost rotations after a delivered one, want 2", n)
	}
}

func TestDropRateIsAFraction(t *testing.T) {
	h := newHarness(t)
	login := h.login()
	_, user := userOf(t, login.str("id"))
	rt := login.str("refresh_token")
	h.emu.SetRand(rand.New(rand.NewPCG(7, 7)))
	h.emu.SetDropRate(0.5)
	for i := 0; i < 40; i++ {
		if resp, err := h.client.PostForm(h.base+"/services/oauth2/token", refreshForm(rt)); err == nil {
			resp.Body.Close()
		}
		rt, _ = h.emu.CurrentRefreshToken(h.emu.OrgID(), user)
	}
	st := h.emu.Stats()
	if st.Refreshes != 40 || st.LostRotations < 8 || st.LostRotations > 32 || st.StalePresentations != 0 {
		t.Fatalf("stats %+v, want about half of 40 refreshes lost", st)
	}
}

func TestClientGoneDuringAnswerLatencyIsRecorded(t *testing.T) {
	h := newHarness(t)
	login := h.login()
	org, user := userOf(t, login.str("id"))
	rt1 := login.str("refresh_token")

	h.emu.SetAnswerLatency(func() time.Duration { return time.Minute })
	postGivingUp(t, h, rt1, 100*time.Millisecond)
	lost := waitLost(t, h, 1)
	rt2, ok := h.emu.CurrentRefreshToken(org, user)
	if !ok || rt2 == rt1 {
		t.Fatal("the rotation did not stand after the client went away")
	}
	checkLost(t, lost[0], user, rt1, rt2, LostClientGone)
	if st := h.emu.Stats(); st.Refreshes != 1 || st.LostRotations != 1 {
		t.Fatalf("stats %+v", st)
	}

	// A short answer latency delivers.
	h.emu.SetAnswerLatency(func() time.Duration { return 10 * time.Millisecond })
	h.mustRefresh(rt2)
	if n := len(h.emu.LostRotations()); n != 1 {
		t.Fatalf("%d lost, want 1", n)
	}
}

func TestClientGoneWhileHeldIsRecorded(t *testing.T) {
	h := newHarness(t)
	login := h.login()
	org, user := userOf(t, login.str("id"))
	rt1 := login.str("refresh_token")

	release := h.emu.HoldRefreshes()
	defer release()
	postGivingUp(t, h, rt1, 200*time.Millisecond)
	lost := waitLost(t, h, 1)
	rt2, _ := h.emu.CurrentRefreshToken(org, user)
	checkLost(t, lost[0], user, rt1, rt2, LostClientGone)
}

func TestIntrospectionIsNotAUse(t *testing.T) {
	h := newHarness(t)
	login := h.login()
	rt1 := login.str("refresh_token")
	rt2 := h.mustRefresh(rt1).str("refresh_token")
	calls := h.emu.Stats().TokenCalls

	// The rotated token: inactive, and looking at it harms nobody.
	if a := h.post("/services/oauth2/introspect", introspectForm(rt1)); a.status != http.StatusOK || len(a.body) != 1 || a.body["active"] != false {
		t.Fatalf("rotated token introspection %d %v, want only active:false", a.status, a.body)
	}
	if !h.emu.ChainAlive(rt2) {
		t.Fatal("introspecting a rotated token killed the chain")
	}
	// The current one: active.
	if a := h.post("/services/oauth2/introspect", introspectForm(rt2)); a.body["active"] != true || a.str("token_type") != "refresh_token" {
		t.Fatalf("current token introspection %v", a.body)
	}
	st := h.emu.Stats()
	if st.TokenCalls != calls || st.StalePresentations != 0 || st.ChainsRevoked != 0 || st.MaxConcurrentPresentations != 1 ||
		st.Introspections != 2 || st.RefreshIntrospections != 2 {
		t.Fatalf("stats %+v", st)
	}
	// Introspection does not restart the idle TTL.
	h.clock.Advance(defaultIdleTTL - time.Minute)
	if a := h.post("/services/oauth2/introspect", introspectForm(rt2)); a.body["active"] != true {
		t.Fatalf("introspection just before idle expiry %v", a.body)
	}
	h.clock.Advance(2 * time.Minute)
	if a := h.post("/services/oauth2/introspect", introspectForm(rt2)); a.body["active"] != false {
		t.Fatalf("introspection after idle expiry %v (an introspection must not restart the TTL)", a.body)
	}
	wantError(t, h.refresh(rt2), http.StatusBadRequest, "invalid_grant", "token validity expired")
	// Introspecting an access token is not a refresh introspection.
	h2 := newHarness(t)
	at := h2.login().str("access_token")
	h2.post("/services/oauth2/introspect", introspectForm(at))
	if st := h2.emu.Stats(); st.Introspections != 1 || st.RefreshIntrospections != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestIntrospectionFailure(t *testing.T) {
	h := newHarness(t)
	rt := h.login().str("refresh_token")
	h.emu.SetIntrospectionFailure(0, 2)
	for i := 0; i < 2; i++ {
		wantError(t, h.post("/services/oauth2/introspect", introspectForm(rt)), http.StatusServiceUnavailable, "service_unavailable", "")
	}
	if a := h.post("/services/oauth2/introspect", introspectForm(rt)); a.body["active"] != true {
		t.Fatalf("after the failures: %v", a.body)
	}
	h.emu.SetIntrospectionFailure(http.StatusUnauthorized, 1)
	wantError(t, h.post("/services/oauth2/introspect", introspectForm(rt)), http.StatusUnauthorized, "invalid_client", "")
	st := h.emu.Stats()
	if st.InjectedIntrospectionFailures != 3 || st.Introspections != 1 || st.InjectedFailures != 0 {
		t.Fatalf("stats %+v", st)
	}
	if !h.emu.ChainAlive(rt) {
		t.Fatal("chain died")
	}
}
