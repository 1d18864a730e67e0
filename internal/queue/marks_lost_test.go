package queue_test

import (
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestMarksAfterALostStore: nats-server comes back without its store
// under a running API and worker, whose handles of the marks bucket were
// opened before. A read through such a handle finds nobody to answer
// (no stream behind the direct get's subject), which was not taken for
// the bucket gone: the API's read and raise of the publish generation
// failed until it restarted (its restore check with them), and the
// worker's claim mark read failed as NATS refusing it. Now the handle is
// dropped: the API reads generation 0 (NATS holds none), its raise makes
// the bucket again, and the worker reads no bucket, then the mark once
// the API made it.
func TestMarksAfterALostStore(t *testing.T) {
	ctx := t.Context()
	ns := testenv.NATSServer(t, &server.Options{})
	api := testenv.Queue(t, ns.ClientURL(), "api", queue.Options{})
	nc, err := queue.Connect(ns.ClientURL(), "worker")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	w, err := queue.Bind(ctx, nc, queue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := api.RaisePostgresMark(ctx, 3); err != nil {
		t.Fatal(err)
	}
	at := time.Now().UTC().Truncate(time.Millisecond)
	if err := w.RaiseClaimMark(ctx, "h1", queue.ClaimMark{Seq: 5, Stored: at, Attempt: 1}, nil); err != nil {
		t.Fatal(err)
	}
	if m, err := w.ClaimMarkOf(ctx, "h1", nil); err != nil || m.Seq != 5 {
		t.Fatalf("the claim mark before the loss: %+v %v", m, err)
	}

	testenv.NATSServerLost(t, ns)
	testenv.WaitUntil(t, 10*time.Second, "the clients reconnect", func() bool {
		return api.Conn().IsConnected() && nc.IsConnected()
	})
	testenv.WaitUntil(t, 10*time.Second, "the worker finds no bucket", func() bool {
		_, err := w.ClaimMarkOf(ctx, "h1", nil)
		return errors.Is(err, queue.ErrNoMarksBucket)
	})
	if g, err := api.PostgresMark(ctx); err != nil || g != 0 {
		t.Fatalf("the publish generation after a lost store: %d %v, want 0 (none held)", g, err)
	}
	if err := api.RaisePostgresMark(ctx, 4); err != nil {
		t.Fatalf("the raise after a lost store: %v", err)
	}
	if g, err := api.PostgresMark(ctx); err != nil || g != 4 {
		t.Fatalf("the publish generation raised: %d %v, want 4", g, err)
	}
	if m, err := w.ClaimMarkOf(ctx, "h1", nil); err != nil || m.Seq != 0 {
		t.Fatalf("the claim mark in the new bucket: %+v %v, want none", m, err)
	}
	if err := w.RaiseClaimMark(ctx, "h1", queue.ClaimMark{Seq: 2, Stored: at, Attempt: 1}, nil); err != nil {
		t.Fatalf("the worker's write in the new bucket: %v", err)
	}
}
