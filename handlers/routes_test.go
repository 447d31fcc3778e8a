package handlers_test

import (
	"regexp"
	"sort"
	"testing"

	"github.com/tokenwarm/tokenwarm/handlers"
	"github.com/tokenwarm/tokenwarm/internal/apitest"
	"github.com/tokenwarm/tokenwarm/models"
)

// openapi.yaml is the contract: every API route the server serves is in it,
// and every operation in it is served. (The demo pages exist only in demo
// mode and are not API; the admin UI's pages, named AdminUIRouteName where
// they are registered, are HTML for people, not API.)
func TestEveryRouteIsInTheSpecAndBack(t *testing.T) {
	w := newWorld(t, models.SQLite)
	param := regexp.MustCompile(`:([a-z_]+)`)
	served := map[string]bool{}
	for _, r := range w.router.Routes() {
		if r.Method == "echo_route_not_found" {
			continue // echo's own fallback for groups
		}
		if r.Name == handlers.AdminUIRouteName {
			continue
		}
		served[r.Method+" "+param.ReplaceAllString(r.Path, "{$1}")] = true
	}
	inSpec := map[string]bool{}
	for path, item := range apitest.Spec(t).Paths.Map() {
		for method := range item.Operations() {
			inSpec[method+" "+path] = true
		}
	}
	// The RFC 8414 metadata route is added by the OAuth work of issue 11 on
	// another branch; the contract documents it already. Drop this entry
	// once the route is served.
	documentedAhead := map[string]bool{"GET /.well-known/oauth-authorization-server": true}
	var missing, extra []string
	for route := range served {
		if !inSpec[route] {
			missing = append(missing, route)
		}
	}
	for route := range inSpec {
		if !served[route] && !documentedAhead[route] {
			extra = append(extra, route)
		}
	}
	sort.Strings(missing)
	sort.Strings(extra)
	if len(missing) > 0 || len(extra) > 0 {
		t.Fatalf("served but not in openapi.yaml: %v; in openapi.yaml but not served: %v", missing, extra)
	}
}
