// Package vault holds Salesforce tokens sealed at rest and is the one path
// through which every refresh happens (docs/ARCHITECTURE.md, invariants
// I1-I5, I7).
//
// A refresh goes: one flight per connection in the process; the connection
// row locked across processes (SELECT ... FOR NO KEY UPDATE on Postgres, an
// in-process lock on embedded SQLite, which is single-process); a second
// look at the row once locked; if an earlier attempt's outcome is unknown,
// introspection of the stored token before anything is presented; an
// attempt marker committed (durably, compare-and-swap) before the token is
// presented; one call to Salesforce; the classified result and its events
// written in one transaction, fenced by the marker's lease and the row's
// rotation count; commit (retried within the lease if it fails); only then
// the caller gets a token.
package vault

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	mrand "math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/tokenwarm/tokenwarm/clock"
	"github.com/tokenwarm/tokenwarm/errs"
	"github.com/tokenwarm/tokenwarm/models"
	"github.com/tokenwarm/tokenwarm/salesforce"
	"github.com/tokenwarm/tokenwarm/seal"
)

// Refresher presents a refresh token to Salesforce, asks whether one is
// still live when the outcome of an earlier presentation is unknown
// (introspection, which is not a presentation), and revokes the tokens a
// re-authorization replaced; *salesforce.Client is one. Only the vault
// hands Salesforce refresh tokens to it.
type Refresher interface {
	Refresh(ctx context.Context, loginURL, refreshToken string) (*salesforce.Token, error)
	RefreshTokenActive(ctx context.Context, loginURL, refreshToken string) (bool, error)
	Revoke(ctx context.Context, loginURL, token string) error
}

// DefaultIdleTTL is Salesforce's default refresh-token idle expiry: a
// refresh token unused this long dies.
const DefaultIdleTTL = 30 * 24 * time.Hour

// Causes of a refresh, recorded on events and metrics.
const (
	CausePull  = "pull"
	CauseWarm  = "warm"
	CauseAdmin = "admin"
)

// Config tunes the refresh protocol. Zero values take the defaults.
type Config struct {
	// LockTimeout bounds the wait for another worker's refresh of the same
	// connection (Postgres lock_timeout). Default 30s.
	LockTimeout time.Duration
	// UpstreamTimeout bounds one Salesforce call; it must sit well inside
	// LockTimeout and IdleInTransactionTimeout. Default 15s.
	UpstreamTimeout time.Duration
	// IdleInTransactionTimeout makes Postgres drop a lock holder that stops
	// talking (a hung worker) instead of holding the row forever. Default:
	// what an introspection, the claim's budget and a presentation can
	// take, with a margin, and at least 60s.
	IdleInTransactionTimeout time.Duration
	// CommitRetryBudget is how long a failed commit after a refresh is
	// retried before giving up. Default 20s.
	CommitRetryBudget time.Duration
	// AttemptLease is how long an attempt marker keeps other workers from
	// touching the token, counted by the database's clock from the claim.
	// Its owner stops storing before it ends. Default UpstreamTimeout +
	// CommitRetryBudget + 5s.
	AttemptLease time.Duration
	// UnresolvedAlertAfter: a connection held back this long by an attempt
	// whose outcome introspection cannot settle raises an alert. Default 6h.
	UnresolvedAlertAfter time.Duration
	// RestrictedQuorum distinct connections answered "IP restricted or
	// invalid login hours" within RestrictedWindow make it an app-wide
	// configuration error. Defaults 3 and 10m.
	RestrictedQuorum int
	RestrictedWindow time.Duration
	// WarmInterval and WarmJitter set next_warm_at after each successful
	// refresh: interval ± jitter (a fraction). Defaults 72h, 0.15.
	WarmInterval time.Duration
	WarmJitter   float64
	// BackoffBase and BackoffMax shape the retry delay after a transient
	// failure (exponential, jittered). Defaults 30s and 1h.
	BackoffBase time.Duration
	BackoffMax  time.Duration
	// ConfigErrorBackoff is the delay after a configuration error. Default 5m.
	ConfigErrorBackoff time.Duration
	// MaxConcurrentRefreshes bounds refreshes in flight in this process. On
	// Postgres each holds two pool connections for a moment (the row lock and
	// the attempt marker), so keep it at most half the pool. Default 8.
	MaxConcurrentRefreshes int
	// RevalidateAfter is the fraction of an access token's life after which
	// a pull that can still be answered also starts a background refresh.
	// Default 0.8.
	RevalidateAfter float64
	// Observe, when set, is told of every refresh that reached Salesforce:
	// its cause, outcome class and upstream duration (for metrics).
	Observe func(cause, outcome string, upstream time.Duration)
	// Stored, when set, is told the kind of every event the refresh path
	// stored, once its transaction committed (for metrics).
	Stored func(kind string)
	// Worker names this replica on events. Default host-pid.
	Worker string
	// IdleTTL is the refresh tokens' idle expiry (an org admin may set
	// another than Salesforce's default). Default 30 days.
	IdleTTL time.Duration
	// SkipIdentity turns off learning who a grant belongs to (the user's
	// name, username and email, the org's name) at connect and
	// re-authorization (TOKENWARM_CAPTURE_IDENTITY=false).
	SkipIdentity bool
}

