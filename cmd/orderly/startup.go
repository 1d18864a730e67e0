package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/natsembed"
	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/queue"
)

// dependency is what a server command needs before it can start: its
// name is what the operator reads in "waiting for <name>".
type dependency string

const (
	depPostgres dependency = "postgresql"
	depNATS     dependency = "nats"
)

// The pace of waiting at start: the first retry comes soon (a dependency
// started at the same moment is usually up within a second), later ones
// no more than startupMaxDelay apart, so a fleet booting together finds
// its dependencies within seconds of them coming up.
const (
	startupFirstDelay = 250 * time.Millisecond
	startupMaxDelay   = 5 * time.Second
	// pgAttemptTimeout bounds one attempt to reach PostgreSQL: without it
	// a connect to a host that drops packets waits for the kernel's TCP
	// timeout (about two minutes). NATS attempts need no bound of ours:
	// the client gives up on a server after 2 s and on a JetStream request
	// after 5 s.
	pgAttemptTimeout = 15 * time.Second
	// startupExtendMargin is how much longer than the next delay systemd
	// is asked to wait for the start (EXTEND_TIMEOUT_USEC): enough for one
	// more attempt to fail and be reported.
	startupExtendMargin = time.Minute
)

// stepRunner runs one start-up step that needs dep. openBackendWith takes
// one, so that api and worker wait for their dependencies
// (waitForDependencies), serve, which starts its own, for a PostgreSQL
// its migration reached (waitForPostgres), and fleet-sim for none
// (tryOnce).
type stepRunner func(ctx context.Context, dep dependency, step func(context.Context) error) error

// tryOnce runs step once.
func tryOnce(ctx context.Context, _ dependency, step func(context.Context) error) error {
	return step(ctx)
}

// waitForDependencies returns a stepRunner that retries a step with a
// capped doubling backoff until it succeeds, fails in a way that waiting
// cannot cure (bad credentials, no schema, a config the servers reject),
// or ctx ends (SIGINT/SIGTERM). Each failed attempt is one warn line, and
// under systemd a STATUS and an EXTEND_TIMEOUT_USEC, so that a Type=notify
// unit shows what it waits for and does not kill a worker that waits
// longer than TimeoutStartSec for its dependencies.
func waitForDependencies(logger *slog.Logger) stepRunner {
	return func(ctx context.Context, dep dependency, step func(context.Context) error) error {
		delay := startupFirstDelay
		for attempt := 1; ; attempt++ {
			err := dep.attempt(ctx, step)
			if err == nil {
				if attempt > 1 {
					logger.Info("reached "+string(dep), "attempts", attempt)
					notifySystemd("STATUS=reached "+string(dep), logger)
				}
				return nil
			}
			if ctx.Err() != nil {
				return fmt.Errorf("stopped while waiting for %s: %w", dep, ctx.Err())
			}
			if !dep.retryable(err) {
				return err
			}
			logger.Warn("waiting for "+string(dep), "error", err, "attempt", attempt, "retry_in", delay.String())
			notifySystemd(fmt.Sprintf("STATUS=waiting for %s: %s\nEXTEND_TIMEOUT_USEC=%d", dep, oneLine(err.Error()),
				(delay+startupExtendMargin).Microseconds()), logger)
			t := time.NewTimer(delay)
			select {
			case <-ctx.Done():
				t.Stop()
				return fmt.Errorf("stopped while waiting for %s: %w", dep, ctx.Err())
			case <-t.C:
			}
			delay = min(2*delay, startupMaxDelay)
		}
	}
}

// waitForPostgres is waitForDependencies for PostgreSQL only, each NATS
// step tried once: serve's, which reached its PostgreSQL with its
// migration before these steps and starts its own NATS (or reaches an
// external one first here, and a first contact fails at once in serve).
func waitForPostgres(logger *slog.Logger) stepRunner {
	wait := waitForDependencies(logger)
	return func(ctx context.Context, dep dependency, step func(context.Context) error) error {
		if dep != depPostgres {
			return step(ctx)
		}
		return wait(ctx, dep, step)
	}
}

// waitAfterNATSConnect is waitForPostgres that waits out the NATS steps
// after the first one (the connect, tried once) too: serve's with an
// external NATS (nats.url set). A server that restarts between the
// connect and the streams' creation (a rolling restart of a cluster, a
// systemd restart of its unit) ended serve's start with a JetStream
// request's timeout, where api and worker, which run the same steps,
// wait it out. A first contact still fails at once, as serve's
// migration does with an external database_url. Its steps run one after
// another, as openBackendWith runs them.
func waitAfterNATSConnect(logger *slog.Logger) stepRunner {
	wait := waitForDependencies(logger)
	connected := false
	return func(ctx context.Context, dep dependency, step func(context.Context) error) error {
		if dep == depNATS && !connected {
			if err := step(ctx); err != nil {
				return err
			}
			connected = true
			return nil
		}
		return wait(ctx, dep, step)
	}
}

