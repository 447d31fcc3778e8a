package webhooks_test

import (
	"bytes"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/tokenwarm/tokenwarm/clock"
	"github.com/tokenwarm/tokenwarm/internal/testkit"
	"github.com/tokenwarm/tokenwarm/models"
	"github.com/tokenwarm/tokenwarm/webhooks"
)

// These tests verify deliveries with the Standard Webhooks specification's
// own Go library (github.com/standard-webhooks/standard-webhooks/libraries/go),
// never with tokenwarm's code: what a receiver would run. The library
// checks timestamps against the real clock, so the dispatchers' clocks
// start at the real time.

// capture is an endpoint that records every request and fails the first
// failFirst of them with a 500.
type capture struct {
	srv       *httptest.Server
	failFirst int

	mu   sync.Mutex
	reqs []captured
}

type captured struct {
	header http.Header
	body   []byte
}

func newCapture(t *testing.T, failFirst int) *capture {
	c := &capture{failFirst: failFirst}
	c.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		c.mu.Lock()
		defer c.mu.Unlock()
		c.reqs = append(c.reqs, captured{header: r.Header.Clone(), body: body})
		if len(c.reqs) <= c.failFirst {
			http.Error(w, "not now", http.StatusInternalServerError)
		}
	}))
	t.Cleanup(c.srv.Close)
	return c
}

func (c *capture) all() []captured {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]captured(nil), c.reqs...)
}

// deliverOne enqueues one event for ep and delivers it with a dispatcher
// on clk (one failed attempt per failure the receiver is set up for).
func deliverOne(t *testing.T, db *models.DB, ep webhooks.Endpoint, clk *clock.Fake, id string, cfg webhooks.Config, attempts int) {
	t.Helper()
	conn := "22222222-2222-2222-2222-222222222222"
	enqueue(t, db, []webhooks.Endpoint{ep}, webhooks.Event{ID: id, Type: webhooks.TypeNeedsReauth, ConnectionID: conn,
		Data: map[string]any{"error_code": "invalid_grant", "reason": "expired access/refresh token", "cause": "warm"}}, clk.Now())
	cfg.BaseBackoff, cfg.MaxBackoff = time.Second, time.Second
	d := webhooks.NewDispatcher(db, []webhooks.Endpoint{ep}, clk, nil, nil, cfg)
	for i := 1; i <= attempts; i++ {
		want := 0
		if i == attempts {
			want = 1
		}
		deliver(t, d, want, 1-want)
		clk.Advance(2 * time.Second)
	}
}

// verify runs the library's verification of a captured delivery with secret.
func verify(t *testing.T, secret string, c captured) error {
	t.Helper()
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatalf("the library refuses the secret: %v", err)
	}
	return wh.Verify(c.body, c.header)
}

