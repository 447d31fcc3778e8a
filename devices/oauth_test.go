package devices_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tokenwarm/tokenwarm/devices"
	"github.com/tokenwarm/tokenwarm/models"
	"github.com/tokenwarm/tokenwarm/pkce"
)

// breakingStore is the database with one injected failure: while armed,
// the session a handoff code starts is stored under a refresh-token hash
// that is taken, so its insert fails inside the transaction that spent
// the code.
type breakingStore struct {
	*models.DB
	takenHash string
	armed     bool
}

func (b *breakingStore) StartDeviceSessionFromHandoff(ctx2 context.Context, hash string, now time.Time,
	start func(models.HandoffCode) (models.DeviceSession, string, error)) ([]string, error) {
	if !b.armed {
		return b.DB.StartDeviceSessionFromHandoff(ctx2, hash, now, start)
	}
	return b.DB.StartDeviceSessionFromHandoff(ctx2, hash, now, func(c models.HandoffCode) (models.DeviceSession, string, error) {
		s, _, err := start(c)
		return s, b.takenHash, err
	})
}

// A failure of ours between spending a handoff code and storing its
// session does not cost the user the code: both happen in one transaction.
func TestStartSessionFailureKeepsTheCode(t *testing.T) {
	forEachDialect(t, func(t *testing.T, w *world) {
		other := w.session("bob")
		store := &breakingStore{DB: w.db, takenHash: sha256Hex(other.RefreshToken), armed: true}
		svc := devices.New(store, w.ring, w.clk, devices.Config{Issuer: issuer})
		verifier := pkce.NewVerifier()
		code, err := svc.IssueHandoffFor(ctx, devices.Handoff{ConnectionID: w.connection(), Owner: "alice",
			AppRedirectURI: "com.example.app:/cb", ClientID: "com.example.app"}, pkce.S256(verifier))
		if err != nil {
			t.Fatal(err)
		}
		req := devices.SessionRequest{Code: code, CodeVerifier: verifier, RedirectURI: "com.example.app:/cb", RequireRedirectURI: true,
			ClientID: "com.example.app", DeviceLabel: "Pixel"}
		_, _, err = svc.StartSession(ctx, req)
		if err == nil || errors.Is(err, devices.ErrInvalidGrant) || errors.Is(err, devices.ErrInvalidRequest) {
			t.Fatalf("start with the injected failure: %v, want a failure of ours", err)
		}
		if strings.Contains(err.Error(), code) || strings.Contains(err.Error(), verifier) {
			t.Fatal("the error carries the code or the verifier")
		}
		store.armed = false
		tok, h, err := svc.StartSession(ctx, req)
		if err != nil {
			t.Fatalf("the code after the failure: %v", err)
		}
		if h.Owner != "alice" || h.ClientID != "com.example.app" || tok.Owner != "alice" {
			t.Fatalf("handoff %+v, tokens of %q", h, tok.Owner)
		}
		if _, err := svc.Verify(ctx, tok.AccessToken); err != nil {
			t.Fatalf("the new session's access token: %v", err)
		}
		_, _, err = svc.StartSession(ctx, req)
		wantErr(t, err, devices.ErrInvalidGrant, "code already used", code, verifier)
	})
}

// A code is bound to the client and redirect URI of its authorization;
// every refused attempt spends it.
func TestStartSessionChecksClientAndRedirect(t *testing.T) {
	forEachDialect(t, func(t *testing.T, w *world) {
		conn := w.connection()
		const redirect = "http://127.0.0.1:5123/cb"
		issue := func(clientID string) (code, verifier string) {
			t.Helper()
			verifier = pkce.NewVerifier()
			code, err := w.svc.IssueHandoffFor(ctx, devices.Handoff{ConnectionID: conn, Owner: "alice", AppRedirectURI: redirect, ClientID: clientID}, pkce.S256(verifier))
			if err != nil {
				t.Fatal(err)
			}
			return code, verifier
		}
		for name, tc := range map[string]struct {
			issuedTo string
			req      devices.SessionRequest
			kind     error
			reason   string
		}{
			"another client":              {"app.one", devices.SessionRequest{ClientID: "app.two", RedirectURI: redirect}, devices.ErrWrongClient, "code was not issued to this client"},
			"no client for a client code": {"app.one", devices.SessionRequest{RedirectURI: redirect}, devices.ErrWrongClient, "code was not issued to this client"},
			"a client for a legacy code":  {"", devices.SessionRequest{ClientID: "app.one"}, devices.ErrWrongClient, "code was not issued to this client"},
			"another redirect URI":        {"app.one", devices.SessionRequest{ClientID: "app.one", RedirectURI: "http://127.0.0.1:5124/cb"}, devices.ErrInvalidGrant, "redirect_uri does not match the authorization request"},
		} {
			t.Run(name, func(t *testing.T) {
				code, verifier := issue(tc.issuedTo)
				tc.req.Code, tc.req.CodeVerifier = code, verifier
				_, _, err := w.svc.StartSession(ctx, tc.req)
				wantErr(t, err, tc.kind, tc.reason, code, verifier)
				good := devices.SessionRequest{Code: code, CodeVerifier: verifier, ClientID: tc.issuedTo, RedirectURI: redirect}
				_, _, err = w.svc.StartSession(ctx, good)
				wantErr(t, err, devices.ErrInvalidGrant, "code already used", code, verifier)
			})
		}
		t.Run("redirect URI required", func(t *testing.T) {
			code, verifier := issue("app.one")
			_, _, err := w.svc.StartSession(ctx, devices.SessionRequest{Code: code, CodeVerifier: verifier, ClientID: "app.one", RequireRedirectURI: true})
			wantErr(t, err, devices.ErrInvalidRequest, "redirect_uri is required", code, verifier)
			// Refused before the database: the code still works.
			tok, _, err := w.svc.StartSession(ctx, devices.SessionRequest{Code: code, CodeVerifier: verifier, ClientID: "app.one", RedirectURI: redirect, RequireRedirectURI: true})
			if err != nil {
				t.Fatal(err)
			}
			// The session remembers its client: refreshes by another client
			// are refused before the token is spent.
			err = w.svc.CheckRefreshClient(ctx, tok.RefreshToken, "app.two")
			wantErr(t, err, devices.ErrWrongClient, "refresh token was not issued to this client", tok.RefreshToken)
			if err := w.svc.CheckRefreshClient(ctx, tok.RefreshToken, "app.one"); err != nil {
				t.Fatal(err)
			}
			if _, err := w.svc.Refresh(ctx, tok.RefreshToken); err != nil {
				t.Fatalf("refresh after a refused client check: %v", err)
			}
		})
		t.Run("legacy code without client or redirect", func(t *testing.T) {
			code, verifier := issue("")
			if _, _, err := w.svc.StartSession(ctx, devices.SessionRequest{Code: code, CodeVerifier: verifier}); err != nil {
				t.Fatal(err)
			}
		})
	})
}

