package natsembed

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/queue"
)

// TestRewindRedeliversToTheNextIterator: a host's worker receives an
// order and does not ack it (its ack was lost), stops its iterator and
// rewinds its consumer in place, as the worker's stall check does
// (worker/worker.go, worker/takeover.go); the iterator it starts next must
// get the order again at once, not after the ack wait (30 s). The stopped
// iterator's pull request stays on the consumer until it expires (5 s);
// the consumer must see that nobody listens on its reply subject any more
// and skip it. In one account and on the server the worker talks to, it
// does; the pull request of a worker in its own account reaches the
// consumer through the account's service import, with a reply subject
// of orderly's account (_R_.…), and a consumer led by another server of a
// cluster cannot follow that back to the worker's inbox, so the rewind
// there first waits the stopped iterator's pull requests out
// (queue.StopHostIterator; decisions.md, hM20).
func TestRewindRedeliversToTheNextIterator(t *testing.T) {
	for _, tc := range []struct {
		name       string
		oneAccount bool
		servers    int
	}{
		{"one account, one server", true, 1},
		{"accounts, one server", false, 1},
		{"one account, worker off the consumer's leader", true, 3},
		{"accounts, worker off the consumer's leader", false, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rewindRedelivers(t, tc.oneAccount, tc.servers)
		})
	}
}

func rewindRedelivers(t *testing.T, oneAccount bool, n int) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	creds, err := EnsureCredentials(filepath.Join(t.TempDir(), "creds"), "h0", []string{"h1"})
	if err != nil {
		t.Fatal(err)
	}
	var servers []*server.Server
	if n == 1 {
		s, err := Start(Options{Dir: t.TempDir(), Port: -1, Logger: testLogger(t), Credentials: creds, OneAccount: oneAccount})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Shutdown)
		servers = []*server.Server{s.ns}
	} else {
		layout := creds.layout
		if oneAccount {
			layout = layout.oneAccount()
		}
		servers = startCluster(t, n, layout.Config())
	}
	api := (&bus{url: servers[0].ClientURL(), creds: creds}).connect(t, creds.API, queue.APIInbox)
	qAPI, err := queue.New(ctx, api.nc, queue.Options{Replicas: n})
	if err != nil {
		t.Fatal(err)
	}
	// The worker's server: on a cluster, one that does not lead the
	// host's consumer, so that its pull requests cross a route.
	w1bus := &bus{url: servers[0].ClientURL(), creds: creds}
	if _, err := qAPI.HostConsumer(ctx, "h1"); err != nil {
		t.Fatal(err)
	}
	if n > 1 {
		leader := consumerLeader(ctx, t, servers, queue.OrdersStream, queue.ConsumerName("h1"))
		w1bus.url = servers[(leader+1)%n].ClientURL()
	}
	w1 := w1bus.connect(t, creds.Workers["h1"], queue.WorkerInbox("h1"))
	q1, err := queue.Bind(ctx, w1.nc, queue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cons, err := q1.HostConsumer(ctx, "h1")
	if err != nil {
		t.Fatal(err)
	}
	id := uuid.New()
	if _, err := qAPI.Publish(ctx, "h1", id); err != nil {
		t.Fatal(err)
	}

	// The worker's iterator, as worker/worker.go opens it.
	it, err := cons.Messages(jetstream.PullExpiry(queue.HostPullExpiry))
	if err != nil {
		t.Fatal(err)
	}
	defer it.Stop()
	first := next(it, 10*time.Second)
	if first.err != nil || string(first.msg.Data()) != id.String() {
		t.Fatalf("the first delivery: %v %v", first.msg, first.err)
	}
	q1.StopHostIterator(it) // its ack lost: the message stays held

	if cons, err = q1.RewindHostConsumer(ctx, "h1"); err != nil {
		t.Fatal(err)
	}
	it, err = cons.Messages(jetstream.PullExpiry(queue.HostPullExpiry))
	if err != nil {
		t.Fatal(err)
	}
	defer it.Stop()
	// Well under the stopped iterator's expiry (5 s) and the ack wait
	// (30 s), well over a redelivery's milliseconds.
	again := next(it, time.Second)
	if again.err != nil {
		info, _ := cons.Info(ctx)
		var pending, waiting int
		if info != nil {
			pending, waiting = info.NumAckPending, info.NumWaiting
		}
		t.Fatalf("the order was not delivered again within 1s of the rewind: %v (ack pending %d, pull requests waiting %d)", again.err, pending, waiting)
	}
	if string(again.msg.Data()) != id.String() {
		t.Fatalf("delivered after the rewind: %q, want %s", again.msg.Data(), id)
	}
}

type delivery struct {
	msg jetstream.Msg
	err error
}

// next is it.Next within wait; an iterator's Next takes no context.
func next(it jetstream.MessagesContext, wait time.Duration) delivery {
	got := make(chan delivery, 1)
	go func() {
		m, err := it.Next()
		got <- delivery{m, err}
	}()
	select {
	case d := <-got:
		return d
	case <-time.After(wait):
		return delivery{err: context.DeadlineExceeded}
	}
}

// consumerLeader is the index in servers of the one that leads the
// consumer of orderly's stream.
func consumerLeader(ctx context.Context, t *testing.T, servers []*server.Server, stream, consumer string) int {
	t.Helper()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		for i, s := range servers {
			if s.JetStreamIsConsumerLeader(OrderlyAccount, stream, consumer) {
				return i
			}
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			t.Fatalf("consumer %s has no leader", consumer)
		}
	}
}
