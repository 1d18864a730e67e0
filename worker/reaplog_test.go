package worker_test

import (
	"bufio"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/testenv"
	"github.com/orderly-run/orderly/worker"
)

// TestReapLogNamesTheOrder checks that when a successor kills what a dead
// worker's order left running, its log line names that order: an operator
// reading "killed a previous order's leftover processes" must be able to
// tell whose they were.
func TestReapLogNamesTheOrder(t *testing.T) {
	e := newEnv(t)
	const host, dead = "reap-log", "reap-log/dead"
	// The dead worker's order: a process leading its own group, still
	// running after its worker is gone.
	proc, _ := leftover(t)
	id := startedBy(t, e, host, dead, false, proc).ID

	logs := &testenv.LogBuffer{}
	runWorker(t, worker.Options{Host: host, Heartbeat: 200 * time.Millisecond, AckWait: time.Second,
		ShutdownGrace: 5 * time.Second}, e.store, e.q, slog.New(slog.NewJSONHandler(logs, nil)))
	e.waitStatus(id, order.StatusInterrupted)
	var line map[string]any
	testenv.WaitUntil(t, 10*time.Second, "the reap's log line", func() bool {
		sc := bufio.NewScanner(strings.NewReader(logs.String()))
		for sc.Scan() {
			var l map[string]any
			if json.Unmarshal(sc.Bytes(), &l) == nil && l["msg"] == "killed a previous order's leftover processes" {
				line = l
				return true
			}
		}
		return false
	})
	if line["order_id"] != id.String() {
		t.Errorf("the reap's line does not name order %s: %v", id, line)
	}
}
