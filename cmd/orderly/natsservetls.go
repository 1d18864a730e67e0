package main

import (
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"

	"github.com/orderly-run/orderly/internal/config"
)

// embeddedNATSTLS is the TLS of serve's embedded NATS, from
// nats.listen_tls_cert and nats.listen_tls_key, and with
// nats.listen_tls_client_ca the CAs whose client certificates it asks for
// (nats-server's verify). Workers joined it across the network in the
// clear: their orders, output and NATS submitters' tokens (decisions.md,
// hJ22). The pair is served through servedCertificate, as the API's is,
// so a reload or a change of the files renews it without a restart,
// which would drop every worker's connection; the client CA goes with
// it (each handshake takes the CAs loaded then: configForClient). Each
// file is checked here, the error naming its key and the file: a bad one
// ends serve's start before PostgreSQL starts.
func embeddedNATSTLS(n config.NATS, logger *slog.Logger) (*tls.Config, *servedCertificate, error) {
	cert, err := newServedCertificate(natsPair, natsPair.files(config.Config{NATS: n}), logger)
	if err != nil {
		return nil, nil, err
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: cert.GetCertificate}
	if n.ListenTLSClientCA != "" {
		// nats-server takes ClientAuth at its start (its INFO's
		// tls_verify); the CAs come with each handshake.
		c.ClientCAs, c.ClientAuth = cert.cur.Load().clientCAs, tls.RequireAndVerifyClientCert
		c.GetConfigForClient = cert.configForClient(c.Clone())
	}
	return c, cert, nil
}

// warnEmbeddedNATSCleartext warns when serve's embedded NATS listens
// where other machines reach it (nats.listen not on loopback) without
// TLS: workers joining it send and receive everything in the clear. The
// nkeys still authenticate (a seed never crosses the wire).
func warnEmbeddedNATSCleartext(host string, n config.NATS, logger *slog.Logger) {
	if n.ListenTLSCert != "" || host == "" || config.LoopbackHost(host) {
		return
	}
	logger.Warn("the embedded NATS listens beyond this machine without TLS: workers joining it send orders, their output and NATS submitters' tokens "+
		"across the network in the clear; set nats.listen_tls_cert and nats.listen_tls_key (docs/deploy.md, \"TLS to NATS and PostgreSQL\")",
		"setting", "nats.listen", "listen", n.Listen)
}

// warnListenTLSIgnored warns when serve is given the embedded NATS's
// TLS settings with an external nats.url, where it starts no NATS server:
// an operator who set them expected the workers' connections encrypted,
// and only the external server's own configuration decides that.
func warnListenTLSIgnored(n config.NATS, logger *slog.Logger) {
	if n.URL == "" {
		return
	}
	for _, k := range []struct{ key, value string }{
		{"nats.listen_tls_cert", n.ListenTLSCert}, {"nats.listen_tls_key", n.ListenTLSKey}, {"nats.listen_tls_client_ca", n.ListenTLSClientCA},
	} {
		if k.value != "" {
			logger.Warn("ignored: the embedded NATS's TLS settings do nothing with an external nats.url (serve starts no NATS server); "+
				"TLS between the workers and that server is its own configuration's (docs/deploy.md, \"TLS to NATS and PostgreSQL\")",
				"setting", k.key, "nats_url", redactNATS(n.URL)) // it may carry a token or a password
		}
	}
}

// printServeNATSTLS ends serve's banner, under its add-a-worker line,
// with what a joining worker needs beyond the flags when the embedded
// NATS has TLS: the CA to trust, and a client certificate when it asks
// for one. (No flag sets them: ORDERLY_NATS__TLS_CA and the like, or the
// worker's config file.)
func printServeNATSTLS(w io.Writer, n config.NATS) {
	line := fmt.Sprintf("                (over TLS: nats.tls_ca=<the CA that signed %s>", n.ListenTLSCert)
	if n.ListenTLSClientCA != "" {
		line += fmt.Sprintf(", nats.tls_cert and nats.tls_key=<a client certificate a CA of %s signed, and its key>", n.ListenTLSClientCA)
	}
	fmt.Fprintln(w, line+")")
}
