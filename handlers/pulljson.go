package handlers

import (
	"encoding/json"
	"time"
)

// appendJSON writes the pull's answer as encoding/json would (HTML-safe
// escaping, RFC 3339 times with nanoseconds, a trailing newline as
// json.Encoder writes) without its reflection: it is the body of every
// pull. TestAccessTokenJSON holds it to encoding/json byte for byte. Like
// encoding/json it fails on a time it cannot write (a year outside 0 to
// 9999).
func (v *accessTokenView) appendJSON(b []byte) ([]byte, error) {
	for _, t := range []time.Time{v.IssuedAt, v.ExpiresAt} {
		if y := t.Year(); y < 0 || y > 9999 {
			_, err := json.Marshal(t)
			return nil, err
		}
	}
	b = append(b, `{"connection_id":`...)
	b = appendJSONString(b, v.ConnectionID)
	b = append(b, `,"access_token":`...)
	b = appendJSONString(b, v.AccessToken)
	b = append(b, `,"token_type":`...)
	b = appendJSONString(b, v.TokenType)
	b = append(b, `,"instance_url":`...)
	b = appendJSONString(b, v.InstanceURL)
	b = append(b, `,"issued_at":`...)
	b = appendJSONTime(b, v.IssuedAt)
	b = append(b, `,"expires_at":`...)
	b = appendJSONTime(b, v.ExpiresAt)
	return append(b, "}\n"...), nil
}

// appendJSONString quotes s by hand when it is plain ASCII with nothing to
// escape (Salesforce tokens and URLs are), else through encoding/json.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s) // a string always marshals
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// appendJSONTime writes t as time.Time's MarshalJSON does for the years it
// accepts (0 to 9999; appendJSON refuses the others).
func appendJSONTime(b []byte, t time.Time) []byte {
	b = append(b, '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"')
}