// attempt runs step once, bounded as dep needs (pgAttemptTimeout).
func (d dependency) attempt(ctx context.Context, step func(context.Context) error) error {
	if d != depPostgres {
		return step(ctx)
	}
	actx, cancel := context.WithTimeout(ctx, pgAttemptTimeout)
	defer cancel()
	return step(actx)
}

// retryable reports whether err may go away by waiting: the server is not
// up yet, is starting, or the cluster has not formed. Everything that
// needs the operator to change something ends the start, as it did
// before waiting existed.
func (d dependency) retryable(err error) bool {
	var fe fatalStartError
	if errors.As(err, &fe) {
		return false
	}
	switch d {
	case depPostgres:
		return postgresRetryable(err)
	case depNATS:
		return natsRetryable(err)
	}
	return false
}

// postgresRetryable lists what waiting may cure, and nothing else: a
// connection that failed for any reason but the server's refusal of the
// login or the database, a connection lost mid-check, or an attempt that
// ran out of time. A missing or old schema, a bad URL or a role that
// may not read the schema's version end the start.
func postgresRetryable(err error) bool {
	if tlsRefused(err) || postgresOffersNoTLS(err) {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		// 28: invalid authorization (bad password, no pg_hba.conf entry);
		// 3D000: no such database.
		if strings.HasPrefix(pgErr.Code, "28") || pgErr.Code == "3D000" {
			return false
		}
	}
	var ce *pgconn.ConnectError
	var netErr net.Error
	var oe *order.Error
	return errors.As(err, &ce) || errors.As(err, &netErr) || errors.Is(err, context.DeadlineExceeded) ||
		errors.As(err, &oe) && oe.Code == order.CodeUnavailable
}

// natsRetryable lists what waiting cannot cure; anything else (no server
// listening, a JetStream request timing out or answered "temporarily
// unavailable" while a cluster elects its leader, streams a worker cannot
// create before the API has) is waited out.
func natsRetryable(err error) bool {
	var pathErr *fs.PathError
	switch {
	case tlsRefused(err), clientCertificateRefused(err), natsClosedAfterHandshake(err):
		return false
	case errors.Is(err, nats.ErrSecureConnWanted):
		// A tls:// URL and a server that offers no TLS: only a change
		// to one of them mends it.
		return false
	case errors.Is(err, nats.ErrAuthorization), errors.Is(err, nats.ErrAuthExpired),
		errors.Is(err, nats.ErrAuthRevoked), errors.Is(err, nats.ErrAccountAuthExpired),
		errors.Is(err, nats.ErrNkeysNotSupported), errors.Is(err, nats.ErrPermissionViolation):
		return false
	case errors.As(err, &pathErr): // an unreadable credentials file
		return false
	}
	return true
}

// tlsRefused reports a TLS handshake that the configuration failed, not
// the network: the server's certificate is not trusted (an unknown CA, a
// name it does not carry, expired), or the server asks for a client
// certificate, which this process does not present. A server behind a private
// CA with TLS turned on (deploy/nats, sslmode=verify-full) was waited
// for at every attempt, "waiting for nats" without end, though no
// attempt could succeed until the operator changed something.
func tlsRefused(err error) bool {
	var verify *tls.CertificateVerificationError
	var unknown x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var invalid x509.CertificateInvalidError
	return errors.As(err, &verify) || errors.As(err, &unknown) || errors.As(err, &hostname) ||
		errors.As(err, &invalid) || clientCertificateRequired(err)
}

// clientCertificateRefused reports the alert of a server that verified
// the client certificate orderly presented (nats.tls_cert) and refused
// it: crypto/tls sends bad_certificate for a chain to a CA not in its
// ca_file or a certificate out of its dates, other servers
// unknown_ca. Only the text tells, as for clientCertificateRequired. It
// was waited for without end. NATS only: PostgreSQL's refusal of an
// sslcert= is pgx's to report.
func clientCertificateRefused(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "remote error: tls: bad certificate") ||
		strings.Contains(err.Error(), "remote error: tls: unknown certificate authority"))
}

// natsClosedAfterHandshake reports nats.go's error for a server that
// closed the connection right after a completed TLS handshake. Under TLS
// 1.3 the server checks the client certificate after the client's side
// of the handshake is done, and the client's first write can fail
// (broken pipe) before a read finds the server's alert: nats.go says it
// "typically indicates the remote side rejected the client certificate".
// It was retried until an attempt read the alert, ~18 s for the API
// (decisions.md, hJ22).
func natsClosedAfterHandshake(err error) bool {
	return errors.Is(err, nats.ErrTLS) && strings.Contains(err.Error(), "connection closed by remote after TLS handshake")
}

