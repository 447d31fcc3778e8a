package webhooks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/tokenwarm/tokenwarm/clock"
	"github.com/tokenwarm/tokenwarm/internal/text"
	"github.com/tokenwarm/tokenwarm/models"
)

// Config tunes a Dispatcher. Zero values take the defaults.
type Config struct {
	// BatchSize is how many due rows one claim takes. Default 50.
	BatchSize int
	// Concurrency bounds deliveries in flight. Default 4.
	Concurrency int
	// MaxAttempts: after this many failed attempts a row is given up on
	// (kept undelivered with its last error, never retried). Default 20.
	MaxAttempts int
	// BaseBackoff is the wait after the first failure; it doubles with each
	// further failure up to MaxBackoff, and the actual wait is drawn between
	// half of that and all of it. Defaults 10s and 1h.
	BaseBackoff time.Duration
	MaxBackoff  time.Duration
	// Timeout bounds one delivery. Default 10s.
	Timeout time.Duration
	// Lease is how far a claim pushes next_attempt_at out so that other
	// replicas leave the row alone while this one delivers it. It must
	// exceed the time a whole batch can take. Default Timeout times the
	// number of rounds a batch needs at Concurrency, plus a minute.
	Lease time.Duration
	// NoLegacySignature stops sending the legacy Tokenwarm-Signature header
	// next to the Standard Webhooks headers (sent by default during the
	// transition).
	NoLegacySignature bool
	// Observe, when set, is told the outcome of each delivery attempt (for
	// metrics): OutcomeDelivered, OutcomeFailed (to be retried),
	// OutcomeGaveUp, or OutcomeDropped (its endpoint is no longer
	// configured).
	Observe func(outcome string)
}

// Outcomes of a delivery attempt, told to Config.Observe.
const (
	OutcomeDelivered = "delivered"
	OutcomeFailed    = "failed"
	OutcomeGaveUp    = "gave_up"
	OutcomeDropped   = "dropped"
)

func (c *Config) defaults() {
	def := func(d *time.Duration, val time.Duration) {
		if *d <= 0 {
			*d = val
		}
	}
	if c.BatchSize <= 0 {
		c.BatchSize = 50
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 4
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = 20
	}
	def(&c.BaseBackoff, 10*time.Second)
	def(&c.MaxBackoff, time.Hour)
	def(&c.Timeout, 10*time.Second)
	rounds := (c.BatchSize + c.Concurrency - 1) / c.Concurrency
	def(&c.Lease, time.Duration(rounds)*c.Timeout+time.Minute)
}

// Outbox is what a Dispatcher needs of the database; *models.DB
// implements it.
type Outbox interface {
	// ClaimDueDeliveries takes up to n rows due by dueBy and leases them
	// until leaseUntil; rows another dispatcher holds are skipped.
	ClaimDueDeliveries(ctx context.Context, n int, dueBy, leaseUntil time.Time) ([]models.WebhookDelivery, error)
	MarkDelivered(ctx context.Context, id int64, at time.Time, attempts int) error
	// RescheduleDelivery and MarkDeliveryFailed apply only while lease
	// (the claim's leaseUntil) still holds.
	RescheduleDelivery(ctx context.Context, id int64, lease, next time.Time, attempts int, lastError string) error
	MarkDeliveryFailed(ctx context.Context, id int64, lease time.Time, attempts int, lastError string) error
}

// Dispatcher delivers the outbox. It is safe for concurrent use, and any
// number of dispatchers (in one process or many) may share a database.
type Dispatcher struct {
	db      Outbox
	signers map[string]signer
	clock   clock.Clock
	client  *http.Client
	log     *slog.Logger
	cfg     Config
}

