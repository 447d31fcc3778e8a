package main

import (
	"strings"
	"testing"
)

// TOKENWARM_APP_CLIENTS: client_id=redirect_uri pairs, a client once per
// redirect URI; start-up refuses a malformed entry and names the variable.
func TestAppClientsConfig(t *testing.T) {
	cfg, err := loadConfig(envFrom(map[string]string{"TOKENWARM_APP_CLIENTS": " com.acme.app=com.acme.app:/oauth , com.acme.app=http://127.0.0.1/cb,web_2~x-y=https://app.example/cb?x=1"}))
	if err != nil {
		t.Fatal(err)
	}
	c := cfg.AppClients
	if len(c) != 2 || len(c["com.acme.app"]) != 2 || !c.RedirectAllowed("com.acme.app", "http://127.0.0.1:50123/cb") ||
		!c.RedirectAllowed("web_2~x-y", "https://app.example/cb?x=1") || c.RedirectAllowed("web_2~x-y", "https://app.example/cb") {
		t.Fatalf("clients %v", c)
	}
	for _, bad := range []string{
		"com.acme.app",                         // no redirect URI
		"=com.acme.app:/oauth",                 // no client_id
		"com acme=com.acme.app:/oauth",         // a space in the client_id
		"com.acme.app=/relative",               // not absolute
		"com.acme.app=com.acme.app:/oauth#x",   // a fragment
		"com.acme.app=https://u:p@app.example", // user info
		strings.Repeat("c", 129) + "=app:/x",   // client_id too long
		"com.acme.app=app:/x,",                 // an empty entry
	} {
		_, err := loadConfig(envFrom(map[string]string{"TOKENWARM_APP_CLIENTS": bad}))
		if err == nil || !strings.Contains(err.Error(), "TOKENWARM_APP_CLIENTS") {
			t.Errorf("TOKENWARM_APP_CLIENTS=%q: %v, want a refusal naming the variable", bad, err)
		}
	}
}
