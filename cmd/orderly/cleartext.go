package main

import (
	"crypto/tls"
	"log/slog"
	"net"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/nats-io/nats.go"
	"github.com/orderly-run/orderly/internal/config"
)

// warnCleartext logs a warning for each connection of a server command
// that crosses the network unprotected: NATS without TLS, PostgreSQL
// without TLS or without verifying the server's certificate. An
// operator who left the servers' tls blocks commented, or a
// database_url without sslmode (pgx's prefer: TLS unverified, else
// none), was told nothing, while orders, their output, NATS
// submitters' tokens and the database's answers went across in the
// clear (decisions.md, hJ22). Loopback addresses and unix sockets stay
// on the machine and are not warned of.
func warnCleartext(nc *nats.Conn, dsn string, logger *slog.Logger) {
	if nc != nil {
		// The address connected to, not nats.url's name: a name that
		// resolves to loopback stays on the machine, and serve's own
		// in-process connection has no TCP address at all.
		host, _, err := net.SplitHostPort(nc.ConnectedAddr())
		if _, notTLS := nc.TLSConnectionState(); notTLS != nil && err == nil && !config.LoopbackHost(host) {
			logger.Warn("the connection to NATS is not encrypted: orders, their output and NATS submitters' tokens cross the network in the clear; "+
				"turn on the servers' tls block for clients and write tls:// in nats.url (docs/deploy.md, \"TLS to NATS and PostgreSQL\")",
				"setting", "nats.url", "server", nc.ConnectedAddr())
		}
	}
	for _, u := range postgresUnverified(dsn) {
		logger.Warn("database_url reaches PostgreSQL over the network "+u.why+": whoever is on the path can read and change what orderly reads and writes; "+
			"set sslmode=verify-full, with sslrootcert=<file> for a CA of your own (docs/deploy.md, \"TLS to NATS and PostgreSQL\")",
			"setting", "database_url", "server", u.addr)
	}
}

// unverifiedServer is a PostgreSQL server that database_url reaches over
// the network unprotected, and how.
type unverifiedServer struct{ addr, why string }

// postgresUnverified lists the servers of dsn (its host and each
// fallback host) that a connection reaches over TCP to another machine
// without TLS, or with TLS but without checking the server's
// certificate (sslmode disable, allow, prefer, require without
// sslrootcert). A dsn pgx cannot parse lists nothing: opening it fails
// with pgx's own error.
func postgresUnverified(dsn string) []unverifiedServer {
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return nil
	}
	type attempt struct {
		host string
		port uint16
		tls  *tls.Config
	}
	attempts := []attempt{{cfg.Host, cfg.Port, cfg.TLSConfig}}
	for _, f := range cfg.Fallbacks {
		attempts = append(attempts, attempt{f.Host, f.Port, f.TLSConfig})
	}
	var out []unverifiedServer
	seen := map[string]int{}
	for _, a := range attempts {
		if strings.HasPrefix(a.host, "/") || config.LoopbackHost(a.host) {
			continue
		}
		why := ""
		switch {
		case a.tls == nil:
			why = "without TLS"
		case a.tls.InsecureSkipVerify && a.tls.VerifyPeerCertificate == nil:
			why = "without checking its certificate"
		default:
			continue
		}
		addr := net.JoinHostPort(a.host, strconv.Itoa(int(a.port)))
		if i, ok := seen[addr]; ok {
			// prefer and allow try both: TLS unverified, then none.
			out[i].why = "with TLS unverified, or without TLS"
			continue
		}
		seen[addr] = len(out)
		out = append(out, unverifiedServer{addr, why})
	}
	return out
}
