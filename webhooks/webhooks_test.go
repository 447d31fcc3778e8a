package webhooks_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/tokenwarm/tokenwarm/internal/rawdb"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenwarm/tokenwarm/clock"
	"github.com/tokenwarm/tokenwarm/internal/pgtest"
	"github.com/tokenwarm/tokenwarm/models"
	"github.com/tokenwarm/tokenwarm/webhooks"
)

const secret = "whsec_test"

var start = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// store is where a test's data lives; open gives a fresh pool on it, as a
// restarted server would get.
type store struct {
	url, dir string
}

func newStore(t *testing.T, dialect models.Dialect) store {
	s := store{dir: t.TempDir()}
	if dialect == models.Postgres {
		s.url = pgtest.NewDatabase(t)
	}
	db := s.open(t)
	if _, err := db.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s store) open(t *testing.T) *models.DB {
	t.Helper()
	db, err := models.Open(s.url, s.dir, models.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func eachDialect(t *testing.T, f func(t *testing.T, s store)) {
	for _, d := range []models.Dialect{models.SQLite, models.Postgres} {
		t.Run(string(d), func(t *testing.T) { f(t, newStore(t, d)) })
	}
}

// receiver is a webhook endpoint that verifies every request and fails the
// first failFirst of them with a 500.
type receiver struct {
	t         *testing.T
	clock     clock.Clock
	failFirst int
	srv       *httptest.Server

	mu     sync.Mutex
	calls  int
	raw    []string       // event IDs of every request, failed ones too
	seen   map[string]int // event IDs of accepted requests
	bodies []map[string]any
}

func newReceiver(t *testing.T, clk clock.Clock, failFirst int) *receiver {
	r := &receiver{t: t, clock: clk, failFirst: failFirst, seen: map[string]int{}}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) endpoint() webhooks.Endpoint {
	return webhooks.Endpoint{URL: r.srv.URL + "/hook", Secret: secret}
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	if err := webhooks.Verify(secret, req.Header.Get(webhooks.HeaderSignature), body, r.clock.Now(), 0); err != nil {
		r.t.Errorf("receiver: %v", err)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var p map[string]any
	if err := json.Unmarshal(body, &p); err != nil {
		r.t.Errorf("receiver: body: %v", err)
	}
	id := req.Header.Get(webhooks.HeaderEventID)
	if p["id"] != id || p["type"] != req.Header.Get(webhooks.HeaderEventType) || req.Header.Get("Content-Type") != "application/json" {
		r.t.Errorf("receiver: headers %v do not match body %s", req.Header, body)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	r.raw = append(r.raw, id)
	if r.calls <= r.failFirst {
		http.Error(w, "not now", http.StatusInternalServerError)
		return
	}
	r.seen[id]++
	r.bodies = append(r.bodies, p)
}

func (r *receiver) counts() (raw []string, seen map[string]int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	seen = make(map[string]int, len(r.seen))
	for k, v := range r.seen {
		seen[k] = v
	}
	return append([]string(nil), r.raw...), seen
}

func enqueue(t *testing.T, db *models.DB, eps []webhooks.Endpoint, ev webhooks.Event, now time.Time) {
	t.Helper()
	rows, err := webhooks.Deliveries(eps, ev, now)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.EnqueueDeliveries(context.Background(), rows); err != nil {
		t.Fatal(err)
	}
}

type outbox struct {
	EventID     string
	Attempts    int
	DeliveredAt *time.Time
	LastError   string
}

func row(t *testing.T, db *models.DB, eventID string) outbox {
	t.Helper()
	var o outbox
	if err := rawdb.Gorm(db).Table("webhook_outbox").Where("event_id = ?", eventID).Take(&o).Error; err != nil {
		t.Fatal(err)
	}
	return o
}

func deliver(t *testing.T, d *webhooks.Dispatcher, wantDelivered, wantFailed int) {
	t.Helper()
	ok, bad, err := d.DeliverDue(context.Background())
	if err != nil || ok != wantDelivered || bad != wantFailed {
		t.Fatalf("DeliverDue = %d delivered, %d failed, %v; want %d, %d", ok, bad, err, wantDelivered, wantFailed)
	}
}

func TestRetriesUntilDelivered(t *testing.T) {
	eachDialect(t, func(t *testing.T, s store) {
		db := s.open(t)
		clk := clock.NewFake(start)
		rcv := newReceiver(t, clk, 3)
		eps := []webhooks.Endpoint{rcv.endpoint()}
		ev := webhooks.Event{ID: webhooks.NewEventID(), Type: webhooks.TypeNeedsReauth, ConnectionID: "conn-1",
			Data: map[string]any{"org_id": "00D1", "user_id": "0051", "reason": "invalid_grant"}}
		enqueue(t, db, eps, ev, clk.Now())
		enqueue(t, db, eps, ev, clk.Now()) // same ID: no second row

		d := webhooks.NewDispatcher(db, eps, clk, nil, nil, webhooks.Config{})
		for range 3 {
			deliver(t, d, 0, 1)
			deliver(t, d, 0, 0) // backing off
			clk.Advance(d.Config().MaxBackoff)
		}
		deliver(t, d, 1, 0)
		clk.Advance(24 * time.Hour)
		deliver(t, d, 0, 0)

		o := row(t, db, ev.ID)
		if o.Attempts != 4 || o.DeliveredAt == nil || o.LastError != "" {
			t.Fatalf("row = %+v, want 4 attempts, delivered", o)
		}
		raw, seen := rcv.counts()
		if len(raw) != 4 || seen[ev.ID] != 1 {
			t.Fatalf("receiver saw %v raw, %v accepted", raw, seen)
		}
		data := rcv.bodies[0]["data"].(map[string]any)
		if data["connection_id"] != "conn-1" || data["reason"] != "invalid_grant" || rcv.bodies[0]["created_at"] != "2026-03-01T12:00:00Z" {
			t.Fatalf("payload = %v", rcv.bodies[0])
		}
	})
}

func TestGivesUpAfterMaxAttempts(t *testing.T) {
	eachDialect(t, func(t *testing.T, s store) {
		db := s.open(t)
		clk := clock.NewFake(start)
		rcv := newReceiver(t, clk, 1000)
		eps := []webhooks.Endpoint{rcv.endpoint()}
		ev := webhooks.Event{ID: "evt_giveup", Type: webhooks.TypeRevoked, ConnectionID: "c"}
		enqueue(t, db, eps, ev, clk.Now())
		d := webhooks.NewDispatcher(db, eps, clk, nil, nil, webhooks.Config{MaxAttempts: 3})
		for range 3 {
			deliver(t, d, 0, 1)
			clk.Advance(d.Config().MaxBackoff)
		}
		clk.Advance(365 * 24 * time.Hour)
		deliver(t, d, 0, 0)
		o := row(t, db, ev.ID)
		if o.Attempts != 3 || o.DeliveredAt != nil || !strings.HasPrefix(o.LastError, "gave up after 3 attempts: HTTP 500") {
			t.Fatalf("row = %+v", o)
		}
	})
}

func TestRemovedEndpointIsMarkedFailed(t *testing.T) {
	eachDialect(t, func(t *testing.T, s store) {
		db := s.open(t)
		clk := clock.NewFake(start)
		gone := webhooks.Endpoint{URL: "https://gone.example/hook?key=k", Secret: "x"}
		enqueue(t, db, []webhooks.Endpoint{gone}, webhooks.Event{ID: "evt_gone", Type: webhooks.TypeConfigError}, clk.Now())
		d := webhooks.NewDispatcher(db, nil, clk, nil, nil, webhooks.Config{})
		deliver(t, d, 0, 1)
		clk.Advance(365 * 24 * time.Hour)
		deliver(t, d, 0, 0)
		if o := row(t, db, "evt_gone"); o.DeliveredAt != nil || o.LastError != "endpoint no longer configured" {
			t.Fatalf("row = %+v", o)
		}
	})
}

// Killing the server between attempts loses nothing: the outbox is in the
// database, not in the process. A server killed after the receiver
// accepted but before it recorded that sends the event again, under the
// same ID, once its lease lapses.
func TestRestartLosesNothing(t *testing.T) {
	eachDialect(t, func(t *testing.T, s store) {
		clk := clock.NewFake(start)
		rcv := newReceiver(t, clk, 1)
		eps := []webhooks.Endpoint{rcv.endpoint()}

		dbA := s.open(t)
		failed := webhooks.Event{ID: "evt_failed_once", Type: webhooks.TypeIdleExpiryRisk, ConnectionID: "c1",
			Data: map[string]any{"idle_budget_seconds": 3600}}
		enqueue(t, dbA, eps, failed, clk.Now())
		a := webhooks.NewDispatcher(dbA, eps, clk, nil, nil, webhooks.Config{})
		deliver(t, a, 0, 1)

		// The second event reaches the receiver, which accepts it, but the
		// server dies before recording the delivery.
		clk.Advance(time.Second)
		accepted := webhooks.Event{ID: "evt_unrecorded", Type: webhooks.TypeReauthorized, ConnectionID: "c2"}
		enqueue(t, dbA, eps, accepted, clk.Now())
		crash := &http.Client{Transport: roundTripFunc(func(req *http.Request) (*http.Response, error) {
			resp, err := http.DefaultTransport.RoundTrip(req)
			dbA.Close()
			return resp, err
		})}
		crashing := webhooks.NewDispatcher(dbA, eps, clk, crash, nil, webhooks.Config{})
		if _, _, err := crashing.DeliverDue(context.Background()); err == nil {
			t.Fatal("DeliverDue on a closed database succeeded")
		}

		dbB := s.open(t)
		b := webhooks.NewDispatcher(dbB, eps, clk, nil, nil, webhooks.Config{})
		clk.Advance(b.Config().Lease + b.Config().MaxBackoff)
		deliver(t, b, 2, 0)

		raw, seen := rcv.counts()
		if len(seen) != 2 || seen[failed.ID] != 1 || seen[accepted.ID] != 2 {
			t.Fatalf("accepted %v, want %s once and %s twice", seen, failed.ID, accepted.ID)
		}
		if len(raw) != 4 {
			t.Fatalf("raw requests %v, want 4", raw)
		}
		for _, id := range []string{failed.ID, accepted.ID} {
			if o := row(t, dbB, id); o.DeliveredAt == nil {
				t.Fatalf("%s not recorded delivered: %+v", id, o)
			}
		}
	})
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// Two replicas dispatching the same outbox send each event once: claims
// skip rows another replica holds, and the lease keeps them away after.
func TestConcurrentDispatchersDeliverEachEventOnce(t *testing.T) {
	eachDialect(t, func(t *testing.T, s store) {
		clk := clock.NewFake(start)
		rcv := newReceiver(t, clk, 0)
		eps := []webhooks.Endpoint{rcv.endpoint()}
		db := s.open(t)
		const n = 100
		for i := range n {
			enqueue(t, db, eps, webhooks.Event{ID: fmt.Sprintf("evt_%03d", i), Type: webhooks.TypeNeedsReauth}, clk.Now())
		}
		cfg := webhooks.Config{BatchSize: 7, Concurrency: 3}
		var wg sync.WaitGroup
		total := make(chan int, 2)
		for range 2 {
			d := webhooks.NewDispatcher(s.open(t), eps, clk, nil, nil, cfg)
			wg.Go(func() {
				ok, bad, err := d.DeliverDue(context.Background())
				if err != nil || bad != 0 {
					t.Errorf("DeliverDue: %d failed, %v", bad, err)
				}
				total <- ok
			})
		}
		wg.Wait()
		close(total)
		sum := 0
		for ok := range total {
			sum += ok
		}
		raw, seen := rcv.counts()
		if sum != n || len(seen) != n || len(raw) != n {
			t.Fatalf("delivered %d, receiver saw %d distinct of %d requests; want %d each", sum, len(seen), len(raw), n)
		}
		for id, c := range seen {
			if c != 1 {
				t.Errorf("%s received %d times", id, c)
			}
		}
	})
}

func TestVerify(t *testing.T) {
	body := []byte(`{"id":"evt_1","type":"connection.revoked","created_at":"2026-03-01T12:00:00Z","data":{}}`)
	good := webhooks.Sign(secret, start, body)
	cases := []struct {
		name   string
		secret string
		header string
		body   []byte
		now    time.Time
		want   error
	}{
		{"valid", secret, good, body, start, nil},
		{"valid within tolerance", secret, good, body, start.Add(4 * time.Minute), nil},
		{"rotated secret among several", secret, webhooks.Sign("old", start, body) + "," + strings.Split(good, ",")[1], body, start, nil},
		{"unknown scheme ignored", secret, good + ",v0=abc", body, start, nil},
		{"wrong secret", "other", good, body, start, webhooks.ErrSignatureMismatch},
		{"tampered body", secret, good, []byte(strings.Replace(string(body), "revoked", "reauthorized", 1)), start, webhooks.ErrSignatureMismatch},
		{"stale", secret, good, body, start.Add(6 * time.Minute), webhooks.ErrStaleSignature},
		{"from the future", secret, good, body, start.Add(-6 * time.Minute), webhooks.ErrStaleSignature},
		{"empty", secret, "", body, start, webhooks.ErrMalformedSignature},
		{"no timestamp", secret, strings.Split(good, ",")[1], body, start, webhooks.ErrMalformedSignature},
		{"no signature", secret, strings.Split(good, ",")[0], body, start, webhooks.ErrMalformedSignature},
		{"bad hex", secret, strings.Split(good, ",")[0] + ",v1=zz", body, start, webhooks.ErrMalformedSignature},
		{"bad timestamp", secret, "t=soon," + strings.Split(good, ",")[1], body, start, webhooks.ErrMalformedSignature},
		{"garbage", secret, "sha256=abcdef", body, start, webhooks.ErrMalformedSignature},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := webhooks.Verify(c.secret, c.header, c.body, c.now, 0); !errors.Is(err, c.want) {
				t.Fatalf("Verify = %v, want %v", err, c.want)
			}
		})
	}
}

func TestNoTokenInWebhooks(t *testing.T) {
	s := newStore(t, models.SQLite)
	db := s.open(t)
	eps := []webhooks.Endpoint{{URL: "https://example.com/hook", Secret: "s"}}
	for _, key := range []string{"refresh_token", "AccessToken", "token", "client_secret", "Authorization"} {
		ev := webhooks.Event{Type: webhooks.TypeRevoked, Data: map[string]any{"reason": "x", key: "00D!abc"}}
		if _, err := webhooks.Deliveries(eps, ev, start); err == nil {
			t.Errorf("Deliveries accepted data field %q", key)
		}
	}
	nested := webhooks.Event{Type: webhooks.TypeRevoked, Data: map[string]any{"detail": map[string]any{"id_token": "x"}}}
	if _, err := webhooks.Deliveries(eps, nested, start); err == nil {
		t.Error("Deliveries accepted a nested token field")
	}
	if _, err := webhooks.Deliveries(eps, webhooks.Event{Type: "connection.exploded"}, start); err == nil {
		t.Error("Deliveries accepted an unknown event type")
	}
	var n int64
	rawdb.Gorm(db).Table("webhook_outbox").Count(&n)
	if n != 0 {
		t.Fatalf("refused events left %d rows", n)
	}

	for _, typ := range []string{webhooks.TypeNeedsReauth, webhooks.TypeReauthorized, webhooks.TypeRevoked, webhooks.TypeIdleExpiryRisk, webhooks.TypeConfigError} {
		enqueue(t, db, eps, webhooks.Event{Type: typ, ConnectionID: "c", Data: map[string]any{
			"org_id": "00D", "user_id": "005", "reason": "invalid_grant", "idle_budget_seconds": 60, "error_code": "E"}}, start)
	}
	var payloads []string
	rawdb.Gorm(db).Table("webhook_outbox").Pluck("payload", &payloads)
	if len(payloads) != 5 {
		t.Fatalf("%d rows, want 5", len(payloads))
	}
	for _, p := range payloads {
		var v any
		if err := json.Unmarshal([]byte(p), &v); err != nil {
			t.Fatal(err)
		}
		walkKeys(v, func(k string) {
			if strings.Contains(strings.ToLower(k), "token") {
				t.Errorf("payload %s has field %q", p, k)
			}
		})
	}
}

func walkKeys(v any, f func(string)) {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			f(k)
			walkKeys(x, f)
		}
	case []any:
		for _, x := range v {
			walkKeys(x, f)
		}
	}
}

func TestPassDelivers(t *testing.T) {
	s := newStore(t, models.SQLite)
	db := s.open(t)
	clk := clock.NewFake(start)
	rcv := newReceiver(t, clk, 0)
	eps := []webhooks.Endpoint{rcv.endpoint()}
	enqueue(t, db, eps, webhooks.Event{ID: "evt_run", Type: webhooks.TypeConfigError, Data: map[string]any{"error_code": "invalid_client"}}, clk.Now())
	webhooks.NewDispatcher(db, eps, clk, nil, nil, webhooks.Config{}).Pass(context.Background())
	if _, seen := rcv.counts(); seen["evt_run"] != 1 {
		t.Fatalf("a pass delivered %v", seen)
	}
}

func TestPurgeKeepsWhatIsStillBeingDelivered(t *testing.T) {
	eachDialect(t, func(t *testing.T, s store) {
		db := s.open(t)
		clk := clock.NewFake(start)
		ok := newReceiver(t, clk, 0)
		down := newReceiver(t, clk, 1000)
		d := webhooks.NewDispatcher(db, []webhooks.Endpoint{ok.endpoint(), down.endpoint()}, clk, nil, nil, webhooks.Config{MaxAttempts: 2})
		enqueue(t, db, []webhooks.Endpoint{ok.endpoint()}, webhooks.Event{ID: "evt_delivered", Type: webhooks.TypeRevoked}, clk.Now())
		enqueue(t, db, []webhooks.Endpoint{down.endpoint()}, webhooks.Event{ID: "evt_given_up", Type: webhooks.TypeRevoked}, clk.Now())
		deliver(t, d, 1, 1)
		clk.Advance(d.Config().MaxBackoff)
		deliver(t, d, 0, 1) // the second and last attempt
		enqueue(t, db, []webhooks.Endpoint{down.endpoint()}, webhooks.Event{ID: "evt_retrying", Type: webhooks.TypeRevoked}, clk.Now())
		d2 := webhooks.NewDispatcher(db, []webhooks.Endpoint{down.endpoint()}, clk, nil, nil, webhooks.Config{MaxAttempts: 100})
		deliver(t, d2, 0, 1)

		clk.Advance(40 * 24 * time.Hour)
		n, err := db.PurgeWebhookDeliveries(context.Background(), clk.Now().Add(-30*24*time.Hour))
		if err != nil || n != 2 {
			t.Fatalf("purged %d, %v; want the delivered and the given-up row", n, err)
		}
		var left []string
		rawdb.Gorm(db).Table("webhook_outbox").Pluck("event_id", &left)
		if len(left) != 1 || left[0] != "evt_retrying" {
			t.Fatalf("left %v, want the row still being retried", left)
		}
		// Nothing is purged before its time.
		enqueue(t, db, []webhooks.Endpoint{ok.endpoint()}, webhooks.Event{ID: "evt_recent", Type: webhooks.TypeRevoked}, clk.Now())
		both := webhooks.NewDispatcher(db, []webhooks.Endpoint{ok.endpoint(), down.endpoint()}, clk, nil, nil, webhooks.Config{MaxAttempts: 100})
		deliver(t, both, 1, 1) // the recent one, and the retrying one once more
		if n, err := db.PurgeWebhookDeliveries(context.Background(), clk.Now().Add(-30*24*time.Hour)); err != nil || n != 0 {
			t.Fatalf("purged %d recent rows, %v", n, err)
		}
	})
}
