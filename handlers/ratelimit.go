package handlers

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
)

// RateLimits are the request rate limits of one replica. They live in the
// replica's memory, so the effective limit of a deployment is the limit
// times the replicas a client's requests reach; a pull costs no SQL for
// them. A zero RPS disables that limit (the zero value disables both).
type RateLimits struct {
	// SessionRPS and SessionBurst limit each device session (the
	// verified access token's session) on the pull and connection
	// endpoints, and each presented refresh token or code on the token
	// endpoint.
	SessionRPS   float64
	SessionBurst int
	// IPRPS and IPBurst limit each client IP on the token, revoke,
	// authorize and pull endpoints.
	IPRPS   float64
	IPBurst int
	// MaxKeys caps the keys each limit tracks (default 50000); past it a
	// new key evicts an arbitrary one, which then starts over with a full
	// burst. Now is the limits' clock (default time.Now).
	MaxKeys int
	Now     func() time.Time
	// Limited, when set, is told of each refused request (for metrics):
	// LimitSession or LimitIP.
	Limited func(limit string)
}

// The limits a refused request is counted under (RateLimits.Limited).
const (
	LimitSession = "session"
	LimitIP      = "ip"
)

// DefaultRateLimits are the server's defaults (its TOKENWARM_RATE_LIMIT_*
// settings): far above what an app following mobile-sdk-spec sends.
func DefaultRateLimits() RateLimits {
	return RateLimits{SessionRPS: 5, SessionBurst: 60, IPRPS: 50, IPBurst: 300}
}

// codeRateLimited is the problem code (and OAuth error) of a 429.
const codeRateLimited = "rate_limited"

// defaultMaxKeys bounds a limit's memory: a bucket is about a hundred bytes
// with its key.
const defaultMaxKeys = 50000

// bucket is a token bucket: tokens as of at.
type bucket struct {
	tokens float64
	at     time.Time
}

// limiter is one rate limit over many keys. A bucket that has refilled is
// the same as no bucket, so idle buckets are dropped without losing
// anything; the cap on keys bounds the memory in between.
type limiter struct {
	rps     float64
	burst   float64
	maxKeys int
	now     func() time.Time
	// name and limited: what a refusal is counted as, and whom to tell.
	name    string
	limited func(string)

	mu        sync.Mutex
	buckets   map[string]*bucket
	lastSweep time.Time
}

// newLimiter returns nil (no limit) for a zero rate.
func newLimiter(rps float64, burst int, l RateLimits) *limiter {
	if rps <= 0 {
		return nil
	}
	if l.MaxKeys <= 0 {
		l.MaxKeys = defaultMaxKeys
	}
	if l.Now == nil {
		l.Now = time.Now
	}
	return &limiter{rps: rps, burst: float64(max(burst, 1)), maxKeys: l.MaxKeys, now: l.Now, buckets: make(map[string]*bucket),
		limited: l.Limited}
}

// refillTime is how long an empty bucket takes to fill: after it, an idle
// bucket is forgotten.
func (l *limiter) refillTime() time.Duration {
	return time.Duration(l.burst / l.rps * float64(time.Second))
}

// allow takes one token of key's bucket, or reports how long until one is
// there.
func (l *limiter) allow(key string) (ok bool, wait time.Duration) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.lastSweep) >= max(l.refillTime(), time.Second) {
		l.sweep(now)
	}
	b := l.buckets[key]
	if b == nil {
		if len(l.buckets) >= l.maxKeys {
			for k := range l.buckets { // an arbitrary key
				delete(l.buckets, k)
				break
			}
		}
		b = &bucket{tokens: l.burst, at: now}
		l.buckets[key] = b
	}
	if d := now.Sub(b.at); d > 0 {
		b.tokens = math.Min(l.burst, b.tokens+d.Seconds()*l.rps)
		b.at = now
	}
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	return false, time.Duration((1 - b.tokens) / l.rps * float64(time.Second))
}

// sweep drops the buckets that have refilled by now.
func (l *limiter) sweep(now time.Time) {
	for k, b := range l.buckets {
		if b.tokens+now.Sub(b.at).Seconds()*l.rps >= l.burst {
			delete(l.buckets, k)
		}
	}
	l.lastSweep = now
}

// size is the number of tracked keys.
func (l *limiter) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}

// rateLimits are the limits of one router.
type rateLimits struct {
	session, ip *limiter
}

func newRateLimits(l RateLimits) *rateLimits {
	r := &rateLimits{session: newLimiter(l.SessionRPS, l.SessionBurst, l), ip: newLimiter(l.IPRPS, l.IPBurst, l)}
	if r.session != nil {
		r.session.name = LimitSession
	}
	if r.ip != nil {
		r.ip.name = LimitIP
	}
	return r
}

