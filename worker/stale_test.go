package worker_test

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
	"github.com/orderly-run/orderly/worker"
)

// writeObserver is the real store; it reports each result write the
// worker attempts for order id (its error) on writes, so a test knows when
// a late worker has tried to record that order's result. Writes for other
// orders are not reported: one reported after the test had looked would be
// taken for the late write.
type writeObserver struct {
	worker.Store
	id     uuid.UUID
	writes chan error
}

func (s *writeObserver) Complete(ctx context.Context, id uuid.UUID, attempt int, f postgres.Finish) error {
	err := s.Store.Complete(ctx, id, attempt, f)
	if id == s.id {
		s.writes <- err
	}
	return err
}

func (s *writeObserver) CompleteAndClaim(ctx context.Context, id uuid.UUID, attempt int, f postgres.Finish,
	nextID uuid.UUID, w string, nextSeq uint64) (postgres.Step, error) {
	step, err := s.Store.CompleteAndClaim(ctx, id, attempt, f, nextID, w, nextSeq)
	if id != s.id {
		return step, err
	}
	if err != nil {
		s.writes <- err
	} else {
		s.writes <- step.Done
	}
	return step, err
}

// staleRun starts a worker instance for host and stops it when the test
// ends, logging to log; its Run error arrives on the returned channel.
func staleRun(t *testing.T, store worker.Store, q *queue.Queue, host, instance string, fp func(string, *order.Order) error, log io.Writer) <-chan error {
	t.Helper()
	_, done := runWorker(t, worker.Options{Host: host, Instance: instance, Heartbeat: 100 * time.Millisecond, AckWait: 2 * time.Second,
		ShutdownGrace: 5 * time.Second, FailPoint: fp}, store, q, testenv.LoggerTo(log).With("test_worker", instance))
	return done
}

