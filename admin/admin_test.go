package admin_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tokenwarm/tokenwarm/admin"
	"github.com/tokenwarm/tokenwarm/models"
	"github.com/tokenwarm/tokenwarm/salesforce"
	"github.com/tokenwarm/tokenwarm/vault"
)

const (
	id      = "0a1b2c3d-0000-4000-8000-00000000000a"
	keyName = "ops-alice"
)

// fakes is every dependency of the service, recording what it was asked.
type fakes struct {
	conn       models.Connection
	accessErr  error
	revokeErr  error
	revokes    int
	audits     []models.Event
	pageCalls  []models.ConnectionFilter
	pageOrders []models.ConnectionOrder
}

func (f *fakes) PageConnections(_ context.Context, fl models.ConnectionFilter, o models.ConnectionOrder, _ *models.Position, limit int) ([]models.Connection, error) {
	f.pageCalls, f.pageOrders = append(f.pageCalls, fl), append(f.pageOrders, o)
	return nil, nil
}

func (f *fakes) ConnectionEvents(context.Context, string, int) ([]models.Event, error) {
	return nil, nil
}

func (f *fakes) AdminSummary(context.Context, models.SummaryQuery) (*models.Summary, error) {
	return &models.Summary{ByStatus: map[string]int64{"active": 2, "needs_reauth": 1, "revoked": 0}}, nil
}

func (f *fakes) RecordAdminEvent(_ context.Context, ev models.Event) error {
	f.audits = append(f.audits, ev)
	return nil
}

func (f *fakes) Connection(_ context.Context, got string) (*models.Connection, error) {
	if got != f.conn.ID {
		return nil, &vault.Error{Code: vault.CodeNotFound}
	}
	c := f.conn
	return &c, nil
}

func (f *fakes) Access(context.Context, string, vault.Request) (*vault.AccessToken, error) {
	return &vault.AccessToken{Token: "never-shown"}, f.accessErr
}

func (f *fakes) Revoke(ctx context.Context, id, cause, detail string, revoke func(ctx context.Context, loginURL, refreshToken string) error) (*models.Connection, error) {
	if err := revoke(ctx, f.conn.LoginURL, "rt"); err != nil {
		return nil, err
	}
	f.conn.Status = models.StatusRevoked
	c := f.conn
	return &c, nil
}

type revoker struct{ f *fakes }

func (r revoker) Revoke(context.Context, string, string) error { r.f.revokes++; return r.f.revokeErr }

type links struct{}

func (links) ReauthLink(string) (string, time.Time, error) {
	return "https://tw.example.com/v1/oauth/authorize?reauth_token=x", time.Unix(1e9, 0).UTC(), nil
}

func newService() (*admin.Service, *fakes) {
	now := time.Date(2026, 1, 31, 0, 0, 0, 0, time.UTC)
	f := &fakes{conn: models.Connection{ID: id, Status: models.StatusActive, LoginURL: "https://login.example.com",
		LastRefreshedAt: now.Add(-24 * time.Hour), RefreshTokenSealed: "v1.k.sealed"}}
	return admin.New(admin.Deps{Store: f, Auditor: f, Vault: f, Revoker: revoker{f}, Links: links{}},
		admin.Config{Worker: "w1", Now: func() time.Time { return now }}), f
}

