package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/natsembed"
	"github.com/orderly-run/orderly/internal/queue"
)

// natsRole is which of orderly's NATS roles a process connects as. It
// picks the inbox prefix the role's permissions let it subscribe to, and
// whether it defines the streams or only uses them (docs/security.md,
// "The bus").
type natsRole int

const (
	roleAPI    natsRole = iota // api and serve: define the streams and buckets
	roleWorker                 // worker: use them, never change them
)

// natsAuth returns the connection options of role: the credential and
// the TLS files (natsTLS) from the config, and the role's inbox prefix.
func natsAuth(cfg config.Config, role natsRole) ([]nats.Option, error) {
	var opts []nats.Option
	switch {
	case cfg.NATS.Nkey != "":
		nk, err := nats.NkeyOptionFromSeed(cfg.NATS.Nkey)
		if err != nil {
			if role == roleWorker && errors.Is(err, fs.ErrNotExist) && filepath.Base(cfg.NATS.Nkey) == natsembed.WorkerFile(cfg.Host) {
				// README's second worker, started before serve was told
				// of its host: say how serve comes to write the file.
				return nil, fmt.Errorf("nats.nkey: %w: serve writes it once host %s is in its nats.workers "+
					"(start serve with --nats-workers %s, or add it to nats.workers in serve's config and reload serve)",
					err, cfg.Host, cfg.Host)
			}
			return nil, fmt.Errorf("nats.nkey: %w", err)
		}
		opts = append(opts, nk)
	case cfg.NATS.Credentials != "":
		opts = append(opts, nats.UserCredentials(cfg.NATS.Credentials))
	}
	tlsOpts, err := natsTLS(cfg.NATS)
	if err != nil {
		return nil, err
	}
	opts = append(opts, tlsOpts...)
	inbox := queue.APIInbox
	if role == roleWorker {
		inbox = queue.WorkerInbox(cfg.Host)
	}
	return append(opts, nats.CustomInboxPrefix(inbox)), nil
}

// claimMarkKey derives the worker's claim mark key (queue.MarkKey) from
// the seed in file, an nkey seed file or a .creds file (the seed after
// its JWT); nil for no file. The seed is what another host's worker does
// not hold; its public key is no secret.
func claimMarkKey(file string) (queue.MarkKey, error) {
	return seedKey("claim mark key", file, queue.NewMarkKey)
}

// generationKey derives the API's publish generation key
// (queue.SignGenerations) from the seed in file as claimMarkKey does: the
// API's credential, which every API replica shares and no worker holds.
func generationKey(file string) (queue.MarkKey, error) {
	return seedKey("publish generation key", file, queue.NewGenerationKey)
}

// seedKey derives what (a key) from the seed in file with derive; nil for
// no file.
func seedKey(what, file string, derive func(seed []byte) queue.MarkKey) (queue.MarkKey, error) {
	if file == "" {
		return nil, nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer clear(b)
	kp, err := nkeys.ParseDecoratedNKey(b)
	if err != nil {
		return nil, fmt.Errorf("%s: the seed in %s: %w", what, file, err)
	}
	defer kp.Wipe()
	seed, err := kp.Seed()
	if err != nil {
		return nil, fmt.Errorf("%s: the seed in %s: %w", what, file, err)
	}
	defer clear(seed)
	return derive(seed), nil
}

// openQueue sets up the JetStream objects for role: the API creates or
// updates them, a worker binds to them.
func openQueue(ctx context.Context, nc *nats.Conn, cfg config.Config, role natsRole, logger *slog.Logger) (*queue.Queue, error) {
	opts := queue.Options{Replicas: cfg.NATS.Replicas, DedupWindow: cfg.NATS.DedupWindow,
		AckWait: cfg.NATS.AckWait, LeaseTTL: cfg.NATS.LeaseTTL, Logger: logger}
	if role == roleWorker {
		if err := checkWorkerSubjects(nc, cfg); err != nil {
			return nil, err
		}
		q, err := queue.Bind(ctx, nc, opts)
		if err == nil && queue.RenewEvery(cfg.NATS.Heartbeat, q.LeaseTTL()) != cfg.NATS.Heartbeat {
			// A standby worker would take the host after a renewal lost
			// or late (between two beats, for a heartbeat not shorter
			// than the lease), and end the order this one runs as
			// interrupted. Waiting does not change the bucket: the start
			// ends. (A bucket shortened later is followed: worker.beat.)
			return nil, fatalStartError{fmt.Errorf("nats.heartbeat (%s) must be at most a third of the host lease, %s: the TTL of the %s bucket, which the API sets from its nats.lease_ttl",
				cfg.NATS.Heartbeat, q.LeaseTTL(), queue.HostsBucket)}
		}
		return q, err
	}
	// The publish generation is signed with the API's own seed (serve's
	// API takes the one of extra `orderly api` processes: signAsAPI).
	key, err := generationKey(cmp.Or(cfg.NATS.Nkey, cfg.NATS.Credentials))
	if err != nil {
		return nil, err
	}
	q, err := queue.New(ctx, nc, opts)
	if err == nil {
		q.SignGenerations(key)
	}
	return q, err
}

// checkWorkerSubjects asks the server whether the connection's credentials
// permit the host's subjects, by subscribing to its control subject.
// Another host's credentials (its seed, started with --host of this one)
// were found out only when binding the streams timed out five seconds
// later, with a permissions violation on an inbox that named no cause.
func checkWorkerSubjects(nc *nats.Conn, cfg config.Config) error {
	subject := queue.ControlSubject + cfg.Host
	sub, err := nc.SubscribeSync(subject)
	if err != nil {
		return err
	}
	defer func() { _ = sub.Unsubscribe() }()
	// The server answers a refused subscription before the flush's PONG.
	if err := nc.FlushTimeout(5 * time.Second); err != nil {
		return err
	}
	if last := nc.LastError(); errors.Is(last, nats.ErrPermissionViolation) && strings.Contains(last.Error(), `"`+subject+`"`) {
		return fatalStartError{fmt.Errorf("the NATS credential (%s) is not host %s's: the server refused the subscription to %s. "+
			"Each worker host has its own: %s for serve's embedded NATS, issued to the hosts of nats.workers",
			natsCredentialSetting(cfg), cfg.Host, subject, "<data-dir>/nats-creds/"+natsembed.WorkerFile(cfg.Host))}
	}
	return nil
}

// natsCredentialReloader keeps the worker credentials of serve's embedded
// NATS in step with nats.workers on every reload: a host added gets its
// seed file and may connect at once, a host removed is disconnected and
// refused. cur is the set the server accepts now; reloads run one at a
// time, so only the reloading goroutine touches it.
func natsCredentialReloader(ns *natsembed.Server, cur *natsembed.Credentials, host string, logger *slog.Logger) config.Preparer {
	return func(_ context.Context, c config.Config) (func(), error) {
		next, err := natsembed.EnsureCredentials(cur.Dir, host, c.NATS.Workers)
		if err != nil {
			return nil, err
		}
		if next.Same(cur) {
			return func() {}, nil
		}
		return func() {
			if err := ns.SetCredentials(next); err != nil {
				logger.Error("embedded NATS kept its previous credentials", "error", err)
				return
			}
			cur = next
			logger.Info("embedded NATS credentials reloaded", "worker_hosts", slices.Sorted(maps.Keys(next.Workers)))
		}, nil
	}
}
