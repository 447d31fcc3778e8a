package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/tokenwarm/tokenwarm/salesforce"
)

// egressCommand runs `tokenwarm egress check`: it takes the path refresh
// calls take (the transport salesforceTransport builds: SALESFORCE_PROXY_URL,
// SALESFORCE_CA_FILE) to the login host, CONNECT through the proxy and a
// TLS handshake, and prints what operators compare with the org's Refresh
// Token IP Allowlist. Salesforce has no endpoint that echoes the caller's
// address, so the check proves the path, not the address Salesforce sees.
// It sends no credentials and no token: one HEAD request to the login
// host's root, whose answer only shows that the tunnel carries HTTP.
func egressCommand(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	usage := errors.New("usage: tokenwarm egress check [-login-url URL] [-direct] [-timeout 15s]")
	if len(args) == 0 || args[0] != "check" {
		return usage
	}
	fs := flag.NewFlagSet("egress check", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	loginFlag := fs.String("login-url", "", "login host to check (default SALESFORCE_LOGIN_URL), e.g. an org's My Domain")
	direct := fs.Bool("direct", false, "accept no SALESFORCE_PROXY_URL: this host's own (NAT) address is the registered egress")
	timeout := fs.Duration("timeout", 15*time.Second, "how long the whole check may take")
	if err := fs.Parse(args[1:]); err != nil || fs.NArg() != 0 {
		return usage
	}
	cfg, err := loadConfig(getenv)
	if err != nil {
		return fmt.Errorf("configuration:\n%w", err)
	}
	loginURL := cfg.LoginURL
	if *loginFlag != "" {
		if err := salesforce.ValidateLoginURL(*loginFlag); err != nil {
			return fmt.Errorf("-login-url: %w", err)
		}
		loginURL = strings.TrimRight(*loginFlag, "/")
	}
	if loginURL == "" {
		return errors.New("egress check: SALESFORCE_LOGIN_URL is not set (the built-in emulator needs no egress); set it or pass -login-url")
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	r := checkEgress(ctx, cfg, loginURL)
	r.print(stdout)
	switch {
	case r.err != nil:
		return fmt.Errorf("egress check failed: %s", r.scrub(r.err.Error()))
	case cfg.ProxyURL == "" && !*direct:
		return errors.New("egress check failed: SALESFORCE_PROXY_URL is not set, so calls to Salesforce leave from this host's own address; " +
			"set it to the egress proxy whose addresses are on the allowlist, or pass -direct if this host's (NAT) address is the registered one")
	}
	fmt.Fprintln(stdout, "OK: the egress path to the login host works. Salesforce cannot tell us which address it sees: make sure the egress's public addresses are on the org's Refresh Token IP Allowlist.")
	return nil
}

// egressReport is what the check found, never a secret.
type egressReport struct {
	loginURL, target string
	proxy            string   // without credentials; "" when direct
	proxySecrets     []string // the proxy's user and password, scrubbed from any message
	caSource         string
	loginAddrs       []string
	loginResolveErr  error
	proxyAddrs       []string
	proxyResolveErr  error
	local, remote    string // the TCP connection tokenwarm opened
	connectStatus    string // the proxy's answer to CONNECT
	tls              *tls.ConnectionState
	httpStatus       string
	err              error
}

func checkEgress(ctx context.Context, cfg *Config, loginURL string) *egressReport {
	u, _ := url.Parse(loginURL)
	port := u.Port()
	if port == "" {
		port = map[string]string{"https": "443", "http": "80"}[u.Scheme]
	}
	r := &egressReport{loginURL: loginURL, target: net.JoinHostPort(u.Hostname(), port), caSource: "the system roots"}
	if cfg.CAFile != "" {
		r.caSource = "the system roots + " + cfg.CAFile + " (SALESFORCE_CA_FILE)"
	}
	var proxyHost string
	if cfg.ProxyURL != "" {
		p, err := url.Parse(cfg.ProxyURL)
		if err != nil {
			r.err = errors.New("SALESFORCE_PROXY_URL is not a URL")
			return r
		}
		if p.User != nil {
			r.proxySecrets = append(r.proxySecrets, p.User.Username())
			if pw, ok := p.User.Password(); ok {
				r.proxySecrets = append(r.proxySecrets, pw)
			}
		}
		shown := *p
		shown.User = nil
		r.proxy, proxyHost = shown.String(), p.Hostname()
	}
	r.loginAddrs, r.loginResolveErr = net.DefaultResolver.LookupHost(ctx, u.Hostname())
	if proxyHost != "" {
		r.proxyAddrs, r.proxyResolveErr = net.DefaultResolver.LookupHost(ctx, proxyHost)
	}

	t := salesforceTransport(cfg)
	t.DisableKeepAlives = true
	defer t.CloseIdleConnections()
	var mu sync.Mutex
	var dialErr, tlsErr error
	t.OnProxyConnectResponse = func(_ context.Context, _ *url.URL, _ *http.Request, resp *http.Response) error {
		mu.Lock()
		defer mu.Unlock()
		r.connectStatus = resp.Status
		return nil
	}
	trace := &httptrace.ClientTrace{
		ConnectDone: func(_, _ string, err error) {
			mu.Lock()
			defer mu.Unlock()
			dialErr = err
		},
		GotConn: func(info httptrace.GotConnInfo) {
			mu.Lock()
			defer mu.Unlock()
			r.local, r.remote = info.Conn.LocalAddr().String(), info.Conn.RemoteAddr().String()
		},
		TLSHandshakeDone: func(st tls.ConnectionState, err error) {
			mu.Lock()
			defer mu.Unlock()
			// With an https proxy the first handshake is the proxy's; the
			// last one is the login host's.
			tlsErr, r.tls = err, nil
			if err == nil {
				r.tls = &st
			}
		},
	}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), http.MethodHead, loginURL+"/", nil)
	if err != nil {
		r.err = err
		return r
	}
	resp, err := (&http.Client{Transport: t, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
	mu.Lock()
	defer mu.Unlock()
	if err == nil {
		resp.Body.Close()
		r.httpStatus = resp.Status
		if u.Scheme == "https" && r.tls == nil {
			r.err = errors.New("no TLS handshake with the login host was seen")
		}
		return r
	}
	switch {
	case dialErr != nil && r.proxy != "":
		r.err = fmt.Errorf("cannot reach the egress proxy %s: %w", r.proxy, dialErr)
	case dialErr != nil:
		r.err = fmt.Errorf("cannot reach the login host %s: %w", r.target, dialErr)
	case r.proxy != "" && r.connectStatus != "" && !strings.HasPrefix(r.connectStatus, "200"):
		r.err = fmt.Errorf("the egress proxy refused to tunnel to %s: %s", r.target, r.connectStatus)
	case tlsErr != nil:
		r.err = fmt.Errorf("TLS handshake with %s failed: %w (a TLS-inspecting egress needs its CA in SALESFORCE_CA_FILE)", u.Hostname(), tlsErr)
	default:
		r.err = err
	}
	return r
}

// scrub removes the proxy's credentials from a message.
func (r *egressReport) scrub(s string) string {
	for _, sec := range r.proxySecrets {
		if sec != "" {
			s = strings.ReplaceAll(s, sec, "***")
		}
	}
	return s
}

func (r *egressReport) print(w io.Writer) {
	line := func(k, format string, a ...any) {
		fmt.Fprintf(w, "  %-22s %s\n", k+":", r.scrub(fmt.Sprintf(format, a...)))
	}
	addrs := func(list []string, err error) string {
		if err != nil {
			return "cannot resolve: " + err.Error()
		}
		return strings.Join(list, ", ")
	}
	fmt.Fprintln(w, "tokenwarm egress check")
	line("login host", "%s (%s)", r.loginURL, r.target)
	line("login host resolves", "%s", addrs(r.loginAddrs, r.loginResolveErr))
	if r.proxy != "" {
		creds := ""
		if len(r.proxySecrets) > 0 {
			creds = " (credentials set, not shown)"
		}
		line("egress proxy", "%s%s", r.proxy, creds)
		line("proxy resolves", "%s", addrs(r.proxyAddrs, r.proxyResolveErr))
		fmt.Fprintln(w, "  (through a proxy, the proxy resolves the login host itself and Salesforce sees the proxy's public address)")
	} else {
		line("egress proxy", "none: calls go direct, from this host's address (or its NAT's)")
	}
	line("trusted roots", "%s", r.caSource)
	if r.remote != "" {
		line("connection", "from %s to %s", r.local, r.remote)
	}
	if r.connectStatus != "" {
		line("proxy CONNECT", "%s %s", r.target, r.connectStatus)
	}
	if st := r.tls; st != nil {
		line("TLS", "%s, %s", tls.VersionName(st.Version), tls.CipherSuiteName(st.CipherSuite))
		if len(st.PeerCertificates) > 0 {
			c := st.PeerCertificates[0]
			line("server certificate", "%s, issued by %s, valid until %s", c.Subject.CommonName, c.Issuer.String(), c.NotAfter.UTC().Format(time.DateOnly))
		}
	}
	if r.httpStatus != "" {
		line("HTTP through it", "HEAD / answered %s", r.httpStatus)
	}
}
