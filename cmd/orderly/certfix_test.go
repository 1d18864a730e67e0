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
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/postgres"
)

// testCA is a certificate authority of a test's own: a process is given
// its PEM file (path) as SSL_CERT_FILE or sslrootcert=, as an operator
// gives a private CA (docs/deploy.md, "TLS to NATS and PostgreSQL").
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	path string
}

var testSerial = big.NewInt(100)

func newTestCA(t *testing.T, dir, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(48 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	ca := &testCA{cert: cert, key: key, path: filepath.Join(dir, name+".pem")}
	if err := os.WriteFile(ca.path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return ca
}

// leaf writes dir/file.crt and dir/file.key: a server certificate for
// names (host names or IP addresses) that the CA signed, valid from
// notBefore to notAfter.
func (ca *testCA) leaf(t *testing.T, dir, file string, names []string, notBefore, notAfter time.Time) (crt, key string) {
	t.Helper()
	return ca.issue(t, dir, file, names, notBefore, notAfter, x509.ExtKeyUsageServerAuth)
}

// client writes dir/file.crt and dir/file.key: a client certificate the
// CA signed, valid for a day, as a server with verify: true asks for.
func (ca *testCA) client(t *testing.T, dir, file string) (crt, key string) {
	t.Helper()
	return ca.issue(t, dir, file, nil, time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour), x509.ExtKeyUsageClientAuth)
}

// issue is leaf and client: a certificate for usage.
func (ca *testCA) issue(t *testing.T, dir, file string, names []string, notBefore, notAfter time.Time, usage x509.ExtKeyUsage) (crt, key string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	testSerial.Add(testSerial, big.NewInt(1))
	tmpl := &x509.Certificate{SerialNumber: new(big.Int).Set(testSerial), Subject: pkix.Name{CommonName: file},
		NotBefore: notBefore, NotAfter: notAfter, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{usage}}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &k.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	crt, key = filepath.Join(dir, file+".crt"), filepath.Join(dir, file+".key")
	if err := os.WriteFile(crt, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return crt, key
}

// certCase is a server certificate that fails verification for one
// cause, and the words that must name that cause and its fix.
type certCase struct {
	name        string
	names       []string
	from, until time.Time
	other       bool // signed by a CA the client was not given
	want        []string
}

func certCases() []certCase {
	now := time.Now()
	return []certCase{
		{name: "expired", names: []string{"127.0.0.1"}, from: now.Add(-30 * 24 * time.Hour), until: now.Add(-24 * time.Hour),
			want: []string{"certificate expired at " + now.Add(-24*time.Hour).UTC().Format("2006-01-02"), "give the server a renewed certificate"}},
		{name: "not yet valid", names: []string{"127.0.0.1"}, from: now.Add(24 * time.Hour), until: now.Add(48 * time.Hour),
			want: []string{"is valid only from", "clock"}},
		{name: "another host's", names: []string{"other.example"}, from: now.Add(-time.Hour), until: now.Add(time.Hour),
			want: []string{"does not name 127.0.0.1", "(other.example)", "a certificate that names 127.0.0.1"}},
		{name: "another CA's", names: []string{"127.0.0.1"}, from: now.Add(-time.Hour), until: now.Add(time.Hour), other: true,
			want: []string{"is not trusted:", "its issuer: CN=other-ca"}},
	}
}

// certFixUnwanted is the unknown CA's advice, which an expired
// certificate or one for another name got too: the operator was sent to
// give orderly a CA it already had.
func certFixUnwanted(c certCase) string {
	if c.other {
		return ""
	}
	return "is not trusted"
}

// TestPostgresCertificateRefusalNamesTheCause: with sslmode=verify-full
// and sslrootcert= naming the CA, a PostgreSQL certificate that expired,
// or that names another host, was explained as an untrusted CA ("name
// the CA that signed it with sslrootcert="), which the URL already did.
// Each cause is now named with its own fix. The server answers the
// SSLRequest and presents the certificate, as untrustedPostgres does.
func TestPostgresCertificateRefusalNamesTheCause(t *testing.T) {
	dir := t.TempDir()
	ca, other := newTestCA(t, dir, "walk-ca"), newTestCA(t, dir, "other-ca")
	for _, tc := range certCases() {
		t.Run(tc.name, func(t *testing.T) {
			signer := ca
			if tc.other {
				signer = other
			}
			crt, key := signer.leaf(t, dir, strings.ReplaceAll(tc.name, " ", "-"), tc.names, tc.from, tc.until)
			addr := tlsPostgres(t, crt, key)
			pool, err := postgres.Open(t.Context(), "postgres://orderly@"+addr+"/orderly?sslmode=verify-full&connect_timeout=10&sslrootcert="+ca.path)
			if err == nil {
				pool.Close()
				t.Fatal("connected through a certificate that fails verification")
			}
			err = postgresConnectError(err)
			if depPostgres.retryable(err) {
				t.Errorf("a start waits it out: %v", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("the error does not say %q: %v", w, err)
				}
			}
			if u := certFixUnwanted(tc); u != "" && strings.Contains(err.Error(), u) {
				t.Errorf("the error says %q of a CA the URL names: %v", u, err)
			}
		})
	}
}

// tlsPostgres listens on loopback as a PostgreSQL server that answers
// the SSLRequest and presents the certificate crt, and returns its
// address.
func tlsPostgres(t *testing.T, crt, key string) string {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(crt, key)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { _ = ln.Close(); <-done })
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			// SSLRequest: length 8, code 80877103; answered 'S', then TLS.
			req := make([]byte, 8)
			if _, err := io.ReadFull(c, req); err == nil {
				if _, err := c.Write([]byte{'S'}); err == nil {
					_ = tls.Server(c, &tls.Config{Certificates: []tls.Certificate{pair}}).Handshake()
				}
			}
			_ = c.Close()
		}
	}()
	return ln.Addr().String()
}