// clientCertificateRequired reports TLS 1.3's certificate_required alert
// (RFC 8446) from the server: its tls block verifies client certificates.
// crypto/tls hands a received alert over as a net.OpError around an
// unexported type, so only its text tells which it was.
func clientCertificateRequired(err error) bool {
	return err != nil && strings.Contains(err.Error(), "remote error: tls: certificate required")
}

// postgresOffersNoTLS reports a PostgreSQL server that answered the
// SSLRequest no (ssl = off) while database_url's sslmode requires TLS
// (require, verify-ca, verify-full): pgx says only "server refused TLS
// connection", with a bare errors.New. The start waited for it at every
// attempt, though only a change of the server or the URL mends it
// (decisions.md, hJ22).
func postgresOffersNoTLS(err error) bool {
	return err != nil && strings.Contains(err.Error(), "tls error: server refused TLS connection")
}

// postgresConnectError names what to change when PostgreSQL's
// certificate is not trusted: pgx says only what crypto/x509 said.
func postgresConnectError(err error) error {
	// A database_url pgx cannot parse (migrate's first step), printed
	// with its password hidden.
	err = postgres.RedactParseError(err)
	if postgresOffersNoTLS(err) {
		return fmt.Errorf("%w (PostgreSQL offers no TLS and database_url's sslmode requires it: turn ssl on in the server's postgresql.conf, "+
			"with its certificate, or write sslmode=disable where the connection may go unencrypted; docs/deploy.md, \"TLS to NATS and PostgreSQL\")", err)
	}
	if err == nil || !tlsRefused(err) {
		return err
	}
	return fmt.Errorf("%w (%s; docs/deploy.md, \"TLS to NATS and PostgreSQL\")", err,
		certificateFix(err, "PostgreSQL's certificate", "database_url", "name the CA that signed it with sslrootcert=<file> in database_url"))
}

// fatalStartError marks an error that a step knows waiting cannot cure.
type fatalStartError struct{ err error }

func (e fatalStartError) Error() string { return e.err.Error() }
func (e fatalStartError) Unwrap() error { return e.err }

