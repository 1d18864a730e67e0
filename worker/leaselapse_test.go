package worker_test

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
	"github.com/orderly-run/orderly/worker"
)

// claimHook is the real store; it holds the first claim of order id
// until release is closed: before its statement (and then fails it, as a
// connection lost before the statement went out), or after its commit.
// It counts the claims of id made after that one.
type claimHook struct {
	worker.Store
	id      uuid.UUID
	before  bool
	held    chan struct{} // closed once the first claim is held
	release chan struct{}
	first   atomic.Bool
	later   atomic.Int32
}

func (s *claimHook) Claim(ctx context.Context, id uuid.UUID, w string, seq uint64) (*order.Order, bool, error) {
	if id != s.id {
		return s.Store.Claim(ctx, id, w, seq)
	}
	if !s.first.CompareAndSwap(false, true) {
		s.later.Add(1)
		return s.Store.Claim(ctx, id, w, seq)
	}
	var (
		o       *order.Order
		claimed bool
		err     = errors.New("connection reset by peer (injected: the claim's statement never went out)")
	)
	if !s.before {
		o, claimed, err = s.Store.Claim(ctx, id, w, seq)
	}
	close(s.held)
	select {
	case <-s.release:
	case <-ctx.Done():
	}
	return o, claimed, err
}

// TestLapsedLeaseStopsClaimsAtOnce: the worker's renewal finds its host
// lease lapsed while an order's claim is held back (a stall, a slow
// statement). Taken by another worker meanwhile, the order is neither
// claimed nor started after the finding, whether the claim had not gone
// out yet (its next try is not made) or had committed (the order is
// handed back unstarted), and the tenure ends. Taken again by the worker
// itself (nobody else took it), the order runs in the same tenure.
//
// Before, the lapse stopped only the feed: the claim's next try claimed
// the order, and a claimed order was started, on a worker that no longer
// held its host (a fault run: 36 ms after the finding).
func TestLapsedLeaseStopsClaimsAtOnce(t *testing.T) {
	for _, tc := range []struct {
		name   string
		before bool // the claim is held before its statement, not after its commit
		rival  bool // the test gives the lease to another worker, not deletes it
	}{
		{"taken_before_the_claim", true, true},
		{"taken_before_the_start", false, true},
		{"taken_again", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			store, _ := testenv.Store(t, testenv.Postgres(t))
			// A minute's lease: the rival's key outlives the test, so
			// the worker, back to standing by, cannot take the host
			// again and claim the order in a new tenure.
			q := testenv.Queue(t, testenv.NATS(t), "test", queue.Options{AckWait: slowAckWait, LeaseTTL: time.Minute})
			e := &env{t: t, store: store, q: q}
			host := "lapse-" + strings.ReplaceAll(tc.name, "_", "-")
			ran := filepath.Join(t.TempDir(), "ran")
			id := e.submit(host, "sh", "-c", `echo x >> "$1"`, "_", ran)

			hook := &claimHook{Store: store, id: id, before: tc.before, held: make(chan struct{}), release: make(chan struct{})}
			log := &testenv.LogBuffer{}
			runWorker(t, worker.Options{Host: host, Heartbeat: 200 * time.Millisecond, AckWait: slowAckWait,
				ShutdownGrace: 5 * time.Second}, hook, q, testenv.LoggerTo(io.MultiWriter(t.Output(), log)))
			select {
			case <-hook.held:
			case <-ctx.Done():
				t.Fatal("the worker never claimed the order")
			}

			kv, err := q.JetStream().KeyValue(ctx, queue.HostsBucket)
			if err != nil {
				t.Fatal(err)
			}
			finding := "host lease had lapsed"
			if tc.rival {
				if _, err := kv.Put(ctx, "lease."+host, []byte("rival")); err != nil {
					t.Fatal(err)
				}
				finding = "host lease lost"
			} else if err := kv.Delete(ctx, "lease."+host); err != nil {
				t.Fatal(err)
			}
			testenv.WaitUntil(t, 30*time.Second, "the renewal finds the lease lapsed", func() bool {
				return strings.Contains(log.String(), finding)
			})
			close(hook.release)

			if wantLeaseOutcome(t, e, log, hook, id, tc.rival, "after the lapse was found") == nil {
				return
			}
			if _, err := os.Stat(ran); err == nil {
				t.Error("the order ran after the lapse was found")
			}
			if strings.Contains(log.String(), "order started") {
				t.Error(`"order started" logged after the lapse was found`)
			}
			if !tc.before && !strings.Contains(log.String(), "order handed back unstarted: the host lease is not held") {
				t.Error("the claimed order was not handed back")
			}
		})
	}
}

// wantLeaseOutcome checks how the order id of a worker whose lease was
// found lapsed or in doubt ended (when): its own again (not rival), the
// order succeeds in the same tenure; another worker's, the tenure ends,
// the order is claimed no more and stays queued. It returns the order
// as it stays then, nil when the lease was the worker's own.
func wantLeaseOutcome(t *testing.T, e *env, log *testenv.LogBuffer, hook *claimHook, id uuid.UUID, rival bool, when string) *order.Order {
	t.Helper()
	if !rival {
		e.waitStatus(id, order.StatusSucceeded)
		if strings.Contains(log.String(), "stopped consuming") {
			t.Errorf("the worker whose lease was still its own ended its tenure (%s)", when)
		}
		return nil
	}
	testenv.WaitUntil(t, 30*time.Second, "the tenure ends", func() bool {
		return strings.Contains(log.String(), "stopped consuming the host's orders")
	})
	if n := hook.later.Load(); n > 0 {
		t.Errorf("%d claims of the order %s, want none", n, when)
	}
	o, err := e.store.GetOrder(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	if o.Status != order.StatusQueued {
		t.Errorf("the order %s: %s (worker %q), want queued", when, o.Status, o.Worker)
	}
	return o
}
