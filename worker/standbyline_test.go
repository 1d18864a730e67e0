package worker_test

import (
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
	"github.com/orderly-run/orderly/worker"
)

// TestStandbyLineAfterAFailedTakeBackNamesTheWorkersOwnLease: a worker
// whose release did not land (NATS lost it) starts again in the same
// process and finds its own value on the key, which it tries to take
// back; the take-back is lost too. It waits, and its standby line named
// "the host's owner in PostgreSQL (this worker's value is left on the
// key to it)", the line of a worker that yielded to another owner,
// though PostgreSQL names this very worker the owner and nothing was
// left to anyone (docs/decisions.md, hD25's Left (3)). It names the
// worker's own earlier lease now.
func TestStandbyLineAfterAFailedTakeBackNamesTheWorkersOwnLease(t *testing.T) {
	// A lease of 10 s: the key stays from A's stop until its take-back.
	store, pool := testenv.Store(t, testenv.Postgres(t))
	e := &env{t: t, store: store, pool: pool,
		q: testenv.Queue(t, testenv.NATS(t), "test", queue.Options{AckWait: time.Second, LeaseTTL: 10 * time.Second})}
	ctx := testenv.Context(t)
	host := "sbline"
	lease := "$KV." + queue.HostsBucket + ".lease." + host

	proxy := newPubHoldProxy(t, e.q.Conn().ConnectedUrl())
	qa := proxy.queue(t, 10*time.Second)
	opts := worker.Options{Host: host, Instance: host + "/a", Heartbeat: 200 * time.Millisecond, AckWait: time.Second,
		ShutdownGrace: 5 * time.Second}
	stopA, _ := runWorker(t, opts, e.store, qa, testenv.Logger(t))
	e.waitStatus(e.submit(host, "true"), order.StatusSucceeded)

	// A's release is lost: its value stays on the key.
	proxy.drop(lease, "KV-Operation: DEL")
	stopA()
	if proxy.droppedTo(lease) == 0 {
		t.Fatal("A's release was not sent")
	}
	kv, err := e.q.JetStream().KeyValue(ctx, queue.HostsBucket)
	if err != nil {
		t.Fatal(err)
	}
	left, err := kv.Get(ctx, "lease."+host)
	if err != nil {
		t.Fatalf("A's value is not on the key: %v", err)
	}
	// Its take-back, conditioned on that value's revision, is lost as
	// well.
	proxy.drop(lease, fmt.Sprintf("Nats-Expected-Last-Subject-Sequence: %d\r\n", left.Revision()))

	var again testenv.LogBuffer
	runWorker(t, opts, e.store, qa, testenv.LoggerTo(io.MultiWriter(t.Output(), &again)))
	testenv.WaitUntil(t, 30*time.Second, "A waits, its take-back lost", func() bool {
		return strings.Contains(again.String(), "waiting as standby")
	})
	if n := proxy.droppedTo(lease); n < 2 {
		t.Fatalf("A's take-back was not sent (%d writes of the key dropped)", n)
	}
	if line := again.String(); strings.Contains(line, "left on the key to it") || !strings.Contains(line, "this worker's own earlier lease") {
		t.Fatalf("the standby line does not name A's own earlier lease:\n%s", line)
	}
	proxy.stopDropping(lease)
	e.waitStatus(e.submit(host, "true"), order.StatusSucceeded)
}
