package vault_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/tokenwarm/tokenwarm/internal/testkit"
	"github.com/tokenwarm/tokenwarm/models"
	"github.com/tokenwarm/tokenwarm/salesforce"
	"github.com/tokenwarm/tokenwarm/vault"
)

// flakyIdentity is the real client whose identity calls answer as told.
type flakyIdentity struct {
	*salesforce.Client
	calls atomic.Int32
	who   *salesforce.Identity
	err   error
}

func (f *flakyIdentity) Identity(ctx context.Context, loginURL string, tok *salesforce.Token) (*salesforce.Identity, error) {
	f.calls.Add(1)
	if f.who == nil && f.err == nil {
		return f.Client.Identity(ctx, loginURL, tok)
	}
	return f.who, f.err
}

// Who a grant belongs to is learned at connect and re-authorization; a
// failure never fails the connect (what was learned is stored, earlier
// values are kept), and with capture off nothing is asked.
func TestConnectCapturesIdentity(t *testing.T) {
	testkit.Dialects(t, func(t *testing.T, dialect models.Dialect) {
		e := newEnv(t, dialect)
		sf := &flakyIdentity{Client: e.SFClient()}
		v := vault.New(e.DB, e.Ring, sf, e.Clock, e.Log, vault.Config{Worker: "w"})
		connect := func(username string) string {
			t.Helper()
			tok, err := testkit.Authorize(e.EmuURL, e.SFClient(), username)
			if err != nil {
				t.Fatal(err)
			}
			c, err := v.Connect(context.Background(), e.EmuURL, tok.OrgID+"/"+tok.UserID, tok, "")
			if err != nil {
				t.Fatalf("connect: %v", err)
			}
			return c.Connection.ID
		}
		id := connect("ada.lovelace@example.com")
		c := e.conn(id)
		if c.UserName != "Ada Lovelace" || c.UserUsername != "ada.lovelace@example.com" || c.UserEmail != "ada.lovelace@example.com" ||
			c.OrgName != "Emulated Org" || c.AuthorizedAt == nil || !c.AuthorizedAt.Equal(e.Clock.Now()) {
			t.Fatalf("first connect stored %+v", c)
		}

		// Re-authorization while Salesforce answers only part: the connect
		// succeeds, the new part replaces, the rest is kept, the failure is
		// logged.
		sf.who, sf.err = &salesforce.Identity{Email: "ada@new.example"}, errors.New("salesforce identity: http_503")
		e.Clock.Advance(24 * 3600e9)
		if again := connect("ada.lovelace@example.com"); again != id {
			t.Fatalf("re-authorization made a new connection %s", again)
		}
		c = e.conn(id)
		if c.UserName != "Ada Lovelace" || c.UserEmail != "ada@new.example" || !c.AuthorizedAt.Equal(e.Clock.Now()) || c.CreatedAt.Equal(*c.AuthorizedAt) {
			t.Fatalf("after a partial capture %+v", c)
		}
		if !strings.Contains(e.Logs.String(), "http_503") {
			t.Fatalf("the failed capture was not logged:\n%s", e.Logs.String())
		}

		// Nothing learned at all: still connected.
		sf.who, sf.err = &salesforce.Identity{}, errors.New("salesforce identity: timeout")
		grace := connect("grace.hopper@example.com")
		if g := e.conn(grace); g.Status != models.StatusActive || g.UserName != "" || g.UserUsername != "" {
			t.Fatalf("without identity %+v", g)
		}

		// Capture off: Salesforce is not asked.
		off := vault.New(e.DB, e.Ring, sf, e.Clock, e.Log, vault.Config{Worker: "w", SkipIdentity: true})
		before := sf.calls.Load()
		tok, err := testkit.Authorize(e.EmuURL, e.SFClient(), "hidden.person@example.com")
		if err != nil {
			t.Fatal(err)
		}
		cn, err := off.Connect(context.Background(), e.EmuURL, tok.OrgID+"/"+tok.UserID, tok, "")
		if err != nil {
			t.Fatal(err)
		}
		if sf.calls.Load() != before || e.conn(cn.Connection.ID).UserName != "" {
			t.Fatalf("capture off still asked (%d calls) or stored %+v", sf.calls.Load()-before, e.conn(cn.Connection.ID))
		}
	})
}
