package webhooks_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"go.yaml.in/yaml/v4"

	"github.com/tokenwarm/tokenwarm/clock"
	"github.com/tokenwarm/tokenwarm/internal/apitest"
	"github.com/tokenwarm/tokenwarm/internal/rawdb"
	"github.com/tokenwarm/tokenwarm/internal/testkit"
	"github.com/tokenwarm/tokenwarm/models"
	"github.com/tokenwarm/tokenwarm/webhooks"
)

// xWebhook is what the contract says of one event type under x-webhooks.
type xWebhook struct {
	Post struct {
		Parameters []struct {
			Ref string `yaml:"$ref"`
		} `yaml:"parameters"`
		RequestBody struct {
			Content map[string]struct {
				Schema struct {
					Ref string `yaml:"$ref"`
				} `yaml:"schema"`
				Example map[string]any `yaml:"example"`
			} `yaml:"content"`
		} `yaml:"requestBody"`
	} `yaml:"post"`
}

// personFields are the data fields AnnouncePeople adds to a connection's
// events (TOKENWARM_WEBHOOK_IDENTITY).
var personFields = []string{"org_id", "user_id", "user_name", "username", "email", "org_name"}

// contract is x-webhooks of openapi.yaml, with its schemas resolved.
type contract struct {
	ops map[string]xWebhook
	doc *openapi3.T
}

func loadContract(t *testing.T) contract {
	t.Helper()
	src, err := os.ReadFile(apitest.SpecPath())
	if err != nil {
		t.Fatal(err)
	}
	var spec struct {
		XWebhooks map[string]xWebhook `yaml:"x-webhooks"`
	}
	if err := yaml.Unmarshal(src, &spec); err != nil {
		t.Fatal(err)
	}
	return contract{ops: spec.XWebhooks, doc: apitest.Spec(t)}
}

// checkBody reports how body, a delivery of typ, departs from the
// contract: the body schema, and every field (of data too) documented.
func (c contract) checkBody(typ string, body map[string]any) []string {
	ref := c.ops[typ].Post.RequestBody.Content["application/json"].Schema.Ref
	schema := c.doc.Components.Schemas[strings.TrimPrefix(ref, "#/components/schemas/")]
	if schema == nil {
		return []string{fmt.Sprintf("%s: no schema %q", typ, ref)}
	}
	var errs []string
	if err := schema.Value.VisitJSON(body); err != nil {
		errs = append(errs, fmt.Sprintf("%s: the body does not match %s: %v", typ, ref, err))
	}
	// Every field sent is documented (the schemas stay open for fields
	// added later, so VisitJSON alone would not notice).
	for k := range body {
		if schema.Value.Properties[k] == nil {
			errs = append(errs, fmt.Sprintf("%s: field %s is not in %s", typ, k, ref))
		}
	}
	if data, ok := body["data"].(map[string]any); ok && schema.Value.Properties["data"] != nil {
		for k := range data {
			if schema.Value.Properties["data"].Value.Properties[k] == nil {
				errs = append(errs, fmt.Sprintf("%s: data.%s is not in %s", typ, k, ref))
			}
		}
	}
	return errs
}

// Every event type Deliveries accepts is documented under x-webhooks of
// openapi.yaml and nothing else is, and each documented example matches
// its schema. Real deliveries of every type (audit events shaped as the
// vault and the warmer record them, reauth_soon found by the warmer's own
// store sweep, stored with their outbox rows by models, sent by the
// dispatcher over HTTP) match the documented body schema and headers, with
// the person fields (TOKENWARM_WEBHOOK_IDENTITY) and without them.
func TestDeliveriesMatchTheContract(t *testing.T) {
	c := loadContract(t)
	documented := slices.Sorted(maps.Keys(c.ops))
	if !slices.Equal(documented, known()) {
		t.Fatalf("x-webhooks documents %v; tokenwarm sends %v", documented, known())
	}
	for _, typ := range documented {
		ex := c.ops[typ].Post.RequestBody.Content["application/json"].Example
		if ex == nil {
			t.Errorf("%s: no example", typ)
			continue
		}
		// YAML reads the timestamps as strings already (they are quoted).
		for _, e := range c.checkBody(typ, ex) {
			t.Errorf("the example: %s", e)
		}
	}

	for _, identity := range []bool{true, false} {
		t.Run(fmt.Sprintf("identity=%t", identity), func(t *testing.T) {
			deliveriesMatch(t, c, identity)
		})
	}
}

