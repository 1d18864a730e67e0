package worker_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats-server/v2/server"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/pgembed"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
	"github.com/orderly-run/orderly/worker"
)

// claimGate is a worker's store whose claim of one order waits until the
// test lets it go: the state between the takeover's requeue and the
// claim that follows it, held for as long as the test needs.
type claimGate struct {
	worker.Store
	id      uuid.UUID
	once    sync.Once
	reached chan struct{}
	open    chan struct{}
}

func (g *claimGate) Claim(ctx context.Context, id uuid.UUID, w string, seq uint64) (*order.Order, bool, error) {
	if id == g.id {
		g.once.Do(func() { close(g.reached) })
		select {
		case <-g.open:
		case <-ctx.Done():
			return nil, false, ctx.Err()
		}
	}
	return g.Store.Claim(ctx, id, w, seq)
}

// TestHandedBackOrderOfARestoredBackupRunsOnce: an idempotent order's
// worker dies after claiming it; the successor's takeover hands it back
// (queued, attempt 1) and a PostgreSQL backup is taken then. The
// successor runs it (attempt 2): the claim mark names its message, and
// the order, handed back, is claimed again below it, as it must be. The
// database restored from that backup holds it queued at attempt 1, and a
// restarted nats-server's new consumer delivers its acknowledged message
// again. The check below the mark let any order with an attempt through
// (one handed back keeps it): the worker ran it a second time. The mark
// now keeps the attempt of the claim that moved it, and an order held
// queued at an earlier attempt than that is canceled, saying PostgreSQL
// was restored.
func TestHandedBackOrderOfARestoredBackupRunsOnce(t *testing.T) {
	bin, err := pgembed.FindBinaries()
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	ns := testenv.NATSServer(t, &server.Options{})
	e, wq, connected := newEnvOn(t, ns)
	dsn := testenv.Postgres(t)
	e.store, _ = testenv.Store(t, dsn)
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	marker := filepath.Join(dir, "ran")
	o := &order.Order{ID: order.NewID(), Kind: order.KindExec, Host: "handback", Command: "sh",
		Args: []string{"-c", `echo x >> "$1"`, "_", marker}, Idempotent: true,
		Timeout: 20 * time.Second, Principal: "test", Source: "rest", CaptureStdout: true, CaptureStderr: true}
	if _, err := e.store.InsertOrder(ctx, o); err != nil {
		t.Fatal(err)
	}
	if err := testenv.Answered(t, "the order's publish", func(ctx context.Context) error {
		_, err := e.q.Publish(ctx, o.Host, o.ID)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	ran := func() int {
		b, err := os.ReadFile(marker)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		return strings.Count(string(b), "x\n")
	}
	opts := worker.Options{Host: o.Host, Heartbeat: 200 * time.Millisecond, AckWait: slowAckWait, ShutdownGrace: 5 * time.Second}

	// The first worker dies with the order claimed, not started.
	first := opts
	first.FailPoint = func(p string, c *order.Order) error {
		if p == "after_claim" && c.ID == o.ID {
			return errCrash
		}
		return nil
	}
	_, done := runWorker(t, first, e.store, wq, testenv.Logger(t))
	if err := <-done; !errors.Is(err, errCrash) {
		t.Fatalf("the first worker stopped with %v, want the injected crash", err)
	}

	// Its successor hands it back; the backup is taken before the claim.
	gate := &claimGate{Store: e.store, id: o.ID, reached: make(chan struct{}), open: make(chan struct{})}
	stop, _ := runWorker(t, opts, gate, wq, testenv.Logger(t))
	select {
	case <-gate.reached:
	case <-time.After(time.Minute):
		t.Fatal("the successor never claimed the order")
	}
	if got, err := e.store.GetOrder(ctx, o.ID); err != nil || got.Status != order.StatusQueued || got.Attempt != 1 {
		t.Fatalf("the order before the backup: %+v %v, want queued at attempt 1 (handed back)", got, err)
	}
	backup := filepath.Join(t.TempDir(), "orderly.dump")
	if out, err := exec.CommandContext(ctx, filepath.Join(bin, "pg_dump"), "-Fc", "-f", backup, "-d", dsn).CombinedOutput(); err != nil {
		t.Fatalf("pg_dump: %v\n%s", err, out)
	}
	close(gate.open)
	got := e.waitStatus(o.ID, order.StatusSucceeded)
	if got.Attempt != 2 || ran() != 1 {
		t.Fatalf("the handed-back order ran %d times, in attempt %d; want once, in attempt 2", ran(), got.Attempt)
	}
	testenv.WaitUntil(t, time.Minute, "the order's message acknowledged", func() bool {
		c, err := e.q.JetStream().Consumer(ctx, queue.OrdersStream, queue.ConsumerName(o.Host))
		return err == nil && c.CachedInfo().NumAckPending == 0 && c.CachedInfo().NumPending == 0
	})
	stop()

	// The restore: nats-server restarted with its store (the consumer
	// gone, the acknowledged message not: no API purges here), the
	// backup restored, a worker started again.
	testenv.NATSServerRestarted(t, ns)
	testenv.WaitUntil(t, 10*time.Second, "the clients reconnect", connected)
	if out, err := exec.CommandContext(ctx, filepath.Join(bin, "pg_restore"), "--clean", "--if-exists", "-d", dsn, backup).CombinedOutput(); err != nil {
		t.Fatalf("pg_restore: %v\n%s", err, out)
	}
	restored, _ := testenv.Store(t, dsn)
	if got, err := restored.GetOrder(ctx, o.ID); err != nil || got.Status != order.StatusQueued || got.Attempt != 1 {
		t.Fatalf("the order restored: %+v %v, want queued at attempt 1", got, err)
	}
	runWorker(t, opts, restored, wq, testenv.Logger(t))
	testenv.WaitUntil(t, time.Minute, "the order settled after the restore", func() bool {
		got, err = restored.GetOrder(ctx, o.ID)
		return err == nil && got.Status.Terminal()
	})
	if n := ran(); n != 1 {
		t.Fatalf("the order ran %d times: the restored backup held it handed back (queued, attempt 1), and its acknowledged message came back with the consumer a restarted nats-server lost", n)
	}
	if got.Status != order.StatusCanceled || got.Result == nil || !strings.Contains(got.Result.Error, "restored") {
		t.Fatalf("the order after the restore: %s %+v, want canceled saying PostgreSQL was restored", got.Status, got.Result)
	}
}
