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

// TestHeldHeartbeatsDoNotLapseTheLease: the holder's heartbeat writes
// reach no NATS server (a proxy keeps every publish to the host's
// heartbeat key, as a server too slow to answer them within the
// request's bound would), while its renewals pass. The renewal was sent
// after the heartbeat in one loop, so it waited out each heartbeat's
// bound (5 s) against a lease of 3 s: the lease lapsed, the standby took
// the host, and the holder lost it (TestFaultsFleet under load: a host
// handed back and forth between its two workers, docs/decisions.md,
// hF25). The renewal does not wait for the heartbeat now: the holder
// keeps its host for as long as its heartbeats are held, and runs the
// next order.
func TestHeldHeartbeatsDoNotLapseTheLease(t *testing.T) {
	ctx := testenv.Context(t)
	const lease = 3 * time.Second
	store, _ := testenv.Store(t, testenv.Postgres(t))
	q := testenv.Queue(t, testenv.NATS(t), "test", queue.Options{AckWait: time.Second, LeaseTTL: lease})
	e := &env{t: t, store: store, q: q}
	host := "beatheld"

	proxy := newPubHoldProxy(t, q.Conn().ConnectedUrl())
	wq := proxy.queue(t, lease)
	opts := worker.Options{Host: host, Instance: host + "/a", Heartbeat: 300 * time.Millisecond, AckWait: time.Second,
		ShutdownGrace: 5 * time.Second}
	var holder, standby testenv.LogBuffer
	runWorker(t, opts, store, wq, testenv.LoggerTo(io.MultiWriter(t.Output(), &holder)))
	e.waitStatus(e.submit(host, "true"), order.StatusSucceeded)
	opts.Instance = host + "/b"
	runWorker(t, opts, store, testenv.Queue(t, q.Conn().ConnectedUrl(), "standby", queue.Options{AckWait: time.Second, LeaseTTL: lease}),
		testenv.LoggerTo(io.MultiWriter(t.Output(), &standby)))
	testenv.WaitUntil(t, 30*time.Second, "the second worker waits as a standby", func() bool {
		return strings.Contains(standby.String(), "waiting as standby")
	})

	info := "$KV." + queue.HostsBucket + ".info." + host
	proxy.keepAll(info)
	// Three heartbeats kept, each waited out for its whole bound: more
	// than three leases without one, the lease renewed throughout, or
	// else lapsed and taken.
	taken := func() bool {
		return strings.Contains(standby.String(), "took the host over") || strings.Contains(holder.String(), "lease lost")
	}
	testenv.WaitUntil(t, 60*time.Second, "three heartbeats kept, or the host taken", func() bool {
		return proxy.keptFor(info) >= 3 || taken()
	})
	if taken() {
		t.Fatalf("the standby took the host while the holder's heartbeats were held (%d kept):\nholder:\n%s\nstandby:\n%s",
			proxy.keptFor(info), holder.String(), standby.String())
	}
	if strings.Contains(holder.String(), "host lease had lapsed") {
		t.Fatalf("the holder's lease lapsed while its heartbeats were held:\n%s", holder.String())
	}
	e.waitStatus(e.submit(host, "true"), order.StatusSucceeded)
	proxy.sendKept(info)
	if rows, err := store.Hosts(ctx, host); err != nil || len(rows) != 1 || rows[0].Instance != host+"/a" {
		t.Fatalf("the host's owner after its heartbeats were held: %+v, %v; want %s/a", rows, err, host)
	}
}
