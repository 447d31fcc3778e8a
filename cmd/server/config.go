package main

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/tokenwarm/tokenwarm/devices"
	"github.com/tokenwarm/tokenwarm/handlers"
	"github.com/tokenwarm/tokenwarm/models"
	"github.com/tokenwarm/tokenwarm/salesforce"
	"github.com/tokenwarm/tokenwarm/warmer"
)

// Config is every setting of tokenwarm, read from environment variables.
type Config struct {
	DatabaseURL     string
	DataDir         string
	Addr            string
	DebugAddr       string
	PublicURL       string
	LoginURL        string
	InstanceHosts   []string
	ClientID        string
	ClientSecret    string
	SessionTimeout  time.Duration
	RefreshIdleTTL  time.Duration
	Introspect      bool
	UpstreamTimeout time.Duration
	ProxyURL        string
	// CAFile is SALESFORCE_CA_FILE; CAPool is the system roots plus its
	// certificates (nil: the system roots alone).
	CAFile        string
	CAPool        *x509.CertPool
	SealKeys      string
	LockTimeout   time.Duration
	DBMaxConns    int
	DBPooler      models.Pooler
	WarmInterval  time.Duration
	WarmJitter    float64
	WarmSchedule  string
	WebhookURLs   []string
	WebhookSecret string
	// WebhookPreviousSecret also signs during a secret rotation.
	WebhookPreviousSecret string
	// WebhookLegacySignature: also send Tokenwarm-Signature.
	WebhookLegacySignature bool
	WebhookRetry           time.Duration
	WarmConcurrency        int
	WarmBatch              int
	WarmRetryBudget        time.Duration
	IdleRiskBefore         time.Duration
	// RefreshMaxAge is the orgs' "expire refresh token after N" (0: none);
	// ReauthSoon how far ahead connections reaching it are flagged.
	RefreshMaxAge time.Duration
	ReauthSoon    time.Duration
	// CaptureIdentity: learn the user's name, username, email and the
	// org's name at connect; WebhookIdentity: put them in webhooks.
	CaptureIdentity bool
	WebhookIdentity bool
	ShutdownTimeout time.Duration
	CommitRetry     time.Duration
	BackoffBase     time.Duration
	BackoffMax      time.Duration
	Retention       time.Duration
	EventRetention  time.Duration
	AppRedirectURIs []string
	AppClients      handlers.AppClients
	DeviceTokenTTL  time.Duration
	DeviceIdleTTL   time.Duration
	// ReauthLinkTTL and AdminSessionTTL are the lifetimes of the values
	// sealed under the seal keys that are not stored (a reseal cannot move
	// them).
	ReauthLinkTTL   time.Duration
	AdminSessionTTL time.Duration
	// DeviceReuseInterval: 0 disables the device refresh reuse interval.
	DeviceReuseInterval time.Duration
	// Rate limits of each replica (0 RPS disables one) and the proxies
	// whose X-Forwarded-For is believed.
	RateLimits     handlers.RateLimits
	TrustedProxies []netip.Prefix
	LogLevel       string
	LogFormat      string
	// RestoreCheckInterval: how often the restore guard compares the
	// database's history with this replica's memory of it.
	RestoreCheckInterval time.Duration
}

// setting documents one environment variable.
type setting struct {
	env, def, help string
	secret         bool
	set            func(c *Config, v string) error
}

// parsed sets a field to what parse makes of the value.
func parsed[T any](parse func(string) (T, error), dst func(*Config) *T) func(*Config, string) error {
	return func(c *Config, v string) error {
		x, err := parse(v)
		if err != nil {
			return err
		}
		*dst(c) = x
		return nil
	}
}

func str(dst func(*Config) *string) func(*Config, string) error {
	return func(c *Config, v string) error { *dst(c) = v; return nil }
}

func dur(dst func(*Config) *time.Duration) func(*Config, string) error {
	return func(c *Config, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return fmt.Errorf("want a positive duration such as 90s or 2h")
		}
		*dst(c) = d
		return nil
	}
}

func boolean(dst func(*Config) *bool) func(*Config, string) error {
	return func(c *Config, v string) error {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("want true or false")
		}
		*dst(c) = b
		return nil
	}
}

