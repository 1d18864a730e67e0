package worker

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestWatchWaitQuickCallAllocations: a store call that ends before
// StatementWaitWarn costs watchWait two allocations, its entry in the
// worker's calls in flight and the context that notes its backend: no
// timer of its own. Before, each call armed a time.AfterFunc with its
// closure and a done channel: six allocations, and a timer started and
// stopped in the runtime's heap, on each of the ~three calls of an order
// (docs/benchmarks.md, "Serve's work per sync order since the
// twenty-eighth round, counted").
func TestWatchWaitQuickCallAllocations(t *testing.T) {
	w := &Worker{opts: Options{StatementWaitWarn: time.Hour}, logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	id := order.NewID()
	ctx := context.Background()
	quick := func(context.Context) error { return nil }
	allocs := testing.AllocsPerRun(200, func() {
		_ = w.watchWait(ctx, "claim order", id, uuid.Nil, quick)
	})
	if allocs > 2 {
		t.Errorf("watchWait of a quick call: %.1f allocations, want at most 2 (its entry and the backend's context)", allocs)
	}
}

// TestWatchWaitWarnsEachLateCallOnce: with one timer for all calls in
// flight, each call still past StatementWaitWarn is warned once, not
// before its own StatementWaitWarn, and told done after its WARN; one
// that started while the timer was armed for an older call is warned
// when it comes due, not forgotten; the quick calls meanwhile log
// nothing.
func TestWatchWaitWarnsEachLateCallOnce(t *testing.T) {
	const warnAfter = 300 * time.Millisecond
	logs := &testenv.LogBuffer{}
	w := &Worker{opts: Options{StatementWaitWarn: warnAfter}, logger: slog.New(slog.NewJSONHandler(logs, nil))}
	defer w.waits.stop()
	release := make(chan struct{})
	blocked := func(context.Context) error { <-release; return nil }
	idA, idB := order.NewID(), order.NewID()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = w.watchWait(t.Context(), "claim order", idA, uuid.Nil, blocked) }()
	// B starts while the timer is armed for A, a part of warnAfter
	// later (a delay, not a wait for something).
	time.Sleep(warnAfter / 3)
	go func() { defer wg.Done(); _ = w.watchWait(t.Context(), "write result", idB, uuid.Nil, blocked) }()
	quickID := order.NewID()
	testenv.WaitUntil(t, 30*time.Second, "a WARN for each of the two late calls", func() bool {
		_ = w.watchWait(t.Context(), "quick", quickID, uuid.Nil, func(context.Context) error { return nil })
		return len(waitLines(t, logs, slog.LevelWarn)) >= 2
	})
	close(release)
	wg.Wait()

	warns, infos := waitLines(t, logs, slog.LevelWarn), waitLines(t, logs, slog.LevelInfo)
	if len(warns) != 2 || len(infos) != 2 {
		t.Fatalf("want one WARN and one INFO for each late call, got %d and %d:\n%s", len(warns), len(infos), logs)
	}
	for _, id := range []uuid.UUID{idA, idB} {
		var warnAt, infoAt = -1, -1
		for i, l := range append(warns, infos...) {
			if l["order_id"] != id.String() {
				continue
			}
			waited := time.Duration(l["waited"].(float64)) // JSON's nanoseconds
			if waited < warnAfter {
				t.Errorf("order %s: a line after %s, before StatementWaitWarn %s: %v", id, waited, warnAfter, l)
			}
			if i < len(warns) {
				warnAt = int(l["seq"].(float64))
			} else {
				infoAt = int(l["seq"].(float64))
			}
		}
		if warnAt < 0 || infoAt < 0 || infoAt < warnAt {
			t.Errorf("order %s: want its WARN (line %d) before its INFO (line %d):\n%s", id, warnAt, infoAt, logs)
		}
	}
	if strings.Contains(logs.String(), quickID.String()) {
		t.Errorf("a quick call was logged:\n%s", logs)
	}
	w.waits.mu.Lock()
	defer w.waits.mu.Unlock()
	if len(w.waits.inflight) != 0 {
		t.Errorf("after every call returned: %d still in flight", len(w.waits.inflight))
	}
}

// waitLines are the lines of watchWait at level, each with its line
// number in the log as "seq", so that a test can tell their order.
func waitLines(t *testing.T, logs *testenv.LogBuffer, level slog.Level) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(logs.String()))
	for n := 0; sc.Scan(); n++ {
		var l map[string]any
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("log line is not JSON: %s", sc.Bytes())
		}
		if l["level"] == level.String() && strings.HasPrefix(l["msg"].(string), "postgresql statement") {
			l["seq"] = float64(n)
			out = append(out, l)
		}
	}
	return out
}
