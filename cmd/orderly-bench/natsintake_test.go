package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/natsembed"
)

// TestBenchNATSTakesTheTLSSettings: the bench's own NATS connection (the
// intake's submitter) takes the nats.tls_* settings of the environment it
// passes to serve and its `orderly api` replicas. Against a NATS whose
// certificate a CA of one's own signed and which asks for a client
// certificate, it connected with neither, and failed where they joined.
func TestBenchNATSTakesTheTLSSettings(t *testing.T) {
	dir := t.TempDir()
	ca, caKey, caFile := benchCA(t, dir)
	serverCert := benchIssue(t, ca, caKey, dir, "server", x509.ExtKeyUsageServerAuth)
	benchIssue(t, ca, caKey, dir, "client", x509.ExtKeyUsageClientAuth)
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	pair, err := tls.LoadX509KeyPair(serverCert+".crt", serverCert+".key")
	if err != nil {
		t.Fatal(err)
	}
	ns, err := natsembed.Start(natsembed.Options{Dir: t.TempDir(), Port: -1, TLS: &tls.Config{
		Certificates: []tls.Certificate{pair}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	srv := &server{dir: dir, natsURL: ns.ClientURL()}

	t.Setenv("ORDERLY_NATS__TLS_CA", "")
	t.Setenv("ORDERLY_NATS__TLS_CERT", "")
	t.Setenv("ORDERLY_NATS__TLS_KEY", "")
	if nc, err := benchNATS(srv, "submitter.nk"); err == nil {
		nc.Close()
		t.Fatal("the bench connected without the CA and a client certificate: the server does not check them")
	}
	t.Setenv("ORDERLY_NATS__TLS_CA", caFile)
	t.Setenv("ORDERLY_NATS__TLS_CERT", filepath.Join(dir, "client.crt"))
	t.Setenv("ORDERLY_NATS__TLS_KEY", filepath.Join(dir, "client.key"))
	nc, err := benchNATS(srv, "submitter.nk")
	if err != nil {
		t.Fatalf("the bench with ORDERLY_NATS__TLS_*: %v", err)
	}
	defer nc.Close()
	if _, err := nc.TLSConnectionState(); err != nil {
		t.Errorf("the bench's connection is not TLS: %v", err)
	}
}

// benchCA makes a CA and writes its certificate to dir/ca.crt.
func benchCA(t *testing.T, dir string) (*x509.Certificate, *ecdsa.PrivateKey, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bench CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return cert, key, path
}

// benchIssue writes dir/name.crt and dir/name.key, for 127.0.0.1 and
// usage, signed by ca; it returns dir/name.
func benchIssue(t *testing.T, ca *x509.Certificate, caKey *ecdsa.PrivateKey, dir, name string, usage x509.ExtKeyUsage) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	base := filepath.Join(dir, name)
	if err := os.WriteFile(base+".crt", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(base+".key", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return base
}
