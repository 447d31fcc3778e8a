package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/tokenwarm/tokenwarm/internal/testkit"
)

// startEmulatorCommand runs `tokenwarm emulator` over HTTPS with the test
// CA's certificate and the allowlist 127.0.0.2 (token, revoke and
// introspection), and returns its URL.
func startEmulatorCommand(t *testing.T, ca *testCA) string {
	t.Helper()
	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"emulator", "-addr", addr, "-tls-cert", ca.certFile, "-tls-key", ca.keyFile,
			"-allow-ips", egressSource, "-allowlist-everywhere", "-client-id", testkit.ClientID, "-client-secret", testkit.ClientSecret},
			envFrom(nil), io.Discard, io.Discard)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("emulator: %v", err)
		}
	})
	for i := 0; ; i++ {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return "https://" + addr
		}
		if i == 100 {
			t.Fatalf("the emulator does not listen: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// `tokenwarm emulator -tls-cert -tls-key -allow-ips` serves HTTPS and
// refuses the token endpoint to any source but the allowlisted one.
func TestEmulatorCommandServesHTTPSWithAnAllowlist(t *testing.T) {
	requireLoopbackSource(t)
	ca := newTestCA(t)
	login := startEmulatorCommand(t, ca)
	proxy := startConnectProxy(t, egressSource)
	form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"5Aep861unknown"},
		"client_id": {testkit.ClientID}, "client_secret": {testkit.ClientSecret}}
	for _, tc := range []struct {
		via  string
		want string
	}{{"", "ip restricted or invalid login hours"}, {proxy.URL, "expired access/refresh token"}} {
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.pool}}
		if tc.via != "" {
			u, _ := url.Parse(tc.via)
			tr.Proxy = http.ProxyURL(u)
		}
		resp, err := (&http.Client{Transport: tr}).PostForm(login+"/services/oauth2/token", form)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), tc.want) {
			t.Errorf("via %q: %d %s, want 400 %q", tc.via, resp.StatusCode, b, tc.want)
		}
	}
}

// `tokenwarm egress check` takes the configured path (CONNECT through the
// proxy, TLS with the login host, trusting SALESFORCE_CA_FILE), prints it,
// never shows a secret, and fails with a clear message without a proxy,
// with a dead one, when the proxy cannot tunnel, and without the CA.
func TestEgressCheck(t *testing.T) {
	requireLoopbackSource(t)
	ca := newTestCA(t)
	login := startEmulatorCommand(t, ca)
	proxy := startConnectProxy(t, egressSource)
	const proxyPassword, clientSecret = "pr0xy-pa55word", "client-secret-never-shown"
	withCreds := strings.Replace(proxy.URL, "http://", "http://egress-user:"+proxyPassword+"@", 1)
	env := map[string]string{"SALESFORCE_LOGIN_URL": login, "SALESFORCE_CLIENT_ID": testkit.ClientID,
		"SALESFORCE_CLIENT_SECRET": clientSecret, "SALESFORCE_CA_FILE": ca.file, "SALESFORCE_PROXY_URL": withCreds}
	check := func(env map[string]string, args ...string) (string, error) {
		var out bytes.Buffer
		err := run(context.Background(), append([]string{"egress", "check"}, args...), envFrom(env), &out, io.Discard)
		all := out.String()
		if err != nil {
			all += "\n" + err.Error()
		}
		for _, secret := range []string{proxyPassword, "egress-user", clientSecret} {
			if strings.Contains(all, secret) {
				t.Errorf("egress check shows a secret (%s):\n%s", secret, all)
			}
		}
		return out.String(), err
	}

	out, err := check(env)
	if err != nil {
		t.Fatalf("through the proxy: %v\n%s", err, out)
	}
	host := strings.TrimPrefix(login, "https://")
	for _, want := range []string{login, proxy.URL, "(credentials set, not shown)", ca.file, "127.0.0.1", "CONNECT:", host + " 200",
		"TLS 1.3", "emulated login host, issued by CN=tokenwarm test egress CA", "OK:"} {
		if !strings.Contains(out, want) {
			t.Errorf("the report lacks %q:\n%s", want, out)
		}
	}
	if got := proxy.Connects(); len(got) != 1 || got[0] != host {
		t.Fatalf("CONNECTs %v, want one to %s", got, host)
	}
	t.Logf("egress check through the proxy:\n%s", out)

	direct := maps.Clone(env)
	delete(direct, "SALESFORCE_PROXY_URL")
	if out, err := check(direct); err == nil || !strings.Contains(err.Error(), "SALESFORCE_PROXY_URL is not set") || !strings.Contains(out, "TLS 1.3") {
		t.Errorf("without a proxy: %v\n%s", err, out)
	}
	if out, err := check(direct, "-direct"); err != nil || !strings.Contains(out, "none: calls go direct") {
		t.Errorf("without a proxy, -direct: %v\n%s", err, out)
	}

	dead := maps.Clone(env)
	dead["SALESFORCE_PROXY_URL"] = "http://egress-user:" + proxyPassword + "@" + freeAddr(t)
	if _, err := check(dead); err == nil || !strings.Contains(err.Error(), "cannot reach the egress proxy") {
		t.Errorf("with a dead proxy: %v", err)
	}
	if _, err := check(env, "-login-url", "https://"+freeAddr(t)); err == nil || !strings.Contains(err.Error(), "refused to tunnel") || !strings.Contains(err.Error(), "502") {
		t.Errorf("the proxy cannot reach the login host: %v", err)
	}
	noCA := maps.Clone(env)
	delete(noCA, "SALESFORCE_CA_FILE")
	if _, err := check(noCA); err == nil || !strings.Contains(err.Error(), "TLS handshake") || !strings.Contains(err.Error(), "SALESFORCE_CA_FILE") {
		t.Errorf("without the CA: %v", err)
	}
	if _, err := check(env, "status"); err == nil || !strings.Contains(err.Error(), "usage") {
		t.Errorf("bad arguments: %v", err)
	}
	if _, err := check(map[string]string{}); err == nil || !strings.Contains(err.Error(), "SALESFORCE_LOGIN_URL is not set") {
		t.Errorf("no login host: %v", err)
	}
}