func deliveriesMatch(t *testing.T, c contract, identity bool) {
	ctx := context.Background()
	db := testkit.MigratedDB(t, models.SQLite)
	rcv := newCapture(t, 0)
	eps := []webhooks.Endpoint{{URL: rcv.srv.URL + "/hook", Secret: webhooks.NewSecret(), PreviousSecrets: []string{"an-earlier-secret-0123"}}}
	db.SetAnnouncer(webhooks.Announcer(eps))
	if identity {
		db.AnnouncePeople(webhooks.Announces)
	}

	// ada's identity was captured; bare's was not (or was erased), so only
	// the IDs of the grant are known.
	at := time.Now().UTC().Truncate(time.Microsecond)
	authorized := at.Add(-89 * 24 * time.Hour)
	conns := map[string]models.Connection{}
	for _, cn := range []models.Connection{
		{ID: "0b9e6f7c-3c1a-4c55-9f0e-2a51d7a3e2c4", OrgID: "00D5g000004XyZaEAK", UserID: "0055g00000AbCdEAAV",
			UserName: "Ada Lovelace", UserUsername: "ada@acme.example", UserEmail: "ada.lovelace@mail.acme.example", OrgName: "Acme"},
		{ID: "6a1d2f3e-4b5c-4d6e-8f70-8192a3b4c5d6", OrgID: "00D5g000004XyZbEAK", UserID: "0055g00000XyZaEAAV"},
	} {
		cn.Owner, cn.LoginURL, cn.InstanceURL, cn.Status = "owner-"+cn.UserID, "https://login.salesforce.com", "https://acme.my.salesforce.com", models.StatusActive
		cn.LastRefreshedAt, cn.NextWarmAt, cn.CreatedAt, cn.UpdatedAt, cn.AuthorizedAt = at, at, authorized, at, &authorized
		if err := rawdb.Gorm(db).Create(&cn).Error; err != nil {
			t.Fatal(err)
		}
		conns[cn.ID] = cn
	}

	var events []models.Event
	for id := range conns {
		events = append(events,
			models.Event{ConnectionID: &id, Kind: models.EventNeedsReauth, Cause: "warm", ErrorCode: "invalid_grant",
				Detail: "expired access/refresh token", CreatedAt: at},
			models.Event{ConnectionID: &id, Kind: models.EventReauthorized, Detail: "org " + conns[id].OrgID + " user " + conns[id].UserID, CreatedAt: at},
			models.Event{ConnectionID: &id, Kind: models.EventRevoked, Cause: "admin", Detail: `revoked by admin key "ops"`, CreatedAt: at},
			models.Event{ConnectionID: &id, Kind: "idle_expiry_risk", Cause: "warm",
				Detail: "idle budget 166h0m0s left of 720h0m0s: last successful refresh 2025-12-28T01:00:00Z", CreatedAt: at})
	}
	events = append(events, models.Event{Kind: "config_error_app_paused", Cause: "warm", ErrorCode: "invalid_client_id",
		Detail: "warming paused for the app: client identifier invalid", CreatedAt: at},
		models.Event{Kind: models.EventRestoreDetected, Cause: "restore", ErrorCode: "database_restored",
			Detail: "refreshes are held for the app until `tokenwarm restore` has run: the database went back in its history", CreatedAt: at})
	if err := db.RecordEvents(ctx, events); err != nil {
		t.Fatal(err)
	}
	// reauth_soon as the warmer's sweep records it (SALESFORCE_REFRESH_MAX_AGE
	// 90 days, 7 days ahead).
	maxAge := 90 * 24 * time.Hour
	found, err := db.RecordReauthSoon(ctx, at.Add(-(maxAge - 7*24*time.Hour)), models.EventReauthSoon, 10, func(d models.ReauthDue) models.Event {
		id := d.ID
		due := d.AuthorizedAt.Add(maxAge).UTC()
		return models.Event{ConnectionID: &id, Kind: models.EventReauthSoon, Cause: "warm", CreatedAt: at,
			Detail: fmt.Sprintf("the refresh token expires %s (%s after the authorization of %s, the org's maximum age): ask the user to re-authorize",
				due.Format(time.RFC3339), maxAge, d.AuthorizedAt.UTC().Format(time.RFC3339))}
	})
	if err != nil || len(found) != len(conns) {
		t.Fatalf("reauth_soon sweep: %d found (%v), want %d", len(found), err, len(conns))
	}
	// Each connection type for each connection, and each app type once.
	appTypes := 0
	for _, typ := range known() {
		if strings.HasPrefix(typ, "app.") {
			appTypes++
		}
	}
	deliver(t, webhooks.NewDispatcher(db, eps, clock.NewFake(at), nil, nil, webhooks.Config{}), (len(known())-appTypes)*len(conns)+appTypes, 0)

	got := map[string]int{}
	for _, d := range rcv.all() {
		var body map[string]any
		if err := json.Unmarshal(d.body, &body); err != nil {
			t.Fatal(err)
		}
		typ, _ := body["type"].(string)
		got[typ]++
		for _, e := range c.checkBody(typ, body) {
			t.Errorf("%s (body %s)", e, d.body)
		}
		for _, p := range c.ops[typ].Post.Parameters {
			param := c.doc.Components.Parameters[strings.TrimPrefix(p.Ref, "#/components/parameters/")]
			if param == nil {
				t.Errorf("%s: no parameter %q", typ, p.Ref)
				continue
			}
			v := d.header.Get(param.Value.Name)
			switch {
			case v == "" && param.Value.Required:
				t.Errorf("%s: no %s header", typ, param.Value.Name)
			case v != "":
				if err := param.Value.Schema.Value.VisitJSON(v); err != nil {
					t.Errorf("%s: header %s: %q does not match the contract: %v", typ, param.Value.Name, v, err)
				}
			}
		}

		// The person fields: those known of the connection with identity
		// on, none without, none for the app.
		data, _ := body["data"].(map[string]any)
		conn, isConn := conns[fmt.Sprint(data["connection_id"])]
		wantPerson := map[string]any{}
		if identity && isConn {
			for k, v := range map[string]string{"org_id": conn.OrgID, "user_id": conn.UserID, "user_name": conn.UserName,
				"username": conn.UserUsername, "email": conn.UserEmail, "org_name": conn.OrgName} {
				if v != "" {
					wantPerson[k] = v
				}
			}
		}
		gotPerson := map[string]any{}
		for _, k := range personFields {
			if v, ok := data[k]; ok {
				gotPerson[k] = v
			}
		}
		if !maps.Equal(gotPerson, wantPerson) {
			t.Errorf("%s of %v: person fields %v, want %v", typ, data["connection_id"], gotPerson, wantPerson)
		}
	}
	for _, typ := range known() {
		n := len(conns)
		if strings.HasPrefix(typ, "app.") {
			n = 1
		}
		if got[typ] != n {
			t.Errorf("received %d deliveries of %s, want %d (all: %v)", got[typ], typ, n, got)
		}
	}
	if len(got) != len(known()) {
		t.Errorf("received types %v, want %v", slices.Sorted(maps.Keys(got)), known())
	}
}

// known lists every event type Deliveries accepts.
func known() []string {
	return slices.Sorted(maps.Keys(webhooks.KnownTypes))
}
