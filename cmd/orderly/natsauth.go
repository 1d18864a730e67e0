package main

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go"

	"github.com/orderly-run/orderly/internal/config"
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

// natsAuth returns the connection options of role: the credential from
// the config and the role's inbox prefix.
func natsAuth(cfg config.Config, role natsRole) ([]nats.Option, error) {
	var opts []nats.Option
	switch {
	case cfg.NATS.Nkey != "":
		nk, err := nats.NkeyOptionFromSeed(cfg.NATS.Nkey)
		if err != nil {
			return nil, fmt.Errorf("nats.nkey: %w", err)
		}
		opts = append(opts, nk)
	case cfg.NATS.Credentials != "":
		opts = append(opts, nats.UserCredentials(cfg.NATS.Credentials))
	}
	inbox := queue.APIInbox
	if role == roleWorker {
		inbox = queue.WorkerInbox(cfg.Host)
	}
	return append(opts, nats.CustomInboxPrefix(inbox)), nil
}

// openQueue sets up the JetStream objects for role: the API creates or
// updates them, a worker binds to them.
func openQueue(ctx context.Context, nc *nats.Conn, cfg config.Config, role natsRole) (*queue.Queue, error) {
	opts := queue.Options{Replicas: cfg.NATS.Replicas, DedupWindow: cfg.NATS.DedupWindow,
		AckWait: cfg.NATS.AckWait, LeaseTTL: cfg.NATS.LeaseTTL}
	if role == roleWorker {
		return queue.Bind(ctx, nc, opts)
	}
	return queue.New(ctx, nc, opts)
}
