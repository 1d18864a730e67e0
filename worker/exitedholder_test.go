package worker_test

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
	"github.com/orderly-run/orderly/worker"
)

// TestWorkerTakesTheLeaseOfAnExitedHolderAtOnce: the host's lease key
// holds the value of a holder that renews no more, and that holder is
// the host's owner in PostgreSQL. When its process is known to have
// exited (this machine's boot and pid namespace, its pid now another
// process's), a worker started on its host takes the key at once, on
// the revision it read; it waited as a standby until the server expired
// the key, a lease after the last renewal (every worker of
// TestFaultsFleet SIGKILLed and started again, docs/decisions.md, hE29).
// A holder that runs (this process), or of another boot, is still
// waited for. The bucket's lease is a minute here, so that the key
// outlives the test unless someone takes it.
func TestWorkerTakesTheLeaseOfAnExitedHolderAtOnce(t *testing.T) {
	e := newEnv(t)
	ctx := testenv.Context(t)
	ns := testenv.NATSServer(t, &server.Options{})
	exited, running, elsewhere := pastOwners(t)
	opts := queue.Options{AckWait: time.Second, LeaseTTL: time.Minute}
	e.q = testenv.Queue(t, ns.ClientURL(), "api", opts) // the orders are published here
	for _, tc := range []struct {
		host string
		prev postgres.Owner
		wait bool
	}{
		{"exited", exited, false},
		{"running", running, true},
		{"elsewhere", elsewhere, true},
	} {
		tc.prev.Instance = tc.host + "/old"
		t.Run(tc.host, func(t *testing.T) {
			if _, _, err := e.store.TakeHost(ctx, tc.host, "test", tc.prev); err != nil {
				t.Fatal(err)
			}
			held, err := testenv.Queue(t, ns.ClientURL(), tc.host+"-old", opts).AcquireLease(ctx, tc.host, tc.prev.Instance, nil)
			if err != nil {
				t.Fatal(err)
			}
			id := e.submit(tc.host, "true")
			var logs testenv.LogBuffer
			runWorker(t, worker.Options{Host: tc.host, Instance: tc.host + "/new", Heartbeat: 200 * time.Millisecond, AckWait: time.Second,
				ShutdownGrace: 5 * time.Second}, e.store, testenv.Queue(t, ns.ClientURL(), tc.host+"-new", opts), testenv.LoggerTo(io.MultiWriter(&logs, t.Output())))
			if tc.wait {
				testenv.WaitUntil(t, 20*time.Second, "the worker waits as standby", func() bool {
					return strings.Contains(logs.String(), "waiting as standby")
				})
				if strings.Contains(logs.String(), "took the host over") {
					t.Fatalf("took the host of a holder not known to have exited (%+v) before its lease ended:\n%s", tc.prev, logs.String())
				}
				if err := held.Release(ctx); err != nil { // its holder stops
					t.Fatal(err)
				}
			}
			e.waitStatus(id, order.StatusSucceeded)
			if waited := strings.Contains(logs.String(), "waiting as standby"); waited != tc.wait {
				t.Fatalf("waited as standby for the lease of %+v: %v, want %v:\n%s", tc.prev, waited, tc.wait, logs.String())
			}
		})
	}
}