// TestLateResultNeverOverwrites: worker A runs an order and freezes before
// writing its result (a pause, a cut-off network); meanwhile it loses the
// host, and worker B takes over and settles the order: interrupted, or,
// when idempotent, queued again and run as attempt 2. When A comes back and
// writes its stale attempt's result, the write is refused and the order
// keeps B's outcome, whether B has finished (interrupted) or is still
// running attempt 2.
func TestLateResultNeverOverwrites(t *testing.T) {
	for _, tt := range []struct {
		name       string
		idempotent bool
	}{
		{"interrupted by the successor", false},
		{"attempt 2 running on the successor", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testenv.Context(t)
			store, _ := testenv.Store(t, testenv.Postgres(t))
			var err error
			q := testenv.Queue(t, testenv.NATS(t), "test", queue.Options{AckWait: 2 * time.Second, LeaseTTL: 2 * time.Second})
			const host = "late"
			submit := func(id uuid.UUID, idempotent bool, command string, args ...string) uuid.UUID {
				o := &order.Order{ID: id, Kind: order.KindExec, Host: host, Command: command, Args: args,
					Timeout: 30 * time.Second, Principal: "test", Source: "rest", CaptureStdout: true, CaptureStderr: true,
					Idempotent: idempotent}
				if _, err := store.InsertOrder(ctx, o); err != nil {
					t.Fatal(err)
				}
				if _, err := q.Publish(ctx, host, o.ID); err != nil {
					t.Fatal(err)
				}
				return o.ID
			}
			waitOrder := func(id uuid.UUID, what string, cond func(*order.Order) bool) *order.Order {
				var o *order.Order
				testenv.WaitUntil(t, 30*time.Second, what, func() bool {
					if o, err = store.GetOrder(ctx, id); err != nil {
						t.Fatal(err)
					}
					return cond(o)
				})
				return o
			}

			// The command records each run; the second run (attempt 2) waits
			// for the gate, so A's late write lands while it is running.
			dir, gate := t.TempDir(), filepath.Join(t.TempDir(), "gate")
			script := `n=$(ls "$1" | wc -l); mktemp "$1/run.XXXXXX" >/dev/null
if [ "$n" -ge 1 ]; then while [ ! -e "$2" ]; do sleep 0.02; done; fi
echo "run $n"`

			frozen, release := make(chan struct{}), make(chan struct{})
			target := order.NewID()
			aWrites := &writeObserver{Store: store, id: target, writes: make(chan error, 16)}
			aLog := &testenv.LogBuffer{}
			staleRun(t, aWrites, q, host, "worker-a", func(point string, o *order.Order) error {
				if point == "after_exec" && o.ID == target && o.Attempt == 1 {
					close(frozen)
					<-release
				}
				return nil
			}, io.MultiWriter(t.Output(), aLog))
			warm := submit(order.NewID(), false, "true")
			if o := waitOrder(warm, "A runs the first order", func(o *order.Order) bool { return o.Status.Terminal() }); o.Worker != "worker-a" {
				t.Fatalf("first order ran on %q, want worker-a", o.Worker)
			}
			staleRun(t, store, q, host, "worker-b", nil, t.Output()) // a standby while A holds the lease

			submit(target, tt.idempotent, "sh", "-c", script, "_", dir, gate)
			select {
			case <-frozen:
			case <-ctx.Done():
				t.Fatal("A never ran the order")
			}
			defer func() {
				select {
				case <-release:
				default:
					close(release)
				}
			}()

			// Take the host from the frozen A: a rival replaces its lease
			// (compare-and-set, so A cannot renew in between), then frees it
			// for the standby B.
			kv, err := q.JetStream().KeyValue(ctx, queue.HostsBucket)
			if err != nil {
				t.Fatal(err)
			}
			var rivalRev uint64
			testenv.WaitUntil(t, 10*time.Second, "replace A's lease", func() bool {
				e, err := kv.Get(ctx, "lease."+host)
				if err != nil || string(e.Value()) != "worker-a" {
					t.Fatalf("lease: %v %v, want held by worker-a", e, err)
				}
				rivalRev, err = kv.Update(ctx, "lease."+host, []byte("rival"), e.Revision())
				return err == nil
			})
			// Only once A has seen the rival: a renewal that found the key
			// already deleted would take the free host again (Lease.Renew).
			testenv.WaitUntil(t, 30*time.Second, "A sees its lease lost", func() bool {
				return strings.Contains(aLog.String(), "host lease lost")
			})
			if err := kv.Delete(ctx, "lease."+host, jetstream.LastRevision(rivalRev)); err != nil {
				t.Fatal(err)
			}

			var settled *order.Order
			if tt.idempotent {
				settled = waitOrder(target, "B runs attempt 2", func(o *order.Order) bool {
					return o.Status == order.StatusRunning && o.Attempt == 2 && o.Worker == "worker-b"
				})
			} else {
				settled = waitOrder(target, "B interrupts the order", func(o *order.Order) bool { return o.Status.Terminal() })
				if settled.Status != order.StatusInterrupted || settled.Attempt != 1 {
					t.Fatalf("B settled the order as %s attempt %d, want interrupted attempt 1", settled.Status, settled.Attempt)
				}
			}

			// A comes back and writes attempt 1's result.
			close(release)
			select {
			case err := <-aWrites.writes:
				if order.ErrorCode(err) != order.CodeConflict {
					t.Fatalf("A's stale write returned %v, want a conflict", err)
				}
			case <-ctx.Done():
				t.Fatal("A never tried to write its result")
			}
			now, err := store.GetOrder(ctx, target)
			if err != nil {
				t.Fatal(err)
			}
			if now.Status != settled.Status || now.Attempt != settled.Attempt || now.Worker != settled.Worker ||
				!ptrTime(now.FinishedAt).Equal(ptrTime(settled.FinishedAt)) {
				t.Fatalf("after A's late write the order is %s attempt %d by %q, want %s attempt %d by %q as B left it",
					now.Status, now.Attempt, now.Worker, settled.Status, settled.Attempt, settled.Worker)
			}

			if tt.idempotent {
				if err := os.WriteFile(gate, nil, 0o644); err != nil {
					t.Fatal(err)
				}
				final := waitOrder(target, "attempt 2 finishes", func(o *order.Order) bool { return o.Status.Terminal() })
				if final.Status != order.StatusSucceeded || final.Attempt != 2 || final.Result == nil ||
					string(final.Result.Stdout.Content) != "run 1\n" {
					t.Fatalf("final: %s attempt %d result %+v, want attempt 2's \"run 1\"", final.Status, final.Attempt, final.Result)
				}
			}
			evs, err := store.Events(ctx, target)
			if err != nil {
				t.Fatal(err)
			}
			var finished []string
			for _, ev := range evs {
				if ev.Type == "finished" {
					finished = append(finished, ev.Actor)
				}
			}
			want := ""
			if tt.idempotent {
				want = "worker-b"
			}
			if strings.Join(finished, ",") != want {
				t.Fatalf("finished events by %v, want only %q", finished, want)
			}
			runs, err := os.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			if want := map[bool]int{false: 1, true: 2}[tt.idempotent]; len(runs) != want {
				t.Fatalf("the command ran %d times, want %d", len(runs), want)
			}
		})
	}
}

func ptrTime(p *time.Time) time.Time {
	if p == nil {
		return time.Time{}
	}
	return *p
}
