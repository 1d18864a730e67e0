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

// TestAHeldBucketReadDoesNotLapseALeaseWhoseKeyWasDeleted: a holder with
// its host's key, whose reads of the hosts bucket's info reach no NATS
// server (a proxy keeps them, as a JetStream API too slow to give a
// stream's info within the request's bound would), finds its lease key
// deleted (by hand, or another credential) while its lease lives, and
// takes it back with a put. The put named the bucket's last sequence,
// read first: the read waited out its bound (5 s) against a lease of
// 2 s, and the standby, which leaves a deleted key to its holder for a
// lease only, took the live holder's host. The take-back reads nothing
// now: the holder keeps its host, and runs the next order.
func TestAHeldBucketReadDoesNotLapseALeaseWhoseKeyWasDeleted(t *testing.T) {
	e := newEnv(t)
	ctx := testenv.Context(t)
	host := "revheld"
	key := queue.NewMarkKey([]byte("seed of revheld"))
	info := hostsInfo

	pa := newPubHoldProxy(t, e.q.Conn().ConnectedUrl())
	runLeaseWorker(t, e, pa.queue(t, 2*time.Second), host+"/a", key, t.Output())
	e.waitStatus(e.submit(host, "true"), order.StatusSucceeded)

	pb := newPubHoldProxy(t, e.q.Conn().ConnectedUrl())
	var standby testenv.LogBuffer
	runLeaseWorker(t, e, pb.queue(t, 2*time.Second), host+"/b", key, io.MultiWriter(t.Output(), &standby))
	testenv.WaitUntil(t, 30*time.Second, "B waits as A's standby", func() bool {
		return strings.Contains(standby.String(), "waiting as standby")
	})

	pa.keepAll(info)
	kv, err := e.q.JetStream().KeyValue(ctx, queue.HostsBucket)
	if err != nil {
		t.Fatal(err)
	}
	if err := kv.Delete(ctx, "lease."+host); err != nil {
		t.Fatal(err)
	}
	deleted := time.Now()
	// Two leases: the standby leaves the deleted key to its holder for
	// one after the holder's last renewal it saw.
	testenv.WaitUntil(t, 30*time.Second, "two leases pass", func() bool { return time.Since(deleted) > 4*time.Second })
	if strings.Contains(standby.String(), "took the host over") {
		t.Fatalf("B took the live holder's host after its key was deleted (A's reads of the bucket's info held):\n%s", standby.String())
	}
	if holder, err := e.q.LeaseHolder(ctx, host); err != nil || holder != host+"/a" {
		t.Fatalf("the lease names %q (%v), want the holder, A, which took its deleted key back", holder, err)
	}
	id := e.submit(host, "true")
	if o := e.waitStatus(id, order.StatusSucceeded); o.Worker != host+"/a" {
		t.Fatalf("the next order ran on %q, want the holder, A", o.Worker)
	}
}

// TestAHeldBucketReadDoesNotDelayTheWaitsStart: a holder dies (its
// release lost) as its standby starts, and the standby's reads of the
// hosts bucket's info reach no NATS server (a proxy keeps them). The
// wait's start read it inline: the bucket's limits as the watch began,
// and the stream's info before each look at the lease key's last
// message (whether it was deleted or is absent), each waiting out its
// bound (5 s), and the dead holder's host was taken past the recovery
// bound. They read what was read last now (the bucket's stream as the
// worker bound it, the limits beside the wait): the standby takes the
// host within the bound, and runs the next order.
func TestAHeldBucketReadDoesNotDelayTheWaitsStart(t *testing.T) {
	e := newEnv(t)
	host := "startheld"
	pa, stopA, pb, qb := holderAndHeldStandby(t, e, host)

	died := dieReleaseLost(t, pa, host, stopA)
	var standby testenv.LogBuffer
	runLeaseWorker(t, e, qb, host+"/b", nil, io.MultiWriter(t.Output(), &standby))
	testenv.WaitUntil(t, recoveryBound-time.Since(died), "B takes the dead holder's host", func() bool {
		return strings.Contains(standby.String(), "took the host over")
	})
	t.Logf("B took the host %v after A's death; %d reads of the bucket's info kept", time.Since(died), pb.keptFor(hostsInfo))
	e.waitStatus(e.submit(host, "true"), order.StatusSucceeded)
}