// Acceptance e: real deliveries, through a secret rotation, verify with the
// Standard Webhooks library; a tampered body, a stale timestamp and a
// rotated-out secret are refused by it.
func TestStandardWebhooksLibraryVerifiesDeliveries(t *testing.T) {
	eachDialect(t, func(t *testing.T, s store) {
		db := s.open(t)
		retired, current, next := webhooks.NewSecret(), webhooks.NewSecret(), webhooks.NewSecret()
		clk := clock.NewFake(time.Now())

		// A rotation from current to next is under way: both sign.
		rcv := newCapture(t, 1)
		rotating := webhooks.Endpoint{URL: rcv.srv.URL + "/hook", Secret: next, PreviousSecrets: []string{current}}
		deliverOne(t, db, rotating, clk, "evt_rotating", webhooks.Config{}, 2)
		reqs := rcv.all()
		if len(reqs) != 2 {
			t.Fatalf("%d requests, want a failed one and its retry", len(reqs))
		}
		for i, c := range reqs {
			if got := c.header.Get("webhook-id"); got != "evt_rotating" {
				t.Errorf("attempt %d: webhook-id %q, want the event ID in every attempt", i+1, got)
			}
			if got := len(strings.Fields(c.header.Get("webhook-signature"))); got != 2 {
				t.Errorf("attempt %d: %d signatures during the rotation, want 2", i+1, got)
			}
			for _, sec := range []string{current, next} {
				if err := verify(t, sec, c); err != nil {
					t.Errorf("attempt %d: the library refuses a delivery signed during the rotation: %v", i+1, err)
				}
			}
			if err := verify(t, retired, c); !errors.Is(err, standardwebhooks.ErrNoMatchingSignature) {
				t.Errorf("attempt %d: a secret never configured: %v, want no matching signature", i+1, err)
			}
		}
		t1, _ := strconv.ParseInt(reqs[0].header.Get("webhook-timestamp"), 10, 64)
		t2, _ := strconv.ParseInt(reqs[1].header.Get("webhook-timestamp"), 10, 64)
		if t2 <= t1 {
			t.Errorf("webhook-timestamp %d then %d: want each attempt's own time", t1, t2)
		}

		// A tampered body is refused, whatever the change.
		for _, tamper := range []func([]byte) []byte{
			func(b []byte) []byte { return bytes.Replace(b, []byte("invalid_grant"), []byte("invalid_grunt"), 1) },
			func(b []byte) []byte { return append(b, ' ') },
		} {
			c := reqs[1]
			c.body = tamper(bytes.Clone(c.body))
			if err := verify(t, next, c); !errors.Is(err, standardwebhooks.ErrNoMatchingSignature) {
				t.Errorf("tampered body: %v, want no matching signature", err)
			}
		}
		// A signature moved to another event ID is refused.
		moved := captured{header: reqs[1].header.Clone(), body: reqs[1].body}
		moved.header.Set("webhook-id", "evt_other")
		if err := verify(t, next, moved); !errors.Is(err, standardwebhooks.ErrNoMatchingSignature) {
			t.Errorf("signature under another webhook-id: %v, want no matching signature", err)
		}

		// The rotation is over: only next signs, current is rotated out.
		done := newCapture(t, 0)
		rotated := webhooks.Endpoint{URL: done.srv.URL + "/hook", Secret: next}
		deliverOne(t, db, rotated, clk, "evt_rotated", webhooks.Config{}, 1)
		c := done.all()[0]
		if err := verify(t, next, c); err != nil {
			t.Errorf("the library refuses the current secret: %v", err)
		}
		if err := verify(t, current, c); !errors.Is(err, standardwebhooks.ErrNoMatchingSignature) {
			t.Errorf("rotated-out secret: %v, want no matching signature", err)
		}

		// A delivery signed six minutes ago (a replay, or a sender whose
		// clock lags) is refused as stale, although its signature is good.
		old := newCapture(t, 0)
		lagging := clock.NewFake(time.Now().Add(-6 * time.Minute))
		deliverOne(t, db, webhooks.Endpoint{URL: old.srv.URL + "/hook", Secret: next}, lagging, "evt_stale", webhooks.Config{}, 1)
		c = old.all()[0]
		if err := verify(t, next, c); !errors.Is(err, standardwebhooks.ErrMessageTooOld) {
			t.Errorf("stale timestamp: %v, want message too old", err)
		}
		wh, _ := standardwebhooks.NewWebhook(next)
		if err := wh.VerifyIgnoringTimestamp(c.body, c.header); err != nil {
			t.Errorf("the stale delivery's signature itself: %v", err)
		}
	})
}

// A secret of the earlier scheme keeps working: its bytes are the HMAC
// key, a receiver gives the library "whsec_" + base64 of them, and the
// legacy Tokenwarm-Signature still verifies with the secret as it is,
// until the legacy header is turned off.
func TestEarlierSecretsAreStandardWebhooksKeys(t *testing.T) {
	db := testkit.MigratedDB(t, models.SQLite)
	clk := clock.NewFake(time.Now())
	for _, tc := range []struct {
		name, secret, receiver string
	}{
		{"raw", "my-old-webhook-secret-0123", "whsec_" + base64.StdEncoding.EncodeToString([]byte("my-old-webhook-secret-0123"))},
		{"whsec_ and base64", "whsec_c2VjcmV0LWtleS1vZi0yNC1ieXRlcyE=", "whsec_c2VjcmV0LWtleS1vZi0yNC1ieXRlcyE="},
		{"whsec_ but not base64", "whsec_not base64 at all!", "whsec_" + base64.StdEncoding.EncodeToString([]byte("whsec_not base64 at all!"))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := webhooks.ReceiverSecret(tc.secret); got != tc.receiver {
				t.Fatalf("ReceiverSecret = %q, want %q", got, tc.receiver)
			}
			for _, legacyOff := range []bool{false, true} {
				rcv := newCapture(t, 0)
				ep := webhooks.Endpoint{URL: rcv.srv.URL + "/hook", Secret: tc.secret}
				deliverOne(t, db, ep, clk, webhooks.NewEventID(), webhooks.Config{NoLegacySignature: legacyOff}, 1)
				c := rcv.all()[0]
				if err := verify(t, tc.receiver, c); err != nil {
					t.Errorf("the library with %q: %v", tc.receiver, err)
				}
				raw, _ := standardwebhooks.NewWebhookRaw(webhooks.SigningKey(tc.secret))
				if err := raw.Verify(c.body, c.header); err != nil {
					t.Errorf("the library with the raw key: %v", err)
				}
				legacy := c.header.Get(webhooks.HeaderSignature)
				switch {
				case legacyOff && legacy != "":
					t.Errorf("legacy header sent although turned off: %q", legacy)
				case !legacyOff:
					if err := webhooks.Verify(tc.secret, legacy, c.body, clk.Now(), 0); err != nil {
						t.Errorf("legacy header with the secret as configured: %v", err)
					}
					if ts := c.header.Get("webhook-timestamp"); !strings.HasPrefix(legacy, "t="+ts+",") {
						t.Errorf("legacy t in %q differs from webhook-timestamp %s", legacy, ts)
					}
				}
			}
		})
	}
}
