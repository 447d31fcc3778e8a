package salesforce

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/tokenwarm/tokenwarm/internal/text"
)

// RESTVersion is the REST API version the identity capture queries.
const RESTVersion = "v62.0"

// Identity is who a grant belongs to, as operators want to see it: the
// user's display name, username and email, and the org's name. Any field
// may be empty (the scope did not allow it, or Salesforce did not answer).
type Identity struct {
	Name     string
	Username string
	Email    string
	OrgName  string
}

// Identity learns who a fresh grant belongs to, with its access token:
// the identity service (the token response's id URL), else
// /services/oauth2/userinfo, else the User record through the REST API;
// and the org's name from the REST API (SELECT Name FROM Organization)
// when the granted scope includes api or full. It never presents a
// refresh token. It returns what it learned and, when some call failed,
// an error that names no token; callers store the first and log the
// second. Values are trimmed and bounded (256 characters).
func (c *Client) Identity(ctx context.Context, loginURL string, tok *Token) (*Identity, error) {
	out := &Identity{}
	var errs []error
	if tok == nil || tok.AccessToken == "" {
		return out, &Error{Class: Config, Op: "identity", Code: "no_access_token", Description: "no access token to ask with"}
	}
	secrets := []string{tok.AccessToken, tok.RefreshToken}
	var id struct {
		DisplayName       string `json:"display_name"`
		Name              string `json:"name"`
		Username          string `json:"username"`
		PreferredUsername string `json:"preferred_username"`
		Email             string `json:"email"`
	}
	got := false
	if tok.IdentityURL != "" && c.validInstanceURL(tok.IdentityURL, loginURL) {
		err := c.getJSON(ctx, "identity", tok.IdentityURL, tok.AccessToken, secrets, &id)
		got = err == nil
		errs = append(errs, err)
	}
	if !got && c.validInstanceURL(tok.InstanceURL, loginURL) {
		err := c.getJSON(ctx, "userinfo", tok.InstanceURL+"/services/oauth2/userinfo", tok.AccessToken, secrets, &id)
		got = err == nil
		errs = append(errs, err)
	}
	out.Name = clean(first(id.DisplayName, id.Name))
	out.Username = clean(first(id.Username, id.PreferredUsername))
	out.Email = clean(id.Email)
	api := apiScope(tok.Scope) && c.validInstanceURL(tok.InstanceURL, loginURL)
	if !got && api && validID(tok.UserID) {
		var user struct {
			Records []struct {
				Name     string `json:"Name"`
				Username string `json:"Username"`
				Email    string `json:"Email"`
			} `json:"records"`
		}
		err := c.query(ctx, tok, "SELECT Name, Username, Email FROM User WHERE Id = '"+tok.UserID+"'", secrets, &user)
		errs = append(errs, err)
		if err == nil && len(user.Records) == 1 {
			r := user.Records[0]
			out.Name, out.Username, out.Email = clean(r.Name), clean(r.Username), clean(r.Email)
		}
	}
	var orgErr error
	if api {
		var org struct {
			Records []struct {
				Name string `json:"Name"`
			} `json:"records"`
		}
		orgErr = c.query(ctx, tok, "SELECT Name FROM Organization", secrets, &org)
		if orgErr == nil && len(org.Records) == 1 {
			out.OrgName = clean(org.Records[0].Name)
		}
	}
	if out.Name != "" || out.Username != "" {
		// The user is known: a failed earlier try is no failure.
		return out, orgErr
	}
	return out, errors.Join(append(errs, orgErr)...)
}

// query runs one SOQL query at the grant's instance.
func (c *Client) query(ctx context.Context, tok *Token, soql string, secrets []string, v any) error {
	u := tok.InstanceURL + "/services/data/" + RESTVersion + "/query?q=" + url.QueryEscape(soql)
	return c.getJSON(ctx, "query", u, tok.AccessToken, secrets, v)
}

// getJSON GETs target with a bearer access token, following no redirect
// (it would carry the token elsewhere), and decodes a 200 answer.
func (c *Client) getJSON(ctx context.Context, op, target, accessToken string, secrets []string, v any) error {
	if c.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.Timeout)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return &Error{Class: Config, Op: op, Code: "bad_url", Description: "cannot build request"}
	}
	req.Header.Set("Authorization", "Bearer "+accessToken)
	req.Header.Set("Accept", "application/json")
	resp, err := c.do(req)
	if err != nil {
		return transportError(op, err, true, secrets)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return transportError(op, err, true, secrets)
	}
	if resp.StatusCode != http.StatusOK {
		return &Error{Class: Classify(resp.StatusCode, "", ""), Op: op, HTTPStatus: resp.StatusCode, Code: "http_" + strconv.Itoa(resp.StatusCode)}
	}
	if err := json.Unmarshal(body, v); err != nil {
		return &Error{Class: Unrecognized, Op: op, HTTPStatus: resp.StatusCode, Code: "bad_response", Description: "answer is not the expected JSON"}
	}
	return nil
}

// apiScope reports whether a granted scope allows the REST API.
func apiScope(scope string) bool {
	for _, s := range strings.Fields(scope) {
		if s == "api" || s == "full" {
			return true
		}
	}
	return false
}

// validID accepts a 15 or 18 character Salesforce ID, which is all that
// may go into a SOQL literal.
func validID(id string) bool {
	if len(id) != 15 && len(id) != 18 {
		return false
	}
	for _, r := range id {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return false
		}
	}
	return true
}

func first(a, b string) string {
	if strings.TrimSpace(a) != "" {
		return a
	}
	return b
}

func clean(s string) string { return text.Ellipsize(strings.TrimSpace(s), 256) }