func rate(dst func(*Config) *float64) func(*Config, string) error {
	return func(c *Config, v string) error {
		r, err := strconv.ParseFloat(v, 64)
		if err != nil || r < 0 || r > 1e6 || r != r {
			return fmt.Errorf("want requests per second, 0 (off) or more, such as 5 or 0.5")
		}
		*dst(c) = r
		return nil
	}
}

func posInt(min int, dst func(*Config) *int) func(*Config, string) error {
	return func(c *Config, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < min {
			return fmt.Errorf("want an integer >= %d", min)
		}
		*dst(c) = n
		return nil
	}
}

var settings = []setting{
	{env: "DATABASE_URL", help: "Postgres URL (postgres://user:pass@host/db) for multi-replica deployments; empty = embedded SQLite file under TOKENWARM_DATA_DIR", secret: true,
		set: str(func(c *Config) *string { return &c.DatabaseURL })},
	{env: "TOKENWARM_DATA_DIR", def: "./data", help: "directory of the embedded SQLite database, the generated development seal key and tokenwarm.lock (one embedded server per directory)",
		set: str(func(c *Config) *string { return &c.DataDir })},
	{env: "TOKENWARM_ADDR", def: "127.0.0.1:8080", help: "address to listen on (use :8080 to listen on every interface)",
		set: str(func(c *Config) *string { return &c.Addr })},
	{env: "TOKENWARM_DEBUG_ADDR", help: "address of a separate listener serving Go's profiler (/debug/pprof/) for operators; empty = none. Never expose it beyond the host",
		set: str(func(c *Config) *string { return &c.DebugAddr })},
	{env: "TOKENWARM_PUBLIC_URL", help: "URL at which browsers and apps reach this server; empty = http://<listen address>",
		set: func(c *Config, v string) error {
			u, err := url.Parse(v)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return fmt.Errorf("want an absolute http(s) URL")
			}
			c.PublicURL = strings.TrimRight(v, "/")
			return nil
		}},
	{env: "SALESFORCE_LOGIN_URL", help: "default Salesforce login host (https://login.salesforce.com, https://test.salesforce.com or a My Domain); empty = the built-in emulator (embedded mode only)",
		set: func(c *Config, v string) error {
			if err := salesforce.ValidateLoginURL(v); err != nil {
				return err
			}
			c.LoginURL = strings.TrimRight(v, "/")
			return nil
		}},
	{env: "SALESFORCE_INSTANCE_HOSTS", help: "comma-separated extra host suffixes trusted as instance_url (e.g. an Experience Cloud domain) besides Salesforce's own domains",
		set: func(c *Config, v string) error {
			for _, h := range strings.Split(v, ",") {
				h = strings.ToLower(strings.TrimSpace(h))
				if h == "" || strings.ContainsAny(h, "/:@ ") {
					return fmt.Errorf("want host names such as example.com, comma-separated")
				}
				c.InstanceHosts = append(c.InstanceHosts, h)
			}
			return nil
		}},
	{env: "SALESFORCE_CLIENT_ID", help: "consumer key of the connected app (required with SALESFORCE_LOGIN_URL)",
		set: str(func(c *Config) *string { return &c.ClientID })},
	{env: "SALESFORCE_CLIENT_SECRET", help: "consumer secret of the connected app", secret: true,
		set: str(func(c *Config) *string { return &c.ClientSecret })},
	{env: "SALESFORCE_REFRESH_IDLE_TTL", def: "720h", help: "refresh-token idle expiry of the connected app (Salesforce's default 30 days; an org admin may set another, which the admin API records per org); warming must stay well inside it",
		set: dur(func(c *Config) *time.Duration { return &c.RefreshIdleTTL })},
	{env: "SALESFORCE_SESSION_TIMEOUT", def: "2h", help: "access-token lifetime assumed when introspection is off (Salesforce sends no expires_in)",
		set: dur(func(c *Config) *time.Duration { return &c.SessionTimeout })},
	{env: "SALESFORCE_INTROSPECT", def: "false", help: "learn each access token's real expiry from the introspection endpoint",
		set: boolean(func(c *Config) *bool { return &c.Introspect })},
	{env: "SALESFORCE_REFRESH_MAX_AGE", def: "0", help: "the connected app's \"expire refresh token after N\" policy, if an org set one (e.g. 2160h): Salesforce ends a grant that long after the user authorized, however it is used; connections approaching it raise a reauth_soon event and webhook and show on the admin overview. 0 = no such policy",
		set: func(c *Config, v string) error {
			if v == "0" {
				c.RefreshMaxAge = 0
				return nil
			}
			return dur(func(c *Config) *time.Duration { return &c.RefreshMaxAge })(c, v)
		}},
	{env: "TOKENWARM_REAUTH_SOON_DAYS", def: "7", help: "with SALESFORCE_REFRESH_MAX_AGE: how many days before a grant reaches it the connection raises reauth_soon and shows on the admin overview",
		set: func(c *Config, v string) error {
			var days int
			if err := posInt(1, func(*Config) *int { return &days })(c, v); err != nil {
				return err
			}
			c.ReauthSoon = time.Duration(days) * 24 * time.Hour
			return nil
		}},
	{env: "TOKENWARM_CAPTURE_IDENTITY", def: "true", help: "learn the Salesforce user's name, username and email and the org's name at connect and re-authorization (personal data, stored in plaintext for operators to see and search; DELETE /admin/v1/connections/{id}/identity erases a user's); false = capture nothing new",
		set: boolean(func(c *Config) *bool { return &c.CaptureIdentity })},
	{env: "TOKENWARM_WEBHOOK_IDENTITY", def: "true", help: "put the connection's org_id, user_id and, when captured, user_name, username, email and org_name into webhook payloads, so the receiver can notify the user; false = connection_id only",
		set: boolean(func(c *Config) *bool { return &c.WebhookIdentity })},
	{env: "SALESFORCE_TIMEOUT", def: "15s", help: "timeout of one call to Salesforce; must stay well under TOKENWARM_LOCK_TIMEOUT",
		set: dur(func(c *Config) *time.Duration { return &c.UpstreamTimeout })},
	{env: "SALESFORCE_PROXY_URL", help: "egress proxy for calls to Salesforce (the fixed IPs of the refresh-token IP allowlist); empty = direct", secret: true,
		set: func(c *Config, v string) error {
			u, err := url.Parse(v)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return fmt.Errorf("want an http(s) proxy URL")
			}
			c.ProxyURL = v
			return nil
		}},
	{env: "SALESFORCE_CA_FILE", help: "PEM file of extra root CAs trusted for calls to Salesforce and to an https egress proxy, added to the system roots (for a private-CA egress, e.g. a TLS-inspecting proxy); empty = the system roots only",
		set: func(c *Config, v string) error {
			pool, err := loadCAFile(v)
			if err != nil {
				return err
			}
			c.CAFile, c.CAPool = v, pool
			return nil
		}},
	{env: "TOKENWARM_SEAL_KEYS", help: "key ring sealing tokens at rest: kid:base64(32 bytes)[,kid:...]; the first key seals, all open. Required with DATABASE_URL; embedded mode generates one into the data dir", secret: true,
		set: str(func(c *Config) *string { return &c.SealKeys })},
	{env: "TOKENWARM_LOCK_TIMEOUT", def: "30s", help: "longest wait for another replica's refresh of the same connection",
		set: dur(func(c *Config) *time.Duration { return &c.LockTimeout })},
	{env: "TOKENWARM_DB_MAX_CONNS", def: "32", help: "Postgres connection pool size",
		set: func(c *Config, v string) error {
			n, err := strconv.Atoi(v)
			if err != nil || n < 4 {
				return fmt.Errorf("want an integer >= 4")
			}
			c.DBMaxConns = n
			return nil
		}},
	{env: "TOKENWARM_DB_POOLER", def: "none", help: "what stands between tokenwarm and Postgres: none, session or transaction (PgBouncer's pool modes; statement is refused); see docs/POOLERS.md",
		set: parsed(models.ParsePooler, func(c *Config) *models.Pooler { return &c.DBPooler })},
	{env: "TOKENWARM_WARM_INTERVAL", def: "72h", help: "time between refreshes of an idle connection (Salesforce kills refresh tokens idle for 30 days)",
		set: dur(func(c *Config) *time.Duration { return &c.WarmInterval })},
	{env: "TOKENWARM_WARM_JITTER", def: "0.15", help: "spread of the warm interval, as a fraction (0.15 = ±15%)",
		set: func(c *Config, v string) error {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil || f < 0.01 || f >= 1 {
				return fmt.Errorf("want a fraction from 0.01 to below 1")
			}
			c.WarmJitter = f
			return nil
		}},
	{env: "TOKENWARM_APP_REDIRECT_URIS", help: "legacy flow (no client_id): comma-separated allowlist of app redirect URIs (exact match) that may receive handoff codes, e.g. com.acme.app:/oauth",
		set: func(c *Config, v string) error {
			for _, u := range strings.Split(v, ",") {
				u = strings.TrimSpace(u)
				p, err := url.Parse(u)
				if u == "" || err != nil || p.Scheme == "" || p.Fragment != "" {
					return fmt.Errorf("want absolute URIs without fragments, comma-separated")
				}
				c.AppRedirectURIs = append(c.AppRedirectURIs, u)
			}
			return nil
		}},
	{env: "TOKENWARM_APP_CLIENTS", help: "app clients of the standard OAuth flow (public clients, RFC 8252): comma-separated client_id=redirect_uri pairs, a client with several redirect URIs once per URI, e.g. com.acme.app=com.acme.app:/oauth,com.acme.app=http://127.0.0.1/cb; exact match, except that a loopback IP redirect URI matches on any port",
		set: parsed(handlers.ParseAppClients, func(c *Config) *handlers.AppClients { return &c.AppClients })},
	{env: "TOKENWARM_DEVICE_TOKEN_TTL", def: "15m", help: "lifetime of a device session JWT",
		set: dur(func(c *Config) *time.Duration { return &c.DeviceTokenTTL })},
	{env: "TOKENWARM_REAUTH_LINK_TTL", def: "168h", help: "how long a re-authorization link works (admin API and UI, 409 reauth_url); it opens only while the seal key that sealed it is in TOKENWARM_SEAL_KEYS",
		set: dur(func(c *Config) *time.Duration { return &c.ReauthLinkTTL })},
	{env: "TOKENWARM_ADMIN_SESSION_TTL", def: "8h", help: "how long an admin UI sign-in lasts; its cookie opens only while the seal key it was sealed under is in TOKENWARM_SEAL_KEYS",
		set: dur(func(c *Config) *time.Duration { return &c.AdminSessionTTL })},
	{env: "TOKENWARM_DEVICE_IDLE_TTL", def: "2160h", help: "a device refresh token unused this long expires (default 90 days)",
		set: dur(func(c *Config) *time.Duration { return &c.DeviceIdleTTL })},
	{env: "TOKENWARM_DEVICE_REFRESH_REUSE_INTERVAL", def: "30s", help: "a rotated device refresh token presented again this soon, while its successor is unused, gets that same successor (a retry whose answer was lost) instead of revoking the session; 0 disables, at most 5m",
		set: func(c *Config, v string) error {
			d, err := time.ParseDuration(v)
			if err != nil || d < 0 || d > devices.MaxRefreshReuseInterval {
				return fmt.Errorf("want a duration from 0 (off) to %s such as 30s", devices.MaxRefreshReuseInterval)
			}
			c.DeviceReuseInterval = d
			return nil
		}},
	{env: "TOKENWARM_RATE_LIMIT_SESSION_RPS", def: "5", help: "requests per second each replica allows per device session on the pull and connection endpoints, and per presented refresh token or code on the token endpoint; 0 disables",
		set: rate(func(c *Config) *float64 { return &c.RateLimits.SessionRPS })},
	{env: "TOKENWARM_RATE_LIMIT_SESSION_BURST", def: "60", help: "burst of the per-session rate limit",
		set: posInt(1, func(c *Config) *int { return &c.RateLimits.SessionBurst })},
	{env: "TOKENWARM_RATE_LIMIT_IP_RPS", def: "50", help: "requests per second each replica allows per client IP on the token, revoke, authorize and pull endpoints; 0 disables",
		set: rate(func(c *Config) *float64 { return &c.RateLimits.IPRPS })},
	{env: "TOKENWARM_RATE_LIMIT_IP_BURST", def: "300", help: "burst of the per-IP rate limit",
		set: posInt(1, func(c *Config) *int { return &c.RateLimits.IPBurst })},
	{env: "TOKENWARM_TRUSTED_PROXIES", help: "comma-separated CIDRs (or IPs) of the reverse proxies in front of tokenwarm: the client IP is taken from X-Forwarded-For (the right-most address not in them) only when the peer is one; otherwise the socket's address",
		set: func(c *Config, v string) error {
			ps, err := handlers.ParseTrustedProxies(v)
			if err != nil {
				return err
			}
			c.TrustedProxies = ps
			return nil
		}},
	{env: "TOKENWARM_WARM_SCHEDULE", def: "@every 1m", help: "how often each replica runs a warm pass (robfig/cron syntax)",
		set: func(c *Config, v string) error {
			if _, err := cron.ParseStandard(v); err != nil {
				return fmt.Errorf("want a cron spec such as @every 1m or */5 * * * *")
			}
			c.WarmSchedule = v
			return nil
		}},
	{env: "TOKENWARM_WARM_CONCURRENCY", def: "8", help: "refreshes a warm pass runs at once in this replica (at most TOKENWARM_DB_MAX_CONNS/2 - 4)",
		set: posInt(1, func(c *Config) *int { return &c.WarmConcurrency })},
	{env: "TOKENWARM_WARM_BATCH", def: "100", help: "due connections claimed per batch by a warm pass",
		set: posInt(1, func(c *Config) *int { return &c.WarmBatch })},
	{env: "TOKENWARM_WARM_RETRY_BUDGET", def: "168h", help: "longest span of failing warm attempts tolerated; interval·(1+jitter) plus this must stay under Salesforce's 30-day idle TTL",
		set: dur(func(c *Config) *time.Duration { return &c.WarmRetryBudget })},
	{env: "TOKENWARM_IDLE_RISK_THRESHOLD", def: "168h", help: "an active connection with less idle budget than this raises an idle_expiry_risk event",
		set: dur(func(c *Config) *time.Duration { return &c.IdleRiskBefore })},
	{env: "TOKENWARM_WEBHOOK_URLS", help: "comma-separated https URLs that receive connection.needs_reauth, connection.reauthorized, connection.revoked, connection.idle_expiry_risk, connection.reauth_soon, app.config_error and app.restore_detected events",
		set: func(c *Config, v string) error {
			for _, u := range strings.Split(v, ",") {
				u = strings.TrimSpace(u)
				p, err := url.Parse(u)
				if err != nil || (p.Scheme != "https" && p.Scheme != "http") || p.Host == "" {
					return fmt.Errorf("want absolute http(s) URLs, comma-separated")
				}
				c.WebhookURLs = append(c.WebhookURLs, u)
			}
			return nil
		}},
	{env: "TOKENWARM_WEBHOOK_SECRET", help: "secret that signs webhook deliveries (Standard Webhooks webhook-signature); required with TOKENWARM_WEBHOOK_URLS, at least 16 characters: a whsec_<base64 key> secret (make one with: tokenwarm webhook-secret) or any other string, whose bytes are then the key (receivers use whsec_ + base64 of them)", secret: true,
		set: str(func(c *Config) *string { return &c.WebhookSecret })},
	{env: "TOKENWARM_WEBHOOK_PREVIOUS_SECRET", help: "during a webhook secret rotation, the secret being replaced: deliveries carry a signature under each secret until this is unset", secret: true,
		set: str(func(c *Config) *string { return &c.WebhookPreviousSecret })},
	{env: "TOKENWARM_WEBHOOK_LEGACY_SIGNATURE", def: "true", help: "also send the legacy Tokenwarm-Signature: t=<unix>,v1=<hex HMAC of \"<t>.<body>\"> header next to the Standard Webhooks headers (deprecated: set false once no receiver reads it)",
		set: boolean(func(c *Config) *bool { return &c.WebhookLegacySignature })},
	{env: "TOKENWARM_WEBHOOK_RETRY_BASE", def: "10s", help: "first retry delay of a failed webhook delivery; it doubles (jittered) up to 1h, 20 attempts in all",
		set: dur(func(c *Config) *time.Duration { return &c.WebhookRetry })},
	{env: "TOKENWARM_RETENTION", def: "720h", help: "how long finished rows are kept before housekeeping deletes them: expired handoff codes, dead device sessions, rotated device refresh tokens (their reuse revokes the family until then), finished webhook deliveries",
		set: dur(func(c *Config) *time.Duration { return &c.Retention })},
	{env: "TOKENWARM_EVENT_RETENTION", def: "8760h", help: "how long connection events (the audit trail) are kept; at least 720h, the idle-risk check reads the last 30 days",
		set: dur(func(c *Config) *time.Duration { return &c.EventRetention })},
	{env: "TOKENWARM_BACKOFF_BASE", def: "30s", help: "first delay before a connection is refreshed again after a failed refresh; doubles (jittered) per consecutive failure",
		set: dur(func(c *Config) *time.Duration { return &c.BackoffBase })},
	{env: "TOKENWARM_BACKOFF_MAX", def: "1h", help: "longest delay between refresh attempts of a failing connection",
		set: dur(func(c *Config) *time.Duration { return &c.BackoffMax })},
	{env: "TOKENWARM_COMMIT_RETRY_BUDGET", def: "20s", help: "how long storing a refresh result is retried after a failed commit (the attempt's lease is SALESFORCE_TIMEOUT + this + 5s)",
		set: dur(func(c *Config) *time.Duration { return &c.CommitRetry })},
	{env: "TOKENWARM_SHUTDOWN_TIMEOUT", def: "60s", help: "how long shutdown waits for in-flight requests and refreshes; at least 2×SALESFORCE_TIMEOUT + TOKENWARM_COMMIT_RETRY_BUDGET + 5s, so no refresh that presented a token is abandoned",
		set: dur(func(c *Config) *time.Duration { return &c.ShutdownTimeout })},
	{env: "TOKENWARM_RESTORE_CHECK_INTERVAL", def: "10s", help: "how often each replica compares the database's history with what it saw of it (remembered in TOKENWARM_DATA_DIR/incarnation.json): a database that went back was restored from a backup, and refreshes are held app-wide until `tokenwarm restore` ran",
		set: func(c *Config, v string) error {
			d, err := time.ParseDuration(v)
			if err != nil || d < time.Second || d > time.Hour {
				return fmt.Errorf("want a duration from 1s to 1h such as 10s")
			}
			c.RestoreCheckInterval = d
			return nil
		}},
	{env: "TOKENWARM_LOG_LEVEL", def: "info", help: "debug, info, warn or error",
		set: func(c *Config, v string) error {
			switch v {
			case "debug", "info", "warn", "error":
				c.LogLevel = v
				return nil
			}
			return fmt.Errorf("want debug, info, warn or error")
		}},
	{env: "TOKENWARM_LOG_FORMAT", def: "text", help: "text or json",
		set: func(c *Config, v string) error {
			if v != "text" && v != "json" {
				return fmt.Errorf("want text or json")
			}
			c.LogFormat = v
			return nil
		}},
}

