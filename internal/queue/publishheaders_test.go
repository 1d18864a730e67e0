package queue_test

import (
	"testing"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestPublishCarriesItsIDAndTheStreamItExpects: an order's message is
// stored with the order id as Nats-Msg-Id, and names the orders stream as
// the one it expects, so that a stream of another name that captured the
// orders' subjects (the orders stream deleted and its subjects taken)
// refuses it rather than storing an order no host consumer reads. The
// headers are made with the message, not by publish options
// (docs/benchmarks.md, "The async submit after group commit, profiled").
func TestPublishCarriesItsIDAndTheStreamItExpects(t *testing.T) {
	q, _ := openQueue(t, queue.Options{})
	ctx := testenv.Context(t)
	js := q.JetStream()
	id := uuid.Must(uuid.NewV7())
	seq, err := q.Publish(ctx, "h1", id)
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, queue.OrdersStream)
	if err != nil {
		t.Fatal(err)
	}
	m, err := st.GetMsg(ctx, seq)
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Header.Get(jetstream.MsgIDHeader); got != id.String() || string(m.Data) != id.String() {
		t.Fatalf("stored Nats-Msg-Id %q and data %q, want the order id %s", got, m.Data, id)
	}

	if err := js.DeleteStream(ctx, queue.OrdersStream); err != nil {
		t.Fatal(err)
	}
	other, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "NOT_ORDERS", Subjects: []string{queue.OrdersSubject + ">"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := q.Publish(ctx, "h1", uuid.Must(uuid.NewV7())); err == nil {
		t.Fatal("a stream of another name on the orders' subjects stored an order")
	}
	info, err := other.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 0 {
		t.Fatalf("%d messages in NOT_ORDERS, want 0", info.State.Msgs)
	}
}
