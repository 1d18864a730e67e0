package queue_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// addHosts creates the consumers of hosts from up to to on q.
func addHosts(t *testing.T, q *queue.Queue, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		if _, err := q.HostConsumer(testenv.Context(t), fmt.Sprintf("h%04d", i)); err != nil {
			t.Fatalf("host %d: %v", i+1, err)
		}
	}
}

// TestOrdersStreamLiftsTheConsumerCap: nats-server 2.15 caps a stream's
// consumers at 1,000 unless its config says `default_max_consumers: -1`
// (serve's embedded server and deploy/nats/ do; an operator's own
// nats-server need not), and the orders stream has one consumer per host:
// the 1,001st host's worker could not consume. The orders stream now sets
// its own cap, on a new stream and on one an older orderly created, which
// the API's next start lifts. The server here is nats-server's as
// configured by default.
func TestOrdersStreamLiftsTheConsumerCap(t *testing.T) {
	t.Run("new", func(t *testing.T) {
		ns := testenv.NATSServer(t, &server.Options{})
		q := testenv.Queue(t, ns.ClientURL(), "cap-new", queue.Options{})
		addHosts(t, q, 0, 1001)
	})
	t.Run("created before", func(t *testing.T) {
		ns := testenv.NATSServer(t, &server.Options{})
		ctx := testenv.Context(t)
		js := testenv.JetStream(t, ns.ClientURL(), "cap-old")
		// The orders stream as an orderly from before created it: no cap
		// of its own.
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
			Name: queue.OrdersStream, Subjects: []string{queue.OrdersSubject + ">"},
			Storage: jetstream.FileStorage, Duplicates: 2 * time.Minute,
		}); err != nil {
			t.Fatal(err)
		}
		for i := range 1001 {
			_, err := js.CreateOrUpdateConsumer(ctx, queue.OrdersStream, jetstream.ConsumerConfig{
				Durable: fmt.Sprintf("old%04d", i), FilterSubject: fmt.Sprintf("%sold%04d", queue.OrdersSubject, i),
				AckPolicy: jetstream.AckExplicitPolicy, MemoryStorage: true,
			})
			var apiErr *jetstream.APIError
			switch {
			case i < 1000 && err != nil:
				t.Fatalf("consumer %d: %v", i+1, err)
			case i == 1000 && !(errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeMaximumConsumersLimit):
				t.Fatalf("consumer 1,001 on the stream from before: %v, want nats-server's cap of 1,000", err)
			}
		}
		q := testenv.Queue(t, ns.ClientURL(), "cap-lifted", queue.Options{})
		addHosts(t, q, 0, 2)
	})
	// An account that caps consumers refuses a stream with a higher cap of
	// its own; the API starts all the same, and the account's cap holds.
	t.Run("account caps consumers", func(t *testing.T) {
		conf := filepath.Join(t.TempDir(), "nats.conf")
		err := os.WriteFile(conf, []byte(`accounts: { A: { jetstream: { max_consumers: 1500 }, users: [{ user: a, password: a }] } }`), 0o600)
		if err != nil {
			t.Fatal(err)
		}
		opts, err := server.ProcessConfigFile(conf)
		if err != nil {
			t.Fatal(err)
		}
		ns := testenv.NATSServer(t, opts)
		url := fmt.Sprintf("nats://a:a@%s", ns.Addr())
		q := testenv.Queue(t, url, "cap-account", queue.Options{})
		addHosts(t, q, 0, 2)
		testenv.Queue(t, url, "cap-account-again", queue.Options{})
	})
}