// loadCAFile returns the system roots plus every certificate of the PEM
// file at path. A file without a single CA certificate is refused: a typo
// must not silently leave the private CA out.
func loadCAFile(path string) (*x509.CertPool, error) {
	pemBytes, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read the file: %w", errors.Unwrap(err))
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	n := 0
	for rest := pemBytes; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d is unreadable: %w", n+1, err)
		}
		pool.AddCert(cert)
		n++
	}
	if n == 0 {
		return nil, errors.New("want a PEM file with at least one CERTIFICATE block")
	}
	return pool, nil
}

// loadConfig reads the configuration; it reports every bad variable at once.
func loadConfig(getenv func(string) string) (*Config, error) {
	c := &Config{}
	var errs []error
	for _, s := range settings {
		v := strings.TrimSpace(getenv(s.env))
		if v == "" {
			v = s.def
		}
		if v == "" {
			continue
		}
		if err := s.set(c, v); err != nil {
			shown := v
			if s.secret {
				shown = "(hidden)"
			}
			errs = append(errs, fmt.Errorf("%s=%s: %w", s.env, shown, err))
		}
	}
	if c.LoginURL != "" && c.ClientID == "" {
		errs = append(errs, errors.New("SALESFORCE_CLIENT_ID is required when SALESFORCE_LOGIN_URL is set"))
	}
	if c.DatabaseURL != "" && c.LoginURL == "" {
		errs = append(errs, errors.New("SALESFORCE_LOGIN_URL is required with DATABASE_URL: the built-in emulator is for the embedded demo only"))
	}
	if c.UpstreamTimeout >= c.LockTimeout {
		errs = append(errs, errors.New("SALESFORCE_TIMEOUT must be shorter than TOKENWARM_LOCK_TIMEOUT"))
	}
	if c.BackoffBase > c.BackoffMax {
		errs = append(errs, errors.New("TOKENWARM_BACKOFF_BASE must not exceed TOKENWARM_BACKOFF_MAX"))
	}
	if worst := c.WorstCaseRefresh(); c.ShutdownTimeout < worst {
		errs = append(errs, fmt.Errorf("TOKENWARM_SHUTDOWN_TIMEOUT (%s) is shorter than the longest a refresh that presented a token may take to store its outcome (%s = 2×SALESFORCE_TIMEOUT + TOKENWARM_COMMIT_RETRY_BUDGET + 5s): shutdown could abandon a rotation", c.ShutdownTimeout, worst))
	}
	if c.Retention < 24*time.Hour {
		errs = append(errs, errors.New("TOKENWARM_RETENTION must be at least 24h"))
	}
	if c.EventRetention < c.RefreshIdleTTL {
		errs = append(errs, errors.New("TOKENWARM_EVENT_RETENTION must be at least SALESFORCE_REFRESH_IDLE_TTL: the idle-risk check reads the events of one idle TTL"))
	}
	if len(c.WebhookURLs) > 0 && len(c.WebhookSecret) < 16 {
		errs = append(errs, errors.New("TOKENWARM_WEBHOOK_SECRET of at least 16 characters is required with TOKENWARM_WEBHOOK_URLS"))
	}
	if p := c.WebhookPreviousSecret; p != "" && (len(p) < 16 || p == c.WebhookSecret) {
		errs = append(errs, errors.New("TOKENWARM_WEBHOOK_PREVIOUS_SECRET must be at least 16 characters and differ from TOKENWARM_WEBHOOK_SECRET"))
	}
	if err := warmer.ValidateConfig(c.WarmInterval, c.WarmJitter, c.WarmRetryBudget, c.RefreshIdleTTL); err != nil {
		errs = append(errs, fmt.Errorf("TOKENWARM_WARM_INTERVAL, TOKENWARM_WARM_JITTER, TOKENWARM_WARM_RETRY_BUDGET, SALESFORCE_REFRESH_IDLE_TTL: %w", err))
	}
	if c.RefreshMaxAge > 0 && c.ReauthSoon >= c.RefreshMaxAge {
		errs = append(errs, errors.New("TOKENWARM_REAUTH_SOON_DAYS must be shorter than SALESFORCE_REFRESH_MAX_AGE"))
	}
	if c.RefreshMaxAge > 0 && c.EventRetention <= c.ReauthSoon {
		errs = append(errs, errors.New("TOKENWARM_EVENT_RETENTION must exceed TOKENWARM_REAUTH_SOON_DAYS: reauth_soon is raised once, by its event"))
	}
	if c.WarmConcurrency > c.DBMaxConns/2-4 {
		errs = append(errs, errors.New("TOKENWARM_WARM_CONCURRENCY must leave refresh slots for mobile pulls: at most TOKENWARM_DB_MAX_CONNS/2 - 4 (each refresh briefly holds two connections)"))
	}
	return c, errors.Join(errs...)
}

