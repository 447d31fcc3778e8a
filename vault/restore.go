package vault

import (
	"context"
	"time"

	"github.com/tokenwarm/tokenwarm/models"
)

// CauseRestore marks what the restore procedure does (events, metrics).
const CauseRestore = "restore"

// Hold tells whether refreshes are held for the whole app because the
// database was restored from a backup (package restore owns it).
type Hold interface {
	// HoldReason is empty when refreshes may run, else why they may not.
	HoldReason() string
}

type holdHolder struct{ Hold }

// SetHold connects the vault to the restore hold. While it holds, no
// refresh of any cause (pull, warm, admin) presents a token: they answer
// upstream_unavailable with a Retry-After, and pulls of a stored access
// token that is still good are served as usual.
func (v *Vault) SetHold(h Hold) { v.hold.Store(&holdHolder{h}) }

// Held reports whether refreshes are held (the warmer claims nothing then).
func (v *Vault) Held() bool { return v.holdReason() != "" }

func (v *Vault) holdReason() string {
	if h := v.hold.Load(); h != nil {
		return h.HoldReason()
	}
	return ""
}

// holdRetry is the Retry-After of a refresh refused by the restore hold.
const holdRetry = 30 * time.Second

func errHeld(reason string) *Error {
	return &Error{Code: CodeUpstreamUnavailable, RetryAfter: holdRetry,
		Message: "refreshes are held for the app: " + reason}
}

// Verdict is what Verify learned about a connection's stored token.
type Verdict int

// Verdicts of Verify.
const (
	// VerdictSkipped: nothing to verify (not active, or no marker: the
	// token was verified or refreshed since it was marked).
	VerdictSkipped Verdict = iota
	// VerdictActive: introspection shows the stored token is the live one;
	// its marker is gone and it refreshes as usual.
	VerdictActive
	// VerdictRotationLost: Salesforce rotated the token since; it was never
	// presented, and the connection needs re-authorization.
	VerdictRotationLost
	// VerdictUnknown: the token's state could not be learned; its marker
	// stays, so the next refresh of any cause introspects it first.
	VerdictUnknown
)

func (v Verdict) String() string {
	return [...]string{"skipped", "active", "rotation_lost", "unknown"}[v]
}

// Verify settles a connection whose stored refresh token carries an
// unverified marker (models.DB.BeginRestore, HoldForRestore) without ever
// presenting it: the stored token is introspected under the row lock, as
// for any attempt with an unknown outcome (resolve). Active: the marker is
// removed (event restore_verified). Inactive: rotation_lost and
// needs_reauth, with their events and webhook. No verdict: the marker
// stays and the connection backs off, so every later refresh introspects
// first. The restore hold does not apply: introspection is not a
// presentation.
func (v *Vault) Verify(ctx context.Context, id string) (Verdict, error) {
	if !v.work.enter() {
		return VerdictUnknown, errShuttingDown()
	}
	defer v.work.leave()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), v.cfg.LockTimeout+v.cfg.UpstreamTimeout+v.cfg.CommitRetryBudget+10*time.Second)
	defer cancel()
	row, release, err := v.lock(ctx, id)
	if err != nil {
		if ErrorCode(err) == CodeNotFound {
			return VerdictSkipped, nil
		}
		return VerdictUnknown, err
	}
	defer release()
	c, prior := &row.Conn, row.Prior
	if c.Status != models.StatusActive || prior == nil {
		return VerdictSkipped, nil
	}
	if prior.Live {
		return VerdictUnknown, &Error{Code: CodeUpstreamUnavailable, Message: "a refresh of this connection is still settling", RetryAfter: time.Second}
	}
	refreshToken, err := v.OpenRefresh(c)
	if err != nil || refreshToken == "" {
		return VerdictUnknown, &Error{Code: CodeInternal, Message: "stored refresh token cannot be opened (wrong key ring?)", Err: err}
	}
	req := Request{Cause: CauseRestore}
	events, err := v.resolve(ctx, row, req, refreshToken)
	switch {
	case ErrorCode(err) == CodeReauthRequired:
		return VerdictRotationLost, nil
	case err != nil:
		return VerdictUnknown, err
	}
	now := v.clock.Now().UTC()
	events = append(events, v.event(c.ID, models.EventRestoreVerified, CauseRestore, 200, "",
		"introspection: the stored refresh token is still active"))
	if err := row.Store(ctx, v.write(row, models.RefreshWrite{Marker: models.RemovePriorMarker, AttemptID: prior.AttemptID,
		Update: map[string]any{"updated_at": now}, Events: events, Deadline: time.Now().Add(v.cfg.CommitRetryBudget)})); err != nil {
		return VerdictUnknown, v.storeError(err)
	}
	return VerdictActive, nil
}
