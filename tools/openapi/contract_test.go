// Package openapi holds the Redocly configuration and the Go checks of the
// contract (openapi.yaml) that no linter rule expresses.
package openapi

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"go.yaml.in/yaml/v4"
)

var specPath = filepath.Join("..", "..", "openapi.yaml")

func load(t *testing.T) *openapi3.T {
	t.Helper()
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromFile(specPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := doc.Validate(loader.Context); err != nil {
		t.Fatal(err)
	}
	return doc
}

// Every enum is either open (x-extensible-enum lists the same values, so
// clients know to keep an unknown-value case) or says why it is closed.
func TestEnumsAreOpenOrSayWhyClosed(t *testing.T) {
	src, err := os.ReadFile(specPath)
	if err != nil {
		t.Fatal(err)
	}
	var root yaml.Node
	if err := yaml.Unmarshal(src, &root); err != nil {
		t.Fatal(err)
	}
	n := 0
	var walk func(path string, node *yaml.Node)
	walk = func(path string, node *yaml.Node) {
		if node.Kind == yaml.MappingNode {
			vals := map[string]*yaml.Node{}
			for i := 0; i+1 < len(node.Content); i += 2 {
				vals[node.Content[i].Value] = node.Content[i+1]
			}
			if enum := vals["enum"]; enum != nil && enum.Kind == yaml.SequenceNode {
				n++
				open, reason := vals["x-extensible-enum"], vals["x-closed-enum-reason"]
				switch {
				case open != nil && reason != nil:
					t.Errorf("%s: both x-extensible-enum and x-closed-enum-reason", path)
				case open != nil:
					if !slices.Equal(values(enum), values(open)) {
						t.Errorf("%s: x-extensible-enum %v differs from enum %v", path, values(open), values(enum))
					}
				case reason == nil || strings.TrimSpace(reason.Value) == "":
					t.Errorf("%s: enum %v is neither open (x-extensible-enum) nor closed with x-closed-enum-reason", path, values(enum))
				}
			}
			for i := 0; i+1 < len(node.Content); i += 2 {
				walk(path+"/"+node.Content[i].Value, node.Content[i+1])
			}
			return
		}
		for i, c := range node.Content {
			walk(path+"/"+strconv.Itoa(i), c)
		}
	}
	walk("", &root)
	if n < 10 {
		t.Fatalf("found only %d enums: the walk is broken", n)
	}
}

func values(n *yaml.Node) []string {
	var out []string
	for _, c := range n.Content {
		out = append(out, c.Value)
	}
	return out
}

// The enums generators must keep open are open.
func TestGrowingEnumsAreOpen(t *testing.T) {
	doc := load(t)
	for _, name := range []string{"ProblemCode", "OAuthErrorCode", "ConnectionStatus", "TokenType"} {
		s := doc.Components.Schemas[name]
		if s == nil || s.Value.Extensions["x-extensible-enum"] == nil {
			t.Errorf("%s is not an open enum", name)
		}
	}
	kind := doc.Components.Schemas["AdminEvent"].Value.Properties["kind"].Value
	if kind.Enum != nil || kind.Extensions["x-extensible-enum"] == nil {
		t.Error("AdminEvent.kind must be an open set without a closed enum")
	}
}

// Every 2xx response of every operation shows an example of each of its
// media types.
func TestEvery2xxResponseHasAnExample(t *testing.T) {
	doc := load(t)
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			for status, ref := range op.Responses.Map() {
				if !strings.HasPrefix(status, "2") {
					continue
				}
				for mt, media := range ref.Value.Content {
					if media.Example == nil && len(media.Examples) == 0 {
						t.Errorf("%s %s %s %s: no example", method, path, status, mt)
					}
				}
			}
		}
	}
}

