package main

import (
	"strings"
	"testing"

	"github.com/tokenwarm/tokenwarm/models"
)

// TOKENWARM_DB_POOLER: none by default; session and transaction reach the
// database options; statement pooling is refused and named.
func TestDBPoolerConfig(t *testing.T) {
	for v, want := range map[string]models.Pooler{"": models.PoolerNone, "session": models.PoolerSession, "transaction": models.PoolerTransaction} {
		env := map[string]string{}
		if v != "" {
			env["TOKENWARM_DB_POOLER"] = v
		}
		cfg, err := loadConfig(envFrom(env))
		if err != nil {
			t.Fatalf("TOKENWARM_DB_POOLER=%q: %v", v, err)
		}
		if cfg.DBPooler != want {
			t.Errorf("TOKENWARM_DB_POOLER=%q: %q, want %q", v, cfg.DBPooler, want)
		}
	}
	for _, bad := range []string{"statement", "pgbouncer"} {
		_, err := loadConfig(envFrom(map[string]string{"TOKENWARM_DB_POOLER": bad}))
		if err == nil || !strings.Contains(err.Error(), "TOKENWARM_DB_POOLER") {
			t.Errorf("TOKENWARM_DB_POOLER=%s: %v, want a refusal naming the variable", bad, err)
		}
	}
}
