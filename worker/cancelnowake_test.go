package worker_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/orderly-run/orderly/internal/order"
)

// TestCancelWithoutAWakeUpReachesTheRunningOrder: a cancel request
// recorded with no wake-up on the bus (the API answers a cancel 202 with
// NATS down, TestCancelAnswersWithNATSDown; a wake-up is also lost when
// the worker's link to NATS is cut or the server restarts) still ends
// the running order: the order's heartbeat reads the request and
// signals it. Nothing else in the suite sends a cancel without its
// wake-up, and the fault tests cancel nothing while a fault is on.
func TestCancelWithoutAWakeUpReachesTheRunningOrder(t *testing.T) {
	e := newEnv(t)
	e.start("nowake", nil)
	f := filepath.Join(t.TempDir(), "ran")
	// Longer than waitStatus's 30 s: only a signal ends it in time.
	id := e.submit("nowake", "sh", "-c", `sleep 60; echo x >> "$1"`, "_", f)
	e.waitStarted(id)
	if st, err := e.store.RequestCancel(t.Context(), id, "alice", "SIGTERM"); err != nil || st != order.StatusRunning {
		t.Fatalf("cancel of the running order: %s, %v", st, err)
	}
	// No SendControl: the request is only in PostgreSQL.
	e.waitStatus(id, order.StatusKilled)
	if b, err := os.ReadFile(f); err == nil {
		t.Errorf("the canceled order ran to its end (%q)", b)
	}
	// The host goes on.
	e.waitStatus(e.submit("nowake", "true"), order.StatusSucceeded)
}
