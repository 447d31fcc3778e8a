// Package salesforce is the only code that talks to Salesforce's OAuth token
// endpoints: code exchange, refresh, revoke and introspect, against any login
// host, with every outcome classified (see Class).
//
// It does not use golang.org/x/oauth2: that package cannot tell "request
// never sent" from "sent, answer lost" (the difference between a safe retry
// and a possibly rotated token), its auth-style auto-detection re-sends a
// failed token request with the other style (a second presentation of the
// same refresh token), and it expects expires_in, which Salesforce never
// sends.
package salesforce

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/tokenwarm/tokenwarm/clock"
	"github.com/tokenwarm/tokenwarm/internal/text"
)

// Token is a token response, parsed.
type Token struct {
	AccessToken  string
	RefreshToken string
	// Rotated reports whether the response carried a new refresh token.
	Rotated     bool
	InstanceURL string
	IdentityURL string
	OrgID       string
	UserID      string
	Scope       string
	Signature   string
	IssuedAt    time.Time
	ExpiresAt   time.Time
}

// Introspection is the answer of the introspection endpoint.
type Introspection struct {
	Active    bool   `json:"active"`
	Scope     string `json:"scope"`
	ClientID  string `json:"client_id"`
	Username  string `json:"username"`
	Subject   string `json:"sub"`
	TokenType string `json:"token_type"`
	Exp       int64  `json:"exp"`
	Iat       int64  `json:"iat"`
	Nbf       int64  `json:"nbf"`
}

// Client calls Salesforce's OAuth endpoints.
type Client struct {
	// HTTP sends the requests; route it through the egress proxy for the
	// refresh-token IP allowlist. Its own Timeout is not relied upon.
	HTTP         *http.Client
	ClientID     string
	ClientSecret string
	RedirectURI  string
	// Timeout bounds one call; keep it well inside the database lock and
	// idle-in-transaction timeouts.
	Timeout time.Duration
	// SessionTimeout is the access-token lifetime assumed when introspection
	// is off or fails.
	SessionTimeout time.Duration
	// UseIntrospection learns the real access-token expiry from the
	// introspection endpoint after each exchange and refresh.
	UseIntrospection bool
	// AllowedInstanceHosts adds host suffixes accepted as instance_url besides
	// Salesforce's own domains and the login host.
	AllowedInstanceHosts []string
	Clock                clock.Clock
}

func (c *Client) now() time.Time {
	if c.Clock == nil {
		return time.Now()
	}
	return c.Clock.Now()
}

type tokenResponse struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	Signature    string `json:"signature"`
	Scope        string `json:"scope"`
	InstanceURL  string `json:"instance_url"`
	ID           string `json:"id"`
	TokenType    string `json:"token_type"`
	IssuedAt     millis `json:"issued_at"`
}

// millis is issued_at: Salesforce sends a string of milliseconds, but a
// number must not make a successful (rotating) refresh unreadable.
type millis int64

func (m *millis) UnmarshalJSON(b []byte) error {
	var n int64
	if err := json.Unmarshal(bytes.Trim(b, `"`), &n); err != nil {
		*m = 0 // unreadable: the local clock stands in
		return nil
	}
	*m = millis(n)
	return nil
}

type errorResponse struct {
	Error            string `json:"error"`
	ErrorDescription string `json:"error_description"`
}

