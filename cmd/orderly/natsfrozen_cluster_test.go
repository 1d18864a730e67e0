package main

import (
	"encoding/json"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
)

// TestWorkerLeavesAFrozenNATSNode: on a 3-node NATS cluster, the worker
// of h1 is connected to node n2 (its nats.url names n2 alone; it learns
// the others from n2) when n2 is frozen (SIGSTOP: a hung machine, or a
// partition that closes nothing). Its connection stays open, and nothing
// on it answers. The worker must notice and go to another node while n2
// stays frozen, and run the host's next order there. nats.go pings a
// server only every 2 minutes and gives up after 2 unanswered pings: the
// worker sat on the frozen node for 4–6 minutes, its host stopped
// (probed by hE9: a 15 s freeze stopped the host for the whole freeze).
// The freeze here lasts until the order ran, or 150 s.
func TestWorkerLeavesAFrozenNATSNode(t *testing.T) {
	s, c := newClusterFaultStack(t, []string{"h1"})
	w := s.startWorkerEnv("h1", "ORDERLY_NATS__URL="+c.node("n2").url())
	waitLogLine(t, w.faultProc, "worker consuming", time.Minute)

	submit := func(d time.Duration) uuid.UUID {
		t.Helper()
		b, _ := json.Marshal(map[string]any{"host": "h1", "command": "true"})
		var code int
		var out []byte
		// The API may be on the frozen node too: it refuses (503) until it
		// has left it.
		waitUntil(t, d, "an order for h1 accepted", func() bool {
			code, out = startupRequest(t, "POST", s.apiURL+"/v1/orders", s.token, b)
			return code == http.StatusAccepted
		})
		var o struct{ ID uuid.UUID }
		if err := json.Unmarshal(out, &o); err != nil {
			t.Fatal(err)
		}
		return o.ID
	}
	succeeded := func(id uuid.UUID, d time.Duration) {
		t.Helper()
		waitUntil(t, d, "order "+id.String()+" succeeds on h1", func() bool {
			var st string
			return s.pool.QueryRow(t.Context(), `SELECT status FROM orders WHERE id = $1`, id).Scan(&st) == nil && st == "succeeded"
		})
	}
	succeeded(submit(time.Minute), time.Minute)

	frozen := c.node("n2").proc
	frozen.signal(syscall.SIGSTOP)
	s.note("SIGSTOP n2")
	defer frozen.signal(syscall.SIGCONT)
	began := time.Now()
	succeeded(submit(150*time.Second), 150*time.Second)
	if !frozen.alive() {
		t.Fatal("n2 exited while frozen")
	}
	s.note("h1 ran its order with n2 frozen")
	t.Logf("h1 ran an order %s after n2 froze", time.Since(began).Round(100*time.Millisecond))
}
