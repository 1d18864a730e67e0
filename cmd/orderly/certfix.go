package main

import (
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"
)

// certificateFix says what to change about a server certificate that
// failed verification, by what failed. Every failure used to get the
// hint for an unknown CA, so an expired certificate or a URL naming a
// host the certificate does not carry sent the operator to give orderly
// a CA it already had (decisions.md, hJ22). whose names the certificate
// ("the NATS server's certificate"); where, the setting that names the
// host; trust says how to give orderly the CA, for a certificate no CA
// it knows signed.
func certificateFix(err error, whose, where, trust string) string {
	var host x509.HostnameError
	var invalid x509.CertificateInvalidError
	var unknown x509.UnknownAuthorityError
	switch {
	case errors.As(err, &host):
		return fmt.Sprintf("%s does not name %s, the host in %s: write a name it carries there (%s), "+
			"or give the server a certificate that names %s", whose, host.Host, where, certificateNames(host.Certificate), host.Host)
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired && invalid.Cert != nil:
		c := invalid.Cert
		what := whose
		if c.IsCA {
			what = fmt.Sprintf("the CA certificate %q that signed %s", c.Subject.CommonName, whose)
		}
		if time.Now().Before(c.NotBefore) {
			return fmt.Sprintf("%s is valid only from %s: this machine's clock is behind, or the certificate was made with a start in the future",
				what, c.NotBefore.UTC().Format(time.RFC3339))
		}
		return fmt.Sprintf("%s expired at %s: give the server a renewed certificate (or, if it has one, set this machine's clock right)",
			what, c.NotAfter.UTC().Format(time.RFC3339))
	case errors.As(err, &unknown) && unknown.Cert != nil:
		return fmt.Sprintf("%s is not trusted: %s (its issuer: %s)", whose, trust, unknown.Cert.Issuer.String())
	}
	return whose + " is not trusted: " + trust
}

// certificateNames lists the names a certificate carries, as a client
// would write them in a URL.
func certificateNames(c *x509.Certificate) string {
	if c == nil {
		return "none"
	}
	var names []string
	names = append(names, c.DNSNames...)
	for _, ip := range c.IPAddresses {
		names = append(names, ip.String())
	}
	if len(names) == 0 {
		// Go matches no name against a certificate without SANs.
		return "none: it has no subject alternative names"
	}
	return strings.Join(names, ", ")
}

// warnCertificateDates logs a warning when a server's own certificate
// (keys: the API's http.tls_cert, serve's nats.listen_tls_cert; file) is
// outside its dates at start. The API served an
// expired certificate without a word: its start and /readyz were fine,
// and every client that verifies it was refused (decisions.md, hJ22).
// It still serves: clients that do not verify (a probe with curl -k) keep
// working, and a renewed pair is taken without a restart (apicert.go).
func warnCertificateDates(keys pairKeys, leaf *x509.Certificate, file string, now time.Time, logger *slog.Logger) {
	switch {
	case leaf == nil:
	case now.After(leaf.NotAfter):
		logger.Warn(keys.what+" has expired: every client that verifies it refuses the connection; install a renewed one (taken at a reload, or within a minute of the files' change)",
			"setting", keys.cert, "file", file, "not_after", leaf.NotAfter.UTC())
	case now.Before(leaf.NotBefore):
		logger.Warn(keys.what+" is not valid yet: every client that verifies it refuses the connection until then (or this machine's clock is behind)",
			"setting", keys.cert, "file", file, "not_before", leaf.NotBefore.UTC())
	}
}
