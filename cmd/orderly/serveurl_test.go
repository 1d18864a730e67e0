package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/orderly-run/orderly/internal/testenv"
)

// TestShownURLNamesAMachine: a URL serve listens at on every address is
// printed with a host a client can dial, and over TLS one the
// certificate holds; any other address as it is.
func TestShownURLNamesAMachine(t *testing.T) {
	hostname, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	leaf := func(dns []string, ips ...string) *x509.Certificate {
		c := &x509.Certificate{DNSNames: dns}
		for _, ip := range ips {
			c.IPAddresses = append(c.IPAddresses, net.ParseIP(ip))
		}
		return c
	}
	for _, tc := range []struct {
		name, url string
		leaf      *x509.Certificate
		local     bool
		want      string
	}{
		{"an address as it is", "nats://10.0.0.5:4222", nil, false, "nats://10.0.0.5:4222"},
		{"a certificate's address as it is", "https://10.0.0.5:8443", leaf([]string{"api.example.net"}), true, "https://10.0.0.5:8443"},
		{"every address, for another machine", "nats://0.0.0.0:4222", nil, false, "nats://" + hostname + ":4222"},
		{"every address, for this machine", "http://0.0.0.0:8080", nil, true, "http://127.0.0.1:8080"},
		{"every IPv6 address, for this machine", "http://[::]:8080", nil, true, "http://[::1]:8080"},
		{"a certificate's name, not a wildcard or loopback, for another machine", "tls://0.0.0.0:4222",
			leaf([]string{"*.example.net", "localhost", "nats.example.net"}), false, "tls://nats.example.net:4222"},
		{"a certificate's loopback name, for this machine", "https://[::]:8443", leaf([]string{"api.example.net", "localhost"}), true, "https://localhost:8443"},
		{"a certificate's only name, for this machine", "https://0.0.0.0:8443", leaf([]string{"api.example.net"}), true, "https://api.example.net:8443"},
		{"a certificate's address", "tls://0.0.0.0:4222", leaf(nil, "10.0.0.5"), false, "tls://10.0.0.5:4222"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := shownURL(tc.url, tc.leaf, tc.local); got != tc.want {
				t.Errorf("shownURL(%q) = %q, want %q", tc.url, got, tc.want)
			}
		})
	}
}

// TestServeBannerURLsOnEveryAddress: `orderly serve` listening on every
// address (--listen 0.0.0.0:…, nats.listen 0.0.0.0:…), both over TLS,
// prints URLs a client can use: the API's and the add-a-worker line's
// NATS URL name the host the certificate holds, and a client that
// verifies it reaches both through them. Before, both said 0.0.0.0,
// which no certificate names.
func TestServeBannerURLsOnEveryAddress(t *testing.T) {
	dsn := testenv.Postgres(t)
	dataDir := serveDataDir(t, "obu-")
	dir := startupDir(t, "obuc-")
	ca := newTestCA(t, dir, "banner-ca")
	crt, key := ca.leaf(t, dir, "srv", []string{"localhost"}, time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour))
	apiPort, natsPort := freePort(t), freePort(t)
	env := []string{"PATH=/usr/bin:/bin", "HOME=" + dataDir, fmt.Sprintf("ORDERLY_NATS__LISTEN=0.0.0.0:%d", natsPort),
		"ORDERLY_NATS__LISTEN_TLS_CERT=" + crt, "ORDERLY_NATS__LISTEN_TLS_KEY=" + key,
		"ORDERLY_HTTP__TLS_CERT=" + crt, "ORDERLY_HTTP__TLS_KEY=" + key}
	sv := startFaultProc(t, "serve", filepath.Join(dir, "serve.log"), env, orderlyBin, "serve", "--data-dir", dataDir,
		"--listen", fmt.Sprintf("0.0.0.0:%d", apiPort), "--host", "srv", "--database-url", dsn)
	waitLogLine(t, sv, "add a worker:", 2*time.Minute)
	banner := readLog(sv)
	apiURL := regexp.MustCompile(`(?m)^  API:\s+(\S+)$`).FindStringSubmatch(banner)
	natsURL := regexp.MustCompile(`--nats-url (\S+) `).FindStringSubmatch(banner)
	if apiURL == nil || natsURL == nil {
		t.Fatalf("no API or NATS URL in serve's banner:\n%s", banner)
	}
	if want := fmt.Sprintf("https://localhost:%d", apiPort); apiURL[1] != want {
		t.Errorf("the banner's API URL is %s, want %s", apiURL[1], want)
	}
	if want := fmt.Sprintf("tls://localhost:%d", natsPort); natsURL[1] != want {
		t.Errorf("the banner's NATS URL is %s, want %s", natsURL[1], want)
	}

	// The banner is printed once the API serves.
	resp, err := trusting(ca, true).Get(apiURL[1] + "/healthz")
	if err != nil {
		t.Fatalf("the banner's API URL: %v", err)
	}
	resp.Body.Close()
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	nk, err := nats.NkeyOptionFromSeed(filepath.Join(dataDir, "nats-creds", "submitter.nk"))
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(natsURL[1], nk, nats.Secure(&tls.Config{RootCAs: pool}))
	if err != nil {
		t.Fatalf("connect to the banner's NATS URL: %v", err)
	}
	nc.Close()
}
