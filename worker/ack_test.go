package worker_test

import (
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/queue"
)

// TestLostAcksDoNotStallTheHost: acks the server never gets (sent while a
// NATS cluster elected the consumer's leader; here refused by a permission)
// leave both held messages counted as unacked, and the consumer then
// delivers nothing more until the ack timer (30 s) runs out. The worker
// has the server confirm each ack, so it notices, checks the consumer once
// idle and rewinds: the next order runs within seconds.
func TestLostAcksDoNotStallTheHost(t *testing.T) {
	lossy := &server.Permissions{Publish: &server.SubjectPermission{Allow: []string{">"}, Deny: []string{"$JS.ACK.>"}}}
	opts := &server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoSigs: true,
		Users: []*server.User{{Username: "test", Password: "test"}, {Username: "worker", Password: "worker", Permissions: lossy}}}
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	qopts := queue.Options{AckWait: slowAckWait, LeaseTTL: 2 * time.Second}
	connect := func(user string) *queue.Queue {
		nc, err := queue.Connect(ns.ClientURL(), user, nats.UserInfo(user, user))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		q, err := queue.New(t.Context(), nc, qopts)
		if err != nil {
			t.Fatal(err)
		}
		return q
	}
	e := newEnv(t)
	e.q = connect("test")
	e.startWith(connect("worker"), e.store, "lossy", nil)

	// Two orders, the consumer's MaxAckPending: both run, their acks are
	// lost.
	for _, id := range []uuid.UUID{e.submit("lossy", "true"), e.submit("lossy", "true")} {
		e.waitStatus(id, order.StatusSucceeded)
	}
	// The bus works again (the election is over).
	healed := opts.Clone()
	healed.Users = []*server.User{{Username: "test", Password: "test"}, {Username: "worker", Password: "worker"}}
	if err := ns.ReloadOptions(healed); err != nil {
		t.Fatal(err)
	}
	submitted := time.Now()
	third := e.submit("lossy", "true")
	e.waitStatus(third, order.StatusSucceeded)
	if d := time.Since(submitted); d > 15*time.Second {
		t.Fatalf("the next order ran %s after it was submitted: the host waited for the ack timer (%s)", d.Round(time.Millisecond), slowAckWait)
	}
}
