package handlers

import (
	"context"
	"log/slog"
	"net/url"
	"slices"
	"time"

	"github.com/tokenwarm/tokenwarm/admin"
	"github.com/tokenwarm/tokenwarm/devices"
	"github.com/tokenwarm/tokenwarm/pkce"
	"github.com/tokenwarm/tokenwarm/salesforce"
	"github.com/tokenwarm/tokenwarm/seal"
	"github.com/tokenwarm/tokenwarm/vault"
)

// Salesforce is what the OAuth flow needs from Salesforce's token endpoint.
type Salesforce interface {
	Exchange(ctx context.Context, loginURL, code, verifier string) (*salesforce.Token, error)
	Revoke(ctx context.Context, loginURL, token string) error
}

// APIConfig holds the settings of the mobile API and the OAuth flow.
type APIConfig struct {
	PublicURL string
	// LoginURL is the default Salesforce login host.
	LoginURL string
	// ClientID is the connected app's consumer key.
	ClientID string
	// AppRedirectURIs is the exact-match allowlist of app redirect URIs of
	// the legacy flow (no client_id).
	AppRedirectURIs []string
	// AppClients are the registered app clients of the standard flow
	// (TOKENWARM_APP_CLIENTS).
	AppClients AppClients
	// ReauthLinkTTL is how long a re-authorization link works (7 days if 0).
	ReauthLinkTTL time.Duration
	// AdminSessionTTL is how long an admin UI sign-in lasts (8 hours if 0).
	AdminSessionTTL time.Duration
	// AllowAnyLoginHost accepts non-Salesforce login hosts (the emulator).
	AllowAnyLoginHost bool
	// Demo serves the walk-through pages at / and /demo/.
	Demo bool
	// AdminSessions seals the admin UI's session cookies: a ring of its
	// own (seal.Ring.Derive), never the one of re-auth links or tokens.
	// The same keys on every replica make sessions work on any of them and
	// across restarts. Nil serves no admin UI (the admin API stays).
	AdminSessions Sealer
	// AdminStore holds the admin API's and UI's data (*models.DB is one);
	// without it no admin route is served.
	AdminStore AdminStore
	// ValidateOrgIdleTTL refuses an org's refresh-token idle TTL that the
	// warm schedule cannot keep inside; nil accepts any.
	ValidateOrgIdleTTL func(time.Duration) error
	// RefreshMaxAge is the orgs' "expire refresh token after N" policy
	// (SALESFORCE_REFRESH_MAX_AGE; 0: none) and ReauthSoon how far ahead
	// operators see the connections it ends (TOKENWARM_REAUTH_SOON_DAYS).
	RefreshMaxAge time.Duration
	ReauthSoon    time.Duration
}

// Lifetimes of the values sealed under the seal keys that are not stored
// (so a reseal cannot move them): re-authorization links and admin UI
// sessions open only while the key that sealed them is in the ring.
const (
	DefaultReauthLinkTTL   = 7 * 24 * time.Hour
	DefaultAdminSessionTTL = 8 * time.Hour
)

// Sealer seals and opens values bound to associated data (*seal.Ring).
type Sealer interface {
	Seal(plaintext, ad string) (string, error)
	Open(sealed, ad string) (string, error)
}

// API is the mobile API and the OAuth flow.
type API struct {
	cfg     APIConfig
	log     *slog.Logger
	vault   *vault.Vault
	devices *devices.Service
	pending *pkce.Store
	sf      Salesforce
	reauth  *reauthTokens
	admin   *admin.Service
	now     func() time.Time
}

// NewAPI wires the mobile API.
func NewAPI(cfg APIConfig, log *slog.Logger, v *vault.Vault, d *devices.Service, p *pkce.Store, sf Salesforce, ring *seal.Ring, now func() time.Time) *API {
	if cfg.ReauthLinkTTL <= 0 {
		cfg.ReauthLinkTTL = DefaultReauthLinkTTL
	}
	if cfg.AdminSessionTTL <= 0 {
		cfg.AdminSessionTTL = DefaultAdminSessionTTL
	}
	if now == nil {
		now = time.Now
	}
	a := &API{cfg: cfg, log: log, vault: v, devices: d, pending: p, sf: sf,
		reauth: &reauthTokens{ring: ring, ttl: cfg.ReauthLinkTTL, now: now}, now: now}
	if cfg.AdminStore != nil {
		a.admin = newAdminService(a)
	}
	return a
}

// ReauthURL returns a signed, expiring link that re-authorizes a connection.
func (a *API) ReauthURL(connectionID string) string {
	return a.reauth.url(a.cfg.PublicURL, connectionID)
}

func (a *API) redirectAllowed(uri string) bool {
	return uri != "" && slices.Contains(a.cfg.AppRedirectURIs, uri)
}

// withQuery appends parameters to a URI that may already have a query.
func withQuery(uri string, params url.Values) string {
	u, err := url.Parse(uri)
	if err != nil {
		return uri
	}
	q := u.Query()
	for k, vs := range params {
		for _, v := range vs {
			if v != "" {
				q.Add(k, v)
			}
		}
	}
	u.RawQuery = q.Encode()
	return u.String()
}