// Token examples look like the server's tokens: twr_ device refresh
// tokens, twh_ authorization (handoff) codes, twa_ admin keys, and EdDSA
// JWTs for device access tokens; the old drt_/hc_ prefixes are gone.
func TestTokenExamplesUseRealPrefixes(t *testing.T) {
	src, err := os.ReadFile(specPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, old := range []string{"drt_", "hc_"} {
		if regexp.MustCompile(`\b` + old).Match(src) {
			t.Errorf("openapi.yaml still uses the prefix %s", old)
		}
	}
	doc := load(t)
	tok := doc.Paths.Find("/v1/device/token").Post
	body := tok.Responses.Status(200).Value.Content["application/json"].Example.(map[string]any)
	if rt, _ := body["refresh_token"].(string); !strings.HasPrefix(rt, "twr_") {
		t.Errorf("refresh_token example %q", rt)
	}
	at, _ := body["access_token"].(string)
	head, _, _ := strings.Cut(at, ".")
	hb, err := base64.RawURLEncoding.DecodeString(head)
	var h struct{ Alg, Kid string }
	if err != nil || json.Unmarshal(hb, &h) != nil || h.Alg != "EdDSA" || h.Kid == "" {
		t.Errorf("access_token example is not an EdDSA JWT: header %s", hb)
	}
	for name, ex := range tok.RequestBody.Value.Content["application/x-www-form-urlencoded"].Examples {
		v := ex.Value.Value.(map[string]any)
		if c, ok := v["code"].(string); ok && !strings.HasPrefix(c, "twh_") {
			t.Errorf("request example %s: code %q", name, c)
		}
		if r, ok := v["refresh_token"].(string); ok && !strings.HasPrefix(r, "twr_") {
			t.Errorf("request example %s: refresh_token %q", name, r)
		}
	}
	if !strings.Contains(doc.Components.SecuritySchemes["adminKey"].Value.Description, "twa_") {
		t.Error("the admin key scheme does not name the twa_ prefix")
	}
}

// Every problem code and RFC 6749 error code the handlers write is in the
// contract's enums, so a new code cannot ship undocumented.
func TestServerCodesAreDocumented(t *testing.T) {
	doc := load(t)
	documented := func(schema string) map[string]bool {
		m := map[string]bool{}
		for _, v := range doc.Components.Schemas[schema].Value.Enum {
			m[v.(string)] = true
		}
		return m
	}
	problem, oauth := documented("ProblemCode"), documented("OAuthErrorCode")
	files, err := filepath.Glob(filepath.Join("..", "..", "handlers", "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	problemCall := regexp.MustCompile(`(?:newProblem\([^,]+,\s*|newFieldProblem\(|badRequest\(|Code:\s*|refuse\("[a-z_]+",\s*)"([a-z_]+)"`)
	oauthCall := regexp.MustCompile(`(?:oauthFail\([^,]+,[^,]+,\s*|oauthRefusal\{[^,]+,\s*)"([a-z_]+)"`)
	seen := 0
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range problemCall.FindAllSubmatch(src, -1) {
			seen++
			if !problem[string(m[1])] {
				t.Errorf("%s: problem code %q is not in ProblemCode", filepath.Base(f), m[1])
			}
		}
		for _, m := range oauthCall.FindAllSubmatch(src, -1) {
			seen++
			if !oauth[string(m[1])] {
				t.Errorf("%s: OAuth error %q is not in OAuthErrorCode", filepath.Base(f), m[1])
			}
		}
	}
	if seen < 10 {
		t.Fatalf("found only %d codes in handlers/: the patterns are broken", seen)
	}
	// Codes the error handler builds from errors rather than literals.
	for _, c := range []string{"internal", "method_not_allowed", "body_too_large", "unauthorized", "not_found", "service_unavailable",
		"reauth_required", "connection_revoked", "upstream_unavailable", "upstream_configuration_error"} {
		if !problem[c] {
			t.Errorf("problem code %q is not in ProblemCode", c)
		}
	}
}

// Each operation names exactly the security scheme it wants, and the
// device scheme is the OAuth 2.0 authorization code flow of the metadata.
func TestSecuritySchemes(t *testing.T) {
	doc := load(t)
	if doc.Security != nil {
		t.Error("a global security requirement hides which credential an operation wants")
	}
	dev := doc.Components.SecuritySchemes["deviceOAuth"].Value
	if dev.Type != "oauth2" || dev.Flows == nil || dev.Flows.AuthorizationCode == nil {
		t.Fatalf("deviceOAuth: %+v", dev)
	}
	ac := dev.Flows.AuthorizationCode
	if ac.AuthorizationURL != "/v1/oauth/authorize" || ac.TokenURL != "/v1/device/token" || ac.RefreshURL != "/v1/device/token" || ac.Scopes["connections"] == "" {
		t.Errorf("deviceOAuth flow: %+v", ac)
	}
	if a := doc.Components.SecuritySchemes["adminKey"].Value; a.Type != "http" || a.Scheme != "bearer" {
		t.Errorf("adminKey: %+v", a)
	}
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			if op.Security == nil {
				t.Errorf("%s %s names no security requirement", method, path)
				continue
			}
			var names []string
			for _, req := range *op.Security {
				for name := range req {
					names = append(names, name)
				}
			}
			var want []string
			switch {
			case strings.HasPrefix(path, "/admin/"):
				want = []string{"adminKey"}
			case strings.HasPrefix(path, "/v1/connections"):
				want = []string{"deviceOAuth"}
			}
			if !slices.Equal(names, want) {
				t.Errorf("%s %s: security %v, want %v", method, path, names, want)
			}
		}
	}
}
