package handlers

import (
	"fmt"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strings"
)

// AppClients are the registered app clients (TOKENWARM_APP_CLIENTS):
// public OAuth clients (RFC 6749 section 2.1, RFC 8252), each with the
// redirect URIs it may use. Keyed by client_id.
type AppClients map[string][]string

// clientIDPattern is what a client_id may be: unreserved URI characters
// only, so it needs no escaping anywhere (HTTP Basic included).
var clientIDPattern = regexp.MustCompile(`^[A-Za-z0-9._~-]{1,128}$`)

// ParseAppClients reads TOKENWARM_APP_CLIENTS: comma-separated
// client_id=redirect_uri pairs, a client with several redirect URIs once
// per URI. A malformed entry is an error.
func ParseAppClients(v string) (AppClients, error) {
	out := AppClients{}
	for i, entry := range strings.Split(v, ",") {
		id, uri, ok := strings.Cut(strings.TrimSpace(entry), "=")
		if !ok || !clientIDPattern.MatchString(id) {
			return nil, fmt.Errorf("entry %d: want client_id=redirect_uri with a client_id of 1-128 characters of A-Z a-z 0-9 . _ ~ -", i+1)
		}
		u, err := url.Parse(uri)
		if err != nil || u.Scheme == "" || u.Fragment != "" || u.User != nil || strings.Contains(uri, "#") {
			return nil, fmt.Errorf("entry %d (client %s): want an absolute redirect URI without fragment or user info", i+1, id)
		}
		if !slices.Contains(out[id], uri) {
			out[id] = append(out[id], uri)
		}
	}
	return out, nil
}

// Known reports whether id is a registered client.
func (c AppClients) Known(id string) bool {
	_, ok := c[id]
	return ok
}

// RedirectAllowed reports whether uri is one of client id's redirect URIs:
// the exact string, except that a loopback IP literal URI
// (http://127.0.0.1/..., http://[::1]/...) matches on any port, as RFC 8252
// section 7.3 requires of native apps' loopback redirects. "localhost" is
// matched exactly only (RFC 8252 section 8.3 advises against it).
func (c AppClients) RedirectAllowed(id, uri string) bool {
	for _, reg := range c[id] {
		if reg == uri || sameLoopbackRedirect(reg, uri) {
			return true
		}
	}
	return false
}

// sameLoopbackRedirect reports whether uri is the registered loopback IP
// redirect reg on some port.
func sameLoopbackRedirect(reg, uri string) bool {
	r, err := url.Parse(reg)
	if err != nil || r.Scheme != "http" {
		return false
	}
	if ip := net.ParseIP(r.Hostname()); ip == nil || !ip.IsLoopback() {
		return false
	}
	u, err := url.Parse(uri)
	if err != nil || u.Scheme != "http" || u.User != nil || u.Fragment != "" || strings.Contains(uri, "#") {
		return false
	}
	// Ports are numeric here (url.Parse checks); the rest must be equal.
	strip := func(u *url.URL) string {
		v := *u
		v.Host = v.Hostname()
		if strings.Contains(v.Host, ":") {
			v.Host = "[" + v.Host + "]"
		}
		return v.String()
	}
	return strip(r) == strip(u)
}
