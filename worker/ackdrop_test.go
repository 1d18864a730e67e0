package worker

import (
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats-server/v2/server"

	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestAckPendingAtADropCountsLostAtOnce: an ack whose confirmation the
// connection loses as it drops (a nats-server restart) is counted lost
// at the drop, which makes the tenure's consumer suspect and leaves no
// ack pending for the stall check to wait for, not once its confirmation
// timer ran out: with ackConfirmWait's 2 s, the host ran nothing for
// 2.4 – 2.5 s after 3 of 15 restarts (docs/decisions.md, hF24). The
// timer is an hour here: only the drop can count it. A real
// nats-server, the worker's connection through a proxy that drops what
// the server writes, then cuts the connection.
func TestAckPendingAtADropCountsLostAtOnce(t *testing.T) {
	ns := testenv.NATSServer(t, &server.Options{})
	px := testenv.NewCutProxy(t, ns.Addr().String())
	nc, err := queue.Connect("nats://"+px.Addr(), "worker")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	w, a, st, _, msgs, warn := ackFixtureOn(t, nc, 1)
	a.wait = time.Hour

	px.Drop(false) // the server's confirmation is lost
	w.ack(newDelivery(msgs[0]), uuid.New())
	testenv.WaitUntil(t, 30*time.Second, "the proxy dropping the ack's confirmation", func() bool {
		return px.Dropped([]byte(a.prefix))
	})
	px.Cut()
	testenv.WaitUntil(t, 30*time.Second, "the ack pending at the drop counted lost", func() bool {
		a.mu.Lock()
		pending := len(a.pending)
		a.mu.Unlock()
		return pending == 0 && st.acking.Load() == 0 && st.suspect.Load()
	})
	if !strings.Contains(warn.all(), "the connection dropped") {
		t.Errorf("the warnings: %q, want the ack lost at the drop", warn.all())
	}
}