// RFC 7009: a refresh token (current or rotated) or a valid access token
// ends its session; anything else is quietly ignored.
func TestRevokeAnyDeviceToken(t *testing.T) {
	forEachDialect(t, func(t *testing.T, w *world) {
		revoked := func(tok *devices.Tokens) bool {
			t.Helper()
			_, err := w.svc.Verify(ctx, tok.AccessToken)
			if err != nil && !errors.Is(err, devices.ErrInvalidToken) {
				t.Fatal(err)
			}
			return err != nil
		}
		t.Run("refresh token, rotated", func(t *testing.T) {
			tok := w.session("alice")
			next, err := w.svc.Refresh(ctx, tok.RefreshToken)
			if err != nil {
				t.Fatal(err)
			}
			if err := w.svc.Revoke(ctx, tok.RefreshToken, ""); err != nil {
				t.Fatal(err)
			}
			if !revoked(next) {
				t.Fatal("the session outlived the revocation of its rotated refresh token")
			}
			if err := w.svc.Revoke(ctx, next.RefreshToken, ""); err != nil {
				t.Fatalf("revoking a revoked session: %v", err)
			}
		})
		t.Run("access token", func(t *testing.T) {
			tok := w.session("alice")
			if err := w.svc.Revoke(ctx, tok.AccessToken, ""); err != nil {
				t.Fatal(err)
			}
			if !revoked(tok) {
				t.Fatal("the session outlived the revocation of its access token")
			}
			if _, err := w.svc.Refresh(ctx, tok.RefreshToken); !errors.Is(err, devices.ErrInvalidGrant) {
				t.Fatalf("refresh after revocation: %v", err)
			}
		})
		t.Run("expired access token", func(t *testing.T) {
			tok := w.session("alice")
			w.clk.Advance(16 * time.Minute)
			if err := w.svc.Revoke(ctx, tok.AccessToken, ""); err != nil {
				t.Fatal(err)
			}
			if _, err := w.svc.Refresh(ctx, tok.RefreshToken); err != nil {
				t.Fatalf("an expired access token revoked its session: %v", err)
			}
		})
		t.Run("another client", func(t *testing.T) {
			verifier := pkce.NewVerifier()
			code, err := w.svc.IssueHandoffFor(ctx, devices.Handoff{ConnectionID: w.connection(), Owner: "alice", AppRedirectURI: "app:/cb", ClientID: "app.one"}, pkce.S256(verifier))
			if err != nil {
				t.Fatal(err)
			}
			tok, _, err := w.svc.StartSession(ctx, devices.SessionRequest{Code: code, CodeVerifier: verifier, ClientID: "app.one"})
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range []string{tok.RefreshToken, tok.AccessToken} {
				wantErr(t, w.svc.Revoke(ctx, s, "app.two"), devices.ErrWrongClient, "token was not issued to this client", s)
			}
			if revoked(tok) {
				t.Fatal("another client's revocation ended the session")
			}
			if err := w.svc.Revoke(ctx, tok.AccessToken, "app.one"); err != nil || !revoked(tok) {
				t.Fatalf("revocation by its own client: %v", err)
			}
		})
		t.Run("unknown and malformed tokens", func(t *testing.T) {
			for _, s := range []string{"", "nope", "twr_" + strings.Repeat("A", 43), "a.b.c", "twh_" + strings.Repeat("A", 43)} {
				if err := w.svc.Revoke(ctx, s, ""); err != nil {
					t.Errorf("revoke %q: %v", s, err)
				}
			}
		})
	})
}
