package handlers

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
)

// The pull's hand-written body is what encoding/json writes, byte for
// byte, whatever the strings hold.
func TestAccessTokenJSON(t *testing.T) {
	at := time.Date(2026, 12, 1, 3, 4, 5, 120000000, time.UTC)
	for _, v := range []accessTokenView{
		{ConnectionID: "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d", AccessToken: "00Dxx0000001gPL!AR8AQJXg5oj8jXSgxJfA0lBog.39AsX.LVpxezPwuX5VAIrrbbHMuol7GQxnMeYMN7cj8EoWr78nh5bJUOoNMD8GtCxo.Dwi", TokenType: "Bearer",
			InstanceURL: "https://na1.salesforce.com", IssuedAt: at, ExpiresAt: at.Add(2 * time.Hour)},
		{ConnectionID: "", AccessToken: `quote " backslash \ <tag> & amp`, TokenType: "Bearer", InstanceURL: "https://例え.jp/\x00\x1f\u2028",
			IssuedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), ExpiresAt: time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC)},
		{AccessToken: "invalid utf-8 \xff\xfe", IssuedAt: time.Date(2026, 1, 2, 3, 4, 5, 1, time.FixedZone("x", 3600))},
	} {
		var want bytes.Buffer
		if err := json.NewEncoder(&want).Encode(v); err != nil {
			t.Fatal(err)
		}
		if got, err := v.appendJSON(nil); err != nil || !bytes.Equal(got, want.Bytes()) {
			t.Errorf("hand-written (%v):\n%s\nencoding/json:\n%s", err, got, want.Bytes())
		}
	}
	// A time encoding/json cannot write is an error here too, not a body.
	v := accessTokenView{IssuedAt: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}
	if _, err := json.Marshal(v); err == nil {
		t.Fatal("encoding/json wrote year 10000")
	}
	if got, err := v.appendJSON(nil); err == nil {
		t.Errorf("year 10000 written as %s", got)
	}
}
