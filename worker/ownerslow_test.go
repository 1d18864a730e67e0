package worker_test

import (
	"context"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/testenv"
	"github.com/orderly-run/orderly/worker"
)

// TestWorkerTakesItsHostFromASlowOwnerRead: the worker reads the host's
// owner before each take of its lease (its takeover is conditioned on
// it), and that read was bounded by a renewal interval, 200 ms here: a
// PostgreSQL answering it in a second (one just restarted, its
// connections made again, on a loaded machine) failed every try, and the
// host ran nothing for as long (TestFaultsFleet, "nats and postgres
// restart": f08, 11.4 s, docs/decisions.md, hC26). Nothing renews during
// the wait, and the takeover is conditioned on what the read said: the
// wait's read may take a lease, and the worker takes its host.
func TestWorkerTakesItsHostFromASlowOwnerRead(t *testing.T) {
	e := newEnv(t)
	runWorker(t, worker.Options{Host: "slowowner", Heartbeat: 200 * time.Millisecond, AckWait: time.Second,
		ShutdownGrace: 5 * time.Second}, slowOwnerRead{e.store, time.Second}, e.q, testenv.Logger(t))
	e.waitStatus(e.submit("slowowner", "true"), order.StatusSucceeded)
}

// slowOwnerRead is a Store whose read of a host's owner and epoch, the
// one before a take of its lease, is answered only after delay.
type slowOwnerRead struct {
	worker.Store
	delay time.Duration
}

func (s slowOwnerRead) OwnerEpoch(ctx context.Context, host string) (string, int64, error) {
	select {
	case <-ctx.Done():
		return "", 0, ctx.Err()
	case <-time.After(s.delay):
	}
	return s.Store.OwnerEpoch(ctx, host)
}
