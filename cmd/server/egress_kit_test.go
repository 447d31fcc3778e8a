package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// testCA is a throwaway certificate authority and a server certificate it
// signed for 127.0.0.1 and localhost.
type testCA struct {
	file   string // the CA certificate, PEM
	pool   *x509.CertPool
	server tls.Certificate
	// certFile and keyFile hold the server certificate and its key, PEM.
	certFile, keyFile string
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "tokenwarm test egress CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "emulated login host"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ca := &testCA{file: filepath.Join(dir, "egress-ca.pem"), pool: x509.NewCertPool(),
		server:   tls.Certificate{Certificate: [][]byte{leafDER}, PrivateKey: key},
		certFile: filepath.Join(dir, "login.pem"), keyFile: filepath.Join(dir, "login-key.pem")}
	ca.pool.AddCert(caCert)
	for path, block := range map[string]*pem.Block{ca.file: {Type: "CERTIFICATE", Bytes: caDER},
		ca.certFile: {Type: "CERTIFICATE", Bytes: leafDER}, ca.keyFile: {Type: "PRIVATE KEY", Bytes: keyDER}} {
		if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return ca
}

// connectProxy is a forward proxy that only tunnels (HTTP CONNECT) and
// dials out from one source address, like an egress whose address is
// registered in the org's allowlist.
type connectProxy struct {
	URL     string
	ln      net.Listener
	source  net.IP
	mu      sync.Mutex
	targets []string   // one per CONNECT, in order
	open    []net.Conn // every tunnel's two ends, closed at the end
	wg      sync.WaitGroup
}

func startConnectProxy(t *testing.T, source string) *connectProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &connectProxy{URL: "http://" + ln.Addr().String(), ln: ln, source: net.ParseIP(source)}
	srv := &http.Server{Handler: http.HandlerFunc(p.serve), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		_ = srv.Close()
		p.mu.Lock()
		for _, c := range p.open {
			_ = c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

// Connects returns the targets of every CONNECT so far.
func (p *connectProxy) Connects() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.targets...)
}

func (p *connectProxy) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodConnect {
		http.Error(w, "this proxy only tunnels (CONNECT)", http.StatusMethodNotAllowed)
		return
	}
	p.mu.Lock()
	p.targets = append(p.targets, r.Host)
	p.mu.Unlock()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: p.source}, Timeout: 5 * time.Second}
	up, err := d.DialContext(r.Context(), "tcp", r.Host)
	if err != nil {
		http.Error(w, "dial "+r.Host+": "+err.Error(), http.StatusBadGateway)
		return
	}
	conn, buf, err := http.NewResponseController(w).Hijack()
	if err != nil {
		up.Close()
		return
	}
	p.mu.Lock()
	p.open = append(p.open, conn, up)
	p.mu.Unlock()
	if _, err := conn.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n")); err != nil {
		conn.Close()
		up.Close()
		return
	}
	p.wg.Add(2)
	go func() {
		defer p.wg.Done()
		// Bytes the client sent after the CONNECT line, already buffered.
		if n := buf.Reader.Buffered(); n > 0 {
			b, _ := buf.Reader.Peek(n)
			_, _ = up.Write(b)
		}
		_, _ = io.Copy(up, conn)
		_ = up.(*net.TCPConn).CloseWrite()
	}()
	go func() {
		defer p.wg.Done()
		_, _ = io.Copy(conn, up)
		_ = conn.Close()
		_ = up.Close()
	}()
}

// SALESFORCE_CA_FILE: a PEM bundle is added to the system roots; a missing
// file or one without a certificate is refused, naming the variable.
func TestCAFileSetting(t *testing.T) {
	ca := newTestCA(t)
	cfg, err := loadConfig(envFrom(map[string]string{"SALESFORCE_CA_FILE": ca.file}))
	if err != nil || cfg.CAPool == nil || cfg.CAFile != ca.file {
		t.Fatalf("cfg %+v err %v", cfg, err)
	}
	leaf, _ := x509.ParseCertificate(ca.server.Certificate[0])
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: cfg.CAPool, DNSName: "localhost"}); err != nil {
		t.Fatalf("the pool does not trust the CA's certificates: %v", err)
	}
	tr := salesforceTransport(cfg)
	if tr.TLSClientConfig == nil || tr.TLSClientConfig.RootCAs != cfg.CAPool {
		t.Fatal("the Salesforce transport does not use the pool")
	}
	if tr := salesforceTransport(&Config{DBMaxConns: 8}); tr.TLSClientConfig != nil && tr.TLSClientConfig.RootCAs != nil {
		t.Fatal("without SALESFORCE_CA_FILE the transport must use the system roots")
	}
	noCert := filepath.Join(t.TempDir(), "empty.pem")
	if err := os.WriteFile(noCert, []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{noCert, filepath.Join(t.TempDir(), "missing.pem")} {
		_, err := loadConfig(envFrom(map[string]string{"SALESFORCE_CA_FILE": bad}))
		if err == nil || !strings.Contains(err.Error(), "SALESFORCE_CA_FILE") {
			t.Errorf("%s: %v", bad, err)
		}
		if err != nil && strings.Contains(err.Error(), "AAAA") {
			t.Errorf("the error shows the file's content: %v", err)
		}
	}
}