// TestAHeldBucketReadDoesNotDelayARenewalAfterASilence: a standby whose
// reads of the hosts bucket's info reach no NATS server (a proxy keeps
// them) hears a silence of the server as its holder's lease comes due,
// and waits a lease of contact before it takes the key; its holder
// renews meanwhile, once, and dies. The standby aged that renewal on the
// server's time, read first: the read waited out its bound (5 s), and
// the host was taken that much past the lease. It ages it on the
// server's time as last read now, and takes the host within two leases
// of the renewal (one, and the server's removal of the expired key, up
// to a second late).
func TestAHeldBucketReadDoesNotDelayARenewalAfterASilence(t *testing.T) {
	const lease = 2 * time.Second
	e := newEnv(t)
	ctx := testenv.Context(t)
	host := "silenceheld"
	info := hostsInfo

	pa := newPubHoldProxy(t, e.q.Conn().ConnectedUrl())
	a, err := pa.queue(t, lease).AcquireLease(ctx, host, "A", nil)
	if err != nil {
		t.Fatal(err)
	}
	renew := func() time.Time {
		t.Helper()
		sent := time.Now()
		if _, err := a.Renew(ctx); err != nil {
			t.Fatal(err)
		}
		return sent
	}
	pb := newPubHoldProxy(t, e.q.Conn().ConnectedUrl())
	qb := pb.queue(t, lease)
	waiting, took := make(chan struct{}), make(chan error, 1)
	go func() {
		_, err := qb.AcquireLease(ctx, host, "B", func(string) { close(waiting) })
		took <- err
	}()
	<-waiting
	// Half a lease of renewals, the standby's first read of the bucket
	// answered meanwhile; then its reads are kept.
	for until := time.Now().Add(lease / 2); time.Now().Before(until); {
		time.Sleep(lease / 8)
		renew()
	}
	pb.keepAll(info)
	last := renew()

	// The standby's wait ends a lease after that renewal; before, it
	// hears a silence, and waits a lease of contact from the server's
	// next answer. The holder renews once during that wait, and dies.
	time.Sleep(lease * 6 / 10)
	qb.HeardSilence()
	time.Sleep(last.Add(lease + lease/4).Sub(time.Now()))
	select {
	case err := <-took:
		t.Fatalf("the standby took the host before the holder's renewal during its wait on the contact (%v)", err)
	default:
	}
	renewed := renew()
	select {
	case err := <-took:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(2*lease - time.Since(renewed)):
		t.Fatalf("the standby did not take the dead holder's host within two leases of its last renewal (%d reads of the bucket's info kept)", pb.keptFor(info))
	}
	t.Logf("B took the host %v after A's last renewal", time.Since(renewed))
}

// hostsInfo is the request that reads the hosts bucket's stream info:
// the read the held-read tests' proxies keep.
const hostsInfo = "$JS.API.STREAM.INFO.KV_" + queue.HostsBucket

// holderAndHeldStandby runs A, the holder of host, on a connection that
// can lose its renewals and its release, and one order on it; it
// returns A's proxy and stop, and the proxy and queue of B, its standby
// to be, whose reads of the hosts bucket's info are kept.
func holderAndHeldStandby(t testing.TB, e *env, host string) (pa *pubHoldProxy, stopA func(), pb *pubHoldProxy, qb *queue.Queue) {
	t.Helper()
	pa = newPubHoldProxy(t, e.q.Conn().ConnectedUrl())
	stopA = runLeaseWorker(t, e, pa.queue(t, 2*time.Second), host+"/a", nil, t.Output())
	e.waitStatus(e.submit(host, "true"), order.StatusSucceeded)
	pb = newPubHoldProxy(t, e.q.Conn().ConnectedUrl())
	qb = pb.queue(t, 2*time.Second)
	pb.keepAll(hostsInfo)
	return pa, stopA, pb, qb
}

// runLeaseWorker runs a worker of host/instance's host (the part before
// "/") as instance on q, with the lease tests' timings and the host's
// key k (nil: none), logging to w, and returns its stop.
func runLeaseWorker(t testing.TB, e *env, q *queue.Queue, instance string, k queue.MarkKey, w io.Writer) (stop func()) {
	t.Helper()
	host, _, _ := strings.Cut(instance, "/")
	stop, _ = runWorker(t, worker.Options{Host: host, Instance: instance, Heartbeat: 200 * time.Millisecond, AckWait: time.Second,
		ShutdownGrace: 5 * time.Second, ClaimMarkKey: k}, e.store, q, testenv.LoggerTo(w))
	return stop
}

// dieReleaseLost stops the holder of host that stop stops, its release
// dropped by p, its connection's proxy, and returns when it began: a
// holder that died, as far as its standby can tell.
func dieReleaseLost(t testing.TB, p *pubHoldProxy, host string, stop func()) time.Time {
	t.Helper()
	lease := "$KV." + queue.HostsBucket + ".lease." + host
	p.drop(lease, "")
	died := time.Now()
	stop()
	if p.droppedTo(lease) == 0 {
		t.Fatal("the holder's release was not sent")
	}
	return died
}