// claimSafe is the longest a claim of an attempt marker may take and still
// be followed by a presentation. The lease starts when the claim's row is
// built, before its commit is acknowledged, so a slow claim (a stalled
// synchronous standby) eats into it: what is left must hold a whole
// presentation and at least 5 s of storing.
func (c *Config) claimSafe() time.Duration {
	return max(time.Second, c.AttemptLease-c.UpstreamTimeout-5*time.Second)
}

// claimBudget bounds the wait for a claim: claimSafe, and never longer than
// a lock wait (behind a pooler, other replicas may hold every connection).
func (c *Config) claimBudget() time.Duration { return min(c.LockTimeout, c.claimSafe()) }

func (c *Config) defaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.LockTimeout, 30*time.Second)
	def(&c.UpstreamTimeout, 15*time.Second)
	def(&c.CommitRetryBudget, 20*time.Second)
	def(&c.AttemptLease, c.UpstreamTimeout+c.CommitRetryBudget+5*time.Second)
	// The row-lock transaction is idle from the lock to the store: an
	// introspection, the claim and the presentation at most.
	def(&c.IdleInTransactionTimeout, max(60*time.Second, 2*c.UpstreamTimeout+c.claimBudget()+10*time.Second))
	def(&c.UnresolvedAlertAfter, 6*time.Hour)
	def(&c.IdleTTL, DefaultIdleTTL)
	def(&c.RestrictedWindow, 10*time.Minute)
	if c.RestrictedQuorum <= 0 {
		c.RestrictedQuorum = 3
	}
	def(&c.WarmInterval, 72*time.Hour)
	def(&c.BackoffBase, 30*time.Second)
	def(&c.BackoffMax, time.Hour)
	def(&c.ConfigErrorBackoff, 5*time.Minute)
	if c.RevalidateAfter <= 0 || c.RevalidateAfter > 1 {
		c.RevalidateAfter = 0.8
	}
	if c.MaxConcurrentRefreshes <= 0 {
		c.MaxConcurrentRefreshes = 8
	}
	if c.WarmJitter <= 0 {
		c.WarmJitter = 0.15
	}
	if c.Worker == "" {
		host, _ := os.Hostname()
		c.Worker = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
}

// Store is where the vault keeps connections; *models.DB is one. Events
// the vault stores reach the webhook outbox in the same transaction
// (models.DB.SetAnnouncer).
type Store interface {
	Reads
	Locks
	// UpsertGrant stores a completed authorization by (org, user).
	UpsertGrant(ctx context.Context, g models.Grant) (stored, replaced *models.Connection, err error)
}

// Reads are the reads of a pull, and each org's idle TTL for the views.
type Reads interface {
	Connection(ctx context.Context, id string) (*models.Connection, error)
	ConnectionsOf(ctx context.Context, owner string) ([]models.Connection, error)
	IdleTTLs(ctx context.Context, def time.Duration) (models.IdleTTLs, error)
	// ConnectionForSession reads a device session and a connection in
	// one statement (a pull's one round trip).
	ConnectionForSession(ctx context.Context, sessionID, connectionID string) (*models.DeviceSession, *models.Connection, error)
}