func TestAdminActionsAreAuditedNamingTheKey(t *testing.T) {
	s, f := newService()
	ctx := context.Background()
	c, err := s.Refresh(ctx, strings.ToUpper(id), keyName)
	if err != nil || c.ID != id || c.IdleBudgetSeconds != 29*24*3600 {
		t.Fatalf("refresh: %+v %v", c, err)
	}
	f.accessErr = &vault.Error{Code: vault.CodeReauthRequired}
	_, err = s.Refresh(ctx, id, keyName)
	var failed *admin.RefreshError
	if !errors.As(err, &failed) || vault.ErrorCode(err) != vault.CodeReauthRequired {
		t.Fatalf("failed refresh: %v", err)
	}
	if _, err := s.ReauthLink(ctx, id, keyName); err != nil {
		t.Fatal(err)
	}
	if len(f.audits) != 3 {
		t.Fatalf("%d audit events, want 3", len(f.audits))
	}
	for _, ev := range f.audits {
		if ev.Cause != vault.CauseAdmin || ev.Worker != "w1" || ev.ConnectionID == nil || *ev.ConnectionID != id ||
			!strings.Contains(ev.Detail, `admin key "ops-alice"`) {
			t.Fatalf("audit event %+v", ev)
		}
	}
	if !strings.HasSuffix(f.audits[1].Detail, ": reauth_required") || f.audits[2].Kind != admin.EventReauthLink {
		t.Fatalf("audit events %+v", f.audits)
	}
}

func TestAdminRevokeAsksSalesforceFirst(t *testing.T) {
	s, f := newService()
	ctx := context.Background()
	f.revokeErr = &salesforce.Error{Class: salesforce.Config}
	if _, err := s.Revoke(ctx, id, keyName); vault.ErrorCode(err) != vault.CodeUpstreamConfig {
		t.Fatalf("config error: %v", err)
	}
	f.revokeErr = errors.New("connection reset")
	var ve *vault.Error
	if _, err := s.Revoke(ctx, id, keyName); !errors.As(err, &ve) || ve.Code != vault.CodeUpstreamUnavailable || ve.RetryAfter != 30*time.Second {
		t.Fatalf("transient error: %v", err)
	}
	if f.conn.Status != models.StatusActive {
		t.Fatal("an unconfirmed revocation changed the connection")
	}
	f.revokeErr = nil
	if c, err := s.Revoke(ctx, id, keyName); err != nil || c.Status != models.StatusRevoked {
		t.Fatalf("revoke: %+v %v", c, err)
	}
	if c, err := s.Revoke(ctx, id, keyName); err != nil || c.Status != models.StatusRevoked || f.revokes != 3 {
		t.Fatalf("second revoke: %+v %v (Salesforce asked %d times, want 3)", c, err, f.revokes)
	}
	if _, err := s.ReauthLink(ctx, id, keyName); vault.ErrorCode(err) != vault.CodeRevoked {
		t.Fatalf("re-auth link of a revoked connection: %v", err)
	}
}

func TestAdminParametersAreChecked(t *testing.T) {
	s, f := newService()
	ctx := context.Background()
	neg, big := -1, admin.MaxIdleBudgetDays+1
	for _, q := range []admin.ListQuery{{Limit: -1}, {Limit: admin.MaxPageSize + 1}, {Status: "dead"}, {Cursor: "bm9wZQ"},
		{IdleBudgetBelowDays: &neg}, {IdleBudgetBelowDays: &big}, {Search: strings.Repeat("x", admin.MaxSearch+1)}, {ReauthSoon: true}} {
		var ie *admin.InvalidError
		if _, err := s.ListConnections(ctx, q); !errors.As(err, &ie) {
			t.Fatalf("%+v: %v", q, err)
		}
	}
	if _, err := s.TableByIdleBudget(ctx, "", "", "bogus"); err == nil {
		t.Fatal("a bogus table position was accepted")
	}
	for _, bad := range []string{"not-a-uuid", id + "x", ""} {
		if _, err := s.Connection(ctx, bad); vault.ErrorCode(err) != vault.CodeNotFound {
			t.Fatalf("%q: %v", bad, err)
		}
	}
	if len(f.pageCalls) != 0 {
		t.Fatal("an invalid query reached the store")
	}
	sum, err := s.Summary(ctx)
	if err != nil || sum.Total != 3 || sum.MinIdleBudgetSeconds != nil || sum.RecentConfigErrors == nil {
		t.Fatalf("summary %+v %v", sum, err)
	}
}
