package admin

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tokenwarm/tokenwarm/models"
	"github.com/tokenwarm/tokenwarm/vault"
)

// Audit event kinds of admin actions (a revocation records
// models.EventRevoked, through the vault).
const (
	EventRefresh    = "admin_refresh"
	EventReauthLink = "admin_reauth_link"
	// EventIdentityErased: an admin erased the user's personal data.
	EventIdentityErased = models.EventIdentityErased
)

// revokeTimeout bounds a revocation, which runs detached from its caller.
const revokeTimeout = 30 * time.Second

// audit records an admin action on a connection, naming the key (never
// the key itself).
func (s *Service) audit(ctx context.Context, connectionID, kind, detail string) error {
	cid := connectionID
	ev := models.Event{ConnectionID: &cid, Kind: kind, Cause: vault.CauseAdmin, Worker: s.cfg.Worker,
		Detail: detail, CreatedAt: s.cfg.Now().UTC()}
	if err := s.d.Auditor.RecordAdminEvent(ctx, ev); err != nil {
		return fmt.Errorf("admin: audit %s: %w", kind, err)
	}
	return nil
}

// Refresh forces one refresh through the vault (cause admin, backoff
// ignored), audits it with its outcome, and returns the connection. A
// refresh that was tried and failed is a *RefreshError.
func (s *Service) Refresh(ctx context.Context, id, keyName string) (*Connection, error) {
	cn, err := s.lookup(ctx, id)
	if err != nil {
		return nil, err
	}
	_, err = s.d.Vault.Access(ctx, cn.ID, vault.Request{Cause: vault.CauseAdmin, Force: true, IgnoreBackoff: true})
	outcome := "ok"
	if err != nil {
		outcome = string(vault.ErrorCode(err))
	}
	if aerr := s.audit(ctx, cn.ID, EventRefresh, fmt.Sprintf("forced refresh by admin key %q: %s", keyName, outcome)); aerr != nil {
		return nil, aerr
	}
	if err != nil {
		return nil, &RefreshError{Err: err}
	}
	if cn, err = s.load(ctx, cn.ID); err != nil {
		return nil, err
	}
	v := s.view(s.ttls(ctx), cn)
	return &v, nil
}

// Link is a re-authorization link to send to a connection's user.
type Link struct {
	URL       string    `json:"url"`
	ExpiresAt time.Time `json:"expires_at"`
}

// ReauthLink makes a signed, expiring link that re-authorizes the
// connection, and audits it. A revoked connection gets none.
func (s *Service) ReauthLink(ctx context.Context, id, keyName string) (*Link, error) {
	cn, err := s.lookup(ctx, id)
	if err != nil {
		return nil, err
	}
	if cn.Status == models.StatusRevoked {
		return nil, errRevoked()
	}
	link, exp, err := s.d.Links.ReauthLink(cn.ID)
	if err != nil {
		return nil, fmt.Errorf("admin: re-authorization link: %w", err)
	}
	detail := fmt.Sprintf("re-authorization link issued by admin key %q, valid until %s", keyName, exp.Format(time.RFC3339))
	if err := s.audit(ctx, cn.ID, EventReauthLink, detail); err != nil {
		return nil, err
	}
	return &Link{URL: link, ExpiresAt: exp}, nil
}

// Revoke revokes the connection's refresh token at Salesforce and then
// marks the connection revoked, through the vault (which records the
// event), under the lock refreshes take. If Salesforce does not confirm,
// nothing changes. Revoking a revoked connection does nothing.
func (s *Service) Revoke(ctx context.Context, id, keyName string) (*Connection, error) {
	// Detached: a caller hanging up must not split the Salesforce
	// revocation from storing it.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), revokeTimeout)
	defer cancel()
	cn, err := s.lookup(ctx, id)
	if err != nil {
		return nil, err
	}
	if cn.Status != models.StatusRevoked {
		detail := fmt.Sprintf("revoked by admin key %q", keyName)
		cn, err = s.d.Vault.Revoke(ctx, cn.ID, vault.CauseAdmin, detail, s.d.Revoker.Revoke)
		if err != nil && !vault.IsVaultError(err) {
			return nil, upstreamRevokeError(err)
		}
		if err != nil {
			return nil, err
		}
	}
	v := s.view(s.ttls(ctx), cn)
	return &v, nil
}

// EraseIdentity erases the personal data tokenwarm holds about the
// connection's user (name, username, email; the org's name is not
// personal and stays) and audits it, naming the key. The connection keeps
// working; a later re-authorization captures them again unless capture is
// off (TOKENWARM_CAPTURE_IDENTITY=false). Webhook deliveries already
// queued keep what they carry.
func (s *Service) EraseIdentity(ctx context.Context, id, keyName string) (*Connection, error) {
	cn, err := s.lookup(ctx, id)
	if err != nil {
		return nil, err
	}
	cid := cn.ID
	ev := models.Event{ConnectionID: &cid, Kind: EventIdentityErased, Cause: vault.CauseAdmin, Worker: s.cfg.Worker,
		Detail: fmt.Sprintf("personal data of the user erased by admin key %q", keyName), CreatedAt: s.cfg.Now().UTC()}
	cn, err = s.d.Eraser.EraseIdentity(ctx, cid, ev)
	if errors.Is(err, models.ErrNotFound) {
		return nil, &vault.Error{Code: vault.CodeNotFound, Message: "no such connection"}
	}
	if err != nil {
		return nil, fmt.Errorf("admin: erase identity: %w", err)
	}
	v := s.view(s.ttls(ctx), cn)
	return &v, nil
}