// Locks are what the refresh protocol needs across workers.
type Locks interface {
	// LocksRows reports whether LockForRefresh excludes other processes
	// (Postgres); if not (embedded SQLite), the vault adds an in-process
	// lock.
	LocksRows() bool
	LockForRefresh(ctx context.Context, id string, lockTimeout, idleTimeout time.Duration) (*models.RefreshLock, error)
	ClaimAttempt(ctx context.Context, c *models.Connection, prior *models.Attempt, attemptID, worker string, lease time.Duration) error
	CountConnectionsWithEvent(ctx context.Context, kind string, since time.Time) (int64, error)
}

// Vault stores and refreshes Salesforce tokens.
type Vault struct {
	store Store
	ring  *seal.Ring
	sf    Refresher
	clock clock.Clock
	log   *slog.Logger
	cfg   Config

	// flights holds at most one refresh per connection in this process,
	// whatever its callers asked for (I5): only it takes a refresh slot.
	flights    singleflight.Group
	reads      singleflight.Group
	background sync.WaitGroup
	work       tracker
	slots      chan struct{}
	// stripes serialise refreshes of one connection on SQLite, where there
	// is no row lock; Postgres uses a row lock instead.
	stripes [256]sync.Mutex

	randMu sync.Mutex
	rand   *mrand.Rand

	pause atomic.Pointer[pauseHolder]
	hold  atomic.Pointer[holdHolder]

	// beforeCommit lets tests break the commit of a refresh result.
	beforeCommit func(attempt int, tx *models.Tx) error
	// afterLock lets tests act while the row lock is held.
	afterLock func(id string)
	// beforeRetry lets tests act between a failed store and its retry.
	beforeRetry func(attempt int)
}

// AppPause is the app-wide pause after Salesforce refuses tokenwarm's
// configuration (IP allowlist, client credentials): the warmer owns it.
type AppPause interface {
	// Paused reports whether refreshes are paused for the app.
	Paused() bool
	// ConfigError reports a configuration error seen outside the warmer,
	// e.g. by a mobile pull, so the app pauses and alerts once.
	ConfigError(ctx context.Context, err error)
}

type pauseHolder struct{ AppPause }

// SetPause connects the vault to the app-wide pause. While it is paused,
// mobile pulls that need a refresh get a configuration error without
// calling Salesforce; warm refreshes (the probe) and admin refreshes still
// call. A configuration error met by a pull or an admin refresh is reported
// to it.
func (v *Vault) SetPause(p AppPause) { v.pause.Store(&pauseHolder{p}) }

func (v *Vault) appPause() AppPause {
	if h := v.pause.Load(); h != nil {
		return h.AppPause
	}
	return nil
}

