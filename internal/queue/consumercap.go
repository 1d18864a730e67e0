package queue

import (
	"context"
	"errors"
	"math"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

// ordersMaxConsumers is the orders stream's own cap on its consumers, one
// per host: as good as none. nats-server 2.15 caps a stream's consumers at
// 1,000 (its jetstream block's default_max_consumers) unless the stream or
// the account sets a cap of its own, and a cap of -1 counts as none set,
// so only a positive one lifts it: a nats-server of an operator's own
// refused the 1,001st host's consumer ("maximum consumers limit reached")
// unless its config said otherwise. MaxInt32, not MaxInt, so that a client
// that reads the stream's settings as 32-bit integers can.
const ordersMaxConsumers = math.MaxInt32

// The JetStream API's answers that ensureOrdersStream works around
// (nats-server's errors.json).
const (
	// A stream update refused: nats-server before 2.14 answers
	// "stream configuration update can not change MaxConsumers".
	errCodeStreamInvalidConfig jetstream.ErrorCode = 10052
	// A stream whose cap passes its account's: "maximum consumers limit
	// reached", as a consumer past the cap hears.
	errCodeMaximumConsumers = jetstream.JSErrCodeMaximumConsumersLimit
)

// consumerCapHint says what a nats-server that keeps the default cap on a
// stream's consumers needs to serve more than 1,000 hosts.
const consumerCapHint = "nats-server 2.15 and later cap a stream's consumers at 1,000 unless the stream sets its own; " +
	"add `limits: { default_max_consumers: -1 }` to its jetstream block (deploy/nats/nats-1.conf), " +
	"or start the API again on nats-server 2.14 or later, before a 1,001st host"

// ensureOrdersStream is ensureStream for the orders stream with its cap on
// consumers (ordersMaxConsumers); old is the stream as it is, nil when
// there is none. A server that refuses the cap never stops the API's
// start: one before 2.14 cannot change a stream's cap on update, and the
// stream keeps its own (such a server sets no default cap); an account
// that caps consumers refuses a stream with a higher cap, and the stream
// sets none (the account's cap then holds, and nats-server's default does
// not apply). One info line says which.
func (q *Queue) ensureOrdersStream(ctx context.Context, cfg jetstream.StreamConfig, old *jetstream.StreamConfig) error {
	cfg.MaxConsumers = ordersMaxConsumers
	err := q.ensureStream(ctx, cfg)
	switch {
	case old != nil && capUnchangeable(err):
		cfg.MaxConsumers = old.MaxConsumers
		if err = q.ensureStream(ctx, cfg); err == nil {
			q.logger().Info("nats-server cannot change the orders stream's cap on consumers; the stream keeps its own",
				"stream", cfg.Name, "max_consumers", old.MaxConsumers, "nats_server", q.nc.ConnectedServerVersion(), "hint", consumerCapHint)
		}
	case apiErrorCode(err) == errCodeMaximumConsumers:
		cfg.MaxConsumers = -1
		if err = q.ensureStream(ctx, cfg); err == nil {
			q.logger().Info("the NATS account caps consumers per stream below the orders stream's cap; the account's cap holds, one consumer per host",
				"stream", cfg.Name)
		}
	}
	return err
}

// capUnchangeable reports whether nats-server refused a stream update for
// changing the stream's cap on consumers (nats-server before 2.14).
func capUnchangeable(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == errCodeStreamInvalidConfig &&
		strings.Contains(apiErr.Description, "MaxConsumers")
}

// apiErrorCode is the JetStream API's error code in err, 0 when none.
func apiErrorCode(err error) jetstream.ErrorCode {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.ErrorCode
	}
	return 0
}
