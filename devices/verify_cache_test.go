package devices

import (
	"strconv"
	"testing"
	"time"
)

// The cache of verified tokens holds at most verifiedCacheSize tokens
// however many distinct tokens a replica sees (issue 10: a replica's memory
// does not grow with the number of sessions), and forgets an expired token
// when it is asked for it.
func TestVerifiedCacheBounded(t *testing.T) {
	var v verifiedCache
	now := time.Unix(1_700_000_000, 0)
	for i := range 3*verifiedCacheSize + 7 {
		v.put("token-"+strconv.Itoa(i), cachedClaims{until: now.Add(time.Hour)})
		if len(v.m) > verifiedCacheSize {
			t.Fatalf("after %d tokens the cache holds %d, more than %d", i+1, len(v.m), verifiedCacheSize)
		}
	}
	last := "token-" + strconv.Itoa(3*verifiedCacheSize+6)
	if _, ok := v.get(last, now); !ok {
		t.Fatal("the newest token is not cached")
	}
	if _, ok := v.get(last, now.Add(time.Hour)); ok {
		t.Fatal("an expired token is still served")
	}
	if _, ok := v.m[last]; ok {
		t.Fatal("an expired token stays in the cache once asked for")
	}
}