// New builds a vault over store. log may be nil.
func New(store Store, ring *seal.Ring, sf Refresher, clk clock.Clock, log *slog.Logger, cfg Config) *Vault {
	cfg.defaults()
	if clk == nil {
		clk = clock.System{}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var seed [32]byte
	_, _ = rand.Read(seed[:])
	return &Vault{store: store, ring: ring, sf: sf, clock: clk, log: log, cfg: cfg,
		slots: make(chan struct{}, cfg.MaxConcurrentRefreshes), rand: mrand.New(mrand.NewChaCha8(seed))}
}

// Config returns the effective configuration.
func (v *Vault) Config() Config { return v.cfg }

// AccessToken is a Salesforce access token handed to a caller.
type AccessToken struct {
	ConnectionID string
	Token        string
	InstanceURL  string
	IssuedAt     time.Time
	ExpiresAt    time.Time
	// Refreshed reports whether this call caused an upstream refresh.
	Refreshed bool
	// LastRefreshedAt is the connection's last successful refresh.
	LastRefreshedAt time.Time
}

// Request says what a refresh is for.
type Request struct {
	Cause string
	// MinValidity: a stored access token with at least this much life left
	// makes a refresh unnecessary.
	MinValidity time.Duration
	// RejectedToken is an access token an app saw Salesforce refuse: refresh
	// only if it is still the stored one.
	RejectedToken string
	// RejectedTokenSHA256 is the hex SHA-256 of such a token, for apps that
	// would rather not send the token itself.
	RejectedTokenSHA256 string
	// Force refreshes even if the stored access token is fresh (warm, admin).
	Force bool
	// UnlessRefreshedAfter, with Force, skips the refresh when someone
	// refreshed the connection after this time (the warmer passes the
	// last_refreshed_at it claimed). The result then carries no token if
	// the stored access token is no longer usable.
	UnlessRefreshedAfter time.Time
	// IgnoreBackoff lets an admin retry at once after a failure.
	IgnoreBackoff bool
	// Owner, when set, limits the request to that owner's connection:
	// another owner's is not found. It is checked in the same read the
	// herd shares.
	Owner string
	// Session, when set, is the device session the request comes with. It
	// is read in the same statement as the connection and judged by
	// SessionOK (package devices' rules), so a pull costs one round trip
	// and a revoked session stops working at once, on every replica.
	Session   string
	SessionOK func(owner string, revokedAt *time.Time) error
	// UnknownSession is the error for a session that does not exist.
	UnknownSession error
}

// GetAccessToken returns an access token with at least minValidity left,
// refreshing only when needed.
func (v *Vault) GetAccessToken(ctx context.Context, connectionID string, minValidity time.Duration) (*AccessToken, error) {
	return v.Access(ctx, connectionID, Request{Cause: CausePull, MinValidity: minValidity})
}

// Access returns a usable access token for the request, from storage when it
// satisfies it, else through the connection's one refresh flight, shared by
// every concurrent caller whatever each asked for.
func (v *Vault) Access(ctx context.Context, connectionID string, req Request) (*AccessToken, error) {
	if req.Cause == "" {
		req.Cause = CausePull
	}
	// A hash keys nothing and compares nothing until it is normalised.
	if req.RejectedToken != "" {
		req.RejectedTokenSHA256, req.RejectedToken = tokenHash(req.RejectedToken), ""
	}
	req.RejectedTokenSHA256 = strings.ToLower(strings.TrimSpace(req.RejectedTokenSHA256))
	if !req.Force {
		// A herd shares one read of the row, so it costs one database
		// connection, not a pool's worth.
		c, err := v.read(ctx, connectionID, req)
		if err != nil {
			return nil, err
		}
		if req.Owner != "" && c.Owner != req.Owner {
			return nil, newErr(CodeNotFound, "no such connection")
		}
		if err := statusError(c); err != nil {
			return nil, err
		}
		if at, ok := v.usable(c, req); ok {
			if req.Cause == CausePull && v.pastRevalidation(c) {
				v.revalidate(c)
			}
			return at, nil
		}
	}
	asked := v.clock.Now()
	var last *AccessToken
	// Round one joins whatever flight the connection has; a flight started
	// for someone else's needs that did not meet ours is followed by at
	// most one flight for ours. Each round refreshes at most once.
	for range 2 {
		at, err := v.flight(ctx, connectionID, req)
		if err != nil {
			return nil, err
		}
		if v.satisfies(at, req, asked) {
			return at, nil
		}
		last = at
	}
	if last.Token != "" && last.ExpiresAt.After(v.clock.Now()) {
		return last, nil
	}
	return nil, &Error{Code: CodeUpstreamUnavailable, Message: "the connection is being refreshed; retry", RetryAfter: time.Second}
}

// read is a pull's one read: the connection row, shared by the herd of
// callers of it (with the device session they come with, if any).
func (v *Vault) read(ctx context.Context, id string, req Request) (*models.Connection, error) {
	if req.Session == "" {
		res, err, _ := v.reads.Do(id, func() (any, error) { return v.load(context.WithoutCancel(ctx), id) })
		if err != nil {
			return nil, err
		}
		return res.(*models.Connection), nil
	}
	type pair struct {
		sess *models.DeviceSession
		conn *models.Connection
	}
	res, err, _ := v.reads.Do(id+"|"+req.Session, func() (any, error) {
		s, c, err := v.store.ConnectionForSession(context.WithoutCancel(ctx), req.Session, id)
		if err != nil {
			return nil, v.dbError(err)
		}
		return pair{s, c}, nil
	})
	if err != nil {
		return nil, err
	}
	p := res.(pair)
	switch {
	case p.sess == nil && req.UnknownSession != nil:
		return nil, req.UnknownSession
	case p.sess == nil:
		return nil, errs.E(errs.InvalidToken, "unknown session")
	case req.SessionOK != nil:
		if err := req.SessionOK(p.sess.Owner, p.sess.RevokedAt); err != nil {
			return nil, err
		}
	}
	if p.conn == nil || p.conn.Owner != p.sess.Owner {
		return nil, newErr(CodeNotFound, "no such connection")
	}
	return p.conn, nil
}

// flight runs or joins the connection's one refresh flight. The flight runs
// detached from any one caller: a caller that gives up must not abandon a
// refresh between Salesforce's answer and the commit.
func (v *Vault) flight(ctx context.Context, connectionID string, req Request) (*AccessToken, error) {
	flightCtx := context.WithoutCancel(ctx)
	ch := v.flights.DoChan(connectionID, func() (any, error) {
		return v.refresh(flightCtx, connectionID, req)
	})
	select {
	case res := <-ch:
		if res.Err != nil {
			return nil, res.Err
		}
		at := *res.Val.(*AccessToken)
		return &at, nil
	case <-ctx.Done():
		return nil, &Error{Code: CodeUpstreamUnavailable, Message: "gave up waiting for the refresh", RetryAfter: time.Second, Err: ctx.Err()}
	}
}

// satisfies reports whether a flight's result answers req, asked at asked.
// A token refreshed by the flight a caller waited for satisfies it whatever
// its min_validity: asking again could only refresh again.
func (v *Vault) satisfies(at *AccessToken, req Request, asked time.Time) bool {
	if at.Refreshed {
		return true
	}
	if req.Force {
		if !req.UnlessRefreshedAfter.IsZero() {
			return at.LastRefreshedAt.After(req.UnlessRefreshedAfter)
		}
		return !at.LastRefreshedAt.Before(asked)
	}
	if at.Token == "" || at.ExpiresAt.Sub(v.clock.Now()) < v.minValidity(at.IssuedAt, at.ExpiresAt, req.MinValidity) ||
		!at.ExpiresAt.After(v.clock.Now()) {
		return false
	}
	return req.RejectedTokenSHA256 == "" || subtle.ConstantTimeCompare([]byte(tokenHash(at.Token)), []byte(req.RejectedTokenSHA256)) != 1
}

// minValidity caps what a caller may demand at half the token's life: a
// fresh token always satisfies, so no min_validity can make every pull
// refresh.
func (v *Vault) minValidity(issued, expires time.Time, asked time.Duration) time.Duration {
	if life := expires.Sub(issued); !issued.IsZero() && life > 0 {
		return min(asked, life/2)
	}
	return asked
}

// pastRevalidation reports whether a stored access token has used up the
// part of its life after which a pull refreshes it in the background.
func (v *Vault) pastRevalidation(c *models.Connection) bool {
	if c.AccessTokenIssuedAt == nil || c.AccessTokenExpiresAt == nil {
		return false
	}
	life := c.AccessTokenExpiresAt.Sub(*c.AccessTokenIssuedAt)
	return life > 0 && v.clock.Now().Sub(*c.AccessTokenIssuedAt) >= time.Duration(float64(life)*v.cfg.RevalidateAfter)
}

// revalidate starts one background refresh of a connection whose token is
// still good but ageing (stale-while-revalidate): the caller is answered at
// once. Concurrent pulls share one; a refresh by anyone else since the row
// was read makes it a no-op.
func (v *Vault) revalidate(c *models.Connection) {
	req := Request{Cause: CausePull, Force: true, UnlessRefreshedAfter: c.LastRefreshedAt}
	id := c.ID
	v.background.Add(1)
	go func() {
		defer v.background.Done()
		_, err := v.flight(context.Background(), id, req)
		if err != nil {
			v.log.Info("background refresh did not complete", "connection_id", id, "code", ErrorCode(err))
		}
	}()
}

// Drain makes the vault start no new presentation of a refresh token:
// refreshes that have not presented yet answer "shutting down" (503, retry
// elsewhere), those that have run on until their outcome is stored.
func (v *Vault) Drain() { v.work.drain() }

// Wait blocks until every refresh that started (pull, warm, admin,
// background) has stored its outcome, or ctx ends. Shutdown calls Drain
// first, so that nothing new starts meanwhile.
func (v *Vault) Wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() { v.background.Wait(); <-v.work.idle(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// WorstCaseRefresh is the longest a refresh that has presented its token
// can take to store the outcome: what a graceful shutdown must wait for.
func (v *Vault) WorstCaseRefresh() time.Duration { return v.cfg.AttemptLease + v.cfg.UpstreamTimeout }

// tracker counts refreshes in progress and lets shutdown wait for them.
type tracker struct {
	mu      sync.Mutex
	n       int
	closing bool
	waiters []chan struct{} // closed once n == 0
}

func (t *tracker) enter() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closing {
		return false
	}
	t.n++
	return true
}

func (t *tracker) leave() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.n--
	if t.n == 0 {
		for _, ch := range t.waiters {
			close(ch)
		}
		t.waiters = nil
	}
}

func (t *tracker) drain() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closing = true
}

