package testenv

import (
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/queue"
)

// Queue connects to the NATS server at natsURL (NATS(t), usually) as
// name and returns orderly's queue on it with opts, its streams and
// bucket created; the connection closes when the test ends. nopts add to
// queue.Connect's (a user's key, on a server with users).
func Queue(t testing.TB, natsURL, name string, opts queue.Options, nopts ...nats.Option) *queue.Queue {
	t.Helper()
	nc, err := queue.Connect(natsURL, name, append(NATSEvents(t, name), nopts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	q, err := queue.New(Context(t), nc, opts)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// JetStream connects to the NATS server(s) at natsURL as name for a test's
// own view of JetStream, creating nothing; the connection closes when the
// test ends. opts add to queue.Connect's (a role's seed and inbox, on a
// server with accounts).
func JetStream(t testing.TB, natsURL, name string, opts ...nats.Option) jetstream.JetStream {
	t.Helper()
	nc, err := queue.Connect(natsURL, name, append(NATSEvents(t, name), opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}
