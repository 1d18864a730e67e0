package worker_test

import (
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestConsumerLostWithTheStoreIsCreatedAgain: nats-server comes back with
// an empty store (its JetStream directory lost, or restored from before
// the host's consumer existed) while the worker runs. The API creates the
// streams again on its next publish, but nothing tells the worker that its
// consumer is gone: its pulls only miss their heartbeats. It used to log
// "fetch order: no heartbeat received" every 5 s for good while its host's
// orders stayed queued; once idle it now finds the consumer gone, ends the
// tenure, and the next one creates the consumer again.
func TestConsumerLostWithTheStoreIsCreatedAgain(t *testing.T) {
	first := testenv.NATSServer(t, &server.Options{})
	e, wq, connected := newEnvOn(t, first)
	e.startWith(wq, e.store, "wiped", nil)
	e.waitStatus(e.submit("wiped", "true"), order.StatusSucceeded)

	testenv.NATSServerLost(t, first)
	testenv.WaitUntil(t, 10*time.Second, "both clients reconnect", func() bool {
		return connected()
	})
	// The first publish finds no stream and creates them again (the API's
	// Publish does so); the order must run, not wait for good.
	submitted := time.Now()
	id := e.submit("wiped", "true")
	e.waitStatus(id, order.StatusSucceeded)
	t.Logf("the order ran %s after it was submitted", time.Since(submitted).Round(time.Millisecond))
}

// newEnvOn is newEnv with its API's queue and a worker's on the NATS
// server ns, each on a connection of its own, for tests that restart or
// lose that server; connected reports whether both connections are up.
func newEnvOn(t *testing.T, ns *server.Server) (e *env, wq *queue.Queue, connected func() bool) {
	e = newEnv(t)
	api, err := queue.Connect(ns.ClientURL(), "api")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(api.Close)
	if e.q, err = queue.New(t.Context(), api, queue.Options{AckWait: time.Second, LeaseTTL: 2 * time.Second}); err != nil {
		t.Fatal(err)
	}
	wq, wc := workerQueueOn(t, ns)
	return e, wq, func() bool { return api.IsConnected() && wc.IsConnected() }
}

// workerQueueOn is a worker's queue on the NATS server ns, on a
// connection of its own (wc), as a worker process starting binds it.
func workerQueueOn(t *testing.T, ns *server.Server) (wq *queue.Queue, wc *nats.Conn) {
	wc, err := queue.Connect(ns.ClientURL(), "worker")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(wc.Close)
	if wq, err = queue.Bind(t.Context(), wc, queue.Options{AckWait: time.Second}); err != nil {
		t.Fatal(err)
	}
	return wq, wc
}