// ValidateIdleTTL checks an org's refresh-token idle TTL against the warm
// schedule (and the event retention the idle-risk sweep reads).
func (c *Config) ValidateIdleTTL(ttl time.Duration) error {
	if ttl > c.EventRetention {
		return fmt.Errorf("must not exceed TOKENWARM_EVENT_RETENTION (%s): the idle-risk check reads the events of one idle TTL", c.EventRetention)
	}
	return warmer.ValidateConfig(c.WarmInterval, c.WarmJitter, c.WarmRetryBudget, ttl)
}

// AttemptLease is how long a refresh attempt owns its token (see vault.Config).
func (c *Config) AttemptLease() time.Duration {
	return c.UpstreamTimeout + c.CommitRetry + 5*time.Second
}

// WorstCaseRefresh is the longest a refresh that has presented its token
// may take to store the outcome (an introspection before it, the call, the
// commit retries): what a graceful shutdown must be able to wait for.
func (c *Config) WorstCaseRefresh() time.Duration { return c.UpstreamTimeout + c.AttemptLease() }

// Embedded reports whether the embedded SQLite database is used.
func (c *Config) Embedded() bool { return c.DatabaseURL == "" }

// Demo reports whether the built-in emulator stands in for Salesforce.
func (c *Config) Demo() bool { return c.LoginURL == "" }