func (t *tracker) draining() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.closing
}

// idle returns a channel closed once no refresh is in progress.
func (t *tracker) idle() <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	ch := make(chan struct{})
	if t.n == 0 {
		close(ch)
		return ch
	}
	t.waiters = append(t.waiters, ch)
	return ch
}

// usable returns the stored access token when it satisfies req.
func (v *Vault) usable(c *models.Connection, req Request) (*AccessToken, bool) {
	if c.AccessTokenSealed == "" || c.AccessTokenExpiresAt == nil {
		return nil, false
	}
	var issued time.Time
	if c.AccessTokenIssuedAt != nil {
		issued = *c.AccessTokenIssuedAt
	}
	if c.AccessTokenExpiresAt.Sub(v.clock.Now()) < v.minValidity(issued, *c.AccessTokenExpiresAt, req.MinValidity) || !c.AccessTokenExpiresAt.After(v.clock.Now()) {
		return nil, false
	}
	tok, err := v.ring.Open(c.AccessTokenSealed, adAccess(c.ID))
	if err != nil {
		v.log.Error("stored access token does not open; will refresh", "connection_id", c.ID, "err", err)
		return nil, false
	}
	if req.RejectedToken != "" && tok == req.RejectedToken {
		return nil, false
	}
	if req.RejectedTokenSHA256 != "" && subtle.ConstantTimeCompare([]byte(tokenHash(tok)), []byte(req.RejectedTokenSHA256)) == 1 {
		return nil, false
	}
	return v.accessToken(c, tok, false), true
}

