package worker_test

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
	"github.com/orderly-run/orderly/worker"
)

// TestAHeldBucketTTLReadDoesNotLapseTheLease: the holder's reads of the
// hosts bucket's TTL (the stream's info, at each tenure's start, every
// minute and after a lapse) reach no NATS server (a proxy keeps them, as
// a server too slow to answer them within the request's bound would),
// while its renewals pass. The read ran in the renewal loop, which
// waited out its bound (5 s) against a lease of 2 s: the lease lapsed
// under the live holder, which took it again and read the TTL again, a
// lapse a read. The renewals do not wait for the read now: the holder
// keeps its lease throughout, and runs the next order.
func TestAHeldBucketTTLReadDoesNotLapseTheLease(t *testing.T) {
	e := newEnv(t)
	host := "ttlheld"

	proxy := newPubHoldProxy(t, e.q.Conn().ConnectedUrl())
	wq := proxy.queue(t, 2*time.Second)
	// Bound, the worker's Queue reads the bucket's info no more but for
	// its TTL.
	info := "$JS.API.STREAM.INFO.KV_" + queue.HostsBucket
	proxy.keepAll(info)

	var holder testenv.LogBuffer
	runWorker(t, worker.Options{Host: host, Instance: host + "/a", Heartbeat: 200 * time.Millisecond, AckWait: time.Second,
		ShutdownGrace: 5 * time.Second}, e.store, wq, testenv.LoggerTo(io.MultiWriter(t.Output(), &holder)))
	testenv.WaitUntil(t, 30*time.Second, "the holder's read of the bucket's TTL sent, and kept", func() bool {
		return proxy.keptFor(info) >= 1
	})
	// The read gives up after its bound, the renewals having gone on
	// beside it, or not.
	testenv.WaitUntil(t, 30*time.Second, "the holder's read of the bucket's TTL given up", func() bool {
		return strings.Contains(holder.String(), "read the host lease's TTL")
	})
	if strings.Contains(holder.String(), "host lease had lapsed") || strings.Contains(holder.String(), "lease lost") {
		t.Fatalf("the holder's lease lapsed while its read of the bucket's TTL was held:\n%s", holder.String())
	}
	e.waitStatus(e.submit(host, "true"), order.StatusSucceeded)
}