// limitBy limits l's keys: key names a request's key ("" passes
// unlimited). oauth adds error and error_description to the answer; per
// says in it what was limited.
func limitBy(l *limiter, key func(echo.Context) string, oauth bool, per string) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		if l == nil {
			return next
		}
		return func(c echo.Context) error {
			if k := key(c); k != "" {
				if ok, wait := l.allow(k); !ok {
					if l.limited != nil {
						l.limited(l.name)
					}
					return rateLimited(c, wait, oauth, per)
				}
			}
			return next(c)
		}
	}
}

// byIP limits each client IP (echo's RealIP, from the router's
// IPExtractor); oauth marks the OAuth endpoints.
func (r *rateLimits) byIP(oauth bool) echo.MiddlewareFunc {
	return limitBy(r.ip, func(c echo.Context) string { return c.RealIP() }, oauth, "this client IP")
}

// bySession limits each device session; it runs after the access token
// was verified.
func (r *rateLimits) bySession() echo.MiddlewareFunc {
	return limitBy(r.session, func(c echo.Context) string {
		if claims := deviceClaims(c); claims != nil {
			return "session:" + claims.SessionID
		}
		return ""
	}, false, "this device session")
}

// byGrant limits each presented refresh token or code on the token
// endpoint (by its SHA-256: no token is kept). The form is read ahead of
// the handler and handed to it unchanged, read errors included.
func (r *rateLimits) byGrant() echo.MiddlewareFunc {
	return limitBy(r.session, func(c echo.Context) string { return grantKey(c.Request()) }, true, "this grant")
}

// grantKey is the key of the refresh token or code a token request
// presents, "" when there is none.
func grantKey(req *http.Request) string {
	if req.Body == nil || !strings.HasPrefix(req.Header.Get(echo.HeaderContentType), echo.MIMEApplicationForm) {
		return ""
	}
	body, err := io.ReadAll(req.Body)
	req.Body = io.NopCloser(io.MultiReader(bytes.NewReader(body), errReader{err}))
	if err != nil {
		return ""
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return ""
	}
	for _, name := range []string{"refresh_token", "code"} {
		if v := form.Get(name); v != "" {
			sum := sha256.Sum256([]byte(v))
			return name + ":" + hex.EncodeToString(sum[:])
		}
	}
	return ""
}

// errReader replays the error that ended a read (io.EOF when none did).
type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	return 0, io.EOF
}

// rateLimitedBody is a 429: problem details, and on the OAuth endpoints
// the RFC 6749 error members too, so OAuth libraries show something.
type rateLimitedBody struct {
	Problem
	Error            string `json:"error,omitempty"`
	ErrorDescription string `json:"error_description,omitempty"`
}

// rateLimited answers 429 with Retry-After (whole seconds, at least 1).
func rateLimited(c echo.Context, wait time.Duration, oauth bool, per string) error {
	secs := max(1, int(math.Ceil(wait.Seconds())))
	detail := fmt.Sprintf("too many requests for %s; retry after %d s", per, secs)
	b := rateLimitedBody{Problem: Problem{Type: "https://tokenwarm.dev/problems/" + codeRateLimited, Title: http.StatusText(http.StatusTooManyRequests),
		Status: http.StatusTooManyRequests, Detail: detail, Instance: c.Request().URL.Path, Code: codeRateLimited, RetryAfter: secs}}
	if oauth {
		b.Error, b.ErrorDescription = codeRateLimited, detail
	}
	body, err := json.Marshal(b)
	if err != nil {
		return err
	}
	c.Response().Header().Set("Retry-After", strconv.Itoa(secs))
	return c.Blob(http.StatusTooManyRequests, "application/problem+json", body)
}

// ParseTrustedProxies parses TOKENWARM_TRUSTED_PROXIES: comma-separated
// CIDRs or IP addresses.
func ParseTrustedProxies(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			a, aerr := netip.ParseAddr(f)
			if aerr != nil || a.Zone() != "" {
				return nil, fmt.Errorf("want CIDRs such as 10.0.0.0/8 or IP addresses, comma-separated")
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// ipExtractor takes the client IP from X-Forwarded-For only when the
// socket peer is a trusted proxy: the right-most address that is not one.
// Otherwise it is the socket's address, whatever the headers say (echo's
// default believes any X-Forwarded-For).
func ipExtractor(trusted []netip.Prefix) echo.IPExtractor {
	if len(trusted) == 0 {
		return echo.ExtractIPDirect()
	}
	opts := []echo.TrustOption{echo.TrustLoopback(false), echo.TrustLinkLocal(false), echo.TrustPrivateNet(false)}
	for _, p := range trusted {
		opts = append(opts, echo.TrustIPRange(&net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}))
	}
	return echo.ExtractIPFromXFFHeader(opts...)
}