// NewDispatcher returns a dispatcher delivering to endpoints. Rows for a URL
// not among endpoints are marked failed. clk nil means the system clock,
// client nil a client that does not follow redirects, log nil discards logs.
func NewDispatcher(db Outbox, endpoints []Endpoint, clk clock.Clock, client *http.Client, log *slog.Logger, cfg Config) *Dispatcher {
	cfg.defaults()
	if clk == nil {
		clk = clock.System{}
	}
	if client == nil {
		// A redirect is not an answer from the receiver: treat it as a
		// failure rather than POST the event somewhere else.
		client = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	signers := make(map[string]signer, len(endpoints))
	for _, ep := range endpoints {
		signers[ep.URL] = newSigner(ep)
	}
	return &Dispatcher{db: db, signers: signers, clock: clk, client: client, log: log.With("component", "webhooks"), cfg: cfg}
}

// Config returns the effective configuration.
func (d *Dispatcher) Config() Config { return d.cfg }

// Pass delivers what is due once and logs the outcome; the server runs it
// on a schedule (every second).
func (d *Dispatcher) Pass(ctx context.Context) {
	delivered, failed, err := d.DeliverDue(ctx)
	switch {
	case err != nil && ctx.Err() == nil:
		d.log.Error("webhook pass failed", "err", err, "delivered", delivered, "failed", failed)
	case delivered > 0 || failed > 0:
		d.log.Info("webhook pass", "delivered", delivered, "failed", failed)
	}
}

// DeliverDue attempts every undelivered row that was due when it started,
// in claimed batches, and returns how many were delivered and how many
// attempts failed (rescheduled, given up, or endpoint gone).
func (d *Dispatcher) DeliverDue(ctx context.Context) (delivered, failed int, err error) {
	start := d.clock.Now().UTC()
	for ctx.Err() == nil {
		rows, lease, err := d.claim(ctx, start)
		if err != nil {
			return delivered, failed, fmt.Errorf("webhooks: claim: %w", err)
		}
		if len(rows) == 0 {
			return delivered, failed, nil
		}
		ok, bad, err := d.deliverBatch(ctx, rows, lease)
		delivered += ok
		failed += bad
		if err != nil {
			return delivered, failed, err
		}
	}
	return delivered, failed, ctx.Err()
}

// claim takes up to BatchSize rows due at start and pushes their
// next_attempt_at out to a lease, so other dispatchers leave them alone.
func (d *Dispatcher) claim(ctx context.Context, start time.Time) ([]models.WebhookDelivery, time.Time, error) {
	// Truncated to what Postgres stores, so the lease can be recognised
	// later by equality.
	lease := d.clock.Now().UTC().Add(d.cfg.Lease).Truncate(time.Microsecond)
	rows, err := d.db.ClaimDueDeliveries(ctx, d.cfg.BatchSize, start, lease)
	return rows, lease, err
}

// deliverBatch delivers claimed rows with bounded concurrency and records
// each outcome. It returns the first error recording an outcome.
func (d *Dispatcher) deliverBatch(ctx context.Context, rows []models.WebhookDelivery, lease time.Time) (delivered, failed int, err error) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, d.cfg.Concurrency)
	for _, r := range rows {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			ok, rerr := d.deliverOne(ctx, r, lease)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case rerr != nil:
				if err == nil {
					err = rerr
				}
			case ok:
				delivered++
			default:
				failed++
			}
		})
	}
	wg.Wait()
	return delivered, failed, err
}

