package worker_test

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
	"github.com/orderly-run/orderly/worker"
)

// TestClaimedOrderIsHandedBackWhileItsRenewalIsLate: an order claimed
// while the host lease was fresh reaches its start with the lease's last
// renewal older than half the lease, its renewals unanswered since. The
// worker hands it back to the queue at once, before any verdict on the
// lease, and claims it again once a renewal lands: it runs once, in the
// same tenure.
//
// Before, the start waited for the renewal's verdict with the order
// claimed; in a NATS cluster's election (TestFaultsNATSClusterNodeFrozen)
// the verdict came only after the lease had expired and a standby had
// taken the key, fenced, and interrupted the order, which had never run
// (docs/decisions.md, "Claims and starts wait for a renewal…" and hA27).
//
// Provoked: the claim is held after its commit while a proxy between the
// worker and NATS drops every renewal, until the key, read from the
// server, is older than half the lease.
func TestClaimedOrderIsHandedBackWhileItsRenewalIsLate(t *testing.T) {
	ctx := t.Context()
	// Long enough for the steps between half the lease and its expiry
	// on a loaded machine; the test does not need the key to outlive
	// the drop (an expired key is taken again by the same worker).
	const lease = 6 * time.Second
	const host = "late-renewal"
	ran := filepath.Join(t.TempDir(), "ran")
	pw := startHeldClaimWorker(t, lease, host, false, "sh", "-c", `echo x >> "$1"`, "_", ran)
	e, q, proxy, hook, log, id := pw.e, pw.e.q, pw.proxy, pw.hook, pw.log, pw.hook.id
	store := e.store

	leaseSubject := "$KV." + queue.HostsBucket + ".lease." + host
	proxy.drop(leaseSubject, "")
	kv, err := q.JetStream().KeyValue(ctx, queue.HostsBucket)
	if err != nil {
		t.Fatal(err)
	}
	// The server stores a renewal after the worker sends it: a key older
	// than half the lease (and a margin) on the server's clock is older
	// on the worker's.
	testenv.WaitUntil(t, 30*time.Second, "the lease key is older than half the lease, its renewals dropped", func() bool {
		en, err := kv.Get(ctx, "lease."+host)
		return err == nil && time.Since(en.Created()) > lease/2+300*time.Millisecond && proxy.droppedTo(leaseSubject) > 0
	})
	close(hook.release)

	const waited = "the order's start waits"
	testenv.WaitUntil(t, 30*time.Second, "the claimed order handed back, or its start waiting", func() bool {
		o, err := store.GetOrder(ctx, id)
		return err == nil && o.Status == order.StatusQueued || strings.Contains(log.String(), waited)
	})
	o, err := store.GetOrder(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if o.Status != order.StatusQueued || strings.Contains(log.String(), waited) {
		t.Fatalf("with its renewal late, the claimed order is %s (attempt %d) and its start waited for the verdict: want it handed back at once",
			o.Status, o.Attempt)
	}
	if !strings.Contains(log.String(), "order handed back unstarted: the host lease's last renewal is late") {
		t.Error("the hand-back was not logged")
	}
	// The history says why, as the log does: the worker was not stopping.
	evs, err := store.Events(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range evs {
		if reason, _ := ev.Detail["reason"].(string); ev.Type == "unclaimed" && !strings.Contains(reason, "renewal is late") {
			t.Errorf("the hand-back's event says %q, not that the lease's renewal was late", reason)
		}
	}

	proxy.stopDropping(leaseSubject)
	o = e.waitStatus(id, order.StatusSucceeded)
	if o.Attempt != 2 {
		t.Errorf("the order succeeded at attempt %d, want 2 (claimed again after the hand-back)", o.Attempt)
	}
	if b, err := os.ReadFile(ran); err != nil || string(b) != "x\n" {
		t.Errorf("the order's runs: %q (%v), want one", b, err)
	}
	if strings.Contains(log.String(), "stopped consuming") {
		t.Error("the tenure ended: the lease was the worker's throughout")
	}
}

// heldClaimWorker is a worker whose NATS connection goes through a
// pubHoldProxy and whose claims go through a claimHook, holding the
// first claim of the one order submitted (startHeldClaimWorker).
type heldClaimWorker struct {
	e     *env
	proxy *pubHoldProxy
	hook  *claimHook
	log   *testenv.LogBuffer
}

// startHeldClaimWorker submits command with args to host, runs its worker
// (heartbeat 200 ms, the bucket's lease lease) behind a pubHoldProxy, and
// returns once the order's first claim is held: before its statement
// (before, which then fails as a lost connection) or after its commit.
func startHeldClaimWorker(t *testing.T, lease time.Duration, host string, before bool, command string, args ...string) *heldClaimWorker {
	t.Helper()
	ctx := t.Context()
	store, _ := testenv.Store(t, testenv.Postgres(t))
	q := testenv.Queue(t, testenv.NATS(t), "test", queue.Options{AckWait: slowAckWait, LeaseTTL: lease})
	e := &env{t: t, store: store, q: q}
	id := e.submit(host, command, args...)

	proxy := newPubHoldProxy(t, q.Conn().ConnectedUrl())
	nc, err := queue.Connect("nats://"+proxy.addr(), "worker")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	wq, err := queue.Bind(ctx, nc, queue.Options{AckWait: slowAckWait, LeaseTTL: lease})
	if err != nil {
		t.Fatal(err)
	}
	hook := &claimHook{Store: store, id: id, before: before, held: make(chan struct{}), release: make(chan struct{})}
	log := &testenv.LogBuffer{}
	runWorker(t, worker.Options{Host: host, Heartbeat: 200 * time.Millisecond, AckWait: slowAckWait,
		ShutdownGrace: 5 * time.Second}, hook, wq, testenv.LoggerTo(io.MultiWriter(t.Output(), log)))
	select {
	case <-hook.held:
	case <-ctx.Done():
		t.Fatal("the worker never claimed the order")
	}
	return &heldClaimWorker{e: e, proxy: proxy, hook: hook, log: log}
}
