package webhooks_test

import (
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v4"

	"github.com/tokenwarm/tokenwarm/clock"
	"github.com/tokenwarm/tokenwarm/internal/apitest"
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
			} `yaml:"content"`
		} `yaml:"requestBody"`
	} `yaml:"post"`
}

// Every event type the announcer sends is documented under x-webhooks of
// openapi.yaml and nothing else is; real deliveries of each (announced
// from audit events shaped as the vault and the warmer record them, sent by
// the dispatcher) match the documented body schema and headers.
func TestDeliveriesMatchTheContract(t *testing.T) {
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
	doc := apitest.Spec(t)

	conn := "0b9e6f7c-3c1a-4c55-9f0e-2a51d7a3e2c4"
	at := time.Now().UTC()
	events := map[string]models.Event{
		webhooks.TypeNeedsReauth: {ID: 1, ConnectionID: &conn, Kind: models.EventNeedsReauth, Cause: "warm", ErrorCode: "invalid_grant",
			Detail: "expired access/refresh token", CreatedAt: at},
		webhooks.TypeReauthorized: {ID: 2, ConnectionID: &conn, Kind: models.EventReauthorized, Detail: "org 00D5g000004XyZaEAK user 0055g00000AbCdEAAV", CreatedAt: at},
		webhooks.TypeRevoked:      {ID: 3, ConnectionID: &conn, Kind: models.EventRevoked, Cause: "admin", Detail: `revoked by admin key "ops"`, CreatedAt: at},
		webhooks.TypeIdleExpiryRisk: {ID: 4, ConnectionID: &conn, Kind: "idle_expiry_risk", Cause: "warm",
			Detail: "idle budget 166h0m0s left of 720h0m0s: last successful refresh 2025-12-28T01:00:00Z", CreatedAt: at},
		webhooks.TypeConfigError: {ID: 5, Kind: "config_error_app_paused", Cause: "warm", ErrorCode: "invalid_client_id",
			Detail: "warming paused for the app: client identifier invalid", CreatedAt: at},
	}
	var documented []string
	for typ := range spec.XWebhooks {
		documented = append(documented, typ)
	}
	var sent []string
	for typ := range events {
		sent = append(sent, typ)
	}
	slices.Sort(documented)
	slices.Sort(sent)
	if !slices.Equal(documented, sent) {
		t.Fatalf("x-webhooks documents %v; the announcer sends %v", documented, sent)
	}

	db := testkit.MigratedDB(t, models.SQLite)
	rcv := newCapture(t, 0)
	eps := []webhooks.Endpoint{{URL: rcv.srv.URL + "/hook", Secret: webhooks.NewSecret(), PreviousSecrets: []string{"an-earlier-secret-0123"}}}
	for _, typ := range sent {
		rows, err := webhooks.Announcer(eps)([]models.Event{events[typ]})
		if err != nil || len(rows) != 1 {
			t.Fatalf("%s: announced %d rows (%v), want 1", typ, len(rows), err)
		}
		if err := db.EnqueueDeliveries(t.Context(), rows); err != nil {
			t.Fatal(err)
		}
	}
	deliver(t, webhooks.NewDispatcher(db, eps, clock.NewFake(at), nil, nil, webhooks.Config{}), len(sent), 0)

	got := map[string]bool{}
	for _, c := range rcv.all() {
		var body map[string]any
		if err := json.Unmarshal(c.body, &body); err != nil {
			t.Fatal(err)
		}
		typ, _ := body["type"].(string)
		got[typ] = true
		op := spec.XWebhooks[typ].Post
		ref := op.RequestBody.Content["application/json"].Schema.Ref
		schema := doc.Components.Schemas[strings.TrimPrefix(ref, "#/components/schemas/")]
		if schema == nil {
			t.Errorf("%s: no schema %q", typ, ref)
			continue
		}
		if err := schema.Value.VisitJSON(body); err != nil {
			t.Errorf("%s: the body %s does not match %s: %v", typ, c.body, ref, err)
		}
		// Every field sent is documented (the schemas stay open for
		// fields added later, so VisitJSON alone would not notice).
		for k := range body {
			if schema.Value.Properties[k] == nil {
				t.Errorf("%s: field %s is not in %s", typ, k, ref)
			}
		}
		if data, ok := body["data"].(map[string]any); ok && schema.Value.Properties["data"] != nil {
			for k := range data {
				if schema.Value.Properties["data"].Value.Properties[k] == nil {
					t.Errorf("%s: data.%s is not in %s", typ, k, ref)
				}
			}
		}
		for _, p := range op.Parameters {
			param := doc.Components.Parameters[strings.TrimPrefix(p.Ref, "#/components/parameters/")]
			if param == nil {
				t.Errorf("%s: no parameter %q", typ, p.Ref)
				continue
			}
			v := c.header.Get(param.Value.Name)
			switch {
			case v == "" && param.Value.Required:
				t.Errorf("%s: no %s header", typ, param.Value.Name)
			case v != "":
				if err := param.Value.Schema.Value.VisitJSON(v); err != nil {
					t.Errorf("%s: header %s: %q does not match the contract: %v", typ, param.Value.Name, v, err)
				}
			}
		}
	}
	if len(got) != len(sent) {
		t.Errorf("received %v, want one delivery of each of %v", got, sent)
	}
}