// TestCLICertificateHintNamesTheCause: the client given the API's CA
// (SSL_CERT_FILE, as docs/cli.md says) and an API whose certificate
// expired or names another host was told "to trust the API's
// certificate, set SSL_CERT_FILE", which it had done. It runs the
// built binary: SSL_CERT_FILE is read from the process's environment.
func TestCLICertificateHintNamesTheCause(t *testing.T) {
	dir := t.TempDir()
	ca, other := newTestCA(t, dir, "walk-ca"), newTestCA(t, dir, "other-ca")
	for _, tc := range certCases() {
		t.Run(tc.name, func(t *testing.T) {
			signer := ca
			if tc.other {
				signer = other
			}
			crt, key := signer.leaf(t, dir, strings.ReplaceAll(tc.name, " ", "-"), tc.names, tc.from, tc.until)
			pair, err := tls.LoadX509KeyPair(crt, key)
			if err != nil {
				t.Fatal(err)
			}
			srv := httptest.NewUnstartedServer(http.NotFoundHandler())
			srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}}
			srv.StartTLS()
			defer srv.Close()
			cmd := exec.Command(orderlyBin, "hosts")
			cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + dir, "SSL_CERT_FILE=" + ca.path,
				"ORDERLY_URL=" + srv.URL, "ORDERLY_TOKEN=ord_abc"}
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("hosts through a certificate that fails verification exited 0:\n%s", out)
			}
			for _, w := range tc.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("the error does not say %q:\n%s", w, out)
				}
			}
			if u := certFixUnwanted(tc); u != "" && strings.Contains(string(out), u) {
				t.Errorf("the error says %q of a CA SSL_CERT_FILE names:\n%s", u, out)
			}
		})
	}
}

// TestPostgresWithoutTLSEndsTheStart: database_url with
// sslmode=verify-full (or require) against a PostgreSQL with ssl off was
// waited for at every attempt, "waiting for postgresql … tls error:
// server refused TLS connection", though only a change of the server or
// the URL mends it. The start now ends, saying which. The server here
// answers the SSLRequest 'N', as PostgreSQL with ssl = off does.
func TestPostgresWithoutTLSEndsTheStart(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { _ = ln.Close(); <-done })
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			req := make([]byte, 8)
			if _, err := io.ReadFull(c, req); err == nil {
				_, _ = c.Write([]byte{'N'})
			}
			_ = c.Close()
		}
	}()
	for _, mode := range []string{"require", "verify-full"} {
		pool, err := postgres.Open(t.Context(), "postgres://orderly@"+ln.Addr().String()+"/orderly?connect_timeout=10&sslmode="+mode)
		if err == nil {
			pool.Close()
			t.Fatalf("sslmode=%s connected to a server without TLS", mode)
		}
		err = postgresConnectError(err)
		if depPostgres.retryable(err) {
			t.Errorf("sslmode=%s: a start waits it out: %v", mode, err)
		}
		if !strings.Contains(err.Error(), "PostgreSQL offers no TLS and database_url's sslmode requires it") {
			t.Errorf("sslmode=%s: the error does not say the server offers no TLS: %v", mode, err)
		}
	}
}
