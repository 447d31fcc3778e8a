// Package fleet fills a tokenwarm database with a realistic fleet of
// connections and device sessions straight in SQL, for measurements at a
// scale the real connect flow would take hours to reach (TestScale, and
// ./scripts/bench -filler). The rows are not usable: their sealed tokens
// are filler of the real lengths, never valid ciphertext.
package fleet

import (
	"strings"

	"github.com/tokenwarm/tokenwarm/seal"
)

// SealedLengths returns the lengths of a sealed refresh token (87
// characters, Salesforce's usual) and of a sealed access token (112), as
// the seal package writes them.
func SealedLengths() (refresh, access int, err error) {
	ring, err := seal.NewRing(seal.Key{ID: "k1", Secret: make([]byte, 32)})
	if err != nil {
		return 0, 0, err
	}
	r, err := ring.Seal(strings.Repeat("r", 87), "refresh")
	if err != nil {
		return 0, 0, err
	}
	a, err := ring.Seal("00D"+strings.Repeat("a", 109), "access")
	if err != nil {
		return 0, 0, err
	}
	return len(r), len(a), nil
}

// Params are the named parameters of ConnectionsSQL and SessionsSQL
// (@n, @orgs, @every, @rlen, @alen, @now): n rows, orgs organisations,
// every every-th connection due, sealed token lengths, and the time the
// fleet is filled at.
func Params(n, every, rlen, alen int, now any) map[string]any {
	orgs := max(1, n/50)
	return map[string]any{"n": n, "orgs": orgs, "every": max(1, every), "rlen": rlen, "alen": alen, "now": now}
}

// ConnectionsSQL fills n connections, and SessionsSQL one device session
// each. Times are distinct to the microsecond, as real ones are (equal keys
// would let B-tree deduplication shrink the indexes). Every 100th
// connection from 50 on is due (spread over the last hour) when due is
// 0.01; 1 % need re-authorization and 1 % are revoked; 0.2 % of the
// others are in backoff; the rest come due over the next six hours. Rows
// go in in order of i, so due rows are spread over the whole heap.
const ConnectionsSQL = `
INSERT INTO connections (id, owner, org_id, user_id, login_url, instance_url, identity_url, scopes, status,
	refresh_token_sealed, access_token_sealed, access_token_issued_at, access_token_expires_at,
	last_refreshed_at, next_warm_at, rotation_count, consecutive_failures, next_attempt_at,
	created_at, updated_at)
SELECT md5('conn-' || i)::uuid,
	org || '/' || usr, org, usr, 'https://login.salesforce.com',
	'https://org' || (i % @orgs) || '.my.salesforce.com',
	'https://login.salesforce.com/id/' || org || '/' || usr,
	'api refresh_token offline_access',
	CASE WHEN i % 100 = 1 THEN 'needs_reauth' WHEN i % 100 = 2 THEN 'revoked' ELSE 'active' END,
	CASE WHEN i % 100 = 2 THEN '' ELSE left('v1.k1.' || repeat(md5(i::text), 8), @rlen) END,
	CASE WHEN i % 100 IN (1, 2) THEN '' ELSE left('v1.k1.' || repeat(md5((-i)::text), 8), @alen) END,
	CAST(@now AS timestamptz) - interval '10 minutes', CAST(@now AS timestamptz) + interval '110 minutes',
	CAST(@now AS timestamptz) - (i::bigint * 1000003 % 86400000000) * interval '1 microsecond',
	CASE WHEN dueslot THEN CAST(@now AS timestamptz) - interval '1 second' - (i::bigint * 1000003 % 3599000000) * interval '1 microsecond'
	     WHEN i % 500 = 7 THEN CAST(@now AS timestamptz) + interval '15 minutes'
	     WHEN i % 100 IN (1, 2) THEN CAST(@now AS timestamptz) - interval '1 day'
	     ELSE CAST(@now AS timestamptz) + interval '10 minutes' + (i::bigint * 1000003 % 21600000000) * interval '1 microsecond' END,
	i % 50,
	CASE WHEN i % 500 = 7 AND NOT dueslot THEN 2 ELSE 0 END,
	CASE WHEN i % 500 = 7 AND NOT dueslot THEN CAST(@now AS timestamptz) + interval '15 minutes' END,
	CAST(@now AS timestamptz) - interval '30 days', CAST(@now AS timestamptz)
FROM (SELECT i,
		'00D' || lpad((i % @orgs)::text, 15, '0') AS org,
		'005' || lpad(i::text, 15, '0') AS usr,
		(i % @every = 50 % @every AND i % 100 NOT IN (1, 2)) AS dueslot
	FROM generate_series(1, @n) AS i) g`

const SessionsSQL = `
INSERT INTO device_sessions (id, owner, device_label, generation, created_at, last_used_at, idle_expires_at)
SELECT md5('sess-' || i)::uuid,
	'00D' || lpad((i % @orgs)::text, 15, '0') || '/005' || lpad(i::text, 15, '0'),
	'iPhone 15', 1, CAST(@now AS timestamptz) - interval '30 days', CAST(@now AS timestamptz), CAST(@now AS timestamptz) + interval '30 days'
FROM generate_series(1, @n) AS i`
