package main

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
)

var (
	fullPath   = filepath.Join("..", "..", "openapi.yaml")
	mobilePath = filepath.Join("..", "..", "mobile-sdk-spec", "openapi.mobile.yaml")
)

// The committed mobile spec is exactly what the generator makes of the
// committed openapi.yaml.
func TestMobileSpecUpToDate(t *testing.T) {
	src, err := os.ReadFile(fullPath)
	if err != nil {
		t.Fatal(err)
	}
	want, err := Generate(src)
	if err != nil {
		t.Fatalf("generate: %v", err)
	}
	got, err := os.ReadFile(mobilePath)
	if err != nil {
		t.Fatalf("%v; run: %s", err, Command)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("mobile-sdk-spec/openapi.mobile.yaml is stale (first difference at line %d); run: %s", firstDiffLine(got, want), Command)
	}
	again, err := Generate(src)
	if err != nil || !bytes.Equal(again, want) {
		t.Fatal("the generator is not deterministic")
	}
}

// A client generated from the mobile spec has every operation an app
// needs and no admin, metrics, probe or callback operation; the spec is a
// valid OpenAPI document on its own (every $ref resolves).
func TestMobileSpecHasOnlyMobileOperations(t *testing.T) {
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromFile(mobilePath)
	if err != nil {
		t.Fatal(err)
	}
	if err := doc.Validate(loader.Context); err != nil {
		t.Fatalf("invalid: %v", err)
	}
	var ids []string
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			ids = append(ids, op.OperationID)
			if !slices.Equal(op.Tags, []string{Tag}) {
				t.Errorf("%s %s: tags %v, want [%s]", method, path, op.Tags, Tag)
			}
			if strings.HasPrefix(path, "/admin") || path == "/metrics" || path == "/healthz" || path == "/readyz" || path == "/v1/oauth/callback" {
				t.Errorf("%s %s is not a mobile operation", method, path)
			}
			if op.Security == nil {
				t.Errorf("%s %s names no security requirement", method, path)
			}
			for _, req := range *op.Security {
				for name := range req {
					if name == "adminKey" {
						t.Errorf("%s %s wants the admin key", method, path)
					}
				}
			}
		}
	}
	slices.Sort(ids)
	want := []string{"authorize", "getAuthorizationServerMetadata", "getConnection", "getJWKS", "getSalesforceAccessToken", "listConnections", "requestDeviceToken", "revokeDeviceToken"}
	if !slices.Equal(ids, want) {
		t.Errorf("operations %v, want %v", ids, want)
	}
	if _, ok := doc.Components.SecuritySchemes["adminKey"]; ok {
		t.Error("the admin key scheme is in the mobile spec")
	}
	if doc.Components.SecuritySchemes["deviceOAuth"] == nil {
		t.Error("the deviceOAuth scheme is missing")
	}
	for name := range doc.Components.Schemas {
		if strings.HasPrefix(name, "Admin") || strings.HasPrefix(name, "Webhook") {
			t.Errorf("schema %s is in the mobile spec", name)
		}
	}
	// Webhooks are sent to operators' servers: none in the mobile spec.
	for _, key := range []string{"x-webhooks", "webhooks"} {
		if doc.Extensions[key] != nil {
			t.Errorf("the mobile spec has %s", key)
		}
	}
}

// Every operation tagged mobile in openapi.yaml survives with the same
// responses, and nothing else does.
func TestGenerateKeepsMobileOperationsWhole(t *testing.T) {
	full, err := openapi3.NewLoader().LoadFromFile(fullPath)
	if err != nil {
		t.Fatal(err)
	}
	mobile, err := openapi3.NewLoader().LoadFromFile(mobilePath)
	if err != nil {
		t.Fatal(err)
	}
	for path, item := range full.Paths.Map() {
		for method, op := range item.Operations() {
			m := mobile.Paths.Find(path)
			var mop *openapi3.Operation
			if m != nil {
				mop = m.GetOperation(method)
			}
			isMobile := slices.Contains(op.Tags, Tag)
			switch {
			case isMobile && mop == nil:
				t.Errorf("%s %s (%s) is missing", method, path, op.OperationID)
			case !isMobile && mop != nil:
				t.Errorf("%s %s (%s) should not be there", method, path, op.OperationID)
			case isMobile:
				if got, want := slices.Sorted(mapKeys(mop.Responses.Map())), slices.Sorted(mapKeys(op.Responses.Map())); !slices.Equal(got, want) {
					t.Errorf("%s: responses %v, want %v", op.OperationID, got, want)
				}
			}
		}
	}
}

func TestGenerateRefusesDanglingRefs(t *testing.T) {
	src := []byte(`openapi: 3.0.3
info: {title: t, version: "1"}
paths:
  /a:
    get:
      tags: [mobile]
      responses:
        '200':
          $ref: '#/components/responses/Missing'
`)
	if _, err := Generate(src); err == nil || !strings.Contains(err.Error(), "no such component") {
		t.Fatalf("err = %v, want no such component", err)
	}
	if _, err := Generate([]byte("openapi: 3.0.3\npaths: {}\n")); err == nil {
		t.Fatal("a spec without mobile operations was accepted")
	}
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// firstDiffLine is the 1-based line of the first byte where a and b differ.
func firstDiffLine(a, b []byte) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return bytes.Count(a[:n], []byte("\n")) + 1
}
