package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"

	"github.com/nats-io/nats.go"

	"github.com/orderly-run/orderly/internal/config"
)

// natsTLS returns the connection options of nats.tls_ca, nats.tls_cert and
// nats.tls_key: the CA pins the servers' chain for NATS only (the
// process's SSL_CERT_FILE would change what the JWKS client trusts too),
// and the pair is the client certificate that a server with verify: true
// in its tls block asks for. The files are checked here, each error naming
// its key and file, since nats.go's own errors name neither the key nor,
// for the pair, which file; a problem ends the start, as waiting cannot
// mend it. nats.go reads the files again on every reconnect, so a renewed
// certificate is presented from the next connection on.
func natsTLS(n config.NATS) ([]nats.Option, error) {
	var opts []nats.Option
	if n.TLSCA != "" {
		b, err := os.ReadFile(n.TLSCA)
		if err != nil {
			return nil, fmt.Errorf("nats.tls_ca: %w", err)
		}
		// AppendCertsFromPEM skips what it cannot parse: a file of no
		// certificate (a key, a DER file) would pin an empty pool, and
		// every server would be "signed by unknown authority".
		if !x509.NewCertPool().AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("nats.tls_ca: %s holds no PEM certificate (-----BEGIN CERTIFICATE-----)", n.TLSCA)
		}
		opts = append(opts, nats.RootCAs(n.TLSCA))
	}
	if n.TLSCert != "" {
		crt, err := os.ReadFile(n.TLSCert)
		if err != nil {
			return nil, fmt.Errorf("nats.tls_cert: %w", err)
		}
		key, err := os.ReadFile(n.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("nats.tls_key: %w", err)
		}
		defer clear(key)
		if blk, _ := pem.Decode(crt); blk == nil || blk.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("nats.tls_cert: %s holds no PEM certificate (-----BEGIN CERTIFICATE-----)", n.TLSCert)
		}
		if _, err := tls.X509KeyPair(crt, key); err != nil {
			return nil, fmt.Errorf("nats.tls_cert and nats.tls_key (%s, %s): %w", n.TLSCert, n.TLSKey, err)
		}
		opts = append(opts, nats.ClientCert(n.TLSCert, n.TLSKey))
	}
	return opts, nil
}

// natsTLSKeySet names the first of n's TLS keys that is set; "" for none.
func natsTLSKeySet(n config.NATS) string {
	switch {
	case n.TLSCA != "":
		return "nats.tls_ca"
	case n.TLSCert != "":
		return "nats.tls_cert"
	}
	return ""
}