// Exchange trades an authorization code and its PKCE verifier for tokens.
func (c *Client) Exchange(ctx context.Context, loginURL, code, verifier string) (*Token, error) {
	form := url.Values{
		"grant_type":    {"authorization_code"},
		"code":          {code},
		"redirect_uri":  {c.RedirectURI},
		"code_verifier": {verifier},
	}
	tok, err := c.tokenCall(ctx, "exchange", loginURL, form, []string{code, verifier})
	if err != nil {
		return nil, err
	}
	if tok.RefreshToken == "" {
		return nil, &Error{Class: Config, Op: "exchange", Code: "no_refresh_token",
			Description: "Salesforce issued no refresh token: the connected app must allow the refresh_token scope"}
	}
	if tok.OrgID == "" || tok.UserID == "" {
		return nil, &Error{Class: Unknown, Op: "exchange", Code: "bad_identity", Description: "token response has no usable id URL"}
	}
	if !c.validInstanceURL(tok.InstanceURL, loginURL) {
		return nil, &Error{Class: Config, Op: "exchange", Code: "untrusted_instance_url",
			Description: "instance_url is not https on a Salesforce domain or an allowed host"}
	}
	c.learnExpiry(ctx, loginURL, tok)
	return tok, nil
}

// Refresh presents a refresh token once. When Salesforce returns no new
// refresh token (rotation off) the presented one is kept. The caller must
// hold the connection's lock: this is a presentation, and it is never
// retried here.
func (c *Client) Refresh(ctx context.Context, loginURL, refreshToken string) (*Token, error) {
	form := url.Values{
		"grant_type":    {"refresh_token"},
		"refresh_token": {refreshToken},
	}
	tok, err := c.tokenCall(ctx, "refresh", loginURL, form, []string{refreshToken})
	if err != nil {
		return nil, err
	}
	if tok.RefreshToken == "" {
		tok.RefreshToken = refreshToken
	} else {
		tok.Rotated = tok.RefreshToken != refreshToken
	}
	if !c.validInstanceURL(tok.InstanceURL, loginURL) {
		// Keep the stored instance URL rather than hand an app a host we do
		// not trust; the refresh itself did happen and must be stored.
		tok.InstanceURL = ""
	}
	c.learnExpiry(ctx, loginURL, tok)
	return tok, nil
}

// Revoke revokes a token (a refresh token revokes its access tokens too). A
// token Salesforce no longer knows counts as revoked.
func (c *Client) Revoke(ctx context.Context, loginURL, token string) error {
	_, _, err := c.post(ctx, "revoke", loginURL, "/services/oauth2/revoke", url.Values{"token": {token}}, []string{token})
	var e *Error
	if errors.As(err, &e) && (e.Code == "invalid_token" || e.Code == "unsupported_token_type") {
		return nil
	}
	return err
}

// Introspect asks Salesforce about a token.
func (c *Client) Introspect(ctx context.Context, loginURL, token, hint string) (*Introspection, error) {
	form := url.Values{"token": {token}, "token_type_hint": {hint}}
	status, body, err := c.post(ctx, "introspect", loginURL, "/services/oauth2/introspect", form, []string{token})
	if err != nil {
		return nil, err
	}
	var in Introspection
	if err := json.Unmarshal(body, &in); err != nil {
		return nil, &Error{Class: Transient, Op: "introspect", HTTPStatus: status, Code: "bad_response", Description: "introspection answer is not JSON"}
	}
	return &in, nil
}

// RefreshTokenActive asks the introspection endpoint whether a refresh
// token is still live, without presenting it (introspection neither rotates
// nor uses a token). Only a well-formed 200 answer carrying "active" is a
// verdict; anything else (401/403, 5xx, a timeout, a body without a boolean
// "active") is an error: the state of the token is not known.
func (c *Client) RefreshTokenActive(ctx context.Context, loginURL, refreshToken string) (bool, error) {
	form := url.Values{"token": {refreshToken}, "token_type_hint": {"refresh_token"}}
	status, body, err := c.post(ctx, "introspect", loginURL, "/services/oauth2/introspect", form, []string{refreshToken})
	if err != nil {
		return false, err
	}
	var in struct {
		Active *bool `json:"active"`
	}
	if err := json.Unmarshal(body, &in); err != nil || in.Active == nil {
		return false, &Error{Class: Unrecognized, Op: "introspect", HTTPStatus: status, Code: "bad_response",
			Description: "introspection answer has no boolean active"}
	}
	return *in.Active, nil
}