// printConfig writes the effective configuration with secrets masked.
func printConfig(w io.Writer, getenv func(string) string) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, s := range settings {
		v := strings.TrimSpace(getenv(s.env))
		switch {
		case v == "" && s.def != "":
			v = s.def + " (default)"
		case v == "":
			v = "(unset)"
		case s.secret:
			v = "******** (set)"
		}
		fmt.Fprintf(tw, "%s\t%s\n", s.env, v)
	}
	tw.Flush()
}

func printUsage(w io.Writer) {
	fmt.Fprint(w, `tokenwarm keeps Salesforce refresh tokens alive and safe on the server.

Usage:
  tokenwarm [serve]    run the server (default); embedded, one per data directory
                       (it holds TOKENWARM_DATA_DIR/tokenwarm.lock)
  tokenwarm migrate    apply database migrations and exit
  tokenwarm reseal     re-encrypt everything stored sealed under the active (first)
                       key; safe while Postgres servers run (embedded: stop the
                       server first); prints when the old keys may be dropped
  tokenwarm rotate-signing-key
                       add a device JWT signing key that signs from now on; the
                       older keys verify until their tokens expire, then retire
  tokenwarm retire-signing-key KID
                       retire a signing key now (a leaked key); its tokens are refused
  tokenwarm purge      delete finished rows now (the server does it hourly)
  tokenwarm restore    after restoring the database from a backup: verify every active
                       connection's refresh token by introspection (never presenting
                       it), mark the stale ones rotation_lost, then resume refreshes
                       (-concurrency N, default 4; embedded: stop the server first)
  tokenwarm emulator   run the built-in Salesforce emulator alone (-addr, default 127.0.0.1:8181)
  tokenwarm config     print the effective configuration, secrets masked
  tokenwarm healthcheck [-path /readyz|/healthz] [-timeout 3s]
                       GET /readyz of the server at TOKENWARM_ADDR; exit 0 on 200,
                       else 1 (the container image's HEALTHCHECK)
  tokenwarm egress check [-login-url URL] [-direct]
                       CONNECT through SALESFORCE_PROXY_URL and a TLS handshake with
                       the login host; prints the egress configuration to compare
                       with the org's Refresh Token IP Allowlist
  tokenwarm keygen [KID]
                       print a new random seal key for TOKENWARM_SEAL_KEYS (ID KID,
                       default k<today's date>)
  tokenwarm webhook-secret
                       print a new whsec_ secret for TOKENWARM_WEBHOOK_SECRET
  tokenwarm admin-key create NAME | revoke NAME | list
                       manage admin API keys (create prints the key once)
  tokenwarm --help     this text

Environment:
`)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, s := range settings {
		def := s.def
		if def == "" {
			def = "-"
		}
		secret := ""
		if s.secret {
			secret = " [secret]"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s%s\n", s.env, def, s.help, secret)
	}
	tw.Flush()
}
