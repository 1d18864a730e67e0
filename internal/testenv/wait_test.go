package testenv

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/nats-io/nats.go"
)

// TestWaitUntilAnsweredOutlastsAnUnansweredRequest: a condition whose
// first request is never answered (as one written in the instant before
// its client read a restarted nats-server's end) costs the wait one
// try, not the request's whole context: the wait, shorter than the
// test's Context, ends once a later try is answered.
func TestWaitUntilAnsweredOutlastsAnUnansweredRequest(t *testing.T) {
	nc, err := nats.Connect(NATS(t))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	var asked atomic.Int32
	sub, err := nc.Subscribe("probe", func(m *nats.Msg) {
		if asked.Add(1) == 1 {
			return // lost
		}
		_ = m.Respond([]byte("here"))
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	WaitUntilAnswered(t, 3*TryTimeout, "the probe answered", func(ctx context.Context) bool {
		_, err := nc.RequestWithContext(ctx, "probe", nil)
		return err == nil
	})
	if n := asked.Load(); n < 2 {
		t.Fatalf("the probe was asked %d times, want the lost request and one answered", n)
	}
}