func (c *Client) learnExpiry(ctx context.Context, loginURL string, tok *Token) {
	tok.ExpiresAt = tok.IssuedAt.Add(c.sessionTimeout())
	if !c.UseIntrospection {
		return
	}
	// Expiry is a hint for when to refresh; a failed introspection must not
	// fail a refresh whose rotation already happened.
	in, err := c.Introspect(ctx, loginURL, tok.AccessToken, "access_token")
	if err == nil && in.Active && in.Exp > 0 {
		tok.ExpiresAt = time.Unix(in.Exp, 0).UTC()
	}
}

func (c *Client) sessionTimeout() time.Duration {
	if c.SessionTimeout <= 0 {
		return 2 * time.Hour
	}
	return c.SessionTimeout
}

func (c *Client) tokenCall(ctx context.Context, op, loginURL string, form url.Values, secrets []string) (*Token, error) {
	status, body, err := c.post(ctx, op, loginURL, "/services/oauth2/token", form, secrets)
	if err != nil {
		return nil, err
	}
	var tr tokenResponse
	if err := json.Unmarshal(body, &tr); err != nil || tr.AccessToken == "" {
		// A 200 we cannot read may still have rotated the token.
		return nil, &Error{Class: Unknown, Op: op, HTTPStatus: status, Code: "bad_response", Description: "token answer is not a usable token response"}
	}
	tok := &Token{
		AccessToken:  tr.AccessToken,
		RefreshToken: tr.RefreshToken,
		InstanceURL:  strings.TrimRight(tr.InstanceURL, "/"),
		IdentityURL:  tr.ID,
		Scope:        tr.Scope,
		Signature:    tr.Signature,
		IssuedAt:     c.now().UTC(),
	}
	if tr.IssuedAt > 0 {
		tok.IssuedAt = time.UnixMilli(int64(tr.IssuedAt)).UTC()
	}
	tok.OrgID, tok.UserID = ParseIdentityURL(tr.ID)
	return tok, nil
}

// ParseIdentityURL returns the org and user IDs, the last two path segments
// of an identity URL (https://login.salesforce.com/id/00D.../005...).
func ParseIdentityURL(id string) (orgID, userID string) {
	u, err := url.Parse(id)
	if err != nil {
		return "", ""
	}
	parts := strings.Split(strings.Trim(u.Path, "/"), "/")
	if len(parts) < 3 || parts[len(parts)-3] != "id" {
		return "", ""
	}
	return parts[len(parts)-2], parts[len(parts)-1]
}

// post sends one form POST with client credentials and reads the answer. A
// transport error is classified by whether the request had been written:
// before that it is Transient (nothing presented), after it Unknown.
func (c *Client) post(ctx context.Context, op, loginURL, path string, form url.Values, secrets []string) (int, []byte, error) {
	endpoint, err := endpointURL(loginURL, path)
	if err != nil {
		return 0, nil, &Error{Class: Config, Op: op, Code: "bad_login_url", Description: err.Error()}
	}
	form.Set("client_id", c.ClientID)
	if c.ClientSecret != "" {
		form.Set("client_secret", c.ClientSecret)
	}
	if c.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.Timeout)
		defer cancel()
	}
	var wrote atomic.Bool
	trace := &httptrace.ClientTrace{WroteRequest: func(info httptrace.WroteRequestInfo) {
		if info.Err == nil {
			wrote.Store(true)
		}
	}}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return 0, nil, &Error{Class: Config, Op: op, Code: "bad_login_url", Description: "cannot build request"}
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	resp, err := c.do(req)
	if err != nil {
		return 0, nil, transportError(op, err, wrote.Load(), secrets)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return 0, nil, transportError(op, err, true, secrets)
	}
	if resp.StatusCode != http.StatusOK {
		e := c.answerError(op, resp.StatusCode, body, secrets)
		e.RetryAfter = retryAfter(resp.Header.Get("Retry-After"))
		return resp.StatusCode, body, e
	}
	return resp.StatusCode, body, nil
}

