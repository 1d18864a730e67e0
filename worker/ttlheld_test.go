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
	info := hostsInfo
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

// TestAHeldBucketTTLReadDoesNotKeepTheStandbyFromADeadHoldersHost: a
// standby's reads of the hosts bucket's TTL (the stream's info, at a
// holder's renewal once half a lease has passed since the last) reach no
// NATS server, while the rest of its requests pass. The read ran in the
// standby's wait, which waited out its bound (5 s) with the holder's
// renewals piling up unread; each renewal, read late, restarted the
// lease from its reading and was due a read again. The holder then
// dies (its release lost): the standby takes the host within the
// recovery bound, and runs the next order.
func TestAHeldBucketTTLReadDoesNotKeepTheStandbyFromADeadHoldersHost(t *testing.T) {
	e := newEnv(t)
	host := "ttlstandby"
	info := hostsInfo
	pa, stopA, pb, qb := holderAndHeldStandby(t, e, host)
	var standby testenv.LogBuffer
	runLeaseWorker(t, e, qb, host+"/b", nil, io.MultiWriter(t.Output(), &standby))
	var before int // B's reads of the bucket's info before its wait, or a few more
	testenv.WaitUntil(t, 30*time.Second, "B waits as A's standby", func() bool {
		if !strings.Contains(standby.String(), "waiting as standby") {
			return false
		}
		before = pb.keptFor(info)
		return true
	})
	// The standby report loop's read of the TTL and the wait's clock's
	// first read of the bucket as the wait starts (beside it since hF28),
	// then its read of the TTL at a renewal of A's, while A lives.
	testenv.WaitUntil(t, 30*time.Second, "B's read of the bucket's TTL in its wait sent, and kept", func() bool {
		return pb.keptFor(info) >= before+3
	})

	died := dieReleaseLost(t, pa, host, stopA)
	testenv.WaitUntil(t, recoveryBound-time.Since(died), "B takes the dead holder's host", func() bool {
		return strings.Contains(standby.String(), "took the host over")
	})
	t.Logf("B took the host %v after A's last renewal", time.Since(died))
	e.waitStatus(e.submit(host, "true"), order.StatusSucceeded)
}

// TestAHeldBucketTTLReadDoesNotLapseALeaseAfterAFailedRenewal: a holder
// with its host's key renews while its reads of the hosts bucket's info
// reach no NATS server (a proxy keeps them). Another writer puts a copy
// of the holder's value over it, so that the holder's next renewal,
// conditioned on the revision it wrote, is refused. Renew judged the key
// it then read by whether the lease could have expired, which it read
// from the bucket's TTL: the read waited out its bound (5 s), the lease
// of 2 s lapsed meanwhile under its live holder, and the holder took it
// again as a lapsed one. It judges by the TTL it last read now: it
// keeps its lease, and runs the next order.
func TestAHeldBucketTTLReadDoesNotLapseALeaseAfterAFailedRenewal(t *testing.T) {
	e := newEnv(t)
	ctx := testenv.Context(t)
	host := "ttlwithin"

	proxy := newPubHoldProxy(t, e.q.Conn().ConnectedUrl())
	wq := proxy.queue(t, 2*time.Second)
	info := hostsInfo
	var holder testenv.LogBuffer
	runWorker(t, worker.Options{Host: host, Instance: host + "/a", Heartbeat: 200 * time.Millisecond, AckWait: time.Second,
		ShutdownGrace: 5 * time.Second, ClaimMarkKey: queue.NewMarkKey([]byte("seed of ttlwithin"))},
		e.store, wq, testenv.LoggerTo(io.MultiWriter(t.Output(), &holder)))
	e.waitStatus(e.submit(host, "true"), order.StatusSucceeded)
	proxy.keepAll(info)

	kv, err := e.q.JetStream().KeyValue(ctx, queue.HostsBucket)
	if err != nil {
		t.Fatal(err)
	}
	v, err := kv.Get(ctx, "lease."+host)
	if err != nil {
		t.Fatal(err)
	}
	copied, err := kv.Put(ctx, "lease."+host, v.Value())
	if err != nil {
		t.Fatal(err)
	}
	// A holder whose judgement waited for the read writes its lease
	// again only after the key expired, as a lapsed lease.
	testenv.WaitUntil(t, 30*time.Second, "the holder writes its lease over the copy", func() bool {
		now, err := kv.Get(ctx, "lease."+host)
		return err == nil && now.Revision() > copied
	})
	e.waitStatus(e.submit(host, "true"), order.StatusSucceeded)
	if strings.Contains(holder.String(), "host lease had lapsed") || strings.Contains(holder.String(), "lease lost") {
		t.Fatalf("the holder's lease lapsed while its read of the bucket's TTL was held:\n%s", holder.String())
	}
}
