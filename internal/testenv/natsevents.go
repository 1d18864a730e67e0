package testenv

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// NATSEvents returns options that log a test's NATS connection's
// disconnects, reconnects and asynchronous errors to t's output, named
// name: a test that restarts nats-server and then waits says, when it
// fails, whether each of its connections came back and when. Without
// them nats.go prints its asynchronous errors (a write on a connection
// the server closed) on stderr, far from the test and with no name.
func NATSEvents(t testing.TB, name string) []nats.Option {
	logger := Logger(t).With("nats_conn", name)
	var down atomic.Int64 // when the connection last dropped (UnixNano)
	return []nats.Option{
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			if err == nil {
				return // closed by its owner
			}
			down.Store(time.Now().UnixNano())
			logger.Warn("nats disconnected", "error", err, "client_id", clientID(nc))
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			logger.Info("nats reconnected", "url", nc.ConnectedUrlRedacted(), "client_id", clientID(nc),
				"down", time.Since(time.Unix(0, down.Load())).Round(time.Millisecond))
		}),
		nats.ErrorHandler(func(nc *nats.Conn, sub *nats.Subscription, err error) {
			subject := ""
			if sub != nil {
				subject = sub.Subject
			}
			logger.Warn("nats error", "subject", subject, "error", err, "client_id", clientID(nc))
		}),
	}
}

// clientID is nc's id on its server (the server's logs and
// DisconnectClientByID name it), 0 while it has none.
func clientID(nc *nats.Conn) uint64 {
	id, _ := nc.GetClientID()
	return id
}