// do sends req and never follows a redirect: it would re-send the form
// (refresh token and client secret included) or the bearer access token
// to wherever Location points.
func (c *Client) do(req *http.Request) (*http.Response, error) {
	hc := http.Client{}
	if c.HTTP != nil {
		hc = *c.HTTP
	}
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return hc.Do(req)
}

func (c *Client) answerError(op string, status int, body []byte, secrets []string) *Error {
	var er errorResponse
	_ = json.Unmarshal(body, &er)
	code := er.Error
	if code == "" {
		code = "http_" + strconv.Itoa(status)
	}
	e := &Error{
		Op:          op,
		HTTPStatus:  status,
		Code:        redact(text.Ellipsize(code, 64), secrets),
		Description: redact(text.Ellipsize(er.ErrorDescription, 200), secrets),
	}
	e.Class = Classify(status, er.Error, er.ErrorDescription)
	return e
}

func transportError(op string, err error, sent bool, secrets []string) *Error {
	class, code := Transient, "network_error"
	if sent {
		class, code = Unknown, "no_answer"
	}
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		code = "timeout"
		if sent {
			code = "timeout_after_send"
		}
	}
	// *url.Error repeats the URL; our URLs carry no secret, but scrub anyway.
	return &Error{Class: class, Op: op, Code: code, Description: redact(text.Ellipsize(err.Error(), 200), secrets), cause: errors.New(redact(err.Error(), secrets))}
}

func retryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && s > 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := time.Until(t); d > 0 {
			return d
		}
	}
	return 0
}

func endpointURL(loginURL, path string) (string, error) {
	u, err := url.Parse(strings.TrimRight(loginURL, "/"))
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("login URL is not an absolute URL")
	}
	if u.Scheme != "https" && !(u.Scheme == "http" && text.IsLoopbackHost(u.Hostname())) {
		return "", fmt.Errorf("login URL must use https (plain http only on loopback)")
	}
	u.Path = strings.TrimRight(u.Path, "/") + path
	u.RawQuery, u.Fragment = "", ""
	return u.String(), nil
}

// ValidateLoginURL checks a login host URL: https, or http on loopback.
func ValidateLoginURL(loginURL string) error {
	_, err := endpointURL(loginURL, "")
	return err
}

var salesforceDomains = []string{
	".salesforce.com", ".force.com", ".cloudforce.com", ".database.com",
	".salesforce.mil", ".sfcrmproducts.cn", ".salesforce-setup.com",
}

func (c *Client) validInstanceURL(instance, loginURL string) bool {
	u, err := url.Parse(instance)
	if err != nil || u.Host == "" || u.User != nil {
		return false
	}
	host := strings.ToLower(u.Hostname())
	if l, err := url.Parse(loginURL); err == nil {
		if strings.EqualFold(l.Host, u.Host) && (u.Scheme == "https" || text.IsLoopbackHost(host)) {
			return true
		}
		// A loopback login host is an emulator on this machine; it may serve
		// its REST API from another local port.
		if text.IsLoopbackHost(strings.ToLower(l.Hostname())) && text.IsLoopbackHost(host) && (u.Scheme == "http" || u.Scheme == "https") {
			return true
		}
	}
	if u.Scheme != "https" {
		return false
	}
	for _, suffix := range append(salesforceDomains, c.AllowedInstanceHosts...) {
		suffix = strings.ToLower(suffix)
		if host == strings.TrimPrefix(suffix, ".") || strings.HasSuffix(host, "."+strings.TrimPrefix(suffix, ".")) {
			return true
		}
	}
	return false
}

func redact(s string, secrets []string) string {
	for _, sec := range secrets {
		if len(sec) >= 4 {
			s = strings.ReplaceAll(s, sec, "[redacted]")
		}
	}
	return s
}
