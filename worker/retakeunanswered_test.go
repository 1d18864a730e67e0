package worker_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestLapsedLeaseWhoseRetakeIsUnanswered: the worker's renewal finds its
// host lease key gone (expired through a stall or a partition longer
// than the lease) and tries to take it again, and NATS never answers
// that try. Until a renewal's verdict the worker neither claims nor
// starts the order it has in hand: its claim waits, says so, and goes on
// waiting past the unanswered request's bound (JetStream's 5 s), after
// which the worker says the renewal failed and tries again a heartbeat
// later. Once a try is answered (the key taken again: nobody took it),
// the order runs, once, in the same tenure.
//
// Provoked, not hoped for: a proxy between the worker and NATS holds
// the worker's next renewal while the test deletes the key, then drops
// every retake (the one publish to the key that expects the delete's
// revision) until the test lets them through. The order's first claim is held before its statement until
// the retake is dropped, then fails as a lost connection, so that its
// next try comes while the lease is in doubt.
func TestLapsedLeaseWhoseRetakeIsUnanswered(t *testing.T) {
	ctx := t.Context()
	const host = "retake-unanswered"
	ran := filepath.Join(t.TempDir(), "ran")
	pw := startHeldClaimWorker(t, time.Minute, host, true, "sh", "-c", `echo x >> "$1"`, "_", ran)
	e, q, proxy, hook, log, id := pw.e, pw.e.q, pw.proxy, pw.hook, pw.log, pw.hook.id

	// The key deleted between two renewals: the next renewal is held on
	// its way while the test deletes the key, which leaves a marker at a
	// revision the worker never wrote, and arms the proxy for the
	// retake, the one publish to the key that expects that revision.
	leaseSubject := "$KV." + queue.HostsBucket + ".lease." + host
	proxy.hold(leaseSubject)
	testenv.WaitUntil(t, 30*time.Second, "the next renewal is held", func() bool { return proxy.holding(leaseSubject) })
	kv, err := q.JetStream().KeyValue(ctx, queue.HostsBucket)
	if err != nil {
		t.Fatal(err)
	}
	if err := kv.Delete(ctx, "lease."+host); err != nil {
		t.Fatal(err)
	}
	stream, err := q.JetStream().Stream(ctx, "KV_"+queue.HostsBucket)
	if err != nil {
		t.Fatal(err)
	}
	marker, err := stream.GetLastMsgForSubject(ctx, leaseSubject)
	if err != nil {
		t.Fatal(err)
	}
	proxy.drop(leaseSubject, fmt.Sprintf("%s: %d\r\n", jetstream.ExpectedLastSubjSeqHeader, marker.Sequence))
	proxy.release(leaseSubject)
	testenv.WaitUntil(t, 30*time.Second, "the retake is sent, and dropped", func() bool { return proxy.droppedTo(leaseSubject) > 0 })

	close(hook.release)
	testenv.WaitUntil(t, 30*time.Second, "the claim's next try waits for the renewal", func() bool {
		return strings.Contains(log.String(), "the order's claim waits for its renewal's verdict")
	})
	// Past the unanswered retake's bound: the renewal failed, the worker
	// says so, and tries again, dropped again. Still no verdict, no claim.
	testenv.WaitUntil(t, 30*time.Second, "the unanswered retake times out, and the next is dropped", func() bool {
		return strings.Contains(log.String(), `msg="renew lease" `) && proxy.droppedTo(leaseSubject) > 1
	})
	if n := hook.later.Load(); n > 0 {
		t.Fatalf("the order claimed %d times while its lease's retake was unanswered", n)
	}
	if !strings.Contains(log.String(), "take the lapsed lease again (its key was gone)") {
		t.Error("the failed renewal does not say it was the retake of a lapsed lease")
	}
	if _, err := os.Stat(ran); err == nil {
		t.Fatal("the order ran while its lease's retake was unanswered")
	}
	if s := log.String(); strings.Contains(s, "order started") || strings.Contains(s, "stopped consuming") {
		t.Fatalf("the order started, or the tenure ended, while the lease's retake was unanswered:\n%s", s)
	}

	// NATS answers again: the key is taken again and the order runs once,
	// in the same tenure.
	proxy.stopDropping(leaseSubject)
	wantLeaseOutcome(t, e, log, hook, id, false, "after the lease was taken again")
	if !strings.Contains(log.String(), "nobody took it, taken again") {
		t.Error("the lease was not taken again")
	}
	if b, err := os.ReadFile(ran); err != nil || string(b) != "x\n" {
		t.Errorf("the order's runs: %q (%v), want one", b, err)
	}
	if n := hook.later.Load(); n != 1 {
		t.Errorf("%d claims of the order after the first, want one", n)
	}
}
