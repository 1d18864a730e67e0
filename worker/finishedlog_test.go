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

// TestFinishedLogSaysWhatRan checks that the worker's state-change lines
// do not read as a command that ran when none did: a dry run's say
// dry_run, and a refused order's "order finished" says why.
func TestFinishedLogSaysWhatRan(t *testing.T) {
	e := newEnv(t)
	logs := &testenv.LogBuffer{}
	runWorker(t, worker.Options{Host: "log-1", Heartbeat: 200 * time.Millisecond, AckWait: time.Second,
		ShutdownGrace: 5 * time.Second}, e.store, e.q, slog.New(slog.NewJSONHandler(logs, nil)))

	dry := &order.Order{ID: order.NewID(), Kind: order.KindExec, Host: "log-1", Command: "true", DryRun: true,
		Timeout: 20 * time.Second, Principal: "test", Source: "rest"}
	if _, err := e.store.InsertOrder(t.Context(), dry); err != nil {
		t.Fatal(err)
	}
	if _, err := e.q.Publish(t.Context(), "log-1", dry.ID); err != nil {
		t.Fatal(err)
	}
	refused := e.submit("log-1", "no-such-command-here")
	e.waitStatus(dry.ID, order.StatusSucceeded)
	e.waitStatus(refused, order.StatusRejected)

	// The worker logs "order finished" after the result's commit, which
	// waitStatus may see first: wait for both lines.
	lines := map[string]map[string]any{} // by msg and order id
	testenv.WaitUntil(t, 10*time.Second, "both orders' order finished lines", func() bool {
		sc := bufio.NewScanner(strings.NewReader(logs.String()))
		for sc.Scan() {
			var l map[string]any
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
				t.Fatalf("log line is not JSON: %s", sc.Bytes())
			}
			if id, ok := l["order_id"].(string); ok {
				lines[l["msg"].(string)+" "+id] = l
			}
		}
		return lines["order finished "+dry.ID.String()] != nil && lines["order finished "+refused.String()] != nil
	})
	for _, msg := range []string{"order started", "order finished"} {
		if l := lines[msg+" "+dry.ID.String()]; l == nil || l["dry_run"] != true {
			t.Errorf("%s line of the dry run does not say dry_run: %v", msg, l)
		}
		if l := lines[msg+" "+refused.String()]; l == nil || l["dry_run"] != nil {
			t.Errorf("%s line of an order that is no dry run: %v", msg, l)
		}
	}
	l := lines["order finished "+refused.String()]
	if why, _ := l["error"].(string); l["status"] != "rejected" || !strings.Contains(why, "no-such-command-here") {
		t.Errorf("order finished line of the refused order does not say why: %v", l)
	}
}
