package handlers

import (
	"encoding/json"
	"errors"
	"net/url"
	"time"

	"github.com/tokenwarm/tokenwarm/seal"
)

// reauthTokens mints and checks re-authorization tokens: the connection ID
// and an expiry, sealed (AES-GCM authenticates, so the token is signed and
// opaque at once). They are links for humans, not credentials: completing
// the flow still needs a Salesforce login as the connection's own user.
type reauthTokens struct {
	ring *seal.Ring
	ttl  time.Duration
	now  func() time.Time
}

type reauthClaims struct {
	ConnectionID string `json:"cid"`
	Exp          int64  `json:"exp"`
}

const reauthAD = "reauth_token"

func (r *reauthTokens) mint(connectionID string) (string, time.Time, error) {
	exp := time.Unix(r.now().Add(r.ttl).Unix(), 0).UTC()
	b, _ := json.Marshal(reauthClaims{ConnectionID: connectionID, Exp: exp.Unix()})
	tok, err := r.ring.Seal(string(b), reauthAD)
	return tok, exp, err
}

var errReauthToken = errors.New("invalid or expired re-authorization token")

func (r *reauthTokens) check(tok string) (string, error) {
	plain, err := r.ring.Open(tok, reauthAD)
	if err != nil {
		return "", errReauthToken
	}
	var c reauthClaims
	if json.Unmarshal([]byte(plain), &c) != nil || c.ConnectionID == "" || r.now().Unix() > c.Exp {
		return "", errReauthToken
	}
	return c.ConnectionID, nil
}

// url returns the link into the authorize endpoint for a connection.
func (r *reauthTokens) url(publicURL, connectionID string) string {
	link, _, err := r.link(publicURL, connectionID)
	if err != nil {
		return ""
	}
	return link
}

// link returns the link into the authorize endpoint and when it expires.
func (r *reauthTokens) link(publicURL, connectionID string) (string, time.Time, error) {
	tok, exp, err := r.mint(connectionID)
	if err != nil {
		return "", time.Time{}, err
	}
	return publicURL + "/v1/oauth/authorize?" + url.Values{"reauth_token": {tok}}.Encode(), exp, nil
}
