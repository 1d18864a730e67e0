package worker_test

import (
	"context"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/queue"
)

// TestTenuresFirstClaimIsMarkedBeforeItRuns: the claim mark was written
// a heartbeat after a claim moved it, so a worker killed within that
// heartbeat left NATS a mark that did not name the order it claimed: a
// backup from before the claim, restored, had the order run again. The
// first claim of a tenure (a worker started, or restarted after a crash,
// with orders waiting) is now in NATS before its order runs: read here
// where the order would start.
func TestTenuresFirstClaimIsMarkedBeforeItRuns(t *testing.T) {
	e := newEnv(t)
	const host = "firstmark"
	id := e.submit(host, "true")
	seen := make(chan queue.ClaimMark, 1)
	e.start(host, func(p string, o *order.Order) error {
		if p == "after_claim" && o.ID == id {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			m, err := e.q.ClaimMarkOf(ctx, host, nil)
			if err != nil {
				t.Error(err)
			}
			seen <- m
		}
		return nil
	})
	o := e.waitStatus(id, order.StatusSucceeded)
	m := <-seen
	if m.Seq != o.StreamSeq || m.Attempt != 1 {
		t.Fatalf("the claim mark in NATS as the tenure's first order started: %+v, want its message (seq %d), attempt 1", m, o.StreamSeq)
	}
}
