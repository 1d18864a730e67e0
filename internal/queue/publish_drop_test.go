package queue_test

import (
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestPublishSentAgainWhenTheConnectionDropsUnderIt: an order's publish
// whose message or PubAck the connection loses as it drops (written on a
// socket whose server is gone, before nats.go read its end; or taken and
// stored by the server, which went before its answer reached the client)
// is sent again on the new connection and answered, within its 5 s,
// where it waited them out and failed (the submission's 503: hH21 in
// docs/decisions.md). Its message is in the stream once: the second copy
// of one stored is a duplicate (Nats-Msg-Id), answered with the first's
// sequence. A real nats-server, reached through a proxy that drops what
// one side writes, then cuts the connection.
func TestPublishSentAgainWhenTheConnectionDropsUnderIt(t *testing.T) {
	for _, c := range []struct {
		name     string
		toServer bool // the message lost on its way, or its PubAck
	}{
		{"message lost", true},
		{"pub ack lost", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			ns := testenv.NATSServer(t, &server.Options{})
			px := testenv.NewCutProxy(t, ns.Addr().String())
			q := testenv.Queue(t, "nats://"+px.Addr(), "publish-drop", queue.Options{})
			ctx := testenv.Context(t)
			host := "drop"
			if _, err := q.Publish(ctx, host, order.NewID()); err != nil {
				t.Fatalf("a publish on a sound connection: %v", err)
			}

			id := order.NewID()
			px.Drop(c.toServer)
			type result struct {
				seq  uint64
				err  error
				took time.Duration
			}
			done := make(chan result, 1)
			go func() {
				start := time.Now()
				seq, err := q.Publish(ctx, host, id)
				done <- result{seq, err, time.Since(start)}
			}()
			// What is lost is the publish itself (its payload is the
			// order's id), or the PubAck that follows it.
			want := []byte(id.String())
			if !c.toServer {
				want = []byte(`"stream":"` + queue.OrdersStream + `"`)
			}
			testenv.WaitUntil(t, 30*time.Second, "the proxy dropping the publish or its PubAck", func() bool {
				return px.Dropped(want)
			})
			px.Cut()
			r := <-done
			if r.err != nil {
				t.Fatalf("the publish the drop lost: %v after %s, want it sent again and answered", r.err, r.took.Round(time.Millisecond))
			}
			t.Logf("answered %s after the publish began (sequence %d)", r.took.Round(time.Millisecond), r.seq)

			st, err := q.JetStream().Stream(ctx, queue.OrdersStream)
			if err != nil {
				t.Fatal(err)
			}
			info, err := st.Info(ctx, jetstream.WithSubjectFilter(queue.OrdersSubject+host))
			if err != nil {
				t.Fatal(err)
			}
			if n := info.State.Subjects[queue.OrdersSubject+host]; n != 2 {
				t.Fatalf("%d messages of host %s in the stream, want 2 (the first publish's and this one's, once)", n, host)
			}
			m, err := st.GetLastMsgForSubject(ctx, queue.OrdersSubject+host)
			if err != nil {
				t.Fatal(err)
			}
			if string(m.Data) != id.String() || m.Sequence != r.seq {
				t.Fatalf("the host's last message: %s at %d, want %s at the sequence the publish answered, %d", m.Data, m.Sequence, id, r.seq)
			}
		})
	}
}
