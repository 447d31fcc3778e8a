package admin

import (
	"context"
	"fmt"
	"regexp"
	"sort"
	"time"

	"github.com/tokenwarm/tokenwarm/models"
	"github.com/tokenwarm/tokenwarm/vault"
)

// EventOrgIdleTTL records a change of an org's refresh-token idle TTL.
const EventOrgIdleTTL = "org_idle_ttl_changed"

// OrgSettings are the per-org settings operators set.
type OrgSettings struct {
	DefaultRefreshIdleTTLSeconds int64    `json:"default_refresh_idle_ttl_seconds"`
	Orgs                         []OrgTTL `json:"orgs"`
}

// OrgTTL is one org's own refresh-token idle TTL.
type OrgTTL struct {
	OrgID                 string `json:"org_id"`
	RefreshIdleTTLSeconds int64  `json:"refresh_idle_ttl_seconds"`
}

// orgID is a Salesforce org ID: 15 or 18 characters starting 00D.
var orgID = regexp.MustCompile(`^00D[0-9A-Za-z]{12}([0-9A-Za-z]{3})?$`)

// Orgs lists the default idle TTL and every org's own.
func (s *Service) Orgs(ctx context.Context) (*OrgSettings, error) {
	ttls, err := s.d.Orgs.IdleTTLs(ctx, s.cfg.IdleTTL)
	if err != nil {
		return nil, fmt.Errorf("admin: org settings: %w", err)
	}
	out := &OrgSettings{DefaultRefreshIdleTTLSeconds: int64(ttls.Default / time.Second), Orgs: []OrgTTL{}}
	for org, d := range ttls.ByOrg {
		out.Orgs = append(out.Orgs, OrgTTL{OrgID: org, RefreshIdleTTLSeconds: int64(d / time.Second)})
	}
	sort.Slice(out.Orgs, func(i, j int) bool { return out.Orgs[i].OrgID < out.Orgs[j].OrgID })
	return out, nil
}

// SetOrgIdleTTL records the refresh-token idle TTL an org's admin set for
// the connected app ("expire refresh token if not used for N"); zero goes
// back to the default. A TTL the warm schedule cannot keep inside is
// refused (an *InvalidError), so no connection of the org is left to die.
// The change is audited, naming the key.
func (s *Service) SetOrgIdleTTL(ctx context.Context, org string, ttl time.Duration, keyName string) (*OrgSettings, error) {
	if !orgID.MatchString(org) {
		return nil, &InvalidError{Field: "org_id", Message: "must be a Salesforce org ID (15 or 18 characters starting with 00D)"}
	}
	switch {
	case ttl < 0 || (ttl > 0 && ttl < time.Hour):
		return nil, &InvalidError{Field: "refresh_idle_ttl_seconds", Message: "must be 0 (the default) or at least 3600"}
	case ttl > 0 && s.cfg.ValidateIdleTTL != nil:
		if err := s.cfg.ValidateIdleTTL(ttl); err != nil {
			return nil, &InvalidError{Field: "refresh_idle_ttl_seconds", Message: err.Error()}
		}
	}
	if err := s.d.Orgs.SetOrgIdleTTL(ctx, org, ttl, s.cfg.Now()); err != nil {
		return nil, fmt.Errorf("admin: set org idle TTL: %w", err)
	}
	detail := fmt.Sprintf("refresh-token idle TTL of org %s set to %s by admin key %q", org, ttl, keyName)
	if ttl == 0 {
		detail = fmt.Sprintf("refresh-token idle TTL of org %s back to the default by admin key %q", org, keyName)
	}
	ev := models.Event{Kind: EventOrgIdleTTL, Cause: vault.CauseAdmin, Worker: s.cfg.Worker, Detail: detail, CreatedAt: s.cfg.Now().UTC()}
	if err := s.d.Auditor.RecordAdminEvent(ctx, ev); err != nil {
		return nil, fmt.Errorf("admin: audit %s: %w", EventOrgIdleTTL, err)
	}
	return s.Orgs(ctx)
}