// queueStartError explains why the JetStream streams could not be set up
// on nc, marking the causes that waiting cannot cure: nats.replicas above
// one against a server that is in no cluster or that the cluster cannot
// place (internal/queue/replicas.go explains both), and (for the API,
// which creates the streams) a permission violation, which the server
// reports on the side while the request itself only times out. A worker
// finding no streams (queue.ErrNotProvisioned) waits for the API to
// create them; a cluster electing its leader times out or answers
// "temporarily unavailable", and is waited for too.
func queueStartError(nc *nats.Conn, cfg config.Config, err error) error {
	if err == nil {
		return nil
	}
	if cfg.NATS.Replicas > 1 && (nc.IsConnected() && nc.ConnectedClusterName() == "" || replicasRefused(err)) {
		return fatalStartError{err}
	}
	if errors.Is(err, queue.ErrNotProvisioned) {
		return err
	}
	if last := nc.LastError(); errors.Is(last, nats.ErrPermissionViolation) {
		return fatalStartError{fmt.Errorf("%w (the server reported: %v)", err, last)}
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode == errCodeClusterNotAvailable && nc.ConnectedClusterName() != "" {
		// Waited for, as an election is; but a node of deploy/nats
		// started alone answers this for as long as it stays alone,
		// and the bare line named nothing to look at (decisions.md,
		// hI21).
		return fmt.Errorf("%w (the NATS cluster %s has no JetStream leader: fewer than a majority of its servers are up and "+
			"routed to each other, or it is electing one; read the servers' logs for route errors; a single server "+
			"runs without a cluster block: docs/deploy.md, \"A NATS cluster\")", err, nc.ConnectedClusterName())
	}
	return err
}

// errCodeClusterNotAvailable is JetStream's "JetStream system temporarily
// unavailable" (nats-server's JSClusterNotAvailErr): a clustered server
// with no meta leader.
const errCodeClusterNotAvailable jetstream.ErrorCode = 10008

// natsConnectError explains a first connection the server refused for its
// credential, which nats.go reports only as "Authorization Violation":
// none was set, or the server does not know the one that was; or one TLS
// failed: the server's certificate, a client certificate it asks for, or
// a tls:// URL to a server without TLS.
func natsConnectError(cfg config.Config, role natsRole, err error) error {
	if tlsRefused(err) || clientCertificateRefused(err) || natsClosedAfterHandshake(err) {
		if clientCertificateRequired(err) || clientCertificateRefused(err) || natsClosedAfterHandshake(err) {
			refuses, asks := "refused", "asks"
			if natsClosedAfterHandshake(err) {
				refuses = "closed the connection right after the TLS handshake, as it does when it refuses"
				asks = "closed the connection right after the TLS handshake, as it does when it asks"
			}
			if cfg.NATS.TLSCert != "" {
				return fmt.Errorf("%w (the NATS server %s the client certificate in nats.tls_cert %s: "+
					"its ca_file must hold the CA that signed it, and the certificate must be in its dates and for client authentication)", err, refuses, cfg.NATS.TLSCert)
			}
			return fmt.Errorf("%w (the NATS server %s for a client certificate (verify: true in its tls block), which this process does not present: "+
				"set nats.tls_cert and nats.tls_key to a certificate signed by a CA in the server's ca_file and its key)", err, asks)
		}
		fix := "give orderly the CA that signed it with nats.tls_ca=<the CA's PEM file>, for NATS only, or SSL_CERT_DIR=<directory of the CA's PEM file> " +
			"in the process's environment, which keeps the system's CAs, or SSL_CERT_FILE=<file>, which replaces them"
		if cfg.NATS.TLSCA != "" {
			fix = "nats.tls_ca, " + cfg.NATS.TLSCA + ", does not hold the CA that signed it: name the file of that CA there"
		}
		return fmt.Errorf("%w (%s; docs/deploy.md, \"TLS to NATS and PostgreSQL\")", err,
			certificateFix(err, "the NATS server's certificate", "nats.url", fix))
	}
	if errors.Is(err, nats.ErrSecureConnWanted) {
		if key := natsTLSKeySet(cfg.NATS); key != "" {
			// nats.go requires TLS once it is given a CA or a client
			// certificate, whatever the URL's scheme.
			return fmt.Errorf("%w (%s asks for TLS and the server offers none: turn on the tls block for clients in the server's config, "+
				"or remove nats.tls_ca, nats.tls_cert and nats.tls_key if the connection may go unencrypted; docs/deploy.md, \"TLS to NATS and PostgreSQL\")", err, key)
		}
		return fmt.Errorf("%w (nats.url asks for TLS, tls://, and the server offers none: turn on the tls block for clients in the server's config, "+
			"or write nats:// if the connection may go unencrypted; docs/deploy.md, \"TLS to NATS and PostgreSQL\")", err)
	}
	if !errors.Is(err, nats.ErrAuthorization) {
		return err
	}
	if cfg.NATS.Nkey == "" && cfg.NATS.Credentials == "" {
		file := "api.nk"
		if role == roleWorker {
			file = natsembed.WorkerFile(cfg.Host)
		}
		return fmt.Errorf("%w (the server requires a credential: set nats.nkey, --nats-nkey, to this process's seed file; serve writes them in <data-dir>/nats-creds/, this one %s)", err, file)
	}
	return fmt.Errorf("%w (the server does not accept the credential in %s: a seed serve wrote is accepted by that serve's NATS only, a worker's while its host is in nats.workers; "+
		"a cluster of your own accepts the seeds whose public keys its auth.conf lists, after a reload of each server)", err, natsCredentialSetting(cfg))
}

// natsCredentialSetting names the setting and file of cfg's NATS credential.
func natsCredentialSetting(cfg config.Config) string {
	switch {
	case cfg.NATS.Nkey != "":
		return "nats.nkey " + cfg.NATS.Nkey
	case cfg.NATS.Credentials != "":
		return "nats.credentials " + cfg.NATS.Credentials
	}
	return "none set"
}

// replicasRefused reports the JetStream errors of a stream or bucket whose
// replicas the cluster cannot place: the codes internal/queue/replicas.go
// turns into its nats.replicas explanation. "No suitable peers" with the
// reason "peer offline" is not one: a server of the cluster has not been
// heard from yet, or the meta leader changed a moment ago (a cluster
// starting, a node restarting), and waiting cures both.
func replicasRefused(err error) bool {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	switch apiErr.ErrorCode {
	case 10023, 10074: // insufficient resources, replicas not supported
		return true
	case 10005: // no suitable peers
		return !strings.Contains(apiErr.Description, "peer offline")
	}
	return false
}

// oneLine keeps a multi-line error from ending an sd_notify STATUS early.
func oneLine(s string) string {
	return strings.ReplaceAll(s, "\n", " ")
}

// stoppedWhileWaiting is what a server command returns when it could not
// open its backend: nothing when SIGINT or SIGTERM ended the wait (a stop
// asked for is not a failure), else err.
func stoppedWhileWaiting(ctx context.Context, err error, logger *slog.Logger) error {
	if ctx.Err() != nil && errors.Is(err, context.Canceled) {
		logger.Info("stopped while waiting for dependencies", "error", err)
		return nil
	}
	return err
}