func (v *Vault) accessToken(c *models.Connection, tok string, refreshed bool) *AccessToken {
	at := &AccessToken{ConnectionID: c.ID, Token: tok, InstanceURL: c.InstanceURL, Refreshed: refreshed, LastRefreshedAt: c.LastRefreshedAt}
	if c.AccessTokenIssuedAt != nil {
		at.IssuedAt = *c.AccessTokenIssuedAt
	}
	if c.AccessTokenExpiresAt != nil {
		at.ExpiresAt = *c.AccessTokenExpiresAt
	}
	return at
}

func statusError(c *models.Connection) error {
	switch c.Status {
	case models.StatusActive:
		return nil
	case models.StatusNeedsReauth:
		return &Error{Code: CodeReauthRequired, Message: "the connection must be re-authorized", Reason: c.ReauthReason}
	case models.StatusRevoked:
		return newErr(CodeRevoked, "the connection was revoked")
	}
	return newErr(CodeInternal, "connection has an unknown status")
}

func (v *Vault) load(ctx context.Context, id string) (*models.Connection, error) {
	c, err := v.store.Connection(ctx, id)
	if errors.Is(err, models.ErrNotFound) {
		return nil, newErr(CodeNotFound, "no such connection")
	}
	if err != nil {
		return nil, v.dbError(err)
	}
	return c, nil
}

// Connection returns a connection record (sealed columns included; they are
// useless without the key ring).
func (v *Vault) Connection(ctx context.Context, id string) (*View, error) {
	c, err := v.load(ctx, id)
	if err != nil {
		return nil, err
	}
	return v.view(ctx, c), nil
}

// ConnectionOf returns a connection of owner; any other is not found, so
// IDs of other owners' connections cannot be probed.
func (v *Vault) ConnectionOf(ctx context.Context, owner, id string) (*View, error) {
	c, err := v.load(ctx, id)
	if err != nil {
		return nil, err
	}
	if c.Owner != owner {
		return nil, newErr(CodeNotFound, "no such connection")
	}
	return v.view(ctx, c), nil
}