// deliverOne makes one attempt at r and records the outcome. It reports
// whether r was delivered; err is about recording, not delivering.
func (d *Dispatcher) deliverOne(ctx context.Context, r models.WebhookDelivery, lease time.Time) (bool, error) {
	// Record outcomes even if ctx ends meanwhile: a delivery that went
	// through must not be sent again for want of a write.
	rec, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	log := d.log.With("event_id", r.EventID, "event_type", r.EventType, "endpoint", safeURL(r.EndpointURL))

	sg, ok := d.signers[r.EndpointURL]
	if !ok {
		d.observe(OutcomeDropped)
		log.Warn("webhook endpoint no longer configured; event dropped")
		return false, d.db.MarkDeliveryFailed(rec, r.ID, lease, r.Attempts, "endpoint no longer configured")
	}
	sendErr := d.send(ctx, r, sg)
	now := d.clock.Now().UTC().Truncate(time.Microsecond)
	attempts := r.Attempts + 1
	if sendErr == nil {
		d.observe(OutcomeDelivered)
		log.Debug("webhook delivered", "attempts", attempts)
		return true, d.db.MarkDelivered(rec, r.ID, now, attempts)
	}
	if ctx.Err() != nil {
		// Shutting down: not the receiver's fault, so no attempt is
		// counted; hand the row back for any dispatcher to take.
		return false, d.db.RescheduleDelivery(rec, r.ID, lease, r.NextAttemptAt, r.Attempts, r.LastError)
	}
	msg := text.Truncate(sendErr.Error(), 300)
	// Only while we hold the lease: if it lapsed, another dispatcher owns
	// the row and its outcome wins.
	if attempts >= d.cfg.MaxAttempts {
		msg = fmt.Sprintf("gave up after %d attempts: %s", attempts, msg)
		d.observe(OutcomeGaveUp)
		log.Error("webhook given up", "attempts", attempts, "err", msg)
		return false, d.db.MarkDeliveryFailed(rec, r.ID, lease, attempts, msg)
	}
	next := now.Add(d.backoff(attempts))
	d.observe(OutcomeFailed)
	log.Warn("webhook delivery failed; will retry", "attempts", attempts, "err", msg, "next_attempt_at", next)
	return false, d.db.RescheduleDelivery(rec, r.ID, lease, next, attempts, msg)
}

func (d *Dispatcher) observe(outcome string) {
	if d.cfg.Observe != nil {
		d.cfg.Observe(outcome)
	}
}

// signer signs the deliveries to one endpoint with each of its secrets.
type signer struct {
	secrets []string // legacy Tokenwarm-Signature: the literal secrets
	keys    [][]byte // webhook-signature: their Standard Webhooks keys
}

func newSigner(ep Endpoint) signer {
	var s signer
	for _, sec := range append([]string{ep.Secret}, ep.PreviousSecrets...) {
		if sec == "" {
			continue
		}
		s.secrets = append(s.secrets, sec)
		s.keys = append(s.keys, SigningKey(sec))
	}
	return s
}

// send POSTs r, signed by sg; nil means a 2xx answer.
func (d *Dispatcher) send(ctx context.Context, r models.WebhookDelivery, sg signer) error {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.Timeout)
	defer cancel()
	body := []byte(r.Payload)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.EndpointURL, bytes.NewReader(body))
	if err != nil {
		return errors.New("invalid endpoint URL")
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "tokenwarm-webhooks/1")
	req.Header.Set(HeaderEventID, r.EventID)
	req.Header.Set(HeaderEventType, r.EventType)
	// Standard Webhooks: the ID is the event's, the same in every attempt;
	// the timestamp is this attempt's.
	now := d.clock.Now()
	req.Header.Set(HeaderWebhookID, r.EventID)
	req.Header.Set(HeaderWebhookTimestamp, strconv.FormatInt(now.Unix(), 10))
	if len(sg.keys) > 0 {
		req.Header.Set(HeaderWebhookSignature, SignStandard(sg.keys, r.EventID, now, body))
	}
	if !d.cfg.NoLegacySignature && len(sg.secrets) > 0 {
		req.Header.Set(HeaderSignature, Sign(sg.secrets[0], now, body, sg.secrets[1:]...))
	}
	resp, err := d.client.Do(req)
	if err != nil {
		// The URL may carry a credential of the receiver's: keep it out of
		// logs and the table.
		var ue *url.Error
		if errors.As(err, &ue) {
			return ue.Err
		}
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return nil
}

// backoff is the wait after the given number of failed attempts:
// exponential, capped, with "equal jitter" so that rows failing together
// spread out.
func (d *Dispatcher) backoff(attempts int) time.Duration {
	b := d.cfg.BaseBackoff
	for i := 1; i < attempts && b < d.cfg.MaxBackoff; i++ {
		b *= 2
	}
	b = min(b, d.cfg.MaxBackoff)
	half := b / 2
	return half + rand.N(b-half+1)
}

// safeURL keeps the scheme and host of an endpoint URL for logs.
func safeURL(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "(invalid url)"
	}
	return p.Scheme + "://" + p.Host
}
