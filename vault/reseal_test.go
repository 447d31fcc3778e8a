package vault_test

import (
	"context"
	"testing"
	"time"

	"github.com/tokenwarm/tokenwarm/models"
	"github.com/tokenwarm/tokenwarm/seal"
	"github.com/tokenwarm/tokenwarm/vault"
)

func TestResealMovesEveryTokenToTheActiveKey(t *testing.T) {
	dialects(t, func(t *testing.T, dialect models.Dialect) {
		e := newEnv(t, dialect)
		v := e.vault(vault.Config{})
		var ids []string
		for _, u := range []string{"a@example.com", "b@example.com", "c@example.com"} {
			ids = append(ids, e.connect(v, u))
		}
		before := map[string]string{}
		for _, id := range ids {
			before[id] = e.storedRefreshToken(id)
		}
		newKey, _ := seal.GenerateKey("test2")
		rotated, err := seal.ParseRing(newKey + "," + e.RingSpec)
		if err != nil {
			t.Fatal(err)
		}
		n, err := vault.Reseal(context.Background(), e.dbs[0], rotated, nil)
		if err != nil || n != len(ids) {
			t.Fatalf("Reseal = %d, %v; want %d", n, err, len(ids))
		}
		if n, _ := vault.Reseal(context.Background(), e.dbs[0], rotated, nil); n != 0 {
			t.Fatalf("second Reseal rewrote %d", n)
		}
		onlyNew, _ := seal.ParseRing(newKey)
		rv := vault.New(e.dbs[0], onlyNew, e.SFClient(), e.Clock, nil, vault.Config{})
		for _, id := range ids {
			c := e.conn(id)
			for _, s := range []string{c.RefreshTokenSealed, c.AccessTokenSealed} {
				if kid, _ := seal.KeyID(s); kid != "test2" {
					t.Fatalf("value sealed under %q after reseal", kid)
				}
			}
			got, err := rv.OpenRefresh(&c)
			if err != nil || got != before[id] {
				t.Fatalf("resealed token does not open to the original: %v", err)
			}
			if _, err := rv.GetAccessToken(context.Background(), id, time.Minute); err != nil {
				t.Fatalf("access token after reseal: %v", err)
			}
		}
	})
}