// Connection statuses.
const (
	StatusActive      = models.StatusActive
	StatusNeedsReauth = models.StatusNeedsReauth
	StatusRevoked     = models.StatusRevoked
)

// View is what the vault tells about a connection: never a token, sealed
// or not.
type View struct {
	ID, Owner, OrgID, UserID string
	LoginURL, InstanceURL    string
	Status, ReauthReason     string
	LastRefreshedAt          time.Time
	// IdleExpiresAt is when Salesforce's idle TTL kills the refresh token
	// unless it is refreshed before.
	IdleExpiresAt time.Time
	CreatedAt     time.Time
}

func (v *Vault) view(ctx context.Context, c *models.Connection) *View {
	return v.viewWith(v.idleTTLs(ctx), c)
}

func (v *Vault) viewWith(ttls models.IdleTTLs, c *models.Connection) *View {
	return &View{ID: c.ID, Owner: c.Owner, OrgID: c.OrgID, UserID: c.UserID, LoginURL: c.LoginURL, InstanceURL: c.InstanceURL,
		Status: c.Status, ReauthReason: c.ReauthReason, LastRefreshedAt: c.LastRefreshedAt.UTC(),
		IdleExpiresAt: c.LastRefreshedAt.Add(ttls.For(c.OrgID)).UTC(), CreatedAt: c.CreatedAt.UTC()}
}

// idleTTLs reads each org's idle TTL; if that fails, the default stands
// (a view is information, never a reason to fail a request).
func (v *Vault) idleTTLs(ctx context.Context) models.IdleTTLs {
	ttls, err := v.store.IdleTTLs(ctx, v.cfg.IdleTTL)
	if err != nil {
		v.log.Warn("could not read the orgs' idle TTLs; showing the default", "err", err)
		return models.IdleTTLs{Default: v.cfg.IdleTTL}
	}
	return ttls
}

func (v *Vault) stripe(id string) *sync.Mutex {
	h := fnv.New32a()
	h.Write([]byte(id))
	return &v.stripes[h.Sum32()%uint32(len(v.stripes))]
}

func adRefresh(id string) string { return id + "|refresh_token" }
func adAccess(id string) string  { return id + "|access_token" }

// SealRefresh and SealAccess seal tokens for a connection's columns.
func (v *Vault) SealRefresh(id, tok string) (string, error) { return v.ring.Seal(tok, adRefresh(id)) }

// SealAccess seals an access token for connection id.
func (v *Vault) SealAccess(id, tok string) (string, error) { return v.ring.Seal(tok, adAccess(id)) }

// OpenRefresh opens a connection's sealed refresh token.
func (v *Vault) OpenRefresh(c *models.Connection) (string, error) {
	return v.ring.Open(c.RefreshTokenSealed, adRefresh(c.ID))
}

func tokenHash(tok string) string {
	sum := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(sum[:])
}

func newAttemptID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// NextWarm returns when a connection refreshed at t should be warmed again.
func (v *Vault) NextWarm(t time.Time) time.Time {
	return t.Add(v.jitter(v.cfg.WarmInterval, v.cfg.WarmJitter))
}

// jitter returns d ± frac·d, uniformly.
func (v *Vault) jitter(d time.Duration, frac float64) time.Duration {
	v.randMu.Lock()
	f := v.rand.Float64()*2 - 1
	v.randMu.Unlock()
	return d + time.Duration(float64(d)*frac*f)
}

func (v *Vault) backoff(failures int, retryAfter time.Duration) time.Duration {
	d := v.cfg.BackoffBase
	for i := 1; i < failures && d < v.cfg.BackoffMax; i++ {
		d *= 2
	}
	d = min(d, v.cfg.BackoffMax)
	d = v.jitter(d, 0.2)
	return max(d, retryAfter)
}

// ConnectionsOf lists the connections of an owner, oldest first.
func (v *Vault) ConnectionsOf(ctx context.Context, owner string) ([]View, error) {
	cs, err := v.store.ConnectionsOf(ctx, owner)
	if err != nil {
		return nil, v.dbError(err)
	}
	ttls := v.idleTTLs(ctx)
	out := make([]View, len(cs))
	for i := range cs {
		out[i] = *v.viewWith(ttls, &cs[i])
	}
	return out, nil
}
