package main

import (
	"strings"
	"testing"
	"time"
)

func TestPeopleAndMaxAgeConfig(t *testing.T) {
	cfg, err := loadConfig(envFrom(nil))
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.CaptureIdentity || !cfg.WebhookIdentity || cfg.RefreshMaxAge != 0 || cfg.ReauthSoon != 7*24*time.Hour {
		t.Fatalf("defaults: capture %v webhook %v max age %s soon %s", cfg.CaptureIdentity, cfg.WebhookIdentity, cfg.RefreshMaxAge, cfg.ReauthSoon)
	}
	cfg, err = loadConfig(envFrom(map[string]string{"TOKENWARM_CAPTURE_IDENTITY": "false", "TOKENWARM_WEBHOOK_IDENTITY": "false",
		"SALESFORCE_REFRESH_MAX_AGE": "2160h", "TOKENWARM_REAUTH_SOON_DAYS": "14"}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.CaptureIdentity || cfg.WebhookIdentity || cfg.RefreshMaxAge != 90*24*time.Hour || cfg.ReauthSoon != 14*24*time.Hour {
		t.Fatalf("set: %+v", cfg)
	}
	for env, want := range map[string]map[string]string{
		"TOKENWARM_REAUTH_SOON_DAYS must be shorter": {"SALESFORCE_REFRESH_MAX_AGE": "168h", "TOKENWARM_REAUTH_SOON_DAYS": "7"},
		"TOKENWARM_EVENT_RETENTION must exceed":      {"SALESFORCE_REFRESH_MAX_AGE": "87600h", "TOKENWARM_REAUTH_SOON_DAYS": "400"},
		"TOKENWARM_REAUTH_SOON_DAYS=0":               {"TOKENWARM_REAUTH_SOON_DAYS": "0"},
		"SALESFORCE_REFRESH_MAX_AGE=-1h":             {"SALESFORCE_REFRESH_MAX_AGE": "-1h"},
		"TOKENWARM_CAPTURE_IDENTITY=maybe":           {"TOKENWARM_CAPTURE_IDENTITY": "maybe"},
	} {
		if _, err := loadConfig(envFrom(want)); err == nil || !strings.Contains(err.Error(), env) {
			t.Errorf("%v: %v, want an error naming %q", want, err, env)
		}
	}
}
